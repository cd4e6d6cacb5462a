"""The comparison protocol: k user folds, one shared T1 pretraining, intervals, paired differences, reuse."""

import json
import os

import numpy as np
import pytest
import yaml
from conftest import ML100K_TASKS
from scipy import stats

from recbole_pcl.config import Config
from recbole_pcl.data.continual import ContinualData
from recbole_pcl.experiment import run_comparison
from recbole_pcl.pipeline import TaskPipeline
from recbole_pcl.pipeline.identity import digest
from recbole_pcl.utils import get_model

TASKS = ML100K_TASKS[:4]


@pytest.fixture
def tiny(task_run):
    return dict(task_run, epochs=1, n_folds=3, fwt_reference=True, runner="ray")


def test_folds_test_every_labelled_user_exactly_once(tiny):
    tested, splits = [], []
    for fold in range(3):
        data = ContinualData(Config("PCL", "ml-100k", config_dict=dict(tiny, fold=fold)))
        split = data.split
        assert not set(split["train"]) & set(split["valid"]) and not set(split["test"]) & (
            set(split["train"]) | set(split["valid"])
        )
        assert len(split["valid"]) == pytest.approx(0.1 / 0.9 * (len(split["train"]) + len(split["valid"])), abs=1)
        tested += list(split["test"])
        splits.append(split)
    labelled = np.concatenate(list(splits[0].values()))
    assert sorted(tested) == sorted(labelled)  # each labelled user in exactly one test fold


@pytest.mark.parametrize("per_fold", [True, False])
def test_t1_pretraining_is_one_stage_per_fold_shared_by_the_methods(tiny, per_fold):
    """With ``fold_pretraining`` each fold pretrains its own T1 (its own seed and users), shared by every
    method that starts from it; without, one stage serves every fold."""
    stage0, seeds = {}, {}
    for model in ("PCL", "FineAll", "SASRecPerTask", "SinMo", "TERACON", "MTL"):
        for fold in (0, 1):
            config = Config(model, "ml-100k", config_dict=dict(tiny, fold=fold, fold_pretraining=per_fold))
            pipeline = TaskPipeline(config, get_model(model))
            stage0[model, fold] = digest(pipeline.identity.stage(0))
            seeds[model, fold] = pipeline.stage_seed(0)
    for fold in (0, 1):
        shared = {stage0[m, fold] for m in ("PCL", "FineAll", "SASRecPerTask", "SinMo")}
        assert len(shared) == 1  # the plain SASRec pretraining
        assert stage0["TERACON", fold] not in shared  # its own masked T1
    assert (stage0["PCL", 0] != stage0["PCL", 1]) == per_fold
    assert (seeds["PCL", 0] != seeds["PCL", 1]) == per_fold
    assert (stage0["TERACON", 0] != stage0["TERACON", 1]) == per_fold


def test_each_fold_scores_t1_on_its_test_users_and_validates_on_its_own_users(tiny):
    data = [ContinualData(Config("PCL", "ml-100k", config_dict=dict(tiny, fold=f))) for f in range(3)]
    for d in data:
        t1_test = set(d.tasks[0].test._dataset.inter_feat["user_id"].numpy())
        t1_valid = set(d.tasks[0].valid._dataset.inter_feat["user_id"].numpy())
        assert t1_test == set(d.split["test"].tolist())  # next_click is this fold's test users' T1 targets
        assert not t1_valid & t1_test and t1_valid  # validated on users outside the test fold
    # the folds' validation users are drawn for each fold: not the same users again and again
    valid = [set(d.split["valid"].tolist()) for d in data]
    assert len(valid[0] & valid[1]) < len(valid[0]) / 2 and len(valid[1] & valid[2]) < len(valid[1]) / 2


