"""A comparison in markdown: Table 1 of the PCL paper (mean ± 95 % interval over folds), the paired
differences to the reference method, backward/forward transfer, and the sentences that compare
methods, each derived from a paired 95 % interval (one that excludes 0 is "better" or "worse", one that
includes it "level"): nothing on a results page is typed by hand."""

from dataclasses import dataclass

import numpy as np
from tabulate import tabulate


@dataclass(frozen=True)
class Column:
    """A task as the tables need it (a comparison file keeps its metrics, not its spec)."""

    name: str
    kind: str


def column_name(task, metric):
    return f"{task} {'ACC' if metric == 'accuracy' else metric.upper().replace('HIT', 'HR')}"


def table_metrics(spec):
    """The columns of a task in Table 1: HR@5 and HR@10 (link tasks) or accuracy (class tasks)."""
    return ["accuracy"] if spec.kind == "class" else ["hit@5", "hit@10"]


def fold_caption(comparison):
    """'5 folds', or 'folds 0, 1 of 5' for a partial comparison."""
    if comparison["folds"] == comparison["n_folds"]:
        return f"{comparison['folds']} folds"
    return f"fold{'s' if comparison['folds'] > 1 else ''} {', '.join(map(str, comparison['fold_indices']))} of {comparison['n_folds']}"


def statistic(comparison):
    return "mean ± 95 % interval over folds" if comparison["folds"] > 1 else "one fold, so no intervals"


NOT_APPLICABLE = "n/a"


def _cell(stat, bold=False):
    # one fold has no interval: show the value alone rather than a misleading "± 0"
    text = f"{stat['mean']:.4f} ± {stat['ci95']:.4f}" if len(stat["folds"]) > 1 else f"{stat['mean']:.4f}"
    return f"**{text}**" if bold else text


def not_applicable(method, task):
    """Why ``method`` (a comparison row) has no model of ``task``, or None."""
    return method.get("not_applicable", {}).get(task)


def _stat_cell(method, task, metric, bold=False, missing="-"):
    if not_applicable(method, task):
        return NOT_APPLICABLE
    stat = method["tasks"][task].get(metric)
    return missing if stat is None else _cell(stat, bold)


def notes(methods):
    """The table's notes: one line per method and task it has no model of, saying why."""
    return [
        f"- {NOT_APPLICABLE}: {m['method']} on {task}: {why}"
        for m in methods
        for task, why in m.get("not_applicable", {}).items()
    ]


def table(methods, specs):
    """Markdown laid out like the PCL paper's Table 1; the best single-objective method per column
    bold; "n/a" where a method has no model of the task (why: :func:`notes`)."""
    columns = [(spec.name, metric) for spec in specs for metric in table_metrics(spec)]
    single = [m for m in methods if m["F"] == 1]
    best = {}
    for t, k in columns:
        scored = [m for m in single if k in m["tasks"][t]]
        if scored:
            best[t, k] = max(scored, key=lambda m: m["tasks"][t][k]["mean"])["method"]
    rows = []
    for m in methods:
        cells = [_stat_cell(m, t, k, best.get((t, k)) == m["method"]) for t, k in columns]
        params = [p for p, spec in zip(m["trainable_params"], specs) if not not_applicable(m, spec.name)]
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
                NOT_APPLICABLE
                if not_applicable(m, t)
                else _cell(m["tasks"][t][k]["minus_reference"])
                if "minus_reference" in m["tasks"][t].get(k, {})
                else "-"
                for t, k in columns
            ],
        ]
        for m in methods
        if m["method"] != reference
    ]
    if not rows or all(c in ("-", NOT_APPLICABLE) for r in rows for c in r[1:]):
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


def columns_of(comparison):
    """The tasks of a comparison file as the tables need them (a file keeps metrics, not specs)."""
    return columns_of_rows(comparison["methods"])


def columns_of_rows(methods):
    """The tasks of comparison rows, each a class task where some row has its accuracy (a row may
    have no model of a task: "n/a")."""
    names = list(methods[0]["tasks"]) if methods else []
    return [Column(n, "class" if any("accuracy" in m["tasks"][n] for m in methods) else "link") for n in names]


def main_columns(comparison):
    """``(task, metric)`` of each task's main column: HR@10 (link tasks) or accuracy (class tasks)."""
    return [(column.name, table_metrics(column)[-1]) for column in columns_of(comparison)]


def _difference(stat):
    diff = stat["minus_reference"]
    return f"{0.0 - diff['mean']:+.4f} ± {diff['ci95']:.4f}".replace("-0.0000 ", "+0.0000 ")  # reference − method


def _side(stat):
    """+1 when the reference is better (the paired interval of reference − method is above 0), -1 when
    worse, 0 when the interval includes 0 (level)."""
    diff = stat["minus_reference"]
    if len(diff.get("folds", (0, 0))) < 2:  # files of older versions keep no paired folds
        return 0  # one fold has no interval: no claim
    if -diff["mean"] - diff["ci95"] > 0:
        return 1
    if -diff["mean"] + diff["ci95"] < 0:
        return -1
    return 0


