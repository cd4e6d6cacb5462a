"""Continual task data: T1 and every downstream task of a dataset on one RecBole id mapping.

Splits (leakage-free by construction; ``tests/test_tasks.py`` checks each property):
  * Each user's last ``label_window`` interactions (never more than all but 3) are reserved for
    downstream labels (:mod:`.timeline`). T1 (:mod:`.pretraining`) sees only the interactions before
    them and uses RecBole's leave-one-out by time, so no downstream label was ever a T1 target.
  * Labels and their inputs: :mod:`.labels`.
  * Labelled users are split once into train/valid/test (by ``task_split``, or ``fold`` of
    ``n_folds``) with ``seed``; the same split holds for every downstream task, so a test user's
    labels are never trained on, in any task.
"""

import copy
import os
from dataclasses import dataclass
from logging import getLogger

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.utils import EvaluatorType, FeatureType
from tabulate import tabulate

from recbole_pcl.data.builders import prepare_dataset
from recbole_pcl.data.labels import class_labels, label_rows
from recbole_pcl.data.pretraining import build_t1, cold_items, t1_summary
from recbole_pcl.data.tasks import TaskSpec, parse_tasks, valid_metric
from recbole_pcl.data.timeline import MIN_T1_LENGTH, Timeline
from recbole_pcl.data.utils import build_dataloaders, check_dataset_files, load_dataset
from recbole_pcl.utils.errors import PCLError


@dataclass
class TaskData:
    spec: TaskSpec
    index: int
    train: object  # RecBole dataloaders
    valid: object
    test: object
    config: object  # the task's Config view (metrics, eval mode, label field)
    classes: list[str] | None = None  # class tasks: label names, index = class id
    summary: dict | None = None

    @property
    def num_classes(self):
        return len(self.classes) if self.classes is not None else 0


def _ensure_loaded(config, source, fields):
    load_col = config["load_col"]
    if load_col is None or not fields:
        return
    cols = load_col.setdefault(source, [config["USER_ID_FIELD"]] if source == "user" else [config["ITEM_ID_FIELD"]])
    cols += [f for f in fields if f not in cols]


def prepare_config(config, tasks):
    """Load the columns the tasks need (RecBole's ml-100k yaml loads only four inter columns) and keep
    raw values: labels compare ratings with thresholds, so no normalisation."""
    _ensure_loaded(
        config, "inter", [config["TIME_FIELD"]] + [t.field for t in tasks if t.source == "next_item" and t.field]
    )
    _ensure_loaded(
        config,
        "item",
        [t.field for t in tasks if t.source == "next_item_field"] + [t.attribute for t in tasks if t.attribute],
    )
    _ensure_loaded(config, "user", [t.field for t in tasks if t.source == "user_field"])
    config["normalize_all"] = False
    config["normalize_field"] = None


def task_config(config, spec):
    """A copy of ``config`` set up for evaluating ``spec`` through RecBole's evaluator."""
    tc = copy.deepcopy(config)
    tc["eval_args"] = dict(tc["eval_args"])
    if spec.is_link:
        tc["metrics"] = list(config["link_metrics"])
        tc["topk"] = list(config["link_topk"])
        tc["valid_metric"] = valid_metric(spec.kind, config)
        tc["eval_type"] = EvaluatorType.RANKING
        mode = config["task_eval_mode"]
    else:
        tc["metrics"] = ["Accuracy"]
        tc["valid_metric"] = "accuracy"
        tc["eval_type"] = EvaluatorType.VALUE
        tc["train_neg_sample_args"] = None  # cross-entropy over classes: no sampled items
        tc._set_train_neg_sample_args()
        mode = "labeled"
    tc["eval_args"]["mode"] = {"valid": mode, "test": mode}
    tc["valid_metric_bigger"] = True
    tc._set_eval_neg_sample_args("valid")
    tc._set_eval_neg_sample_args("test")
    return tc


def task_sequence(config):
    """The dataset's task specs, after building its atomic files from raw input (where its yaml says
    so) and checking that they hold what the tasks need: cheap checks, before any loading."""
    prepare_dataset(config)
    try:
        specs = parse_tasks(config["tasks"])
    except PCLError:
        check_dataset_files(config)  # an unknown dataset, not its (absent) tasks, is the cause
        raise
    prepare_config(config, specs)
    inter_fields = ["USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD"]
    check_dataset_files(config, inter_fields + [s.field for s in specs if s.source == "next_item" and s.field])
    return specs


