import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(REPO))

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
