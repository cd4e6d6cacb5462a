"""The results of a continual run: results.json/.csv/.md and results.png in its directory, and the log."""

import csv
import json
import os
from logging import getLogger

import numpy as np
from recbole.utils import set_color
from tabulate import tabulate

from recbole_pcl.data.tasks import main_metric
from recbole_pcl.utils.checkpoint import atomic_path, atomic_write_text
from recbole_pcl.utils.plots import new_figure, save_figure


def report_rows(tasks, records, final, references, config, sequential=True):
    """One row per task: final metrics, parameters and time of its stage, the metric right after its
    stage, BWT and FWT in % (TERACON §5; continual methods only)."""
    rows = []
    for task, record in zip(tasks, records):
        if "not_applicable" in record:  # the method has no model of this task: no metric, the reason
            rows.append({"task": task.spec.name, "kind": task.spec.kind, "not_applicable": record["not_applicable"]})
            continue
        metric = main_metric(task.spec.kind, config)
        after, end = record["test"][metric], final[task.spec.name][metric]
        ref = references.get(task.spec.name, {}).get(metric)
        rows.append(
            {
                "task": task.spec.name,
                "kind": task.spec.kind,
                **{k: round(v, 4) for k, v in final[task.spec.name].items()},
                "trainable_params": record["trainable_params"],
                "seconds": record["seconds"],
                "after_stage": round(after, 4),
                "BWT%": round((end - after) / after * 100, 2) if sequential and task.index > 0 and after else None,
                "FWT%": round((after - ref) / ref * 100, 2) if ref else None,
            }
        )
    return rows


def write_csv(path, rows):
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_report(run_dir, config, tasks, records, final, references, summary):
    """results.csv, .png, .md, then results.json (written last: it marks the run finished)."""
    rows = report_rows(tasks, records, final, references, config, summary["strategy"] == "sequential")
    write_csv(os.path.join(run_dir, "results.csv"), rows)
    plot(os.path.join(run_dir, "results.png"), config, tasks, rows, references)
    table = tabulate(rows, headers="keys", tablefmt="github")
    atomic_write_text(os.path.join(run_dir, "results.md"), table + "\n")
    result = {
        "run_dir": run_dir,
        "summary": summary,
        "tasks": rows,
        "final": final,
        "stages": records,
        "references": references,
        "table": table,
    }
    atomic_write_text(os.path.join(run_dir, "results.json"), json.dumps(result, indent=2))
    getLogger().info(set_color("Continual results", "yellow") + f" ({run_dir}):\n{table}")
    return result


def plot(path, config, tasks, rows, references):
    """Each task's main metric right after its stage, at the end, and learned alone."""
    names = [r["task"] for r in rows]
    metrics = [main_metric(t.spec.kind, config) for t in tasks]
    series = {  # a task the method has no model of ("n/a") has no bar
        "after its stage": [r.get("after_stage", np.nan) for r in rows],
        "final model": [r.get(m, np.nan) for r, m in zip(rows, metrics)],
    }
    if references:
        series["alone, from scratch"] = [references.get(n, {}).get(m, 0.0) for n, m in zip(names, metrics)]
    fig, (ax,) = new_figure(1.6 + 1.4 * len(names), 3.6)
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(names))], values, width, label=label)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(names))])
    ax.set_xticklabels([f"{n}\n({m})" for n, m in zip(names, metrics)], fontsize=8)
    ax.set_title(f"{config['model']} on {config['dataset']}")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=100)