class ContinualData:
    """Loads a dataset once and derives T1 and the downstream tasks from it.

    Attributes:
        tasks (list of TaskData): T1 first (its dataloaders are RecBole's leave-one-out ones).
        dataset: the RecBole dataset that holds the id mapping (``field2id_token``) of every task.
        timeline: every user's interactions in time order (:class:`~.timeline.Timeline`).
        split: the labelled users of each phase (``train``, ``valid``, ``test``).
        cold_items: the items kept out of T1 (``cold_item_share``).
    """

    def __init__(self, config, specs=None):
        self.logger = getLogger()
        specs = specs or task_sequence(config)
        self.config = config
        self.dataset = load_dataset(config)
        check_fields(config, self.dataset, specs)
        ds = self.dataset
        self.timeline = Timeline(ds.inter_feat, ds.uid_field, ds.time_field, ds.iid_field, config["label_window"])
        self.cold_items = cold_items(config, ds.item_num)
        self.split = split_users(config, self.timeline.users[self.timeline.lengths > MIN_T1_LENGTH])
        t1_config = task_config(config, specs[0])
        source, built = build_t1(config, ds, self.timeline, self.cold_items)
        if t1_fold(config) is not None:  # this fold's own T1: validated outside its test users, tested on them
            built[1], built[2] = (
                _users_rows(built[1], self.split["test"], False),
                _users_rows(built[2], self.split["test"], True),
            )
        t1 = TaskData(specs[0], 0, *build_dataloaders(t1_config, source, built), t1_config, summary=t1_summary(built))
        self._template = built[0]  # a built dataset: its copies carry downstream rows
        self.tasks = [t1] + [self._downstream(spec, k) for k, spec in enumerate(specs) if k > 0]
        self.logger.info("\n" + self.summary_table())

    @property
    def users(self):
        """Every user's RecBole id, in id order."""
        return self.timeline.users

    def _downstream(self, spec, index):
        ds, timeline, n = self.dataset, self.timeline, self.config["MAX_ITEM_LIST_LENGTH"]
        rows, inclusive = label_rows(timeline, spec)
        has = rows >= 0
        classes = None
        labels = timeline.items[np.maximum(rows, 0)]
        if not spec.is_link:
            labels, classes = class_labels(ds, timeline, spec, np.maximum(rows, 0))
            has &= labels >= 0
        ends = rows + 1 if inclusive else rows  # the input ends right before the label (profiles: with it)
        summary = {"task": spec.name, "kind": spec.kind, "labelled users": int(has.sum())}
        loaders = []
        for phase in ("train", "valid", "test"):
            u_idx = np.flatnonzero(has & np.isin(timeline.users, self.split[phase]))
            seq, length = timeline.sequences(u_idx, ends[u_idx], n)
            fields = {
                ds.uid_field: torch.as_tensor(timeline.users[u_idx]),
                self._template.item_id_list_field: torch.as_tensor(seq),
                self._template.item_list_length_field: torch.as_tensor(length),
                ds.iid_field: torch.as_tensor(labels[u_idx] if spec.is_link else np.zeros(len(u_idx), dtype=np.int64)),
            }
            if not spec.is_link:
                fields[self.config["LABEL_FIELD"]] = torch.as_tensor(labels[u_idx], dtype=torch.long)
            keep = length > 0
            loaders.append(self._template.copy(Interaction(fields)[torch.as_tensor(keep)]))
            summary[phase] = int(keep.sum())
        if summary["labelled users"] == 0:
            raise PCLError(f"task '{spec.name}': no labelled users (check its label rule against the data)")
        empty = [phase for phase in ("train", "valid", "test") if summary[phase] == 0]
        if empty:
            raise PCLError(
                f"task '{spec.name}': the user split leaves no {' and no '.join(empty)} users "
                f"({summary['labelled users']} labelled users, task_split={list(self.config['task_split'])})"
            )
        summary["labels"] = (
            len(np.unique(labels[has])) if spec.is_link else f"{len(np.unique(labels[has]))}/{len(classes)} classes"
        )
        tc = task_config(self.config, spec)
        return TaskData(spec, index, *build_dataloaders(tc, self._template, loaders), tc, classes, summary)

    def latest_histories(self, user_ids):
        """Interaction with each user's latest ``MAX_ITEM_LIST_LENGTH`` items (all of their history),
        the input a served model sees. ``user_ids`` are RecBole's internal ids."""
        users = self.timeline.users
        user_index = np.searchsorted(users, user_ids)
        if (user_index >= len(users)).any() or (users[np.minimum(user_index, len(users) - 1)] != user_ids).any():
            raise PCLError("some users have no interactions in this dataset")
        seq, length = self.timeline.latest(user_index, self.config["MAX_ITEM_LIST_LENGTH"])
        return Interaction(
            {
                self.dataset.uid_field: torch.as_tensor(np.asarray(user_ids)),
                self._template.item_id_list_field: torch.as_tensor(seq),
                self._template.item_list_length_field: torch.as_tensor(length),
            }
        )

    def summary_rows(self):
        return [{"task": t.spec.name, **t.summary} for t in self.tasks]

    def summary_table(self):
        ds, config = self.dataset, self.config
        split = (
            f"task_split={config['task_split']}"
            if config["fold"] is None
            else f"fold {config['fold']} of {config['n_folds']}"
        )
        head = (
            f"{config['dataset']}: {ds.user_num - 1} users, {ds.item_num - 1} items, "
            f"{len(self.timeline.inter)} interactions; label_window={config['label_window']}, {split}, "
            f"eval={config['task_eval_mode']} (T1 rows are RecBole's prefix samples)"
        )
        return head + "\n" + tabulate(self.summary_rows(), headers="keys", tablefmt="github")


