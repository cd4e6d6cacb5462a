"""Experiments: runs as Ray tasks (failures isolated, finished runs skipped), Ray Tune, RQ1-RQ4, CLI."""

import os

import numpy as np
import pytest
import yaml
from conftest import ML100K_TASKS, REPO

from recbole_pcl.experiment import run_experiment
from recbole_pcl.experiment.runner import Job, device_options, run_jobs

# On one pytest worker: its module fixture (a local Ray instance) is started once
pytestmark = pytest.mark.xdist_group("experiments")

TASKS = ML100K_TASKS[:4]


@pytest.fixture
def tiny(task_run):
    return dict(task_run, n_folds=2)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    yield ray
    ray.shutdown()


def test_ray_grid_keeps_results_reports_failures_and_skips_finished(tiny, local_ray):
    settings = dict(tiny, runner="ray", tasks=TASKS[:2], epochs=1)
    jobs = [Job(f"fold-{f}", "TaskPrior", "ml-100k", config_dict=dict(settings, fold=f)) for f in (0, 1)]
    jobs.append(Job("broken", "TaskPrior", "ml-100k", config_dict=dict(settings, fold=0, epochs=0)))
    outcomes = run_jobs(jobs, runner="ray", show_progress=False)
    assert local_ray.is_initialized()
    assert outcomes["fold-0"]["ok"] and outcomes["fold-1"]["ok"] and not outcomes["broken"]["ok"]
    assert "setting 'epochs' must be an integer >= 1, got 0" in outcomes["broken"]["error"]
    for key in ("fold-0", "fold-1"):
        run_dir = outcomes[key]["result"]["run_dir"]
        assert os.path.isabs(run_dir) and os.path.isfile(os.path.join(run_dir, "results.json"))
    again = run_jobs(jobs, runner="ray", show_progress=False)  # finished runs are not run again
    assert again["fold-0"].get("skipped") and again["fold-1"].get("skipped") and not again["broken"]["ok"]
    assert again["fold-0"]["result"]["final"] == outcomes["fold-0"]["result"]["final"]


def test_joint_methods_start_with_the_shared_pretraining(tiny, monkeypatch):
    from recbole_pcl.experiment import runner

    phases = []
    monkeypatch.setattr(
        runner,
        "_serial",
        lambda jobs, show: phases.append([j.key for j in jobs]) or {j.key: {"ok": True} for j in jobs},
    )
    jobs = [
        Job(f"{m}/fold-{f}", m, "ml-100k", config_dict=dict(tiny, fold=f, fwt_reference=True))
        for f in (0, 1)
        for m in ("PCL", "MTL", "SASRecPerTask")
    ]
    run_jobs(jobs, runner="serial", show_progress=False)
    # nothing waits on the joint MTL, which reads no other run; PCL reads the SASRecPerTask runs (FWT)
    pretrainings = sorted(k for k in phases[0] if k.startswith("pretrain/"))
    assert len(pretrainings) == 2  # each fold's own T1, shared by PCL and SASRecPerTask of that fold
    assert [sorted(p) for p in phases] == [
        sorted([*pretrainings, "MTL/fold-0", "MTL/fold-1"]),
        ["SASRecPerTask/fold-0", "SASRecPerTask/fold-1"],
        ["PCL/fold-0", "PCL/fold-1"],
    ]


def test_each_run_keeps_the_gpu_ray_assigned_it():
    assert device_options({"CUDA_VISIBLE_DEVICES": "3"}) == [
        "--gpu_id=3",
        "--use_gpu=True",
    ]  # RecBole re-sets the same GPU
    assert device_options({"CUDA_VISIBLE_DEVICES": ""}) == ["--gpu_id=", "--use_gpu=False"]  # a CPU task
    assert device_options({}) == []  # outside Ray: the user's settings stand
    from recbole_pcl.config import Config

    config = Config("SASRec", "ml-100k", cmd_args=device_options({"CUDA_VISIBLE_DEVICES": ""}))
    assert config["use_gpu"] is False and str(config["device"]) == "cpu"


