"""Checkpoints as tensors plus plain data, written atomically, loaded with ``weights_only=True``."""
import os
import tempfile

import torch

from recbole_pcl.utils.errors import PCLError


def atomic_torch_save(obj, path):
    """Write ``obj`` to ``path`` so that a crash never leaves a truncated file under that name."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pth")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def safe_load(path, map_location="cpu"):
    """Load a checkpoint without unpickling arbitrary objects."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PCLError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends: refuse, never fall back to full unpickling
        raise PCLError(
            f"{path} is not a recbole-pcl checkpoint that loads with weights_only=True "
            f"(RecBole's own checkpoints pickle a Config and are refused): {type(e).__name__}"
        ) from None
