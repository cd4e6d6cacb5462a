"""The tables of a comparison, in markdown: Table 1 of the PCL paper (mean ± 95 % interval over
folds), the paired differences to the reference method, and backward/forward transfer."""

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
