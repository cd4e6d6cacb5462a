"""The plugin skeleton: model lookup, CLI errors, config precedence, RecBole equivalence, checkpoints."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

import run_recbole_pcl as cli
from recbole_pcl.config import Config
from recbole_pcl.quick_start import run_recbole_pcl
from recbole_pcl.utils import PCLError, get_model, get_trainer, safe_load
from recbole_pcl.utils.checkpoint import atomic_torch_save


def _cli(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "run_recbole_pcl.py"), *args], capture_output=True, text=True, timeout=300
    )


def test_recbole_models_resolve_through_our_lookup():
    from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, SASRec

    assert get_model("SASRec") is SASRec and get_model("GRU4Rec") is GRU4Rec and get_model("BERT4Rec") is BERT4Rec


def test_unknown_model_is_one_line_error_with_choices():
    result = _cli("--model=NoSuchModel", "--dataset=ml-100k")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown model 'NoSuchModel'" in lines[0]
    assert "SASRec" in lines[0] and "GRU4Rec" in lines[0]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model=SASRec", "--dataset=no-such-data"], "unknown dataset 'no-such-data'"),
        (["--model=SASRec", "--dataset=ml-100k", "--config_files=missing.yaml"], "config file not found: missing.yaml"),
        (["--model=SASRec", "--dataset=ml-100k", "--epochs"], "--epochs"),
    ],
)
def test_bad_input_is_one_line_error(args, needle, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_pytest_options_do_not_leak_into_config(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--epochs=7", "-q", "--learning_rate=0.5"])
    config = Config("SASRec", "ml-100k")
    assert config["epochs"] == 300 and config["learning_rate"] == 0.001


def test_precedence_file_then_dict_then_cmd(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("epochs: 3\nlearning_rate: 0.01\nhidden_size: 8\n")
    config = Config(
        "SASRec", "ml-100k", [str(f)], {"learning_rate": 0.02, "hidden_size": 12}, cmd_args=["--hidden_size=16"]
    )
    assert (config["epochs"], config["learning_rate"], config["hidden_size"]) == (3, 0.02, 16)
    # RecBole's internal SASRec defaults still apply underneath
    assert config["n_layers"] == 2 and config["loss_type"] == "CE"


def _stock_recbole(model, config_dict, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["run_recbole"])  # RecBole's Config reads sys.argv
    from recbole.quick_start import run_recbole

    from recbole_pcl.compat import patched_recbole

    with patched_recbole():  # RecBole's own code, on today's numpy/pandas/scipy
        return run_recbole(model=model, dataset="ml-100k", config_dict=config_dict, saved=False)


def test_sasrec_equals_stock_recbole(tiny, monkeypatch):
    config_dict = dict(tiny, train_neg_sample_args=None)
    ours = run_recbole_pcl("SASRec", "ml-100k", config_dict=config_dict, saved=False)
    theirs = _stock_recbole("SASRec", config_dict, monkeypatch)
    assert ours["test_result"] == theirs["test_result"]
    assert ours["best_valid_result"] == theirs["best_valid_result"]
    assert ours["test_result"]["hit@10"] > 0


def test_best_model_checkpoint_is_weights_only_and_reloads(tiny):
    result = run_recbole_pcl("GRU4Rec", "ml-100k", config_dict=tiny, saved=True)
    state = torch.load(result["checkpoint"], weights_only=True)
    assert state["model"] == "GRU4Rec" and "config" not in state
    assert set(state["state_dict"]) >= {"item_embedding.weight"}
    assert 0 < result["test_result"]["hit@10"] <= 1


def _trainer(tiny):
    from recbole_pcl.data import create_dataset, data_preparation

    config = Config("SASRec", "ml-100k", config_dict=tiny)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = get_model("SASRec")(config, train._dataset)
    return get_trainer(config["MODEL_TYPE"], "SASRec")(config, model), train, valid, test


def test_resume_and_unique_names(tiny):
    trainer, train, valid, _ = _trainer(tiny)
    other, *_ = _trainer(tiny)
    assert trainer.saved_model_file != other.saved_model_file  # same second, distinct files
    saved_epochs = []
    save = trainer._save_checkpoint
    trainer._save_checkpoint = lambda epoch, *a, **k: (saved_epochs.append(epoch), save(epoch, *a, **k))
    trainer.fit(train, valid, saved=True, show_progress=False)
    other.resume_checkpoint(trainer.saved_model_file)
    assert saved_epochs and other.start_epoch == saved_epochs[-1] + 1  # resumes after the epoch it saved
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, other.model.state_dict()[name]), name


def test_recbole_pickled_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "recbole.pth"
    torch.save({"config": object.__new__(Config)}, bad)
    with pytest.raises(PCLError, match="weights_only=True"):
        safe_load(bad)


def test_atomic_write_keeps_old_file_on_crash(tmp_path, monkeypatch):
    path = tmp_path / "stage.pth"
    atomic_torch_save({"w": torch.ones(3)}, path)

    def crash(obj, f, *a, **k):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError):
        atomic_torch_save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(safe_load(path)["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["stage.pth"]


def test_installed_package_finds_property_files(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    code = "from recbole_pcl.utils import properties_dir; print(properties_dir())"
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    props = out.stdout.strip()
    assert props.startswith(str(target)) and os.path.isfile(os.path.join(props, "overall.yaml"))
