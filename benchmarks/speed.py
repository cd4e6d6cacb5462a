"""Speed and memory of recbole-pcl against stock RecBole and FineAll, measured side by side in one run.

    python benchmarks/speed.py [--dataset=ml-100k] [--out=DIR] [--parts pretrain tuning serving] [--key=value ...]

Every part runs in its own process (so that its peak memory is its own) on the same data, device and
dimensions (``--key=value`` settings apply to all), and nothing is cached between runs:

* ``pretrain``: T1 pretraining by stock RecBole SASRec (RecBole's Trainer on one sample per prefix)
  against PCL's causal pretraining over every T1 interaction (windows of n) and over each user's latest
  window only; seconds per training epoch, seconds and epochs to convergence (the same early stopping),
  and the T1 test HR@10 / NDCG@10 of each, on the same split.
* ``tuning``: each downstream task learned by PCL's prompt tuning against FineAll (fine-tuning every
  parameter), from the same pretrained backbone, on every fold of the comparison (``n_folds``): the
  stage seconds per fold and their ratio, and the test metric with the paired difference.
* ``serving``: full-ranking evaluation of T1's test users by RecBole's evaluator, and top-10
  recommendation for every user by RecBole's ``full_sort_topk`` and by recbole-pcl's batched
  ``recommend``: users per second; and every task's predictions for the same users, all tasks in one
  call (one prompt-free prefix pass per batch of users) against one call per task.

Writes speed.json and speed.md into ``--out`` and prints the ratios. Timings are wall-clock on this
machine (the device is printed); the test suite asserts none of them.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _settings(extra):
    return dict(a[2:].split("=", 1) for a in extra)


def _peak_memory():
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # GiB (ru_maxrss is in KiB on Linux)
    gpu = torch.cuda.max_memory_allocated() / 1024**3 if torch.cuda.is_available() else None
    return {"peak_rss_gib": round(rss, 3), "peak_gpu_gib": None if gpu is None else round(gpu, 3)}


def _timed(trainer_class):
    """``trainer_class`` that records the seconds of each training epoch and, after each validation,
    the seconds since training began with the validation score (the curve to reach a score by)."""

    class Timed(trainer_class):
        epoch_seconds = []
        curve = []  # (seconds since the first epoch began, validation score)
        began = None

        def _train_epoch(self, *args, **kwargs):
            start = time.perf_counter()
            Timed.began = Timed.began or start
            result = super()._train_epoch(*args, **kwargs)
            if self.device.type == "cuda":
                import torch

                torch.cuda.synchronize()
            Timed.epoch_seconds.append(time.perf_counter() - start)
            return result

        def _valid_epoch(self, *args, **kwargs):
            score, result = super()._valid_epoch(*args, **kwargs)
            Timed.curve.append((time.perf_counter() - Timed.began, float(score)))
            return score, result

    return Timed


def _reach(curve, score):
    """The seconds and validations until ``curve`` first reaches ``score`` (None: never)."""
    return next(((t, i + 1) for i, (t, s) in enumerate(curve) if s >= score), (None, None))


def part_pretrain(dataset, cmd_args, workdir):
    from recbole.model.sequential_recommender.sasrec import SASRec

    import recbole_pcl.pipeline.pipeline as pipeline_module
    from recbole_pcl.config import Config
    from recbole_pcl.data.continual import ContinualData
    from recbole_pcl.pipeline import TaskPipeline
    from recbole_pcl.trainer import ContinualTrainer
    from recbole_pcl.utils import get_model, get_trainer

    results = {}
    for mode in ("causal", "causal_last"):
        timed = _timed(ContinualTrainer)
        pipeline_module.ContinualTrainer = timed
        config = Config(
            "PCL",
            dataset,
            config_dict={
                "checkpoint_dir": os.path.join(workdir, mode),
                "pretrain_mode": mode,
                "show_progress": False,
                "state": "WARNING",
            },
            cmd_args=cmd_args,
        )
        pipeline = TaskPipeline(config, get_model("PCL"))
        record = pipeline.pretrain()["stage"]
        train = pipeline.tasks[0].train._dataset.inter_feat
        results[f"PCL {mode}"] = {
            "seconds_per_epoch": sum(timed.epoch_seconds) / len(timed.epoch_seconds),
            "epochs": len(timed.epoch_seconds),
            "seconds_to_converge": record["seconds"],
            "curve": timed.curve,
            "hit@10": record["test"]["hit@10"],
            "ndcg@10": record["test"]["ndcg@10"],
            "train_rows": len(train),
            "targets": int(train["item_length"].sum()),
        }  # every position of every row
    # stock: RecBole's SASRec and Trainer on the same T1 split, with PCL's training settings
    shared = {
        k: config[k]
        for k in (
            "MAX_ITEM_LIST_LENGTH",
            "hidden_size",
            "inner_size",
            "n_layers",
            "n_heads",
            "hidden_dropout_prob",
            "attn_dropout_prob",
            "learning_rate",
            "train_batch_size",
            "eval_batch_size",
            "epochs",
            "stopping_step",
            "seed",
        )
    }
    stock_config = Config(
        "SASRec",
        dataset,
        config_dict=dict(
            shared,
            pretrain_mode="prefix",
            checkpoint_dir=os.path.join(workdir, "stock"),
            show_progress=False,
            state="WARNING",
        ),
        cmd_args=cmd_args,
    )
    t1 = ContinualData(stock_config).tasks[0]
    model = SASRec(t1.config, t1.train._dataset).to(t1.config["device"])
    trainer = _timed(get_trainer(t1.config["MODEL_TYPE"], "SASRec"))(t1.config, model)
    start = time.perf_counter()
    trainer.fit(t1.train, t1.valid, saved=True, show_progress=False)
    test = trainer.evaluate(t1.test, load_best_model=True)
    results["stock RecBole SASRec"] = {
        "seconds_per_epoch": sum(trainer.epoch_seconds) / len(trainer.epoch_seconds),
        "epochs": len(trainer.epoch_seconds),
        "seconds_to_converge": time.perf_counter() - start,
        "curve": trainer.curve,
        "hit@10": float(test["hit@10"]),
        "ndcg@10": float(test["ndcg@10"]),
        "train_rows": len(t1.train._dataset),
        "targets": len(t1.train._dataset),
    }  # one target per prefix row
    best = max(s for _, s in results["stock RecBole SASRec"]["curve"])
    for r in results.values():  # when each reaches stock SASRec's best validation score (NDCG@10)
        r["seconds_to_stock_best"], r["validations_to_stock_best"] = _reach(r["curve"], best)
    return {"results": results, "stock_best_valid": best, "device": str(config["device"]), **_peak_memory()}


def part_tuning(dataset, cmd_args, workdir):
    from recbole_pcl.experiment.compare import run_comparison

    comparison = run_comparison(
        ["PCL", "FineAll"],
        dataset,
        config_dict={
            "checkpoint_dir": workdir,
            "show_progress": False,
            "state": "WARNING",
            "fwt_reference": False,
            "runner": "serial",
        },
        cmd_args=cmd_args,
    )
    if comparison["failures"]:
        raise SystemExit(f"the comparison failed: {comparison['failures']}")
    folds = comparison["fold_indices"]
    rows = {m["method"]: m for m in comparison["methods"]}
    runs = comparison["runs"]
    results = {}
    for task, cells in list(rows["PCL"]["tasks"].items())[1:]:  # T1 is one pretraining shared by both
        metric = "accuracy" if "accuracy" in cells else "hit@10"
        seconds = {m: [runs[f"{m}/fold-{f}"]["stage_seconds"][task] for f in folds] for m in ("PCL", "FineAll")}
        ratios = [p / f for p, f in zip(seconds["PCL"], seconds["FineAll"])]
        pcl, fine = cells[metric], rows["FineAll"]["tasks"][task][metric]
        paired = fine["minus_reference"]  # the comparison's paired difference FineAll - PCL (PCL the reference)
        results[task] = {
            "kind": "class" if metric == "accuracy" else "link",
            "metric": metric,
            "seconds": seconds,
            "ratios": ratios,
            "PCL": {metric: [pcl["mean"], pcl["ci95"]], "trainable_params": rows["PCL"]["trainable_params"]},
            "FineAll": {metric: [fine["mean"], fine["ci95"]], "trainable_params": rows["FineAll"]["trainable_params"]},
            "difference": [-paired["mean"], paired["ci95"]],
        }
    return {"results": results, "folds": folds, **_peak_memory()}


def part_serving(dataset, cmd_args, workdir):
    import torch
    from recbole.utils.case_study import full_sort_topk

    from recbole_pcl.config import Config
    from recbole_pcl.pipeline import TaskPipeline
    from recbole_pcl.quick_start.serving import ContinualPredictor
    from recbole_pcl.trainer import ContinualTrainer
    from recbole_pcl.utils import get_model

    config = Config(
        "PCL",
        dataset,
        config_dict={
            "checkpoint_dir": workdir,
            "show_progress": False,
            "state": "WARNING",
            "task_eval_mode": "full",
            "fwt_reference": False,
        },
        cmd_args=cmd_args,
    )
    pipeline = TaskPipeline(config, get_model("PCL"))
    pipeline.run()
    model = pipeline.load_final()
    t1 = pipeline.tasks[0]

    def clock(fn):
        if model.item_embedding.weight.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if model.item_embedding.weight.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    uid = pipeline.data.dataset.uid_field
    test_users = t1.test._dataset.inter_feat[uid].numpy()  # T1's test users, one row each
    evaluate = clock(lambda: ContinualTrainer(t1.config, model).evaluate(t1.test, load_best_model=False))
    predictor = ContinualPredictor(model, pipeline.data)
    tokens = list(pipeline.data.dataset.id2token(uid, test_users))
    ours = clock(lambda: predictor.recommend("next_click", users=tokens, k=10))
    chunks = [test_users[i : i + 4096] for i in range(0, len(test_users), 4096)]
    theirs = clock(lambda: [full_sort_topk(chunk, model, t1.test, k=10, device=config["device"]) for chunk in chunks])
    # every task for the same users: one call per task, then all at once (each best of 3, alternating)
    tasks = list(predictor.tasks)
    per_task, at_once = [], []
    for _ in range(3):
        per_task.append(clock(lambda: [predictor.predict(task, users=tokens) for task in tasks]))
        at_once.append(clock(lambda: predictor.predict(tasks, users=tokens)))
    results = {
        "RecBole evaluator, full ranking (users/s)": len(test_users) / evaluate,
        "RecBole full_sort_topk, top-10 (users/s)": len(test_users) / theirs,
        "recbole-pcl recommend, top-10 (users/s)": len(test_users) / ours,
        f"recbole-pcl predict, {len(tasks)} tasks one call each (users/s)": len(test_users) / min(per_task),
        f"recbole-pcl predict, {len(tasks)} tasks in one call (users/s)": len(test_users) / min(at_once),
    }
    return {
        "results": results,
        "users": len(test_users),
        "tasks": tasks,
        "all_tasks_speedup": min(per_task) / min(at_once),
        **_peak_memory(),
    }


PARTS = {"pretrain": part_pretrain, "tuning": part_tuning, "serving": part_serving}


def _or_never(value, spec):
    return "never" if value is None else format(value, spec)


def _mean_ci(pair):
    return f"{pair[0]:.4f} ± {pair[1]:.4f}"


def markdown(report):
    lines = [
        f"Device: {report['device']}, torch threads {report['torch_threads']}; dataset {report['dataset']}; "
        f"settings {report['settings'] or 'defaults'}.",
        "",
    ]
    pre = report.get("pretrain")
    if pre:
        lines += [
            f"Stock SASRec's best validation NDCG@10: {pre['stock_best_valid']:.4f}; 'to stock best': the seconds "
            "(training and validation) and epochs until a run's validation NDCG@10 first reaches it.",
            "",
            "| T1 pretraining | train rows | targets / epoch | s / epoch | s / 1k targets | epochs | s to converge "
            "| s to stock best | epochs to stock best | test HR@10 | test NDCG@10 |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in pre["results"].items():
            lines.append(
                f"| {name} | {r['train_rows']:,} | {r['targets']:,} | {r['seconds_per_epoch']:.2f} | {1000 * r['seconds_per_epoch'] / r['targets']:.3f} | "
                f"{r['epochs']} | {r['seconds_to_converge']:.1f} | {_or_never(r['seconds_to_stock_best'], '.1f')} | "
                f"{_or_never(r['validations_to_stock_best'], 'd')} | {r['hit@10']:.4f} | {r['ndcg@10']:.4f} |"
            )
        lines.append(f"\nPeak RSS of the pretraining process: {pre['peak_rss_gib']} GiB; GPU: {pre['peak_gpu_gib']}.")
        for name in ("PCL causal", "PCL causal_last"):
            stock, ours = pre["results"]["stock RecBole SASRec"], pre["results"][name]
            lines.append(
                f"\n{name}: {stock['seconds_per_epoch'] / ours['seconds_per_epoch']:.1f}x less time per epoch, "
                f"{stock['seconds_to_converge'] / ours['seconds_to_converge']:.1f}x less time to converge than stock RecBole SASRec."
            )
    tune = report.get("tuning")
    if tune:
        lines += [
            "",
            f"Downstream stages from the same pretrained backbone, {len(tune['folds'])} folds side by side "
            "(seconds per stage: mean over folds; ratio: PCL / FineAll per fold, mean and largest; "
            "the metric: mean ± 95 % interval, difference PCL − FineAll paired by fold).",
            "",
            "| downstream task | PCL s | FineAll s | ratio (mean, max) | target | PCL metric | FineAll metric | PCL − FineAll |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for task, r in tune["results"].items():
            m, s = r["metric"], r["seconds"]
            target = "1/2" if r["kind"] == "class" else "1/3"
            lines.append(
                f"| {task} | {sum(s['PCL']) / len(s['PCL']):.1f} | {sum(s['FineAll']) / len(s['FineAll']):.1f} | "
                f"{sum(r['ratios']) / len(r['ratios']):.2f}, {max(r['ratios']):.2f} | ≤ {target} | "
                f"{m} {_mean_ci(r['PCL'][m])} | {_mean_ci(r['FineAll'][m])} | {r['difference'][0]:+.4f} ± {r['difference'][1]:.4f} |"
            )
    serve = report.get("serving")
    if serve:
        lines += ["", "| serving | users / s |", "|---|---|"] + [
            f"| {k} | {v:,.0f} |" for k, v in serve["results"].items() if v
        ]
        if "all_tasks_speedup" in serve:
            lines.append(
                f"\nAll {len(serve['tasks'])} tasks in one call (one prefix pass per batch of users): "
                f"{serve['all_tasks_speedup']:.1f}x the users/s of one call per task."
            )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--out", default="saved/benchmarks/speed")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--part", help=argparse.SUPPRESS)  # one part, in a child process
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    if args.part:
        with tempfile.TemporaryDirectory() as workdir:
            result = PARTS[args.part](args.dataset, extra, workdir)
        Path(args.result).write_text(json.dumps(result))
        return
    import torch

    report = {
        "dataset": args.dataset,
        "settings": _settings(extra),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)",
        "torch_threads": torch.get_num_threads(),  # OMP_NUM_THREADS=1 lets a second job use the other core
    }
    os.makedirs(args.out, exist_ok=True)
    for part in args.parts:
        result_file = os.path.join(args.out, f".{part}.json")
        start = time.time()
        subprocess.run(
            [
                sys.executable,
                __file__,
                f"--part={part}",
                f"--result={result_file}",
                f"--dataset={args.dataset}",
                *extra,
            ],
            check=True,
        )
        report[part] = json.loads(Path(result_file).read_text()) | {"wall_seconds": round(time.time() - start, 1)}
        os.remove(result_file)
        print(f"{part}: {report[part]}", flush=True)
    Path(args.out, "speed.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    Path(args.out, "speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