def test_comparison_intervals_differences_and_reuse(tiny, tmp_path):
    models = ["PCL", "SASRecPerTask", "MTL"]
    result = run_comparison(models, "ml-100k", config_dict=tiny)
    out = result["directory"]
    for name in ("compare.json", "compare.csv", "compare.md", "compare.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    methods = {m["model"]: m for m in result["methods"]}
    pcl, sasrec = (
        methods["PCL"]["tasks"]["next_5star"]["hit@10"],
        methods["SASRecPerTask"]["tasks"]["next_5star"]["hit@10"],
    )
    assert len(pcl["folds"]) == 3
    half = stats.t.ppf(0.975, 2) * np.std(pcl["folds"], ddof=1) / np.sqrt(3)
    assert pcl["mean"] == pytest.approx(np.mean(pcl["folds"])) and pcl["ci95"] == pytest.approx(half)
    diff = np.asarray(sasrec["folds"]) - np.asarray(pcl["folds"])
    assert sasrec["minus_reference"]["mean"] == pytest.approx(diff.mean())
    assert sasrec["minus_reference"]["ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * diff.std(ddof=1) / np.sqrt(3))
    # FWT is measured against the SASRec row of the same fold, not a separate run
    fwt = methods["PCL"]["tasks"]["next_5star"]["FWT%"]["folds"]
    runs = [json.load(open(os.path.join(r, "results.json"))) for r in _run_dirs(tiny, "PCL")]
    for value, run, reference in zip(fwt, runs, sasrec["folds"]):
        after = {r["task"]: r for r in run["tasks"]}["next_5star"]["after_stage"]
        assert value == pytest.approx(round((after - reference) / reference * 100, 2), abs=0.02)
    assert methods["MTL"]["F"] == 4 and methods["PCL"]["B"] == 1 and methods["SASRecPerTask"]["B"] == 4
    # the best single-objective method of each column is bold (never the joint MTL)
    table = result["table"].splitlines()
    assert "**" in result["table"] and not any("**" in line for line in table if line.startswith("| MTL "))
    # a rerun reuses every finished (method, fold) run
    stamps = _stage_mtimes(tiny["checkpoint_dir"])
    again = run_comparison(models, "ml-100k", config_dict=tiny)
    assert _stage_mtimes(tiny["checkpoint_dir"]) == stamps and again["methods"] == result["methods"]
    # a comparison over some folds (one session's share) reuses those runs and says which folds it covers
    part = run_comparison(models, "ml-100k", config_dict=dict(tiny, compare_folds=[2, 0]))
    assert _stage_mtimes(tiny["checkpoint_dir"]) == stamps
    pcl_part = {m["model"]: m for m in part["methods"]}["PCL"]["tasks"]["next_5star"]["hit@10"]
    assert pcl_part["folds"] == [pcl["folds"][0], pcl["folds"][2]]
    assert open(os.path.join(part["directory"], "compare.md")).read().startswith("ml-100k, folds 0, 2 of 3:")
    one = run_comparison(["PCL"], "ml-100k", config_dict=dict(tiny, compare_folds=[1]))
    row = next(line for line in one["table"].splitlines() if line.startswith("| PCL "))
    assert "±" not in row and f"{pcl['folds'][1]:.4f}" in row  # one fold: the value, no interval


def _run_dirs(tiny, model):
    return [
        TaskPipeline(Config(model, "ml-100k", config_dict=dict(tiny, fold=f)), get_model(model)).run_dir
        for f in range(3)
    ]


def _stage_mtimes(saved):
    return {
        os.path.join(d, f): os.stat(os.path.join(saved, d, f)).st_mtime_ns
        for d in os.listdir(saved)
        if os.path.isdir(os.path.join(saved, d))
        for f in os.listdir(os.path.join(saved, d))
        if f.startswith("stage-")
    }


def test_comparison_from_the_command_line(tiny, tmp_path, capsys):
    import run_recbole_pcl as cli

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(dict(tiny, n_folds=2)))
    assert cli.main(["--model=TaskPrior,SASRecPerTask", "--dataset=ml-100k", f"--config_files={config}"]) == 0
    outs = [d for d in os.listdir(tiny["checkpoint_dir"]) if d.startswith("compare-ml-100k-")]
    assert len(outs) == 1 and "SASRec" in open(os.path.join(tiny["checkpoint_dir"], outs[0], "compare.md")).read()
    assert cli.main(["--model=PCL,MTL", "--dataset=ml-100k", f"--config_files={config}", "--fold=1"]) == 2
    assert "a comparison runs every fold itself" in capsys.readouterr().err
    assert cli.main(["--model=PCL,MTL", "--dataset=ml-100k", f"--config_files={config}", "--compare_folds=[0,2]"]) == 2
    assert (
        "setting 'compare_folds' must be a non-empty list of folds below 'n_folds' (2), got [0, 2]"
        in capsys.readouterr().err
    )


def test_comparisons_run_apart_merge_into_the_comparison_of_every_method(task_run, tmp_path, capsys):
    from recbole_pcl.experiment import merge

    settings = dict(task_run, epochs=1, n_folds=2)
    first = run_comparison(["PCL", "TaskPrior"], "ml-100k", config_dict=settings)
    second = run_comparison(["PCL", "SASRecPerTask"], "ml-100k", config_dict=settings)
    paths = [os.path.join(c["directory"], "compare.json") for c in (first, second)]
    assert merge.main([*paths, f"--out={tmp_path / 'merged'}"]) == 0
    merged = json.load(open(tmp_path / "merged" / "compare.json"))
    together = run_comparison(
        ["PCL", "TaskPrior", "SASRecPerTask"], "ml-100k", config_dict=settings
    )  # every run reused
    assert merged["methods"] == together["methods"] and merged["table"] == together["table"]
    assert merged["differences"] == together["differences"] and merged["runs"] == together["runs"]
    assert (tmp_path / "merged" / "compare.md").read_text().startswith("ml-100k, 2 folds:")
    # FWT is reported only where a run was asked for it (not part of its identity): the merge keeps it
    pcl = next(m for m in merged["methods"] if m["method"] == "PCL")
    half = stats.t.ppf(0.975, 1) * np.std([9.5, 10.5], ddof=1) / np.sqrt(2)  # a consistent interval
    fwt = {"mean": 10.0, "ci95": float(half), "folds": [9.5, 10.5]}
    with_fwt = json.load(open(paths[0]))
    with_fwt["methods"][0]["tasks"]["next_4star"]["FWT%"] = fwt
    (tmp_path / "fwt.json").write_text(json.dumps(with_fwt))
    assert merge.main([paths[1], str(tmp_path / "fwt.json"), f"--out={tmp_path / 'fwt'}"]) == 0
    kept = next(m for m in json.load(open(tmp_path / "fwt" / "compare.json"))["methods"] if m["method"] == "PCL")
    assert (
        kept["tasks"]["next_4star"]["FWT%"] == fwt
        and kept["tasks"]["next_4star"]["hit@10"] == pcl["tasks"]["next_4star"]["hit@10"]
    )
    # a method in both files must agree fold by fold; the folds must be the same
    changed = json.load(open(paths[1]))
    stat = changed["methods"][0]["tasks"]["next_5star"]["hit@10"]
    stat["folds"][1] += 0.01
    stat["mean"] = float(np.mean(stat["folds"]))  # a consistent row: its mean and interval are its folds'
    stat["ci95"] = float(stats.t.ppf(0.975, 1) * np.std(stat["folds"], ddof=1) / np.sqrt(2))
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    assert merge.main([paths[0], str(tmp_path / "changed.json"), f"--out={tmp_path / 'bad'}"]) == 2
    assert f"changed.json: method 'PCL' differs from {paths[0]} in next_5star hit@10" in capsys.readouterr().err
    # every row says where its numbers were computed; a difference names both places
    import torch

    here = merged["methods"][0]["environments"]
    assert (
        len(here) == 1
        and here[0]["threads"] == torch.get_num_threads()
        and here[0]["device"] == "cpu"
        and here[0]["processor"]
    )
    changed["methods"][0]["environments"] = [dict(here[0], threads=here[0]["threads"] + 1)]
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    assert merge.main([paths[0], str(tmp_path / "changed.json"), f"--out={tmp_path / 'bad'}"]) == 2
    assert f"'threads': {here[0]['threads'] + 1}" in capsys.readouterr().err
    changed = dict(json.load(open(paths[1])), fold_indices=[0])
    (tmp_path / "one.json").write_text(json.dumps(changed))
    assert merge.main([paths[0], str(tmp_path / "one.json"), f"--out={tmp_path / 'bad'}"]) == 2
    assert "one.json has fold_indices [0] but" in capsys.readouterr().err
    assert merge.main([paths[0], str(tmp_path / "changed.json.missing"), f"--out={tmp_path / 'bad'}"]) == 2
    assert "changed.json.missing cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # a refused merge writes nothing


def test_every_method_is_tuned_with_the_same_budget_on_validation_users(tiny, tmp_path):
    """``tune_trials: 2``: each method runs its defaults and one drawn trial on each fold; each fold keeps
    the trial with the best validation score (the mean validation metric of the final model), which
    the comparison reports with its settings; a method with nothing to tune runs once."""
    settings = dict(tiny, tasks=TASKS[:2], tune_trials=2, epochs=1)
    small = {"prompt_length": {"choice": [2, 3]}, "context_lambda": {"loguniform": [0.1, 1.0]}}  # t <= n = 10
    pcl = {"label": "PCL", "model": "PCL", "tune_space": small}
    result = run_comparison([pcl, "FineAll", "TaskPrior"], "ml-100k", config_dict=settings)
    tuning = result["tuning"]
    assert tuning["trials"] == 2
    for label in ("PCL", "FineAll"):
        method = tuning["methods"][label]
        assert len(method["trials"]) == 2 and method["trials"][0] == {} and method["trials"][1]  # defaults, drawn
        space = small if label == "PCL" else Config(label, "ml-100k", config_dict=settings)["tune_space"]
        assert set(method["trials"][1]) == set(space)
        for fold in ("0", "1"):
            scores = method["scores"][fold]
            assert method["chosen"][fold] == int(np.argmax(scores))
            run = result["runs"][f"{label}/fold-{fold}"]
            assert run["settings"] == method["trials"][method["chosen"][fold]]
            assert {"identity", "stage0_seed", "seconds", "valid_history", "environment"} <= set(run)
    assert tuning["methods"]["TaskPrior"]["trials"] == [{}]  # nothing to tune: its defaults, once
    # the reported fold values are the chosen trial's test metrics
    pcl = next(m for m in result["methods"] if m["method"] == "PCL")
    for fold in (0, 1):
        run_dir = TaskPipeline(
            Config(
                "PCL",
                "ml-100k",
                config_dict=dict(settings, fold=fold, **result["runs"][f"PCL/fold-{fold}"]["settings"]),
            ),
            get_model("PCL"),
        ).run_dir
        with open(os.path.join(run_dir, "results.json")) as f:
            assert json.load(f)["final"]["next_4star"]["hit@10"] == pcl["tasks"]["next_4star"]["hit@10"]["folds"][fold]
    page = open(os.path.join(result["directory"], "compare.md")).read()
    assert "Tuning: 2 trials per method and fold" in page and "[PCL](curves-PCL.png)" in page
    assert os.path.getsize(os.path.join(result["directory"], "curves-FineAll.png")) > 0  # one figure per method
    assert sum(line.startswith("| PCL ") and " of 2 " in line for line in page.splitlines()) == 3  # one per fold