def test_tune_two_trials_writes_the_best_settings(tiny, local_ray, tmp_path):
    definition = tmp_path / "space.yaml"
    definition.write_text(
        yaml.safe_dump(
            {
                "model": "PCL",
                "space": {
                    "prompt_length": {"choice": [2, 4]},
                    "downstream_learning_rate": {"loguniform": [0.001, 0.05]},
                },
                "samples": 2,
                "grace_epochs": 1,
                "reduction_factor": 2,
            }
        )
    )
    result = run_experiment("tune", "ml-100k", config_dict=dict(tiny, tasks=TASKS[:3]), definition=str(definition))
    assert len(result["trials"]) == 2 and result["best"]["prompt_length"] in (2, 3, 4)
    defaults = [
        t for t in result["trials"] if t["defaults"]
    ]  # the first trial: the settings as given (prompt_length 3)
    assert len(defaults) == 1 and defaults[0]["prompt_length"] == tiny["prompt_length"] == 3
    best_file = os.path.join(result["directory"], "best.yaml")
    for name in ("tune.csv", "tune.md", "tune.png", "tune.json"):
        assert os.path.getsize(os.path.join(result["directory"], name)) > 0
    from recbole_pcl.config import Config

    others = {k: v for k, v in tiny.items() if k not in result["best"]}  # config_dict would override the file
    config = Config("PCL", "ml-100k", [best_file], others)  # what --config_files accepts
    assert config["prompt_length"] == result["best"]["prompt_length"]
    assert config["downstream_learning_rate"] == pytest.approx(result["best"]["downstream_learning_rate"])
    again = run_experiment("tune", "ml-100k", config_dict=dict(tiny, tasks=TASKS[:3]), definition=str(definition))
    sampled = lambda r: sorted((t["prompt_length"], t["downstream_learning_rate"]) for t in r["trials"])  # noqa: E731
    assert sampled(again) == sampled(result)  # the search is seeded: a rerun tries the same settings


def test_tune_clock_compares_trials_on_the_same_tasks_at_each_step():
    from recbole_pcl.experiment.tune import StageClock

    sent = []
    clock = StageClock(epochs=5, emit=sent.append)
    clock.epoch(0, 1, 0.9)  # pretraining reports nothing
    for epoch, score in enumerate([0.2, 0.4, 0.3], start=1):  # task 1 stops early after 3 epochs
        clock.epoch(1, epoch, score)
    clock.epoch(2, 1, 0.1)
    clock.finish({1: 0.4, 2: 0.3})
    assert [r["step"] for r in sent] == [1, 2, 3, 5, 6, 11]
    assert [r["stage"] for r in sent] == [1, 1, 1, 1, 2, 2]
    assert sent[3]["score"] == pytest.approx(0.4)  # step 5 still means task 1 alone: its best
    assert sent[4]["score"] == pytest.approx(0.25)  # steps 6-10: tasks 1 and 2
    assert sent[5] == {"score": pytest.approx(0.35), "step": 11, "stage": 2, "complete": True}
    assert not any(r["complete"] for r in sent[:-1])


def test_rq2_runs_every_order_and_reports_the_spread(tiny):
    result = run_experiment("rq2", "ml-100k", config_dict=dict(tiny, tasks=TASKS[:3]))
    assert result["orders"] == ["23", "32"] and not result["failures"]
    for task, spread in result["spread"].items():
        means = [r["mean"] for r in result["rows"] if r["task"] == task]
        assert len(means) == 2 and spread["absolute"] == pytest.approx(max(means) - min(means))
    assert os.path.getsize(os.path.join(result["directory"], "rq2.png")) > 0


def test_rq2_tries_every_permutation_of_the_downstream_tasks(tiny, monkeypatch):
    """Three downstream tasks have six orders (not only the three rotations); T1 stays first."""
    from recbole_pcl.experiment import experiment

    seen = []

    def fake_run(jobs, **runner):
        seen.extend(jobs)
        final = {t["name"]: {"hit@10": 0.5, "accuracy": 0.5} for t in TASKS}
        return {job.key: {"ok": True, "result": {"final": final}, "seconds": 0.0} for job in jobs}

    monkeypatch.setattr(experiment, "run_jobs", fake_run)
    result = run_experiment("rq2", "ml-100k", config_dict=dict(tiny, tasks=TASKS))
    assert sorted(result["orders"]) == ["234", "243", "324", "342", "423", "432"]
    orders = {tuple(t["name"] for t in job.config_dict["tasks"]) for job in seen}
    assert len(orders) == 6 and all(order[0] == "next_click" for order in orders)
    assert {frozenset(order) for order in orders} == {frozenset(t["name"] for t in TASKS)}


