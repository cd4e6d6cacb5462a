"""Methods compared on the same task data over k user folds (the PCL paper's Table 1, with intervals).

The labelled downstream users are split into ``n_folds`` folds (seeded); each fold is the test set once
and validation users are drawn from the other folds, so every labelled user is tested exactly once.
Each (method, fold) is an ordinary run of :class:`~recbole_pcl.pipeline.TaskPipeline` with ``fold``
set, a job of :mod:`.runner` (on Ray by default): finished runs are reused under the run-identity
rules, and T1 pretraining, which does not depend on the downstream split, is one stage shared by every
fold and every method that starts from it. Every metric is reported as the mean over folds with a 95 %
t-interval, and as the paired difference to PCL (per fold) with its interval.

    python run_recbole_pcl.py --model=PCL,SASRecPerTask,FineAll --dataset=ml-100k [--n_folds=5]
"""

import json
import os
import time
from dataclasses import dataclass, field
from logging import getLogger

import numpy as np
from recbole.utils import init_logger, set_color
from scipy import stats
from tabulate import tabulate

from recbole_pcl.config import Config
from recbole_pcl.experiment.runner import Job, failures, run_jobs, runner_settings
from recbole_pcl.pipeline.identity import digest
from recbole_pcl.pipeline.pipeline import require_task_method
from recbole_pcl.pipeline.report import write_csv
from recbole_pcl.utils.checkpoint import atomic_write_text, describe_os_error, read_json
from recbole_pcl.utils.errors import PCLError
from recbole_pcl.utils.plots import new_figure, save_figure
from recbole_pcl.utils.utils import get_model


@dataclass(frozen=True)
class Method:
    """A row of the comparison: ``model`` with ``settings`` on top of the shared configuration."""

    label: str
    model: str
    settings: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, spec):
        """A model name, or a mapping ``{label, model, <setting>: <value>...}`` (experiment yaml files)."""
        if isinstance(spec, Method):
            return spec
        if isinstance(spec, str):
            return cls(_model_label(spec), spec)
        if not isinstance(spec, dict) or "model" not in spec:
            raise PCLError(f"a compared method is a model name or a mapping with 'model' (and 'label'), got {spec!r}")
        settings = {k: v for k, v in spec.items() if k not in ("label", "model")}
        return cls(spec.get("label") or _model_label(spec["model"]), spec["model"], settings)


def _model_label(model):
    try:
        return require_task_method(get_model(model)).label()
    except PCLError as e:
        raise PCLError(f"method '{model}': {e}") from None


