"""Task sequences declared in a dataset's yaml.

Every task takes the user's behaviour sequence as input and differs in its label::

    tasks:
      - name: next_4star                       # unique
        kind: link                             # link: predict an item; class: predict a class
        label: {source: next_item, field: rating, interval: "[4,5)"}
        description: {task: ..., input: ..., output: ..., metric: ...}

Label sources:
  * ``next_item``       the next interaction after the input window, optionally only those whose
                        inter ``field`` lies in ``interval`` (link tasks). T1 is always this, unfiltered.
  * ``next_item_field`` a field of the next interacted item, e.g. its genre (class tasks); for a
                        token_seq field the first token is the label.
  * ``user_field``      a user-profile field (class tasks); ``bins`` turn a numeric field into ranges.
Optional keys: ``enabled`` (default true) switches a task off; ``attribute`` names an item field whose
embedding sequence PCL adds to the item sequence for this task.
"""

import re
from dataclasses import dataclass

from recbole_pcl.utils.errors import PCLError

KINDS = ("link", "class")
SOURCES = {"next_item": "link", "next_item_field": "class", "user_field": "class"}
DESCRIPTION_KEYS = ("task", "input", "output", "metric")
_INTERVAL = re.compile(r"^\s*([\[(])\s*(-?[\d.]+|-inf)\s*,\s*(-?[\d.]+|inf)\s*([\])])\s*$")


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, text, where):
        m = _INTERVAL.match(str(text))
        if not m:
            raise PCLError(f"{where}: interval '{text}' is not of the form [a,b), (a,b], [a,b] or (a,b)")
        return cls(float(m.group(2)), float(m.group(3)), m.group(1) == "[", m.group(4) == "]")

    def __str__(self):
        return f"{'[' if self.low_closed else '('}{self.low:g},{self.high:g}{']' if self.high_closed else ')'}"

    def contains(self, values):
        """Element-wise membership for a numpy array or torch tensor."""
        low = values >= self.low if self.low_closed else values > self.low
        high = values <= self.high if self.high_closed else values < self.high
        return low & high


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str
    source: str
    description: str
    field: str | None = None
    interval: Interval | None = None
    bins: list[float] | None = None
    attribute: str | None = None

    @property
    def is_link(self):
        return self.kind == "link"


def _description_text(name, desc):
    """Task description as one text: task name, input format, output format, metric."""
    where = f"task '{name}'"
    if isinstance(desc, str) and desc.strip():
        return desc.strip()
    if not isinstance(desc, dict):
        raise PCLError(f"{where}: 'description' must be a text or a mapping with keys {', '.join(DESCRIPTION_KEYS)}")
    missing = [k for k in DESCRIPTION_KEYS if not str(desc.get(k, "")).strip()]
    if missing:
        raise PCLError(f"{where}: description lacks {', '.join(missing)}")
    return " ".join(f"{k.capitalize()}: {str(desc[k]).strip().rstrip('.')}." for k in DESCRIPTION_KEYS)


def parse_task(raw, index):
    if not isinstance(raw, dict) or not raw.get("name"):
        raise PCLError(f"tasks[{index}]: every task needs a 'name'")
    name = str(raw["name"])
    where = f"task '{name}'"
    kind = raw.get("kind")
    if kind not in KINDS:
        raise PCLError(f"{where}: unknown kind '{kind}' (valid: {', '.join(KINDS)})")
    label = raw.get("label")
    if not isinstance(label, dict) or label.get("source") not in SOURCES:
        source = label.get("source") if isinstance(label, dict) else label
        raise PCLError(f"{where}: unknown label source '{source}' (valid: {', '.join(SOURCES)})")
    source = label["source"]
    if SOURCES[source] != kind:
        raise PCLError(f"{where}: label source '{source}' makes a {SOURCES[source]} task, but kind is '{kind}'")
    if source != "next_item" and not label.get("field"):
        raise PCLError(f"{where}: label source '{source}' needs a 'field'")
    interval = None
    if "interval" in label:
        if not label.get("field"):
            raise PCLError(f"{where}: an 'interval' needs the inter 'field' it applies to")
        interval = Interval.parse(label["interval"], where)
    bins = label.get("bins")
    if bins is not None and (not isinstance(bins, list) or sorted(bins) != bins):
        raise PCLError(f"{where}: 'bins' must be an increasing list of numbers")
    unknown = set(raw) - {"name", "kind", "label", "description", "enabled", "attribute"}
    if unknown:
        raise PCLError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    return TaskSpec(
        name=name,
        kind=kind,
        source=source,
        description=_description_text(name, raw.get("description")),
        field=label.get("field"),
        interval=interval,
        bins=bins,
        attribute=raw.get("attribute"),
    )


def parse_tasks(raw_tasks):
    """The enabled tasks, in yaml order; the first must be plain next-item prediction (T1)."""
    if not raw_tasks:
        raise PCLError("no 'tasks' declared for this dataset (see properties/dataset/ml-100k.yaml for the format)")
    if not isinstance(raw_tasks, (list, tuple)):
        raise PCLError(
            f"setting 'tasks' must be a list of task mappings (see properties/dataset/ml-100k.yaml), got {raw_tasks!r}"
        )
    tasks = [
        parse_task(raw, i)
        for i, raw in enumerate(raw_tasks)
        if not isinstance(raw, dict) or raw.get("enabled", True) is not False
    ]
    names = [t.name for t in tasks]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise PCLError(f"task names must be unique: {', '.join(duplicated)}")
    first = tasks[0]
    if first.source != "next_item" or first.interval is not None:
        raise PCLError(f"task '{first.name}': the first task must be unfiltered next-item prediction (T1)")
    if len(tasks) < 2:
        raise PCLError("the task sequence needs at least one downstream task after T1")
    return tasks


def main_metric(kind, config):
    """The metric a task is reported by: accuracy (class tasks) or ``report_metric`` (link tasks, HR@10)."""
    return "accuracy" if kind == "class" else config["report_metric"].lower()


def valid_metric(kind, config):
    """The metric early stopping and tuning follow: accuracy (class tasks) or ``link_valid_metric``
    (link tasks, NDCG@10)."""
    return "accuracy" if kind == "class" else config["link_valid_metric"].lower()
