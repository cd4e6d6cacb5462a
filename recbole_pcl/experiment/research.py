"""The research questions of the PCL paper (§4.3-4.6) as reproducible experiments.

Each writes ``<name>.json``, ``<name>.csv``, ``<name>.md`` and ``<name>.png`` into its own directory
``<checkpoint_dir>/<name>-<dataset>-<hash>/``; its runs are jobs of :mod:`.runner` (Ray by default),
reused when finished. What each experiment runs is read from its definition file
(``properties/experiment/<name>.yaml``): methods, settings, tasks.

* **RQ1** contextual prompts: PCL against w/o P_T and w/o PLM, over folds (a comparison).
* **RQ2** task order: PCL on every order of the downstream tasks, over folds; each task's metric per
  order (Figure 2) and its best-to-worst spread.
* **RQ3** cold-start items: a share of the items kept out of T1 pretraining; the validation metric
  after each epoch of PCL against tuning the cold item embeddings and heads without prompts (Figure 3).
* **RQ4** universal user vectors: user vectors from PCL (prompts tuned on T2, T3), from the pretrained
  backbone alone (SSP) and random (NP), each with one-hot user ids, fed to a one-hidden-layer MLP on
  T4; accuracy and time to converge (Figure 4).
"""

import itertools

import numpy as np
from tabulate import tabulate

from recbole_pcl.data.tasks import main_metric
from recbole_pcl.experiment.compare import Method, run_comparison
from recbole_pcl.experiment.experiment import Experiment
from recbole_pcl.experiment.runner import failures
from recbole_pcl.experiment.statistics import interval
from recbole_pcl.experiment.user_vectors import user_vector_mlp
from recbole_pcl.utils.errors import PCLError
from recbole_pcl.utils.plots import new_figure


# ----- RQ1 ------------------------------------------------------------------------------------------
def rq1(definition, dataset, config_file_list=None, config_dict=None, cmd_args=None):
    config_dict = dict(config_dict or {}, **definition.get("settings", {}))
    return run_comparison(definition["methods"], dataset, config_file_list, config_dict, cmd_args, name="rq1")


# ----- RQ2 ------------------------------------------------------------------------------------------
def rq2(definition, dataset, config_file_list=None, config_dict=None, cmd_args=None):
    exp = Experiment("rq2", definition, dataset, config_file_list, config_dict, cmd_args)
    tasks = exp.enabled_tasks()
    downstream = tasks[1:]
    numbers = {t["name"]: i + 2 for i, t in enumerate(downstream)}  # T2, T3 ... in the dataset's order
    orders = list(itertools.permutations(downstream))
    folds = exp.base["n_folds"]
    jobs = [
        exp.job(
            f"{''.join(str(numbers[t['name']]) for t in order)}/fold-{f}", exp.model, tasks=[tasks[0], *order], fold=f
        )
        for order in orders
        for f in range(folds)
    ]
    out = exp.directory(jobs)
    outcomes, seconds = exp.run(jobs)
    rows, spread = [], {}
    for task in downstream:
        per_order = []
        for order in orders:
            label = "".join(str(numbers[t["name"]]) for t in order)
            values = [_final(outcomes, f"{label}/fold-{f}", task, exp.base) for f in range(folds)]
            if None in values:
                continue
            mean, half = interval(values)
            per_order.append(mean)
            rows.append(
                {
                    "task": task["name"],
                    "T": numbers[task["name"]],
                    "order": label,
                    "metric": main_metric(task["kind"], exp.base),
                    "mean": round(mean, 6),
                    "ci95": round(half, 6),
                    "folds": " ".join(f"{v:.4f}" for v in values),
                }
            )
        if per_order:
            best, worst = max(per_order), min(per_order)
            spread[task["name"]] = {
                "best": best,
                "worst": worst,
                "absolute": best - worst,
                "relative%": (best - worst) / best * 100,
            }
    average = float(np.mean([s["relative%"] for s in spread.values()])) if spread else None
    result = {
        "dataset": dataset,
        "folds": folds,
        "orders": ["".join(str(numbers[t["name"]]) for t in order) for order in orders],
        "rows": rows,
        "spread": spread,
        "average_relative_spread%": average,
        "seconds": seconds,
        "failures": failures(outcomes),
    }
    return exp.write(out, result, rows, rq2_page)


