"""Continual runs: identity, stage reuse, deterministic resume and append, one writer, no leftovers."""

import copy
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ML100K_TASKS, REPO

from recbole_pcl.config import Config
from recbole_pcl.data.tasks import parse_tasks
from recbole_pcl.model.sequential_recommender.pcl import PCL
from recbole_pcl.pipeline.identity import RunIdentity, digest, fingerprint_files, first_difference
from recbole_pcl.pipeline.run_directory import RunDirectory
from recbole_pcl.quick_start import run_recbole_pcl
from recbole_pcl.utils import PCLError, safe_load

TASKS = ML100K_TASKS[:4]


@pytest.fixture
def tiny_run(task_run):
    return task_run


def _identity(config_dict, dataset="ml-100k"):
    config = Config("PCL", dataset, config_dict=config_dict)
    return RunIdentity(config, parse_tasks(config["tasks"]), fingerprint_files(config), PCL)


def _ml100k_copy(tmp_path, change_first_rating=False):
    """ml-100k's atomic files as the dataset 'mlcopy' in a folder of ours (RecBole always reads
    'ml-100k' from its own copy), optionally with one rating changed; returns its data_path."""
    source = Path(Config("PCL", "ml-100k")["data_path"])
    target = tmp_path / "data" / "mlcopy"
    target.mkdir(parents=True)
    for file in source.iterdir():
        shutil.copyfile(file, target / file.name.replace("ml-100k", "mlcopy"))
    if change_first_rating:
        inter = target / "mlcopy.inter"
        lines = inter.read_text().splitlines(keepends=True)
        user, item, rating, time = lines[1].rstrip("\n").split("\t")
        lines[1] = f"{user}\t{item}\t{int(rating) % 5 + 1}\t{time}\n"
        inter.write_text("".join(lines))
    return str(target.parent)


def _tasks_with(index, **changes):
    tasks = copy.deepcopy(TASKS)
    for key, value in changes.items():
        target = tasks[index]["label"] if key == "interval" else tasks[index]
        if key == "description":
            target["description"] = dict(target["description"], task=value)
        else:
            target[key] = value
    return tasks


# (change, first stage it affects, the key the difference is reported under)
CHANGES = {
    "epochs": ({"epochs": 3}, 0, "setting 'epochs'"),
    "learning_rate": ({"learning_rate": 0.01}, 0, "setting 'learning_rate'"),
    "downstream_learning_rate": ({"downstream_learning_rate": 0.05}, 1, "setting 'downstream_learning_rate'"),
    "lambda": ({"context_lambda": 0.1}, 1, "setting 'context_lambda'"),
    "prompt_init": ({"prompt_init": "random"}, 1, "setting 'prompt_init'"),
    "label interval": ({"tasks": _tasks_with(1, interval="[1,2]")}, 1, "task 2 (next_4star) 'interval'"),
    "description": (
        {"tasks": _tasks_with(2, description="predict something else")},
        2,
        "task 3 (next_5star) 'description'",
    ),
    "task order": ({"tasks": [TASKS[0], TASKS[2], TASKS[1], TASKS[3]]}, 1, "task 2 (next_4star) 'name'"),
    "eval mode": ({"task_eval_mode": "full"}, 0, "setting 'task_eval_mode'"),
}


@pytest.mark.parametrize("change", list(CHANGES) + ["data file"])
def test_identity_changes_exactly_where_a_setting_acts(tiny_run, tmp_path, change):
    dataset = "ml-100k"
    if change == "data file":
        dataset, base_dict = "mlcopy", dict(tiny_run, data_path=_ml100k_copy(tmp_path / "a"))
        changed_dict, first, key = (
            dict(tiny_run, data_path=_ml100k_copy(tmp_path / "b", True)),
            0,
            "data file mlcopy.inter",
        )
    else:
        base_dict = tiny_run
        overrides, first, key = CHANGES[change]
        changed_dict = dict(tiny_run, **overrides)
    base, changed = _identity(base_dict, dataset), _identity(changed_dict, dataset)
    assert digest(base.run()) != digest(changed.run())  # another default run directory
    for index in range(4):
        same = digest(base.stage(index)) == digest(changed.stage(index))
        assert same == (index < first), f"stage {index}"
    assert first_difference(base.stage(3), changed.stage(3))[0] == key


def test_identity_ignores_what_cannot_change_numbers(tiny_run, tmp_path):
    base = _identity(tiny_run)
    same = _identity(
        dict(tiny_run, show_progress=True, state="INFO", checkpoint_dir=str(tmp_path / "elsewhere"), fwt_reference=True)
    )
    assert base.run() == same.run()
    # the same files in another folder are the same data
    copies = [_identity(dict(tiny_run, data_path=_ml100k_copy(tmp_path / d)), "mlcopy") for d in "ab"]
    assert copies[0].run() == copies[1].run()
    # stage 0 is the same plain SASRec pretraining for PCL variants and prompt settings
    other = _identity(dict(tiny_run, contextual_prompt="none", prompt_length=5, adapter="mlp"))
    assert digest(base.stage(0)) == digest(other.stage(0)) and digest(base.stage(1)) != digest(other.stage(1))


