import contextlib
import copy
import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one pytest worker per core (make test: -n auto): each keeps to one torch thread, and so do the
    # processes it starts (Ray workers, benchmark scripts), or their threads wait on each other
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
sys.path.insert(0, str(REPO))

# A one-layer 16-wide SASRec with short sequences and t = 3 prompts, quiet: what every tiny run uses.
TINY_MODEL = {
    "MAX_ITEM_LIST_LENGTH": 10,
    "hidden_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 1,
    "context_heads": 1,
    "prompt_length": 3,
    "show_progress": False,
    "state": "WARNING",
    "use_gpu": False,
}

# A small ml-100k slice: the 213 users with 20-30 ratings, tiny SASRec, 2 epochs.
TINY = {
    "user_inter_num_interval": "[20,30]",
    "MAX_ITEM_LIST_LENGTH": 10,
    "hidden_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 1,
    "epochs": 2,
    "train_batch_size": 256,
    "eval_batch_size": 256,
    "show_progress": False,
    "seed": 2020,
    "reproducibility": True,
    "use_gpu": False,
    "state": "WARNING",
}


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """RecBole writes ./log, ./log_tensorboard and ./saved: keep them out of the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny(tmp_path):
    return dict(TINY, checkpoint_dir=str(tmp_path / "saved"))


ML100K_TASKS = yaml.safe_load((REPO / "properties" / "dataset" / "ml-100k.yaml").read_text())["tasks"]


def task_run_settings(folder):
    """A tiny run on the task sequence: ml-100k's 305 users with 20-40 ratings, T1 and its first three
    downstream tasks, a one-layer 16-wide SASRec, 2 epochs per stage, serial runs, saved in ``folder``."""
    return {
        **TINY_MODEL,
        "user_inter_num_interval": "[20,40]",
        "epochs": 2,
        "contextual_prompt": "random",
        "checkpoint_dir": str(folder / "saved"),
        "train_batch_size": 128,
        "fwt_reference": False,
        "runner": "serial",
        "tasks": copy.deepcopy(ML100K_TASKS[:4]),
    }


@pytest.fixture
def task_run(tmp_path):
    return task_run_settings(tmp_path)


@contextlib.contextmanager
def module_folder(tmp_path_factory, name):
    """A fresh folder for a module-scoped fixture's runs, the working directory meanwhile (RecBole
    writes ./log), with one torch thread (as ``quick_runs``); both restored after."""
    import torch

    folder = tmp_path_factory.mktemp(name)
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        torch.set_num_threads(1)
        try:
            yield folder
        finally:
            torch.set_num_threads(threads)


@pytest.fixture
def quick_runs(monkeypatch):
    """RecBole's get_environment samples CPU load for one whole second (psutil.cpu_percent(interval=1))
    after every run, only for a log table: sample without waiting. And use one torch thread: on
    tensors this small a second thread only adds spin-waits, which balloon when the cores are busy.
    Neither changes a trained weight or a metric."""
    import psutil
    import torch

    cpu_percent = psutil.cpu_percent
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None, percpu=False: cpu_percent(None, percpu))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
