"""PCL against its references on the same task data, over several downstream user splits.

    python benchmarks/ml100k_references.py [--dataset=ml-100k] [--seeds 2020 2021 2022] [--out=DIR] [--key=value ...]

One T1 backbone is pretrained (first seed) and shared; for every seed (= a different
train/valid/test user split of the downstream tasks) it runs PCL, the frozen backbone with heads
only (no prompts), and TaskPrior (popularity / majority class). Prints mean ± std of each task's
main metric (HR@10 for link tasks, accuracy for class tasks) and writes references.json.
ml-100k's downstream test sets hold 60-100 users, so single-split differences of a few points are
noise; the spread over seeds shows how much.
"""
import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tabulate import tabulate  # noqa: E402

from recbole_pcl.quick_start import run_recbole_pcl  # noqa: E402

METHODS = {
    "PCL": ("PCL", {}),
    "PCL w/o P_T": ("PCL", {"contextual_prompt": "none"}),
    "heads only": ("PCL", {"prompt_length": 0, "contextual_prompt": "none"}),
    "TaskPrior": ("TaskPrior", {}),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--out", default="saved/references")
    args, extra = parser.parse_known_args()
    base = {"show_progress": False, "state": "WARNING", "fwt_reference": False, "checkpoint_dir": args.out}

    first = run_recbole_pcl("PCL", args.dataset, config_dict=dict(base, seed=args.seeds[0]), cmd_args=extra)
    backbone = os.path.join(first["run_dir"], sorted(f for f in os.listdir(first["run_dir"]) if f.startswith("stage-00"))[0])
    scores = {}  # (method, task) -> [metric per seed]
    for seed in args.seeds:
        for method, (model, overrides) in METHODS.items():
            config = dict(base, seed=seed, **overrides)
            if model == "PCL":
                config["pretrained_checkpoint"] = backbone
            result = run_recbole_pcl(model, args.dataset, config_dict=config, cmd_args=extra)
            values = {r["task"]: r["accuracy" if r["kind"] == "class" else "hit@10"] for r in result["tasks"]}
            for task, value in values.items():
                scores.setdefault((method, task), []).append(value)
            print(f"seed {seed} {method}: {values}", flush=True)

    tasks = list(dict.fromkeys(t for _, t in scores))
    rows = [
        {"method": m, **{t: f"{statistics.mean(scores[m, t]):.4f} ± {statistics.pstdev(scores[m, t]):.4f}" for t in tasks}}
        for m in METHODS
    ]
    print(f"\n{args.dataset}: HR@10 (link) / accuracy (class) of the final model, mean ± std over seeds {args.seeds}")
    print(tabulate(rows, headers="keys", tablefmt="github"))
    with open(os.path.join(args.out, "references.json"), "w") as f:
        json.dump({f"{m}|{t}": v for (m, t), v in scores.items()}, f, indent=2)


if __name__ == "__main__":
    main()
