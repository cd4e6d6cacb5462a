"""Result integrity: damaged stages are never used, failures never exit 0, bad input outside the
settings is one line with exit status 2 before any long work, nothing of the user's is destroyed.

Every test here is a probe a new user ran (flipped bytes, truncated files, a read-only or full disk,
misspelled definitions...), kept so that it stays fixed."""

import contextlib
import errno
import json
import os
import shutil
import subprocess
import time
import zipfile

import pytest
import torch
import yaml
from conftest import ML100K_TASKS, module_folder, task_run_settings

import run_experiment
import run_recbole_pcl as cli
from recbole_pcl.experiment import merge
from recbole_pcl.quick_start import load_continual_run, run_recbole_pcl
from recbole_pcl.utils import PCLError, safe_load

TASKS = ML100K_TASKS[:4]


def _two(settings):
    """A two-task PCL run (T1, next_4star) of one epoch per stage."""
    return dict(settings, tasks=TASKS[:2], epochs=1, contextual_prompt="none")


@pytest.fixture
def two(task_run):
    return _two(task_run)


def _yaml(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return str(path)


def _one_line(capsys, main, *args, status=2):
    assert main(list(args)) == status
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _stage_files(checkpoint_dir):
    store = os.path.join(checkpoint_dir, "stages")
    return sorted(os.listdir(store)) if os.path.isdir(store) else []


# ----- 1. damaged stages ------------------------------------------------------------------------------
def _flip_tensor_bytes(path):
    """Flip 8 bytes in the middle of the first tensor's storage inside the torch zip archive."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size >= 16)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_length, extra_length = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
        start = info.header_offset + 30 + name_length + extra_length + info.file_size // 2 - 4
        f.seek(start)
        data = f.read(8)
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in data))


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("damage", [_flip_tensor_bytes, _truncate])
def test_a_damaged_stage_is_never_loaded_nor_spread(two, damage):
    first = run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    stage0 = os.path.join(first["run_dir"], "stage-00-next_click.pth")
    store = os.path.join(two["checkpoint_dir"], "stages")
    shared = next(os.path.join(store, n) for n in os.listdir(store) if os.path.samefile(os.path.join(store, n), stage0))
    damage(stage0)  # a hard link: the run's file and the store's are one file
    # serving reads the run's file; another run sharing the backbone reads the store's: both name both
    for read, path, others in (
        (lambda: load_continual_run("PCL", "ml-100k", config_dict=two), stage0, [shared]),
        (lambda: run_recbole_pcl("PCL", "ml-100k", config_dict=dict(two, prompt_length=2)), shared, [stage0]),
    ):
        with pytest.raises(PCLError) as refused:
            read()
        files = " ".join(sorted([path, *others]))
        message = str(refused.value)
        assert message.startswith(f"stage file {path} is damaged (")
        assert " ".join(sorted(message.split(": rm ")[1].split())) == files and "remove them" in message
    os.remove(stage0)
    os.remove(shared)
    again = run_recbole_pcl("PCL", "ml-100k", config_dict=dict(two, prompt_length=2))  # retrains stage 0
    assert again["stages"][0]["test"] == first["stages"][0]["test"]  # the same stage, trained again


def test_a_damaged_store_copy_is_named_and_never_linked(two):
    first = run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    stage0 = os.path.join(first["run_dir"], "stage-00-next_click.pth")
    store = os.path.join(two["checkpoint_dir"], "stages")
    shared = next(os.path.join(store, n) for n in os.listdir(store) if os.path.samefile(os.path.join(store, n), stage0))
    shutil.copyfile(stage0, stage0 + ".whole")
    os.remove(stage0)  # the store holds the only copy
    _flip_tensor_bytes(shared)
    other = dict(two, prompt_length=2)
    with pytest.raises(PCLError, match=rf"stage file {shared} is damaged .* held by {shared}: remove it"):
        run_recbole_pcl("PCL", "ml-100k", config_dict=other)
    # a whole copy in the run directory is used, and replaces nothing it cannot trust
    os.replace(stage0 + ".whole", stage0)
    os.remove(shared)
    shutil.copyfile(stage0, shared)  # a separate (not linked) store copy, then damaged
    _flip_tensor_bytes(shared)
    assert load_continual_run("PCL", "ml-100k", config_dict=two) is not None


def test_a_damaged_run_file_is_replaced_by_its_whole_store_copy(two, caplog):
    first = run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    stage1 = os.path.join(first["run_dir"], "stage-01-next_4star.pth")
    shutil.copyfile(stage1, stage1 + ".copy")
    os.replace(stage1 + ".copy", stage1)  # no longer the store's file: a separate copy
    _truncate(stage1)
    predictor = load_continual_run("PCL", "ml-100k", config_dict=two)
    assert predictor.recommend("next_4star", predictor.users[:2], k=3)
    assert "was damaged; replaced by its whole copy" in caplog.text


# ----- 2. failures never exit 0 -----------------------------------------------------------------------
def test_a_comparison_with_failed_runs_exits_1_and_names_each(two, tmp_path, capsys):
    methods = ["TaskPrior", {"label": "broken", "model": "TaskPrior", "label_window": 1000}]
    definition = _yaml(tmp_path, "rq1.yaml", {"methods": methods})
    config = _yaml(tmp_path, "tiny.yaml", dict(two, n_folds=2))
    status = run_experiment.main(["--experiment=rq1", f"--definition={definition}", f"--config_files={config}"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert [line.split(": PCLError: ")[0] for line in sorted(lines)] == [
        "failed: broken/fold-0",
        "failed: broken/fold-1",
    ]
    assert all("label_window=1000 reserves all but 3 interactions of every user" in line for line in lines)
    out = next(p for p in (tmp_path / "saved").iterdir() if p.name.startswith("rq1-"))
    written = json.loads((out / "compare.json").read_text())  # what finished was written
    assert [m["method"] for m in written["methods"]] == ["TaskPrior"]


def test_a_comparison_whose_every_run_fails_exits_2_naming_the_first(two, tmp_path, capsys):
    definition = _yaml(
        tmp_path, "rq1.yaml", {"methods": [{"label": "broken", "model": "TaskPrior", "label_window": 1000}]}
    )
    config = _yaml(tmp_path, "tiny.yaml", dict(two, n_folds=2))
    line = _one_line(
        capsys, run_experiment.main, "--experiment=rq1", f"--definition={definition}", f"--config_files={config}"
    )
    assert "every run of the comparison failed; the first, broken/fold-0: PCLError: T1 has no" in line
    assert "label_window=1000" in line


@pytest.mark.parametrize(
    "methods, message",
    [
        (["TaskPrior", "NoSuchModel"], "unknown model 'NoSuchModel'"),
        (["TaskPrior", {"model": "PCL", "prompt_lenght": 2}], "method 'PCL': unknown setting 'prompt_lenght'"),
        (
            ["PCL", "CKE"],
            "method 'CKE': model 'CKE' cannot join a continual run or a comparison: it is knowledge-aware",
        ),
    ],
)
def test_a_definitions_unknown_model_or_setting_is_refused_before_training(two, tmp_path, capsys, methods, message):
    definition = _yaml(tmp_path, "rq1.yaml", {"methods": methods})
    config = _yaml(tmp_path, "tiny.yaml", two)
    assert message in _one_line(
        capsys, run_experiment.main, "--experiment=rq1", f"--definition={definition}", f"--config_files={config}"
    )
    assert not _stage_files(two["checkpoint_dir"])  # nothing trained


def test_model_list_with_a_recbole_model_is_one_line(two, tmp_path, capsys):
    """A RecBole model is a row of the comparison (tests/test_recbole_rows.py); one that cannot take
    part is refused in one line, naming it and why, before anything trains."""
    config = _yaml(tmp_path, "tiny.yaml", two)
    line = _one_line(capsys, cli.main, "--model=PCL,BPR,CKE", "--dataset=ml-100k", f"--config_files={config}")
    assert "method 'CKE': model 'CKE' cannot join a continual run or a comparison: it is knowledge-aware" in line
    assert not _stage_files(two["checkpoint_dir"])  # nothing trained, BPR's row either


@pytest.mark.parametrize("mode", ["full", "uni100"])
def test_task_prior_runs_under_both_evaluation_modes(two, mode):
    result = run_recbole_pcl("TaskPrior", "ml-100k", config_dict=dict(two, task_eval_mode=mode))
    hit = result["final"]["next_4star"]["hit@10"]
    assert 0 < hit < 1  # popularity finds some labels, not all


# ----- 3. merge ---------------------------------------------------------------------------------------
MERGE = pytest.mark.xdist_group("merge")  # the merge tests share a worker: it builds their comparison once


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """One comparison that the merge tests read (never change): its compare.json."""
    from recbole_pcl.experiment import run_comparison

    with module_folder(tmp_path_factory, "merge") as folder:
        settings = dict(_two(task_run_settings(folder)), n_folds=2)
        result = run_comparison(["TaskPrior", "PCL"], "ml-100k", config_dict=settings)
    return os.path.join(result["directory"], "compare.json")


def _edited(tmp_path, path, name, edit):
    data = json.loads(open(path).read())
    edit(data)
    folder = tmp_path / name
    folder.mkdir()
    (folder / "compare.json").write_text(json.dumps(data))
    return str(folder / "compare.json")


@MERGE
def test_merge_refuses_a_mean_that_is_not_its_folds(comparison, tmp_path, capsys):
    def edit(data):
        data["methods"][1]["tasks"]["next_4star"]["hit@10"]["mean"] = 0.9999

    edited = _edited(tmp_path, comparison, "edited", edit)
    line = _one_line(capsys, merge.main, comparison, edited, f"--out={tmp_path / 'merged'}")
    assert f"{edited}: method 'PCL' next_4star hit@10: the stored mean ± interval 0.9999" in line
    assert not (tmp_path / "merged").exists()


@MERGE
def test_merge_of_comparisons_sharing_no_method_needs_the_same_pretraining(comparison, tmp_path, capsys):
    def only(label, other_epochs=None):
        def edit(data):
            data["methods"] = [m for m in data["methods"] if m["method"] == label]
            data["runs"] = {k: v for k, v in data["runs"].items() if k.startswith(label)}
            if other_epochs:
                data["shared"]["pretraining"] = ["another-stage-0"]

        return edit

    prior, pcl = (
        _edited(tmp_path, comparison, "prior", only("TaskPrior")),
        _edited(tmp_path, comparison, "pcl", only("PCL")),
    )
    assert merge.main([prior, pcl, f"--out={tmp_path / 'merged'}"]) == 0  # same data, tasks, pretraining
    other = _edited(tmp_path, comparison, "other", only("PCL", other_epochs=True))
    line = _one_line(capsys, merge.main, prior, other, f"--out={tmp_path / 'merged2'}")
    assert f"{other} shares no method with {prior}, and nothing shows they were made on the same data" in line


@MERGE
def test_merge_never_writes_over_its_inputs_or_foreign_files(comparison, tmp_path, capsys):
    folder = os.path.dirname(comparison)
    before = open(comparison).read()
    assert "is the folder of the input" in _one_line(capsys, merge.main, comparison, f"--out={folder}")
    (tmp_path / "afile").write_text("mine")
    assert "is a file" in _one_line(capsys, merge.main, comparison, f"--out={tmp_path / 'afile'}")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "compare.md").write_text("my notes")
    assert "holds compare.md of another comparison" in _one_line(capsys, merge.main, comparison, f"--out={foreign}")
    line = _one_line(capsys, merge.main, comparison, f"--out={tmp_path / 'afile' / 'below'}")
    assert "cannot write" in line and "afile" in line
    assert open(comparison).read() == before and (tmp_path / "afile").read_text() == "mine"
    assert (foreign / "compare.md").read_text() == "my notes"
    assert merge.main([comparison, f"--out={tmp_path / 'merged'}"]) == 0
    assert merge.main([comparison, f"--out={tmp_path / 'merged'}"]) == 0  # an earlier merge is replaced


# ----- 4. bad input outside the settings: one line, exit 2, before any long work -----------------------
@pytest.mark.parametrize(
    "experiment, definition, message",
    [
        ("rq1", {"methds": ["PCL"]}, "unknown key 'methds'; did you mean 'methods'?"),
        ("rq1", {"methods": []}, "'methods' is empty"),
        ("rq3", {"settings": {"epochs": 1}}, "'methods' is missing"),
        ("rq2", {"settings": {"epochs": 1}}, "'model' is missing"),
        (
            "tune",
            {"model": "PCL", "space": {"prompt_length": {"choice": []}}},
            "choice needs a non-empty list of values",
        ),
        ("tune", {"model": "PCL", "space": {"prompt_lenght": {"choice": [2]}}}, "unknown setting 'prompt_lenght'"),
        (
            "tune",
            {"model": "PCL", "space": {"context_lambda": {"uniform": [2.0, 0.1]}}},
            "uniform needs [low, high] with low < high",
        ),
        ("tune", {"model": "PCL", "space": {"context_lambda": {"loguniform": [0, 1]}}}, "loguniform needs low > 0"),
        ("tune", {"model": "PCL", "space": {"adapter": {"choice": ["linear", "mpl"]}}}, "'mpl' is refused"),
        (
            "tune",
            {"model": "PCL", "space": {"prompt_length": {"choice": [2]}}, "samples": 0},
            "'samples' must be at least 1",
        ),
    ],
)
def test_bad_definitions_are_refused_when_loaded(two, tmp_path, capsys, experiment, definition, message):
    path = _yaml(tmp_path, "definition.yaml", definition)
    config = _yaml(tmp_path, "tiny.yaml", two)
    start = time.time()
    line = _one_line(
        capsys, run_experiment.main, f"--experiment={experiment}", f"--definition={path}", f"--config_files={config}"
    )
    assert message in line
    assert time.time() - start < 20 and not _stage_files(two["checkpoint_dir"])  # no pretraining first


@pytest.mark.parametrize(
    "option, message",
    [
        ("--label_window=1000", "rows: label_window=1000 reserves all but 3 interactions of every user"),
        ("--tasks=next_click", "setting 'tasks' must be a list of task mappings"),
    ],
)
def test_bad_task_settings_are_one_line(two, tmp_path, capsys, option, message):
    config = _yaml(
        tmp_path, "tiny.yaml", {k: v for k, v in two.items() if k != "tasks" or option.startswith("--label")}
    )
    assert message in _one_line(
        capsys, cli.main, "--model=PCL", "--dataset=ml-100k", f"--config_files={config}", option
    )


def test_checkpoint_dir_naming_a_file_is_refused(two, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    config = _yaml(tmp_path, "tiny.yaml", dict(two, checkpoint_dir=str(tmp_path / "afile")))
    line = _one_line(capsys, cli.main, "--model=PCL", "--dataset=ml-100k", f"--config_files={config}")
    assert f"setting 'checkpoint_dir' names a file, not a folder: {tmp_path / 'afile'}" in line


@pytest.mark.parametrize("name", ["results.json", "run.json"])
def test_a_truncated_json_file_of_a_run_is_named(two, tmp_path, capsys, name):
    result = run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    path = os.path.join(result["run_dir"], name)
    _truncate(path)
    if name == "run.json":  # read when the run takes its directory: make it unfinished
        os.remove(os.path.join(result["run_dir"], "results.json"))
    config = _yaml(tmp_path, "tiny.yaml", two)
    line = _one_line(capsys, cli.main, "--model=PCL", "--dataset=ml-100k", f"--config_files={config}")
    assert f"{path} is damaged (not valid JSON" in line


def test_an_unreachable_ray_address_fails_at_once_naming_it(two, tmp_path, capsys):
    config = _yaml(tmp_path, "tiny.yaml", dict(two, runner="ray", ray_address="127.0.0.1:1"))
    start = time.time()
    line = _one_line(capsys, cli.main, "--model=PCL,TaskPrior", "--dataset=ml-100k", f"--config_files={config}")
    assert "setting 'ray_address': nothing answers at 127.0.0.1:1" in line and time.time() - start < 60


@pytest.mark.parametrize(
    "model, value",
    [("SINE", "NLL"), ("CDAE", "MSE"), ("CDAE", "BCE"), ("GRU4Rec", "BPR"), ("CORE", "CE")],
)
def test_loss_type_is_checked_against_the_models_own_values(model, value):
    from recbole_pcl.config import Config

    assert Config(model, "ml-100k", config_dict={"loss_type": value})["loss_type"] == value
    with pytest.raises(PCLError, match=f"setting 'loss_type' must be one of .* for {model}, got 'XYZ'"):
        Config(model, "ml-100k", config_dict={"loss_type": "XYZ"})


def test_every_recbole_model_accepts_each_loss_type_its_code_accepts():
    from recbole_pcl.config import Config
    from recbole_pcl.config.validation import model_choices
    from recbole_pcl.utils import get_model, model_names
    from recbole_pcl.utils.utils import missing_requirement

    checked = 0
    for name in model_names():
        if missing_requirement(name):
            continue
        found = model_choices(get_model(name), "loss_type")
        for value in found[0] if found else ():
            Config(name, "ml-100k", config_dict={"loss_type": value})
            checked += 1
    assert checked > 40


def test_sine_trains_with_its_nll_loss(tiny):
    result = run_recbole_pcl("SINE", "ml-100k", config_dict=dict(tiny, loss_type="NLL", epochs=1))
    assert 0 <= result["test_result"]["hit@10"] <= 1


# ----- file system: read-only, full, injected errors ----------------------------------------------------
@contextlib.contextmanager
def _tmpfs(path, size):
    """A tmpfs of ``size`` at ``path`` (skips the test where this machine does not allow mounting)."""
    os.makedirs(path, exist_ok=True)
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
    ):
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_finished_run_is_read_from_a_read_only_directory(two, tmp_path, capsys):
    with _tmpfs(tmp_path / "ro", "64m") as mount:
        settings = dict(two, checkpoint_dir=str(mount / "saved"))
        first = run_recbole_pcl("PCL", "ml-100k", config_dict=settings)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        assert run_recbole_pcl("PCL", "ml-100k", config_dict=settings)["final"] == first["final"]
        predictor = load_continual_run("PCL", "ml-100k", config_dict=settings)
        assert len(predictor.recommend("next_4star", predictor.users[:2], k=3)) == 2
        config = _yaml(tmp_path, "tiny.yaml", dict(settings, prompt_length=2))  # a new run cannot write there
        line = _one_line(capsys, cli.main, "--model=PCL", "--dataset=ml-100k", f"--config_files={config}")
        assert str(mount / "saved") in line and "Read-only file system" in line


def test_a_full_disk_is_named_and_leaves_finished_stages_intact(two, tmp_path, capsys):
    with _tmpfs(tmp_path / "small", "8m") as mount:
        first = run_recbole_pcl("PCL", "ml-100k", config_dict=dict(two, checkpoint_dir=str(tmp_path / "saved")))
        shutil.copytree(first["run_dir"], mount / "run")
        os.remove(mount / "run" / "results.json")
        os.remove(mount / "run" / "stage-01-next_4star.pth")
        with contextlib.suppress(OSError), open(mount / "filler", "wb") as f:  # no room left for a stage
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        config = _yaml(
            tmp_path, "tiny.yaml", dict(two, checkpoint_dir=str(tmp_path / "saved"), run_dir=str(mount / "run"))
        )
        line = _one_line(capsys, cli.main, "--model=PCL", "--dataset=ml-100k", f"--config_files={config}")
        assert "cannot write" in line and str(mount / "run") in line
        stage0 = safe_load(mount / "run" / "stage-00-next_click.pth")
        assert "checksum" in stage0["meta"] and not any(n.startswith(".tmp-") for n in os.listdir(mount / "run"))


def test_an_injected_enospc_is_named_and_leaves_finished_stages_intact(two, tmp_path, capsys, monkeypatch):
    first = run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    before = open(os.path.join(first["run_dir"], "stage-00-next_click.pth"), "rb").read()
    save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "stage-01" in str(getattr(f, "name", "")) or ".tmp-" in str(getattr(f, "name", "")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    config = _yaml(tmp_path, "tiny.yaml", dict(two, prompt_length=2))
    line = _one_line(capsys, cli.main, "--model=PCL", "--dataset=ml-100k", f"--config_files={config}")
    assert "cannot write" in line and "stage-01-next_4star.pth: No space left on device" in line
    assert open(os.path.join(first["run_dir"], "stage-00-next_click.pth"), "rb").read() == before


# ----- 5. a run never touches what it did not write ---------------------------------------------------
def test_an_existing_folder_not_made_by_recbole_pcl_is_refused_untouched(two, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / ".tmp-mydraft").write_text("draft")
    (mine / "notes.txt").write_text("notes")
    config = _yaml(tmp_path, "tiny.yaml", dict(two, run_dir=str(mine)))
    line = _one_line(capsys, cli.main, "--model=PCL", "--dataset=ml-100k", f"--config_files={config}")
    assert f"run directory {mine} exists and was not made by recbole-pcl" in line
    assert sorted(os.listdir(mine)) == [".tmp-mydraft", "notes.txt"]


# ----- 6. a run from a given pretrained checkpoint is served like any other ----------------------------
def test_a_run_from_a_pretrained_checkpoint_is_served(two):
    first = run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    backbone = os.path.join(first["run_dir"], "stage-00-next_click.pth")
    other = dict(two, prompt_length=2, pretrained_checkpoint=backbone)
    result = run_recbole_pcl("PCL", "ml-100k", config_dict=other)
    assert os.path.samefile(os.path.join(result["run_dir"], "stage-00-next_click.pth"), backbone)
    predictor = load_continual_run("PCL", "ml-100k", config_dict=other)
    assert len(predictor.recommend("next_4star", predictor.users[:3], k=2)) == 3
