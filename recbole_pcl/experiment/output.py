"""What a comparison writes: compare.json (everything), compare.csv (one row per method, task and
metric), compare.md (the tables) and compare.png (each task's main metric with its interval)."""

import json
import os

import numpy as np

from recbole_pcl.experiment.tables import (
    columns_of,
    comparison_markdown,
    curves_file,
    fold_caption,
    statistic,
    table_metrics,
    validation_curves,
)
from recbole_pcl.pipeline.report import write_csv
from recbole_pcl.utils.checkpoint import atomic_write_text, describe_os_error
from recbole_pcl.utils.errors import PCLError
from recbole_pcl.utils.plots import new_figure, save_figure

OUTPUTS = ("compare.json", "compare.csv", "compare.md", "compare.png")


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
    atomic_write_text(os.path.join(out, "compare.json"), json.dumps(comparison, indent=1))
    write_page(out, comparison, specs)


def write_page(out, comparison, specs=None):
    """compare.md and compare.png of ``comparison`` (rendered from its content alone); the page's path."""
    page = os.path.join(out, "compare.md")
    atomic_write_text(page, comparison_markdown(comparison))
    plot(os.path.join(out, "compare.png"), comparison, specs or columns_of(comparison))
    for label, curves in validation_curves(comparison).items():
        plot_curves(os.path.join(out, curves_file(label)), label, curves)
    return page


def write_experiment_page(out, name, rendered):
    """<name>.md and <name>.png of an experiment from what its page function rendered (markdown,
    figure; no figure: the result holds nothing to draw and the .png is left as it is); the page's path."""
    markdown, figure = rendered
    page = os.path.join(out, f"{name}.md")
    atomic_write_text(page, markdown)
    if figure is not None:
        save_figure(figure, os.path.join(out, f"{name}.png"))
    return page


def plot_curves(path, label, curves):
    """One panel per task: the validation metric after each validation, one line per fold."""
    tasks = list(next(iter(curves.values())))
    fig, axes = new_figure(3.0 * len(tasks), 2.8, len(tasks))
    for ax, task in zip(axes, tasks):
        for fold, history in curves.items():
            ax.plot(range(1, len(history[task]) + 1), history[task], marker=".", label=f"fold {fold}")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("validation", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{label}: validation metric per validation (each stage's own, continual methods)", fontsize=9)
    save_figure(fig, path, dpi=90)


def plot(path, comparison, specs):
    """One panel per task: each method's main metric with its 95 % interval."""
    methods = comparison["methods"]
    if not methods:
        return
    fig, axes = new_figure(3.2 * len(specs), 3.4, len(specs))
    for ax, spec in zip(axes, specs):
        metric = table_metrics(spec)[-1]
        # a method with no model of the task ("n/a") has no bar
        stats = [m["tasks"][spec.name].get(metric, {"mean": np.nan, "ci95": 0.0}) for m in methods]
        means, errors = [s["mean"] for s in stats], [s["ci95"] for s in stats]
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