def verdicts(comparison):
    """One sentence per compared method: on which main columns the reference is better, level or
    worse, with the paired difference (reference − method, mean ± 95 % interval over folds)."""
    reference, columns = comparison["reference"], main_columns(comparison)
    lines = []
    for m in comparison["methods"]:
        if m["method"] == reference:
            continue
        sides = {-1: [], 0: [], 1: []}
        for task, metric in columns:
            stat = m["tasks"][task].get(metric)
            if stat is not None and "minus_reference" in stat:
                sides[_side(stat)].append(f"{column_name(task, metric)} {_difference(stat)}")
        parts = [
            f"{word} on {', '.join(cells)}"
            for word, cells in (("better", sides[1]), ("level", sides[0]), ("worse", sides[-1]))
            if cells
        ]
        lines.append(f"- {reference} vs {m['method']}: {'; '.join(parts)}.")
    return lines


def headline(comparison):
    """One sentence: which methods the reference beats (better on some main column, worse on none),
    ties with (no difference), loses to (worse on some, better on none) or is mixed against, with the
    paired intervals of the columns where it is worse."""
    reference, columns = comparison["reference"], main_columns(comparison)
    groups = {"beats": [], "ties with": [], "loses to": [], "is mixed against": []}
    for m in comparison["methods"]:
        if m["method"] == reference:
            continue
        stats = {(t, k): m["tasks"][t][k] for t, k in columns if "minus_reference" in m["tasks"][t].get(k, {})}
        sides = {_side(stat) for stat in stats.values()}
        if {1, -1} <= sides:
            key = "is mixed against"
        else:
            key = "beats" if 1 in sides else "loses to" if -1 in sides else "ties with"
        worse = [f"{column_name(*c)} {_difference(s)}" for c, s in stats.items() if _side(s) == -1]
        groups[key].append(f"{m['method']} ({', '.join(worse)})" if worse else m["method"])
    said = [f"{verb} {', '.join(names)}" for verb, names in groups.items() if names]
    return (
        f"On {comparison['dataset']} ({fold_caption(comparison)}, paired 95 % intervals of each task's main "
        f"metric), {reference} {'; '.join(said) if said else 'is compared with no other method'}."
    )


def validation_curves(comparison):
    """``{method: {fold: {task: curve}}}`` of the reported (chosen) runs that recorded their curves."""
    curves = {}
    for key, run in (comparison.get("runs") or {}).items():
        label, fold = key.rsplit("/fold-", 1)
        if isinstance(run, dict) and run.get("valid_history") and label in {m["method"] for m in comparison["methods"]}:
            curves.setdefault(label, {})[fold] = run["valid_history"]
    return curves


def curves_file(label):
    """The file of a method's validation curves, beside the page."""
    return "curves-" + "".join(c if c.isalnum() else "_" for c in label) + ".png"


def tuning_table(comparison):
    """Per method and fold, the trial its tuning chose, its settings and validation score ("" when
    the comparison did not tune)."""
    tuning = comparison.get("tuning") or {}
    if not tuning.get("trials"):
        return ""
    rows = []
    for label, method in tuning["methods"].items():
        for fold, index in method["chosen"].items():
            settings = method["trials"][index]
            score = method["scores"][fold][index]
            described = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items())
            rows.append(
                [
                    label,
                    fold,
                    f"{index + 1} of {len(method['trials'])}",
                    described or "defaults",
                    "-" if score is None else f"{score:.4f}",
                ]
            )
    return tabulate(
        rows,
        headers=["method", "fold", "chosen trial", "settings", "valid score"],
        tablefmt="github",
        disable_numparse=True,
    )


def comparison_markdown(comparison):
    """The page of a comparison, from its compare.json content."""
    text = f"{comparison['dataset']}, {fold_caption(comparison)}: {statistic(comparison)}\n\n{comparison['table']}\n"
    if notes(comparison["methods"]):
        text += "\n" + "\n".join(notes(comparison["methods"])) + "\n"
    if comparison["methods"] and comparison["folds"] > 1:
        text += f"\n{headline(comparison)}\n\n" + "\n".join(verdicts(comparison)) + "\n"
    if comparison["differences"]:
        text += (
            f"\nPaired difference to {comparison['reference']} (per fold), mean ± 95 % interval\n\n"
            f"{comparison['differences']}\n"
        )
    if comparison.get("transfer"):
        text += f"\nBackward and forward transfer (%, TERACON §5; FWT against each task learned alone)\n\n{comparison['transfer']}\n"
    if tuning_table(comparison):
        text += (
            f"\nTuning: {comparison['tuning']['trials']} trials per method and fold (the first on the method's "
            f"defaults, the others drawn from its tune_space); each fold keeps the trial with the best mean "
            f"validation metric over the tasks, measured on the fold's validation users (never its test users)\n\n"
            f"{tuning_table(comparison)}\n"
        )
    if comparison["failures"]:
        text += "\nFailed runs (their methods are left out):\n\n" + "".join(
            f"- {k}: {e}\n" for k, e in comparison["failures"].items()
        )
    if comparison["methods"]:
        text += f"\n![{comparison['dataset']}](compare.png)\n"
    curves = validation_curves(comparison)
    if curves:
        text += (
            "\nValidation curves of every reported run: "
            + ", ".join(f"[{label}]({curves_file(label)})" for label in curves)
            + "\n"
        )
    return text
