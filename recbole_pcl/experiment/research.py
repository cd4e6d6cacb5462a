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
import json
import os
import time
from logging import getLogger

import numpy as np
import torch
from recbole.utils import init_logger, set_color
from tabulate import tabulate
from torch import nn

from recbole_pcl.config import Config
from recbole_pcl.data.tasks import parse_tasks
from recbole_pcl.experiment.compare import Method, interval, run_comparison
from recbole_pcl.experiment.runner import Job, failures, run_jobs, runner_settings
from recbole_pcl.pipeline import TaskPipeline
from recbole_pcl.pipeline.identity import digest
from recbole_pcl.pipeline.report import write_csv
from recbole_pcl.utils import get_model
from recbole_pcl.utils.checkpoint import atomic_write_text
from recbole_pcl.utils.errors import PCLError
from recbole_pcl.utils.plots import new_figure, save_figure


def main_metric(kind):
    return "accuracy" if kind == "class" else "hit@10"


class Experiment:
    """What the experiments share: the user's configuration, its output directory, the files."""

    def __init__(self, name, definition, dataset, config_file_list=None, config_dict=None, cmd_args=None):
        self.name, self.definition, self.dataset = name, definition, dataset
        self.files, self.cmd_args = list(config_file_list or []), list(cmd_args or [])
        self.config_dict = dict(config_dict or {}, **definition.get("settings", {}))
        model = definition.get("model", "PCL")
        self.base = Config(model, dataset, self.files, self.config_dict, self.cmd_args)
        init_logger(self.base)
        self.logger = getLogger()
        self.runner = runner_settings(self.base)

    def job(self, key, model="PCL", **settings):
        return Job(key, model, self.dataset, self.files, dict(self.config_dict, **settings), self.cmd_args)

    def enabled_tasks(self):
        """The dataset's enabled task entries (as in its yaml), T1 first."""
        raw = [t for t in self.base["tasks"] or [] if t.get("enabled", True) is not False]
        parse_tasks(raw)  # the same checks as a run
        return raw

    def directory(self, jobs):
        key = digest([[j.key, digest(j.pipeline().identity.run())] for j in jobs])
        return os.path.join(self.base["checkpoint_dir"], f"{self.name}-{self.dataset}-{key[:8]}")

    def run(self, jobs):
        """Run ``jobs``; their outcomes and the seconds it took. When every run fails, a
        :class:`PCLError` names the first failure."""
        start = time.time()
        outcomes = run_jobs(jobs, **self.runner)
        failed = failures(outcomes)
        if jobs and len(failed) == len(jobs):
            first = next(iter(failed))
            raise PCLError(f"every run of {self.name} failed; the first, {first}: {failed[first]}")
        return outcomes, round(time.time() - start, 1)

    def write(self, out, result, rows, markdown, figure):
        os.makedirs(out, exist_ok=True)
        write_csv(os.path.join(out, f"{self.name}.csv"), rows)
        atomic_write_text(os.path.join(out, f"{self.name}.md"), markdown)
        save_figure(figure, os.path.join(out, f"{self.name}.png"))
        result["directory"] = out
        atomic_write_text(os.path.join(out, f"{self.name}.json"), json.dumps(result, indent=1))
        self.logger.info(set_color(self.name, "yellow") + f" ({out}):\n{markdown}")
        return result


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
        exp.job(f"{''.join(str(numbers[t['name']]) for t in order)}/fold-{f}", tasks=[tasks[0], *order], fold=f)
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
            values = [_final(outcomes, f"{label}/fold-{f}", task) for f in range(folds)]
            if None in values:
                continue
            mean, half = interval(values)
            per_order.append(mean)
            rows.append(
                {
                    "task": task["name"],
                    "T": numbers[task["name"]],
                    "order": label,
                    "metric": main_metric(task["kind"]),
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
    table = tabulate(
        [
            [t, f"{s['best']:.4f}", f"{s['worst']:.4f}", f"{s['absolute']:.4f}", f"{s['relative%']:.2f}%"]
            for t, s in spread.items()
        ],
        headers=["task", "best order", "worst order", "spread", "spread / best"],
        tablefmt="github",
    )
    markdown = (
        f"RQ2, task order: PCL on all {len(orders)} orders of the downstream tasks, {folds} folds each "
        f"(mean over folds; HR@10 for link tasks, accuracy for class tasks).\n\n{table}\n\n"
        f"Average relative spread: {average:.2f}% (the paper reports 1.20%).\n"
        if average is not None
        else "No order finished.\n"
    )
    markdown += _failures(outcomes)
    fig, (ax,) = new_figure(2 + 0.9 * len(orders), 3.6)
    labels = ["".join(str(numbers[t["name"]]) for t in order) for order in orders]
    for task in downstream:
        points = {r["order"]: r for r in rows if r["task"] == task["name"]}
        xs = [i for i, label in enumerate(labels) if label in points]
        ax.errorbar(
            xs,
            [points[labels[i]]["mean"] for i in xs],
            yerr=[points[labels[i]]["ci95"] for i in xs],
            marker="o",
            capsize=3,
            label=f"T{numbers[task['name']]} {task['name']} ({main_metric(task['kind'])})",
        )
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_xlabel("order of the downstream tasks")
    ax.set_title(f"PCL on {dataset}: each task's metric per task order (95 % intervals over folds)", fontsize=9)
    ax.legend(fontsize=7)
    result = {
        "orders": labels,
        "rows": rows,
        "spread": spread,
        "average_relative_spread%": average,
        "seconds": seconds,
        "failures": failures(outcomes),
    }
    return exp.write(out, result, rows, markdown, fig)


def _final(outcomes, key, task):
    outcome = outcomes[key]
    if not outcome["ok"]:
        return None
    return outcome["result"]["final"][task["name"]][main_metric(task["kind"])]


def _failures(outcomes):
    failed = failures(outcomes)
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
            finals = [_final(outcomes, f"{v.label}/fold-{f}", task) for f in range(folds)]
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
                    "test_" + main_metric(task["kind"]): round(mean, 4),
                    "test_ci95": round(half, 4),
                }
            )
    share = exp.base["cold_item_share"]
    markdown = (
        f"RQ3, cold-start items: {share:.0%} of the items kept out of T1 pretraining, {folds} folds. Validation metric "
        f"(NDCG@10 for link tasks, accuracy for class tasks) after each epoch, mean over folds; test metric of the "
        f"best epoch.\n\n{tabulate(rows, headers='keys', tablefmt='github')}\n"
    ) + _failures(outcomes)
    fig, axes = new_figure(3.4 * len(tasks), 3.2, len(tasks))
    for ax, task in zip(axes, tasks):
        for v in variants:
            curve = curves.get((v.label, task["name"]))
            if curve is not None:
                ax.plot(range(1, len(curve) + 1), curve, marker=".", label=v.label)
        ax.set_title(task["name"], fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("valid " + ("accuracy" if task["kind"] == "class" else "NDCG@10"), fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{dataset}: {share:.0%} cold-start items (mean over {folds} folds)", fontsize=9)
    result = {
        "curves": {f"{k[0]}|{k[1]}": c for k, c in curves.items()},
        "rows": rows,
        "seconds": seconds,
        "failures": failures(outcomes),
    }
    return exp.write(out, result, rows, markdown, fig)


# ----- RQ4 ------------------------------------------------------------------------------------------
def rq4(definition, dataset, config_file_list=None, config_dict=None, cmd_args=None):
    """PCL (prompts tuned on the tasks before the target), SSP and NP user vectors on the target task."""
    exp = Experiment("rq4", definition, dataset, config_file_list, config_dict, cmd_args)
    tasks = exp.enabled_tasks()
    target = tasks[-1]
    if target["kind"] != "class":
        raise PCLError(f"RQ4 learns the last task with an MLP on user vectors: '{target['name']}' must be a class task")
    folds = exp.base["n_folds"]
    jobs = [exp.job(f"PCL/fold-{f}", tasks=tasks[:-1], fold=f) for f in range(folds)]
    out = exp.directory(jobs)
    outcomes, seconds = exp.run(jobs)
    sources = ("PCL", "SSP", "NP")
    results = {s: [] for s in sources}
    for f in range(folds):
        if outcomes[f"PCL/fold-{f}"]["ok"]:
            for source, fit in user_vector_mlp(exp, tasks, f).items():
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
    markdown = (
        f"RQ4, universal user vectors on {target['name']} ({folds} folds): a one-hidden-layer MLP on "
        f"[user vector ‖ one-hot user id]. PCL: the mean of the user's vectors under the prompts of "
        f"{', '.join(t['name'] for t in tasks[1:-1])}; SSP: the pretrained backbone (T1 only); NP: random vectors.\n\n"
        f"{tabulate(rows, headers='keys', tablefmt='github')}\n"
    ) + _failures(outcomes)
    fig, (ax,) = new_figure(5.5, 3.6)
    for source in sources:
        if results[source]:
            length = min(len(x["curve"]) for x in results[source])
            curve = np.mean([x["curve"][:length] for x in results[source]], axis=0)
            times = np.mean([x["times"][:length] for x in results[source]], axis=0)
            ax.plot(times, curve, marker=".", label=source)
    ax.set_xlabel("seconds of MLP training")
    ax.set_ylabel(f"valid accuracy ({target['name']})")
    ax.set_title(f"{dataset}: MLP on user vectors, mean over {folds} folds", fontsize=9)
    ax.legend(fontsize=8)
    result = {"rows": rows, "fits": results, "seconds": seconds, "failures": failures(outcomes)}
    return exp.write(out, result, rows, markdown, fig)


def user_vector_mlp(exp, tasks, fold):
    """Fit the MLP of RQ4 on each source of user vectors; ``{source: fit}`` (see :func:`fit_mlp`)."""

    settings = dict(exp.config_dict, fold=fold)
    pcl = TaskPipeline(
        Config("PCL", exp.dataset, exp.files, dict(settings, tasks=tasks[:-1]), exp.cmd_args), get_model("PCL")
    ).load_final()
    full = TaskPipeline(
        Config("PCL", exp.dataset, exp.files, dict(settings, tasks=tasks), exp.cmd_args), get_model("PCL")
    )
    target = full.tasks[-1]
    prompted = [t["name"] for t in tasks[1:-1]]
    device = pcl.item_embedding.weight.device

    def vectors(split, source):
        inter = getattr(target, split)._dataset.inter_feat.to(device)
        with torch.no_grad():
            if source == "PCL":
                return torch.stack([pcl.user_representation(inter, name) for name in prompted]).mean(0)
            if source == "SSP":
                return pcl.user_representation(inter, None)
            g = torch.Generator(device="cpu").manual_seed(exp.base["seed"] + fold)
            return torch.randn(len(inter), pcl.hidden_size, generator=g).to(device)

    out = {}
    for source in ("PCL", "SSP", "NP"):
        data = {
            split: (vectors(split, source), getattr(target, split)._dataset.inter_feat)
            for split in ("train", "valid", "test")
        }
        out[source] = fit_mlp(data, exp.base, target.num_classes, full.data.dataset.user_num)
    return out


def fit_mlp(data, config, num_classes, num_users, max_epochs=200, patience=10):
    """One-hidden-layer MLP on [vector ‖ one-hot user id], early stopping on valid accuracy. Returns the
    test accuracy of the best epoch, when it came (epoch, seconds) and the valid accuracy per epoch."""
    torch.manual_seed(config["seed"])
    vectors, inter = data["train"]
    width = vectors.size(1)
    device = vectors.device
    user_field, label_field = config["USER_ID_FIELD"], config["LABEL_FIELD"]
    users = nn.Embedding(num_users, width).to(device)  # one-hot user ids times a weight matrix
    mlp = nn.Sequential(nn.Linear(2 * width, width), nn.ReLU(), nn.Linear(width, num_classes)).to(device)
    optimizer = torch.optim.Adam(list(users.parameters()) + list(mlp.parameters()), lr=1e-3)

    def logits(split):
        v, x = data[split]
        return mlp(torch.cat([v, users(x[user_field].to(device))], dim=1))

    def accuracy(split):
        with torch.no_grad():
            return float((logits(split).argmax(1).cpu() == data[split][1][label_field]).float().mean())

    best, best_state, curve, times, start = -1.0, None, [], [], time.time()
    labels = inter[label_field].to(device)
    generator = torch.Generator().manual_seed(config["seed"])
    for epoch in range(max_epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(256):
            loss = nn.functional.cross_entropy(logits("train")[batch], labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        curve.append(accuracy("valid"))
        times.append(time.time() - start)
        if curve[-1] > best:
            best, best_epoch = curve[-1], epoch + 1
            best_state = (
                {k: v.clone() for k, v in mlp.state_dict().items()},
                {k: v.clone() for k, v in users.state_dict().items()},
            )
        elif epoch + 1 - best_epoch >= patience:
            break
    mlp.load_state_dict(best_state[0])
    users.load_state_dict(best_state[1])
    return {
        "test_accuracy": accuracy("test"),
        "best_epoch": best_epoch,
        "seconds_to_best": times[best_epoch - 1],
        "curve": curve,
        "times": times,
    }


EXPERIMENTS = {"rq1": rq1, "rq2": rq2, "rq3": rq3, "rq4": rq4}