def _stage_tensors(run_dir):
    return {
        f: safe_load(os.path.join(run_dir, f))["state_dict"]
        for f in sorted(os.listdir(run_dir))
        if f.startswith("stage-")
    }


def _assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)


def _mtimes(run_dir):
    """Modification times of a run's files (not of its lock file, which any run that checks it opens)."""
    return {f: os.stat(os.path.join(run_dir, f)).st_mtime_ns for f in os.listdir(run_dir) if f != ".lock"}


def test_changed_setting_never_reuses_stale_stages(tiny_run):
    two = dict(tiny_run, tasks=TASKS[:2], epochs=1, context_lambda=1.0)
    first = run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    before = _mtimes(first["run_dir"])
    # another lambda: its own run directory; stage 0 (which lambda cannot change) is shared, not retrained
    second = run_recbole_pcl("PCL", "ml-100k", config_dict=dict(two, context_lambda=0.1))
    assert second["run_dir"] != first["run_dir"]
    a, b = _stage_tensors(first["run_dir"]), _stage_tensors(second["run_dir"])
    assert os.path.samefile(
        *(os.path.join(r, "stage-00-next_click.pth") for r in (first["run_dir"], second["run_dir"]))
    )
    assert not torch.equal(
        a["stage-01-next_4star.pth"]["frozen_context.next_4star"],
        b["stage-01-next_4star.pth"]["frozen_context.next_4star"],
    )
    assert second["final"]["next_4star"] != first["final"]["next_4star"]
    # the first run's directory, given explicitly with other settings, is refused naming the key
    with pytest.raises(PCLError, match=r"holds another run: setting 'context_lambda' is 1\.0 there, 0\.1 here"):
        run_recbole_pcl("PCL", "ml-100k", config_dict=dict(two, context_lambda=0.1, run_dir=first["run_dir"]))
    with pytest.raises(PCLError, match=r"task 2 \(next_4star\) 'interval'"):
        run_recbole_pcl(
            "PCL",
            "ml-100k",
            config_dict=dict(two, tasks=_tasks_with(1, interval="[1,2]")[:2], run_dir=first["run_dir"]),
        )
    assert _mtimes(first["run_dir"]) == before


def test_resume_and_append_are_bit_identical_to_an_uninterrupted_run(tiny_run, tmp_path):
    full = run_recbole_pcl("PCL", "ml-100k", config_dict=tiny_run)
    reference = _stage_tensors(full["run_dir"])
    # interrupted after stage 1: the last two stages are gone (from the run and the shared store)
    for name in ("stage-02-next_5star.pth", "stage-03-next_genre.pth"):
        path = os.path.join(full["run_dir"], name)
        for shared in os.listdir(os.path.join(tiny_run["checkpoint_dir"], "stages")):
            shared_path = os.path.join(tiny_run["checkpoint_dir"], "stages", shared)
            if os.path.samefile(shared_path, path):
                os.remove(shared_path)
        os.remove(path)
    resumed = run_recbole_pcl("PCL", "ml-100k", config_dict=tiny_run)
    _assert_same_tensors(_stage_tensors(resumed["run_dir"]), reference)
    assert resumed["final"] == full["final"] and resumed["stages"][2:] == [
        dict(s, seconds=r["seconds"]) for s, r in zip(full["stages"][2:], resumed["stages"][2:])
    ]
    # a run of three tasks with the fourth appended later equals the four-task run from scratch
    appended_dir = dict(tiny_run, checkpoint_dir=str(tmp_path / "appended"))
    run_recbole_pcl("PCL", "ml-100k", config_dict=dict(appended_dir, tasks=TASKS[:3]))
    appended = run_recbole_pcl("PCL", "ml-100k", config_dict=appended_dir)
    _assert_same_tensors(_stage_tensors(appended["run_dir"]), reference)
    assert appended["final"] == full["final"]


def _cli_process(config_file, **kwargs):
    command = [
        sys.executable,
        str(REPO / "run_recbole_pcl.py"),
        "--model=PCL",
        "--dataset=ml-100k",
        f"--config_files={config_file}",
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)


def test_one_writer_per_run_directory_and_no_stuck_lock(tiny_run, tmp_path):
    from recbole_pcl.pipeline import TaskPipeline

    run_dir = tmp_path / "busy"
    long_run = dict(tiny_run, run_dir=str(run_dir), epochs=200, stopping_step=200)  # busy for minutes
    config_file = tmp_path / "long.yaml"
    config_file.write_text(yaml.safe_dump(long_run))
    first = _cli_process(config_file)
    try:
        lock = run_dir / ".lock"
        for _ in range(600):  # wait until the first run holds the directory
            if lock.is_file() and lock.read_text().strip() == str(first.pid):
                break
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.1)
        second = _cli_process(config_file)
        _, err = second.communicate(timeout=300)
        assert second.returncode == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and f"run directory {run_dir} is in use by another run (pid {first.pid})" in lines[0]
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.send_signal(signal.SIGKILL)  # killed mid-run: no clean-up of its own
        first.wait()
    # the lock died with its process: the same run can take the directory again at once
    run = TaskPipeline(Config("PCL", "ml-100k", config_dict=long_run), PCL)
    with RunDirectory(run.run_dir, run.store, run.identity):
        pass