def interval(values):
    """``(mean, half-width of the 95 % t-interval)`` of ``values`` (half-width 0 for one value)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), 0.0
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def column_name(task, metric):
    return f"{task} {'ACC' if metric == 'accuracy' else metric.upper().replace('HIT', 'HR')}"


def table_metrics(spec):
    """The columns of a task in Table 1: HR@5 and HR@10 (link tasks) or accuracy (class tasks)."""
    return ["accuracy"] if spec.kind == "class" else ["hit@5", "hit@10"]


def run_comparison(methods, dataset, config_file_list=None, config_dict=None, cmd_args=None, name="compare"):
    """Run every method of ``methods`` (model names or :class:`Method` specs) on every fold of
    ``dataset``; returns the comparison dict and writes compare.json/.csv/.md/.png into
    ``<checkpoint_dir>/<name>-<dataset>-<hash>/``. Every method's model and settings are checked
    before anything trains (a :class:`PCLError` names the method). A failed (method, fold) run is
    reported in ``failures`` and its method left out of the table; the other runs' results are kept.
    When every run fails, a :class:`PCLError` names the first failure."""
    methods = list({m.label: m for m in map(Method.parse, methods)}.values())
    if any(str(a).startswith("--fold=") for a in cmd_args or []) or "fold" in (config_dict or {}):
        raise PCLError("a comparison runs every fold itself: do not set 'fold' (set n_folds)")
    base = Config(methods[0].model, dataset, config_file_list, config_dict, cmd_args)
    init_logger(base)
    logger = getLogger()
    folds = compared_folds(base)
    jobs = [
        Job(
            f"{m.label}/fold-{f}",
            m.model,
            dataset,
            list(config_file_list or []),
            dict(config_dict or {}, **m.settings, fold=f),
            list(cmd_args or []),
        )
        for f in folds
        for m in methods
    ]
    pipelines = {}
    for job in jobs:  # every model and setting is checked before anything trains
        try:
            pipelines[job.key] = job.pipeline()
        except PCLError as e:
            raise PCLError(f"method '{job.key.rsplit('/', 1)[0]}': {e}") from None
    runs = {k: digest(p.identity.run()) for k, p in pipelines.items()}  # each (method, fold) run's identity
    out = os.path.join(base["checkpoint_dir"], f"{name}-{dataset}-{digest(list(runs.items()))[:8]}")
    start = time.time()
    outcomes = run_jobs(jobs, **runner_settings(base))
    failed = failures(outcomes)
    if len(failed) == len(jobs):
        first = next(iter(failed))
        raise PCLError(f"every run of the comparison failed; the first, {first}: {failed[first]}")
    complete = [m for m in methods if all(outcomes[f"{m.label}/fold-{f}"]["ok"] for f in folds)]
    results = {(m.label, f): outcomes[f"{m.label}/fold-{f}"]["result"] for m in complete for f in folds}
    specs = next(iter(pipelines.values())).specs
    comparison = (
        summarise(complete, folds, specs, results, base["compare_reference"])
        if complete
        else {"methods": [], "table": "", "differences": ""}
    )
    comparison.update(
        dataset=dataset,
        folds=len(folds),
        n_folds=base["n_folds"],
        fold_indices=folds,
        seconds=round(time.time() - start, 1),
        directory=out,
        failures=failed,
        runs=runs,
        shared=shared_identity(pipelines.values()),
    )
    write_comparison(out, comparison, specs)
    logger.info(set_color("Comparison", "yellow") + f" ({out}):\n{comparison['table']}")
    return comparison


def shared_identity(pipelines):
    """What every run of a comparison shares: the data files, the task sequence and the T1
    pretraining stage of the methods that start from it. Two comparisons with no method in common
    merge only when this agrees (:func:`merge_comparisons`)."""
    pipelines = list(pipelines)
    identity = pipelines[0].identity
    pretraining = sorted({p.stage0_digest() for p in pipelines if p.model_class.pretraining})
    return {"data": identity.data, "tasks": identity.tasks, "pretraining": pretraining}


def compared_folds(config):
    """The folds a comparison runs: every fold of ``n_folds``, or the ``compare_folds`` subset (to
    spread one comparison over machines or sessions; a later call with every fold reuses their runs)."""
    folds = config["compare_folds"]  # checked against n_folds when the settings were loaded
    return list(range(config["n_folds"])) if folds is None else sorted(set(folds))


def fold_caption(comparison):
    """'5 folds', or 'folds 0, 1 of 5' for a partial comparison."""
    if comparison["folds"] == comparison["n_folds"]:
        return f"{comparison['folds']} folds"
    return f"fold{'s' if comparison['folds'] > 1 else ''} {', '.join(map(str, comparison['fold_indices']))} of {comparison['n_folds']}"


def summarise(compared, folds, specs, results, reference=None):
    """Per method and task: every metric's mean and interval over folds, and the paired difference to
    the method labelled ``reference`` (``compare_reference``; the first method when absent)."""
    labels = [m.label for m in compared]
    reference = reference if reference in labels else labels[0]
    methods = []
    for method in compared:
        m = method.label
        runs = [results[m, f] for f in folds]
        summary = runs[0]["summary"]
        row = {
            "model": method.model,
            "method": m,
            "settings": method.settings,
            "strategy": summary["strategy"],
            "B": summary["backbones_kept"],
            "F": summary["tasks_optimised_jointly"],
            "tasks": {},
        }
        row["trainable_params"] = [r["trainable_params"] for r in runs[0]["stages"]]
        # where the numbers were computed (float rounding depends on it; see numeric_environment)
        row["environments"] = [
            json.loads(e)
            for e in sorted(
                {
                    json.dumps(r["environment"], sort_keys=True)
                    for run in runs
                    for r in run["stages"]
                    if "environment" in r
                }
            )
        ]
        row["seconds"] = list(
            interval(
                [
                    sum(r["seconds"] for r in run["stages"])
                    / (1 if summary["strategy"] == "sequential" else len(run["stages"]))
                    for run in runs
                ]
            )
        )
        for index, spec in enumerate(specs):
            task = {}
            for metric in list(runs[0]["final"][spec.name]) + ["BWT%", "FWT%"]:
                values = [
                    run["final"][spec.name].get(metric)
                    if metric in run["final"][spec.name]
                    else run["tasks"][index].get(metric)
                    for run in runs
                ]
                if any(v is None for v in values):
                    continue
                mean, half = interval(values)
                task[metric] = {"mean": mean, "ci95": half, "folds": values}
            row["tasks"][spec.name] = task
        methods.append(row)
    return comparison_of(methods, specs, reference)


def comparison_of(methods, specs, reference):
    """The paired differences of every method to ``reference`` (fold by fold), and the tables."""
    ref = next(m for m in methods if m["method"] == reference)
    for m in methods:
        for name, task in m["tasks"].items():
            for metric, stat in task.items():
                stat.pop("minus_reference", None)
                base = ref["tasks"][name].get(metric)
                if m is not ref and base is not None:
                    paired = np.asarray(stat["folds"]) - np.asarray(base["folds"])
                    diff = interval(paired)
                    stat["minus_reference"] = {"mean": diff[0], "ci95": diff[1], "folds": paired.tolist()}
    return {
        "methods": methods,
        "reference": reference,
        "table": table(methods, specs),
        "differences": differences_table(methods, specs, reference),
        "transfer": transfer_table(methods, specs),
    }


def _cell(stat, bold=False):
    # one fold has no interval: show the value alone rather than a misleading "± 0"
    text = f"{stat['mean']:.4f} ± {stat['ci95']:.4f}" if len(stat["folds"]) > 1 else f"{stat['mean']:.4f}"
    return f"**{text}**" if bold else text


def table(methods, specs):
    """Markdown laid out like the PCL paper's Table 1; the best single-objective method per column bold."""
    columns = [(spec.name, metric) for spec in specs for metric in table_metrics(spec)]
    single = [m for m in methods if m["F"] == 1]
    best = {c: max(single, key=lambda m: m["tasks"][c[0]][c[1]]["mean"])["method"] for c in columns} if single else {}
    rows = []
    for m in methods:
        cells = [_cell(m["tasks"][t][k], best.get((t, k)) == m["method"]) for t, k in columns]
        params = m["trainable_params"]
        downstream = f"{int(np.mean(params[1:])):,}" if len(params) > 1 else "-"
        rows.append([m["method"], *cells, m["B"], m["F"], f"{params[0]:,} / {downstream}", f"{m['seconds'][0]:.0f}"])
    headers = [
        "method",
        *[column_name(t, k) for t, k in columns],
        "#B",
        "#F",
        "trainable params (T1 / task)",
        "train s",
    ]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def differences_table(methods, specs, reference):
    """Each method minus the reference, paired per fold: mean ± 95 % interval (off 0: a difference)."""
    columns = [(spec.name, metric) for spec in specs for metric in table_metrics(spec)]
    rows = [
        [
            m["method"],
            *[
                _cell(m["tasks"][t][k]["minus_reference"]) if "minus_reference" in m["tasks"][t][k] else "-"
                for t, k in columns
            ],
        ]
        for m in methods
        if m["method"] != reference
    ]
    if not rows or all(c == "-" for r in rows for c in r[1:]):
        return ""
    return tabulate(
        rows,
        headers=[f"minus {reference}", *[column_name(t, k) for t, k in columns]],
        tablefmt="github",
        disable_numparse=True,
    )


