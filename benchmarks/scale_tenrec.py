"""A Tenrec-shaped synthetic dataset at scale: generate, convert, pretrain T1 and tune three tasks.

    python benchmarks/scale_tenrec.py [--users=1000000] [--items=16475] [--length=50] [--out=DIR] [--key=value ...]

Steps, each in its own process (so that each step's peak memory is its own):

1. generate a SYNTHETIC file in the raw Tenrec schema (``generate_synthetic_tenrec``, streamed user
   chunk by user chunk): ``--users`` users with ``--length`` clicks each (plus impressions);
2. convert it to RecBole atomic files (``convert_tenrec``, chunked);
3. PCL on the Tenrec task sequence (``properties/dataset/tenrec.yaml``): T1 pretraining, then
   next_like, next_category and age; the seconds of each stage (``--epochs=1``: one epoch each);
4. serve: load the finished run and compute every user's representation for the last task.

Prints and writes scale.json / scale.md into ``--out``: rows, time and peak memory (CPU RSS, GPU)
of each step. ``--key=value`` settings go to the PCL run (e.g. ``--epochs=5 --train_batch_size=1024``).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
NAME = "tenrec-scale"


def _peak():
    import torch

    gpu = torch.cuda.max_memory_allocated() / 1024**3 if torch.cuda.is_available() else None
    return {
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3),
        "peak_gpu_gib": None if gpu is None else round(gpu, 3),
    }


def step_generate(args, extra):
    from recbole_pcl.data.converters import generate_synthetic_tenrec

    path = generate_synthetic_tenrec(
        Path(args.out) / "raw" / f"{NAME}.csv",
        n_users=args.users,
        n_items=args.items,
        n_categories=args.categories,
        seed=2020,
        min_len=args.length,
        max_len=args.length,
    )
    rows = sum(1 for _ in open(path, encoding="utf-8")) - 1
    return {"rows": rows, "bytes": os.path.getsize(path)}


def step_convert(args, extra):
    from recbole_pcl.data.converters import convert_tenrec

    out = convert_tenrec(Path(args.out) / "raw" / f"{NAME}.csv", Path(args.out) / "dataset" / NAME, NAME)
    return {"interactions": sum(1 for _ in open(Path(out) / f"{NAME}.inter", encoding="utf-8")) - 1}


def _run_config(args):
    return {
        "data_path": str(Path(args.out) / "dataset"),
        "raw_data_path": str(Path(args.out) / "raw" / f"{NAME}.csv"),
        "checkpoint_dir": str(Path(args.out) / "saved"),
        "show_progress": False,
        "state": "INFO",
        "fwt_reference": False,
    }


TASK_FILE = str(REPO / "properties" / "dataset" / "tenrec.yaml")


def step_run(args, extra):
    from recbole_pcl.quick_start import run_recbole_pcl

    result = run_recbole_pcl("PCL", NAME, [TASK_FILE], _run_config(args), cmd_args=extra)
    return {
        "stages": [
            {k: s[k] for k in ("task", "seconds", "trainable_params")} | {"test": s["test"]} for s in result["stages"]
        ]
    }


def step_serve(args, extra):
    """Every user's representation for the last task, served in batches from the finished run."""
    from recbole_pcl.quick_start import load_continual_run

    settings = _run_config(args) | {a[2:].split("=", 1)[0]: a.split("=", 1)[1] for a in extra}
    start = time.perf_counter()
    predictor = load_continual_run("PCL", NAME, [TASK_FILE], settings)
    loaded = time.perf_counter() - start
    task = list(predictor.tasks)[-1]
    start = time.perf_counter()
    vectors = predictor.user_representation(task=task)
    served = time.perf_counter() - start
    return {
        "task": task,
        "users": int(vectors.shape[0]),
        "load_seconds": round(loaded, 1),
        "users_per_second": round(vectors.shape[0] / served),
    }


STEPS = {"generate": step_generate, "convert": step_convert, "run": step_run, "serve": step_serve}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=16_475)  # as the PCL paper's Tenrec sample
    parser.add_argument("--categories", type=int, default=30)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--out", default="saved/benchmarks/scale")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    if args.step:
        Path(args.result).write_text(json.dumps(STEPS[args.step](args, extra) | _peak()))
        return
    import torch

    report = {
        "users": args.users,
        "items": args.items,
        "length": args.length,
        "settings": extra,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)",
        "torch_threads": torch.get_num_threads(),
    }
    os.makedirs(args.out, exist_ok=True)
    for step in args.steps:
        result_file = os.path.join(args.out, f".{step}.json")
        start = time.time()
        forwarded = [
            f"--{k}={v}" for k, v in vars(args).items() if k in ("users", "items", "categories", "length", "out")
        ]
        subprocess.run(
            [sys.executable, __file__, f"--step={step}", f"--result={result_file}", *forwarded, *extra], check=True
        )
        report[step] = json.loads(Path(result_file).read_text()) | {"seconds": round(time.time() - start, 1)}
        os.remove(result_file)
        print(f"{step}: {report[step]}", flush=True)
    Path(args.out, "scale.json").write_text(json.dumps(report, indent=1))
    lines = [
        f"{args.users:,} users x {args.length} clicks, {args.items:,} items, on {report['device']}, "
        f"torch threads {report['torch_threads']}",
        "",
        "| step | seconds | peak RSS GiB | peak GPU GiB |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s} | {report[s]['seconds']} | {report[s]['peak_rss_gib']} | {report[s]['peak_gpu_gib']} |"
        for s in args.steps
    ]
    if "run" in report:
        lines += ["", "| stage | seconds | trainable params |", "|---|---|---|"]
        lines += [f"| {s['task']} | {s['seconds']} | {s['trainable_params']:,} |" for s in report["run"]["stages"]]
    if "serve" in report:
        serve = report["serve"]
        lines.append(
            f"\nServing: {serve['users']:,} users' representations for {serve['task']}, "
            f"{serve['users_per_second']:,} users / s after {serve['load_seconds']} s of loading the run."
        )
    Path(args.out, "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