def rq2_page(result):
    """RQ2's page and figure from its result file."""
    orders, rows, spread, average = (
        result["orders"],
        result["rows"],
        result["spread"],
        result["average_relative_spread%"],
    )
    table = tabulate(
        [
            [t, f"{s['best']:.4f}", f"{s['worst']:.4f}", f"{s['absolute']:.4f}", f"{s['relative%']:.2f}%"]
            for t, s in spread.items()
        ],
        headers=["task", "best order", "worst order", "spread", "spread / best"],
        tablefmt="github",
    )
    markdown = (
        f"RQ2, task order: PCL on all {len(orders)} orders of the downstream tasks, {result['folds']} folds each "
        f"(mean over folds; HR@10 for link tasks, accuracy for class tasks).\n\n{table}\n\n"
        f"Average relative spread: {average:.2f}% (the paper reports 1.20%).\n"
        if average is not None
        else "No order finished.\n"
    )
    markdown += _failures(result["failures"])
    fig, (ax,) = new_figure(2 + 0.9 * len(orders), 3.6)
    tasks = sorted({(r["T"], r["task"], r["metric"]) for r in rows})  # the downstream tasks, T2 first
    for number, task, metric in tasks:
        points = {r["order"]: r for r in rows if r["task"] == task}
        xs = [i for i, label in enumerate(orders) if label in points]
        ax.errorbar(
            xs,
            [points[orders[i]]["mean"] for i in xs],
            yerr=[points[orders[i]]["ci95"] for i in xs],
            marker="o",
            capsize=3,
            label=f"T{number} {task} ({metric})",
        )
    ax.set_xticks(range(len(orders)))
    ax.set_xticklabels(orders)
    ax.set_xlabel("order of the downstream tasks")
    ax.set_title(
        f"PCL on {result['dataset']}: each task's metric per task order (95 % intervals over folds)", fontsize=9
    )
    ax.legend(fontsize=7)
    return markdown, fig


def _final(outcomes, key, task, config):
    outcome = outcomes[key]
    if not outcome["ok"]:
        return None
    return outcome["result"]["final"][task["name"]][main_metric(task["kind"], config)]


def _failures(failed):
    return "".join(f"\n- failed: {k}: {e}" for k, e in failed.items()) + ("\n" if failed else "")


# ----- RQ3 ------------------------------------------------------------------------------------------
def rq3(definition, dataset, config_file_list=None, config_dict=None, cmd_args=None):
    exp = Experiment("rq3", definition, dataset, config_file_list, config_dict, cmd_args)
    variants = [Method.parse(v) for v in definition["methods"]]
    folds = exp.base["n_folds"]
    jobs = [exp.job(f"{v.label}/fold-{f}", v.model, fold=f, **v.settings) for v in variants for f in range(folds)]
    out = exp.directory(jobs)
    outcomes, seconds = exp.run(jobs)
    tasks = exp.enabled_tasks()[1:]
    curves, rows = {}, []
    for v in variants:
        for task_index, task in enumerate(tasks, start=1):
            histories = [
                outcomes[f"{v.label}/fold-{f}"]["result"]["stages"][task_index]["valid_history"]
                for f in range(folds)
                if outcomes[f"{v.label}/fold-{f}"]["ok"]
            ]
            if not histories:
                continue
            length = min(len(h) for h in histories)
            curve = np.asarray([h[:length] for h in histories]).mean(0)
            curves[v.label, task["name"]] = curve.tolist()
            finals = [_final(outcomes, f"{v.label}/fold-{f}", task, exp.base) for f in range(folds)]
            finals = [x for x in finals if x is not None]
            mean, half = interval(finals)
            rows.append(
                {
                    "method": v.label,
                    "task": task["name"],
                    "epochs": length,
                    "valid_first_epoch": round(curve[0], 4),
                    "valid_best": round(float(curve.max()), 4),
                    "best_epoch": int(curve.argmax()) + 1,
                    "test_" + main_metric(task["kind"], exp.base): round(mean, 4),
                    "test_ci95": round(half, 4),
                }
            )
    result = {
        "dataset": dataset,
        "folds": folds,
        "cold_item_share": exp.base["cold_item_share"],
        "methods": [v.label for v in variants],
        "tasks": [{"name": t["name"], "kind": t["kind"]} for t in tasks],
        "curves": {f"{k[0]}|{k[1]}": c for k, c in curves.items()},
        "rows": rows,
        "seconds": seconds,
        "failures": failures(outcomes),
    }
    return exp.write(out, result, rows, rq3_page)