def transfer_table(methods, specs):
    """BWT and FWT (TERACON §5, in %) of the continual methods per downstream task, mean ± interval."""
    rows = []
    for m in methods:
        cells = [
            _cell(m["tasks"][s.name][k]) if k in m["tasks"][s.name] else "-"
            for s in specs[1:]
            for k in ("BWT%", "FWT%")
        ]
        if any(c != "-" for c in cells):
            rows.append([m["method"], *cells])
    headers = ["method", *[f"{s.name} {k[:3]}" for s in specs[1:] for k in ("BWT%", "FWT%")]]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True) if rows else ""


@dataclass(frozen=True)
class Column:
    """A task as the tables need it (a comparison file keeps its metrics, not its spec)."""

    name: str
    kind: str


def merge_comparisons(paths, out):
    """One comparison from ``compare.json`` files of comparisons run apart (on other machines, or in
    sessions that did not share their runs), written to ``out`` like any comparison.

    They must cover the same dataset, folds and tasks. Every mean and interval is recomputed from the
    fold values, and a file whose stored mean disagrees with its folds is refused. A method found in
    several files must agree in every value of every fold (and in its runs' identities, where the
    files record them): the method shared by both, usually PCL, checks that the two comparisons were
    made on the same data and settings; files that share no method merge only when their data, tasks
    and T1 pretraining agree (``shared``). ``out`` is never an input's folder, nor a folder or file
    holding anything but an earlier merge. Paired differences are recomputed against the reference
    method (PCL)."""
    out = _merge_target(paths, out)
    first, columns, methods, runs, failed, seconds = None, None, {}, {}, {}, 0.0
    source = {}  # where each method and each run was first found
    for path in paths:
        comparison = _read_comparison(path)
        first = first or (path, comparison)
        for key in ("dataset", "n_folds", "fold_indices"):
            if comparison[key] != first[1][key]:
                raise PCLError(
                    f"{path} has {key} {comparison[key]!r} but {first[0]} has {first[1][key]!r}: only comparisons of the same folds merge"
                )
        labels = {row["method"] for row in comparison["methods"]}
        if methods and not labels & set(methods):
            _check_shared(path, comparison, first)
        for key, identity in comparison.get("runs", {}).items():
            if runs.setdefault(key, identity) != identity:
                raise PCLError(f"{path}: run {key} has another identity than in {source[key]} (other settings or data)")
            source.setdefault(key, path)
        for row in comparison["methods"]:
            label = row["method"]
            _check_means(path, row)
            columns = columns or list(row["tasks"])
            if list(row["tasks"]) != columns:
                raise PCLError(
                    f"{path}: method '{label}' has tasks {list(row['tasks'])}, not {columns} as the first method"
                )
            if label in methods:
                _merge_method(row, methods[label], f"{path}: method '{label}' differs from {source[label]}")
            else:
                methods[label], source[label] = row, path
        failed.update(comparison.get("failures", {}))
        seconds += comparison.get("seconds", 0.0)
    failed = {
        k: e for k, e in failed.items() if k.rsplit("/", 1)[0] not in methods
    }  # a run failed in one, done in another
    rows = list(methods.values())
    if not rows:
        raise PCLError(f"no method in {', '.join(paths)}")
    specs = [Column(t, "class" if "accuracy" in rows[0]["tasks"][t] else "link") for t in columns]
    labels = [r["method"] for r in rows]
    reference = first[1].get("reference")
    merged = comparison_of(rows, specs, reference if reference in labels else labels[0])
    data = first[1]
    merged.update(
        dataset=data["dataset"],
        folds=len(data["fold_indices"]),
        n_folds=data["n_folds"],
        fold_indices=data["fold_indices"],
        seconds=round(seconds, 1),
        directory=out,
        failures=failed,
        runs=runs,
        shared=data.get("shared"),
        merged_from=list(paths),
    )
    write_comparison(out, merged, specs)
    return merged