def test_rq3_cold_items_curves(tiny):
    definition = yaml.safe_load((REPO / "properties" / "experiment" / "rq3.yaml").read_text())
    definition["settings"].update(epochs=2, stopping_step=2)
    path = os.path.join(tiny["checkpoint_dir"], "..", "rq3.yaml")
    os.makedirs(tiny["checkpoint_dir"], exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(definition, f)
    result = run_experiment("rq3", "ml-100k", config_dict=dict(tiny, tasks=TASKS[:2]), definition=path)
    curves = result["curves"]
    assert set(curves) == {"PCL|next_4star", "w/o prompts|next_4star"} and all(len(c) == 2 for c in curves.values())


def test_rq3_keeps_cold_items_out_of_pretraining_and_tunes_only_them(tiny):
    from recbole_pcl.config import Config
    from recbole_pcl.pipeline import TaskPipeline
    from recbole_pcl.utils import get_model

    config = Config(
        "PCL", "ml-100k", config_dict=dict(tiny, cold_item_share=0.5, tune_cold_items=True, tasks=TASKS[:2])
    )
    pipeline = TaskPipeline(config, get_model("PCL"))
    cold = set(pipeline.data.cold_items.tolist())
    assert abs(len(cold) - (pipeline.data.dataset.item_num - 1) / 2) <= 1
    t1 = pipeline.tasks[0].train._dataset.inter_feat
    seen = set(t1["item_id_list"].flatten().tolist()) | set(t1["item_id"].tolist())
    assert not (seen - {0}) & cold  # T1 never sees a cold item
    model = pipeline.new_model()
    model.begin_task(None)
    model.end_task(None)
    before = model.item_embedding.weight.detach().clone()
    model.begin_task("next_4star")
    model.train()
    model.calculate_loss(next(iter(pipeline.tasks[1].train))).backward()
    grad = model.item_embedding.weight.grad
    warm = [i for i in range(1, len(before)) if i not in cold]
    assert grad[warm].abs().sum() == 0 and grad[sorted(cold)].abs().sum() > 0


def test_rq4_mlp_on_user_vectors(tiny):
    result = run_experiment("rq4", "ml-100k", config_dict=dict(tiny, tasks=[TASKS[0], TASKS[1], TASKS[3]]))
    rows = {r["features"]: r for r in result["rows"]}
    assert set(rows) == {"PCL", "SSP", "NP"} and all(0 <= r["test_accuracy"] <= 1 for r in rows.values())
    assert all(len(f) == 2 for f in result["fits"].values())  # two folds each
    fit = result["fits"]["PCL"][0]
    # the reported fit is the best validation epoch's: its first maximum, and the time it was reached
    assert fit["best_epoch"] == fit["curve"].index(max(fit["curve"])) + 1
    assert fit["seconds_to_best"] == fit["times"][fit["best_epoch"] - 1]


def test_experiment_command_errors(capsys, tmp_path):
    import run_experiment as cli

    with pytest.raises(SystemExit):  # argparse names the valid experiments
        cli.main(["--experiment=rq9"])
    assert "rq1" in capsys.readouterr().err
    assert cli.main(["--experiment=rq2", f"--definition={tmp_path / 'missing.yaml'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.yaml cannot be read" in err[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": "PCL", "space": {"prompt_length": {"normal": [1, 2]}}}))
    assert cli.main(["--experiment=tune", f"--definition={bad}", "--runner=serial"]) == 2
    assert "tune space: 'prompt_length' must be one of" in capsys.readouterr().err


def test_comparison_failure_is_reported_without_losing_the_others(tiny):
    from recbole_pcl.experiment import run_comparison

    methods = ["TaskPrior", {"label": "broken", "model": "TaskPrior", "label_window": 1000}]
    result = run_comparison(methods, "ml-100k", config_dict=dict(tiny, tasks=TASKS[:2]))
    assert [m["method"] for m in result["methods"]] == ["TaskPrior"]
    assert set(result["failures"]) == {"broken/fold-0", "broken/fold-1"}
    assert "label_window" in result["failures"]["broken/fold-0"]
    assert "Failed runs" in open(os.path.join(result["directory"], "compare.md")).read()
    assert np.isfinite(result["methods"][0]["tasks"]["next_4star"]["hit@10"]["mean"])
