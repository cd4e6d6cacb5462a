"""Checkpoints as tensors plus plain data, written atomically, loaded with ``weights_only=True``."""
import contextlib
import os
import tempfile

import torch

from recbole_pcl.utils.errors import PCLError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` (same suffix, so writers that infer the format from it
    work); it replaces ``path`` only if the block succeeds, so a crash never leaves a truncated file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_torch_save(obj, path):
    """Write ``obj`` to ``path`` atomically and durably."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


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