OUTPUTS = ("compare.json", "compare.csv", "compare.md", "compare.png")


def _merge_target(paths, out):
    """``out`` as a folder a merge may write: not an input's folder, not a file, and holding no
    comparison files but those of an earlier merge (which it replaces)."""
    target = os.path.abspath(out)
    for path in paths:
        if os.path.dirname(os.path.abspath(path)) == target:
            raise PCLError(f"--out {out} is the folder of the input {path}: a merge never writes over its inputs")
    if os.path.exists(target) and not os.path.isdir(target):
        raise PCLError(f"--out {out} is a file: give a folder for the merged comparison")
    existing = [n for n in OUTPUTS if os.path.exists(os.path.join(target, n))]
    if existing:
        written = os.path.join(target, "compare.json")
        earlier = _read_comparison(written) if os.path.isfile(written) else {}
        if "merged_from" not in earlier:
            raise PCLError(
                f"--out {out} holds {', '.join(existing)} of another comparison: a merge only replaces an earlier merge"
            )
    return out


def _check_shared(path, comparison, first):
    """Comparisons with no method in common must show that they ran on the same data, tasks and T1
    pretraining."""
    mine, theirs = comparison.get("shared"), first[1].get("shared")
    if not mine or not theirs or not mine.get("pretraining") or mine != theirs:
        raise PCLError(
            f"{path} shares no method with {first[0]}, and nothing shows they were made on the same data, "
            f"tasks and T1 pretraining ('shared' {'differs' if mine and theirs else 'is not recorded'}): "
            f"they do not merge"
        )


def _check_means(path, row):
    """Every stored mean and interval must be those of the row's fold values."""
    for task, metrics in row["tasks"].items():
        for metric, stat in metrics.items():
            mean, half = interval(stat["folds"])
            if not (
                np.isclose(stat["mean"], mean, rtol=0, atol=1e-9) and np.isclose(stat["ci95"], half, rtol=0, atol=1e-9)
            ):
                raise PCLError(
                    f"{path}: method '{row['method']}' {task} {metric}: the stored mean ± interval "
                    f"{stat['mean']} ± {stat['ci95']} is not that of its folds ({mean} ± {half})"
                )