def test_failed_or_killed_runs_leave_nothing_behind(tiny_run, tmp_path, monkeypatch):
    from recbole_pcl.pipeline import SequentialStrategy

    two = dict(tiny_run, tasks=TASKS[:2], epochs=1)

    def crash(*args, **kwargs):
        raise RuntimeError("killed during pretraining")

    monkeypatch.setattr(SequentialStrategy, "train_stage", crash)
    with pytest.raises(RuntimeError):
        run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    monkeypatch.undo()
    saved = tiny_run["checkpoint_dir"]
    assert not os.path.exists(saved)  # the failed run's empty directory (and the folder made for it) is gone
    result = run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    run_dir = result["run_dir"]
    # a killed run's half-written file is removed by the next run; no best-epoch checkpoints are ever written
    for name in ("results.json", "stage-01-next_4star.pth"):  # killed while writing stage 1
        os.remove(os.path.join(run_dir, name))
    (open(os.path.join(run_dir, ".tmp-killed.pth"), "wb")).write(b"partial")
    again = run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    assert sorted(os.listdir(run_dir)) == [
        ".lock",
        "results.csv",
        "results.json",
        "results.md",
        "results.png",
        "run.json",
        "stage-00-next_click.pth",
        "stage-01-next_4star.pth",
    ]
    assert again["final"] == result["final"]


def test_files_follow_the_umask(tiny_run):
    old = os.umask(0o027)
    try:
        result = run_recbole_pcl("PCL", "ml-100k", config_dict=dict(tiny_run, tasks=TASKS[:2], epochs=1))
    finally:
        os.umask(old)
    for name in ("results.json", "results.png", "stage-01-next_4star.pth"):
        assert os.stat(os.path.join(result["run_dir"], name)).st_mode & 0o777 == 0o640, name


def test_pretrained_checkpoint_must_be_this_runs_stage_0(tiny_run):
    two = dict(tiny_run, tasks=TASKS[:2], epochs=1)
    first = run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    backbone = os.path.join(first["run_dir"], "stage-00-next_click.pth")
    # other prompt settings start from the same backbone
    other = run_recbole_pcl("PCL", "ml-100k", config_dict=dict(two, prompt_length=5, pretrained_checkpoint=backbone))
    assert other["stages"][0] == first["stages"][0]
    with pytest.raises(PCLError, match=r"is not this run's stage 0: setting 'hidden_size' is 16 there, 8 here"):
        run_recbole_pcl("PCL", "ml-100k", config_dict=dict(two, hidden_size=8, pretrained_checkpoint=backbone))


def test_run_directory_refuses_a_stage_file_of_another_run(tmp_path):
    class Identity:
        def run(self):
            return {"settings": {"a": 1}, "tasks": [], "data": {}}

    with RunDirectory(tmp_path / "r", tmp_path / "stages", Identity()) as directory:
        directory.save("stage-00-t.pth", {"settings": {"epochs": 1}}, {"w": torch.ones(2)}, {"seconds": 1})
        assert torch.equal(
            directory.load("stage-00-t.pth", {"settings": {"epochs": 1}})["state_dict"]["w"], torch.ones(2)
        )
        with pytest.raises(PCLError, match=r"belongs to another run: setting 'epochs' is 1 there, 2 here"):
            directory.load("stage-00-t.pth", {"settings": {"epochs": 2}})
        with open(directory.file("stage-01-u.pth"), "wb") as f:
            f.write(b"PK\x03\x04 truncated")
        with pytest.raises(PCLError, match=r"stage-01-u.pth is damaged \(truncated or not a torch file\)"):
            directory.load("stage-01-u.pth", {"settings": {"epochs": 3}})


def test_data_files_are_hashed_once_per_process_until_they_change(tiny_run, tmp_path):
    from recbole_pcl.pipeline.identity import file_sha256

    data_path = _ml100k_copy(tmp_path)
    settings = dict(tiny_run, data_path=data_path)
    files = len(os.listdir(os.path.join(data_path, "mlcopy")))
    before = file_sha256.cache_info().misses
    first = _identity(settings, "mlcopy")
    for _ in range(3):  # the comparison, the runner and the worker build the same identity
        assert _identity(settings, "mlcopy").run() == first.run()
    assert file_sha256.cache_info().misses - before == files
    inter = os.path.join(data_path, "mlcopy", "mlcopy.inter")
    with open(inter, "a") as f:
        f.write("")  # same content: a new modification time is hashed again, to the same digest
    os.utime(inter, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert _identity(settings, "mlcopy").run() == first.run()
    assert file_sha256.cache_info().misses - before == files + 1