def check_fields(config, ds, specs):
    """Every field a task reads exists in the file it reads it from, with a type it can use."""
    base = os.path.join(config["data_path"], config["dataset"])
    tables = {"inter": ds.inter_feat, "item": ds.item_feat, "user": ds.user_feat}
    for spec in specs:
        needs = []
        if spec.source == "next_item" and spec.field:
            needs.append(("inter", spec.field))
        if spec.source == "next_item_field":
            needs.append(("item", spec.field))
        if spec.source == "user_field":
            needs.append(("user", spec.field))
        if spec.attribute:
            needs.append(("item", spec.attribute))
        for suffix, fld in needs:
            table = tables[suffix]
            if table is None or fld not in table.columns:
                raise PCLError(f"task '{spec.name}': label field '{fld}' not found in {base}.{suffix}")
            if (
                suffix != "inter"
                and ds.field2type[fld] not in (FeatureType.TOKEN, FeatureType.TOKEN_SEQ)
                and not (spec.bins and ds.field2type[fld] == FeatureType.FLOAT)
            ):
                raise PCLError(
                    f"task '{spec.name}': field '{fld}' in {base}.{suffix} must be a token (or float with bins)"
                )


def t1_fold(config):
    """The fold whose own T1 pretraining this run uses (``fold_pretraining``), or None when T1 is one
    stage shared by every fold (or no fold is set)."""
    return config["fold"] if config["fold"] is not None and config["fold_pretraining"] else None


def split_users(config, users):
    """Labelled ``users`` into train/valid/test: by ``task_split``, or (``fold`` set) fold ``fold`` of
    ``n_folds`` as the test set and validation users drawn from the other folds (the valid share of
    ``task_split``, drawn for each fold on its own), so that over all folds every labelled user is
    tested exactly once and no fold validates on another's users by construction."""
    ratios = np.asarray(config["task_split"], dtype=float)
    users = users[np.random.default_rng(config["seed"]).permutation(len(users))]
    if config["fold"] is None:
        cuts = np.floor(np.cumsum(ratios / ratios.sum())[:2] * len(users)).astype(int)
        return dict(zip(("train", "valid", "test"), np.split(users, cuts)))
    folds = np.array_split(users, config["n_folds"])
    rest = np.concatenate([f for i, f in enumerate(folds) if i != config["fold"]])
    rest = rest[np.random.default_rng([config["seed"], config["fold"]]).permutation(len(rest))]
    n_valid = int(round(len(rest) * ratios[1] / (ratios[0] + ratios[1])))
    return {"train": rest[n_valid:], "valid": rest[:n_valid], "test": folds[config["fold"]]}


def _users_rows(dataset, users, inside):
    """``dataset`` (built, RecBole's) with only the rows of ``users`` (``inside``) or of the others."""
    rows = np.isin(dataset.inter_feat[dataset.uid_field].numpy(), users)
    return dataset.copy(dataset.inter_feat[torch.as_tensor(rows if inside else ~rows)])