def _read_comparison(path):
    comparison = read_json(path, "comparison")
    if not isinstance(comparison, dict) or not {"methods", "dataset", "n_folds", "fold_indices"} <= set(comparison):
        raise PCLError(f"{path} is not a compare.json written by a comparison")
    return comparison


def _merge_method(row, seen, where):
    """Check that ``row`` is the method ``seen`` again, and add the metrics only ``row`` has (FWT is
    reported only where the run was asked for it, which does not change its identity)."""
    for key in ("settings", "B", "F", "trainable_params"):
        if row[key] != seen[key]:
            raise PCLError(f"{where} in {key}: {row[key]} vs {seen[key]}")
    for task, metrics in row["tasks"].items():
        for metric, stat in metrics.items():
            known = seen["tasks"][task].setdefault(metric, stat)
            if known["folds"] != stat["folds"]:
                message = f"{where} in {task} {metric}: folds {stat['folds']} vs {known['folds']}"
                if row.get("environments") != seen.get("environments"):  # float rounding differs between them
                    message += f" (computed on {row.get('environments') or 'unrecorded'} vs {seen.get('environments') or 'unrecorded'})"
                raise PCLError(message)


def write_comparison(out, comparison, specs):
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise PCLError(f"cannot write the comparison into {out}: {describe_os_error(e, out)}") from None
    flat = []
    for m in comparison["methods"]:
        for task, metrics in m["tasks"].items():
            for metric, stat in metrics.items():
                diff = stat.get("minus_reference", {})
                flat.append(
                    {
                        "method": m["method"],
                        "task": task,
                        "metric": metric,
                        "mean": round(stat["mean"], 6),
                        "ci95": round(stat["ci95"], 6),
                        "minus_reference": diff.get("mean"),
                        "minus_reference_ci95": diff.get("ci95"),
                        "folds": " ".join(f"{v:.4f}" for v in stat["folds"]),
                    }
                )
    write_csv(os.path.join(out, "compare.csv"), flat)
    text = f"{comparison['dataset']}, {fold_caption(comparison)}: {statistic(comparison)}\n\n{comparison['table']}\n"
    if comparison["differences"]:
        text += f"\nPaired difference to {comparison['reference']} (per fold), mean ± 95 % interval\n\n{comparison['differences']}\n"
    if comparison.get("transfer"):
        text += (
            f"\nBackward and forward transfer (%, TERACON §5; FWT against the SASRec row)\n\n{comparison['transfer']}\n"
        )
    if comparison["failures"]:
        text += "\nFailed runs (their methods are left out):\n\n" + "".join(
            f"- {k}: {e}\n" for k, e in comparison["failures"].items()
        )
    atomic_write_text(os.path.join(out, "compare.md"), text)
    plot(os.path.join(out, "compare.png"), comparison, specs)
    atomic_write_text(os.path.join(out, "compare.json"), json.dumps(comparison, indent=1))


def statistic(comparison):
    return "mean ± 95 % interval over folds" if comparison["folds"] > 1 else "one fold, so no intervals"


def plot(path, comparison, specs):
    """One panel per task: each method's main metric with its 95 % interval."""
    methods = comparison["methods"]
    if not methods:
        return
    fig, axes = new_figure(3.2 * len(specs), 3.4, len(specs))
    for ax, spec in zip(axes, specs):
        metric = table_metrics(spec)[-1]
        means = [m["tasks"][spec.name][metric]["mean"] for m in methods]
        errors = [m["tasks"][spec.name][metric]["ci95"] for m in methods]
        colors = [
            "tab:red" if m["method"] == comparison["reference"] else ("tab:blue" if m["F"] == 1 else "tab:gray")
            for m in methods
        ]
        ax.bar(range(len(methods)), means, yerr=errors if comparison["folds"] > 1 else None, color=colors, capsize=3)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([m["method"] for m in methods], rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{spec.name} ({'HR@10' if metric == 'hit@10' else 'ACC'})", fontsize=9)
    fig.suptitle(
        f"{comparison['dataset']}, {fold_caption(comparison)}: {statistic(comparison)} (grey: joint methods)",
        fontsize=9,
    )
    save_figure(fig, path)
