"""benchmarks/time_profile.py: every row of the profile is measured on a tiny run, the table names the
machine, and an entry point that no longer exists leaves an empty row instead of failing the run."""

import importlib.util
import json
import os
import subprocess
import sys

import torch
from conftest import REPO
from test_readme import BENCHMARK_ARGS

from recbole_pcl.pipeline.identity import numeric_environment

SCRIPT = REPO / "benchmarks" / "time_profile.py"
TASKS = ("next_4star", "next_5star", "next_genre")  # ml-100k's enabled downstream tasks
# two epochs per stage, so that the caps (--t1_epochs=1, --joint_epochs=1) are seen to hold
ARGS = [a for a in BENCHMARK_ARGS["benchmarks/time_profile.py"] if not a.startswith("--epochs=")] + ["--epochs=2"]
# the parts in two processes side by side: this test's wall time only (it asserts no timing)
GROUPS = (["data", "pretrain", "downstream", "serving"], ["MTL", "MTLPlus", "MMoE", "MMoEPlus"])


def _expected_rows():
    rows = [
        "run set-up: task specs, identity, sha256 of the atomic files",
        "data loading: atomic files -> T1 windows and downstream tasks",
        "T1 training epochs",
        "T1 validations",
        "T1 test evaluation",
        "T1 pretraining in all",
    ]
    for method in ("PCL", "FineAll"):
        for task in TASKS:
            rows += [
                f"{method} {task}: {w}" for w in ("training epochs", "validations", "test evaluation", "stage in all")
            ]
        rows.append(f"{method}: final evaluation of every task")
    rows += ["PCL: rest of the run (stage 0 trained; model, text encodings, report)"]
    rows += ["FineAll: rest of the run (stage 0 restored; model, text encodings, report)"]
    for method in ("MTL", "MTLPlus", "MMoE", "MMoEPlus"):
        parts = ["joint epochs", "forward (every task's loss)", "optimiser step"]
        parts += ["rest of the epochs (batches, loss sums)", "evaluation of every task after an epoch"]
        parts += ["rest of the run (model, evaluations after fitting, report)"]
        if method.endswith("Plus"):
            parts += ["backward (one per task)", "MGDA weights", "weighted sum of the tasks' gradients"]
        else:
            parts += ["backward (summed loss)"]
        rows += [f"{method}: {p}" for p in parts]
    rows += ["serving start-up: config, data, final model"]
    rows += ["user_representation (next_4star), every user", "recommend top-10 (next_4star), every user"]
    return rows


def test_profile_runs_small(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = []
    for i, parts in enumerate(GROUPS):
        log = open(tmp_path / f"{i}.log", "w")  # a file, not a pipe: neither process can block on a full one
        command = [sys.executable, str(SCRIPT), f"--out={tmp_path / str(i)}", "--parts", *parts, *ARGS]
        runs.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path), log))
    for i, (run, log) in enumerate(runs):
        assert run.wait(timeout=600) == 0, (tmp_path / f"{i}.log").read_text()[-3000:]
        log.close()

    rows, machine = {}, numeric_environment("cpu")
    for i in range(len(GROUPS)):
        report = json.loads((tmp_path / str(i) / "profile.json").read_text())
        assert [r["id"] for r in report["rows"]] == [f"P{k + 1}" for k in range(len(report["rows"]))]
        assert all(not part["missing"] for part in report["parts"].values())
        assert all(part["peak_rss_gib"] > 0 for part in report["parts"].values())
        rows |= {r["what"]: r for r in report["rows"]}
        table = (tmp_path / str(i) / "profile.md").read_text()
        assert f"Machine: {machine['processor']}, {os.cpu_count()} cores, torch threads 1, " in table
        assert f"torch {torch.__version__}, device cpu" in table
        assert "python benchmarks/time_profile.py --out=" in table and "--parts" in table
        assert all(f"| {r['id']} | " in table for r in report["rows"])
    assert sorted(rows) == sorted(_expected_rows())
    assert all(r["seconds"] is not None and r["seconds"] > 0 for r in rows.values()), [
        w for w, r in rows.items() if not (r["seconds"] or 0) > 0
    ]
    # the caps hold: one T1 epoch and one joint epoch of the two configured
    assert rows["T1 training epochs"]["count"] == 1
    assert all(rows[f"{m}: joint epochs"]["count"] == 1 for m in GROUPS[1])
    # (early stopping's patience is longer than two epochs: the downstream stages are not capped)
    assert all(rows[f"{m} {t}: training epochs"]["count"] == 2 for m in ("PCL", "FineAll") for t in TASKS)
    assert rows["PCL next_4star: validations"]["count"] == rows["PCL next_4star: training epochs"]["count"]
    for m in GROUPS[1]:  # every step is counted once in each of its parts
        steps = rows[f"{m}: forward (every task's loss)"]["count"]
        assert steps > 0 and rows[f"{m}: optimiser step"]["count"] == steps
    assert rows["PCL: final evaluation of every task"]["count"] == 1 + len(TASKS)
    assert rows["recommend top-10 (next_4star), every user"]["count"] == 305  # users with 20-40 ratings