def rq3_page(result):
    """RQ3's page and figure from its result file."""
    share, folds, tasks = result["cold_item_share"], result["folds"], result["tasks"]
    markdown = (
        f"RQ3, cold-start items: {share:.0%} of the items kept out of T1 pretraining, {folds} folds. Validation metric "
        f"(NDCG@10 for link tasks, accuracy for class tasks) after each epoch, mean over folds; test metric of the "
        f"best epoch.\n\n{tabulate(result['rows'], headers='keys', tablefmt='github')}\n"
    ) + _failures(result["failures"])
    fig, axes = new_figure(3.4 * len(tasks), 3.2, len(tasks))
    for ax, task in zip(axes, tasks):
        for label in result["methods"]:
            curve = result["curves"].get(f"{label}|{task['name']}")
            if curve is not None:
                ax.plot(range(1, len(curve) + 1), curve, marker=".", label=label)
        ax.set_title(task["name"], fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("valid " + ("accuracy" if task["kind"] == "class" else "NDCG@10"), fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{result['dataset']}: {share:.0%} cold-start items (mean over {folds} folds)", fontsize=9)
    return markdown, fig


# ----- RQ4 ------------------------------------------------------------------------------------------
def rq4(definition, dataset, config_file_list=None, config_dict=None, cmd_args=None):
    """The method's user vectors (prompts tuned on the tasks before the target; PCL by default), SSP and
    NP user vectors on the target task."""
    exp = Experiment("rq4", definition, dataset, config_file_list, config_dict, cmd_args)
    model = exp.model
    tasks = exp.enabled_tasks()
    target = tasks[-1]
    if target["kind"] != "class":
        raise PCLError(f"RQ4 learns the last task with an MLP on user vectors: '{target['name']}' must be a class task")
    folds = exp.base["n_folds"]
    jobs = [exp.job(f"{model}/fold-{f}", model, tasks=tasks[:-1], fold=f) for f in range(folds)]
    out = exp.directory(jobs)
    outcomes, seconds = exp.run(jobs)
    sources = (model, "SSP", "NP")
    results = {s: [] for s in sources}
    for f in range(folds):
        if outcomes[f"{model}/fold-{f}"]["ok"]:
            for source, fit in user_vector_mlp(exp, model, tasks, f).items():
                results[source].append(fit)
    rows = []
    for source in sources:
        fits = results[source]
        if not fits:
            continue
        acc, half = interval([x["test_accuracy"] for x in fits])
        secs, secs_half = interval([x["seconds_to_best"] for x in fits])
        epochs, _ = interval([x["best_epoch"] for x in fits])
        rows.append(
            {
                "features": source,
                "test_accuracy": round(acc, 4),
                "ci95": round(half, 4),
                "seconds_to_best": round(secs, 2),
                "seconds_ci95": round(secs_half, 2),
                "epochs_to_best": round(epochs, 1),
            }
        )
    result = {
        "dataset": dataset,
        "folds": folds,
        "model": model,
        "target": target["name"],
        "prompt_tasks": [t["name"] for t in tasks[1:-1]],
        "rows": rows,
        "fits": results,
        "seconds": seconds,
        "failures": failures(outcomes),
    }
    return exp.write(out, result, rows, rq4_page)


def rq4_page(result):
    """RQ4's page and figure from its result file."""
    model, target, fits = result["model"], result["target"], result["fits"]
    markdown = (
        f"RQ4, universal user vectors on {target} ({result['folds']} folds): a one-hidden-layer MLP on "
        f"[user vector ‖ one-hot user id]. {model}: the mean of the user's vectors under the prompts of "
        f"{', '.join(result['prompt_tasks'])}; SSP: the pretrained backbone (T1 only); NP: random vectors.\n\n"
        f"{tabulate(result['rows'], headers='keys', tablefmt='github')}\n"
    ) + _failures(result["failures"])
    fig, (ax,) = new_figure(5.5, 3.6)
    for source, runs in fits.items():  # the method's vectors, SSP, NP
        if runs:
            length = min(len(x["curve"]) for x in runs)
            curve = np.mean([x["curve"][:length] for x in runs], axis=0)
            times = np.mean([x["times"][:length] for x in runs], axis=0)
            ax.plot(times, curve, marker=".", label=source)
    ax.set_xlabel("seconds of MLP training")
    ax.set_ylabel(f"valid accuracy ({target})")
    ax.set_title(f"{result['dataset']}: MLP on user vectors, mean over {result['folds']} folds", fontsize=9)
    ax.legend(fontsize=8)
    return markdown, fig