def _profile_module():
    spec = importlib.util.spec_from_file_location("profile_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_missing_entry_point_leaves_an_empty_row():
    profile = _profile_module()

    class Base:
        def work(self, x):
            return x + 1

    class Child(Base):
        def work(self, x):
            return 2 * super().work(x)

    profiler = profile.Profiler()
    assert profiler.wrap(Base, "work") and profiler.wrap(Child, "work")
    assert not profiler.wrap(Child, "gone")
    assert Child().work(1) == 4 and Base().work(1) == 2
    assert [r["key"] for r in profiler.records] == ["Child.work", "Base.work"]  # super() timed once, in Child's
    assert profiler.total("Child.gone") is None and profiler.missing == {"Child.gone"}
    empty = profile.row("part", "gone", profiler.total("Child.gone"), "step", "Child.gone")
    assert empty["seconds"] is None and empty["note"] == "not measured: an entry point of Child.gone not found"
    measured = profile.row("part", "work", profiler.total("Child.work"), "step", "Child.work")
    assert measured["count"] == 1 and measured["seconds"] > 0 and measured["seconds_per_unit"] == measured["seconds"]


def _run_benchmark(script, *args):
    """benchmarks/<script> with the tiny settings of the README test and ``args``, one torch thread."""
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *BENCHMARK_ARGS[f"benchmarks/{script}"], *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_speed_tuning_and_serving_side_by_side(tmp_path):
    """benchmarks/speed.py: PCL's and FineAll's stage seconds on every fold of one comparison, their
    ratio per fold and the paired metric difference; every task served in one call and one per task."""
    _run_benchmark("speed.py", "--parts", "tuning", "serving", f"--out={tmp_path}")
    report = json.loads((tmp_path / "speed.json").read_text())
    tuning = report["tuning"]
    assert tuning["folds"] == [0, 1] and sorted(tuning["results"]) == sorted(TASKS)
    for task, r in tuning["results"].items():
        assert r["metric"] == ("accuracy" if task == "next_genre" else "hit@10")
        assert all(s > 0 for m in ("PCL", "FineAll") for s in r["seconds"][m])
        assert r["ratios"] == [p / f for p, f in zip(r["seconds"]["PCL"], r["seconds"]["FineAll"])]
        assert abs(r["difference"][0] - (r["PCL"][r["metric"]][0] - r["FineAll"][r["metric"]][0])) < 1e-9
    table = (tmp_path / "speed.md").read_text()
    assert "2 folds side by side" in table
    assert all(f"| {t} | " in table for t in TASKS) and "≤ 1/2" in table and "≤ 1/3" in table
    serving = report["serving"]
    assert serving["tasks"] == ["next_click", *TASKS] and serving["all_tasks_speedup"] > 0
    assert f"All {len(serving['tasks'])} tasks in one call" in table


def test_scale_benchmark_runs_every_step_small(tmp_path):
    """benchmarks/scale_tenrec.py on 150 synthetic users: generate, convert, PCL's four stages, and
    every user's representation served from the finished run; each step with its peak memory."""
    _run_benchmark("scale_tenrec.py", f"--out={tmp_path}")
    report = json.loads((tmp_path / "scale.json").read_text())
    assert report["generate"]["rows"] > report["convert"]["interactions"] > 0
    assert [s["task"] for s in report["run"]["stages"]] == ["next_watch", "next_like", "next_category", "age"]
    assert report["serve"]["task"] == "age" and 0 < report["serve"]["users"] <= 150
    assert all(report[s]["peak_rss_gib"] > 0 for s in ("generate", "convert", "run", "serve"))
    assert "users' representations for age" in (tmp_path / "scale.md").read_text()
