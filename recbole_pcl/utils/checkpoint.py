"""Checkpoints as tensors plus plain data, written atomically, loaded with ``weights_only=True``."""

import contextlib
import os
import pickle
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
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results should follow the user's umask
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    except pickle.UnpicklingError:  # never fall back to full unpickling
        raise PCLError(
            f"{path} pickles Python objects, which are refused: only tensors and plain data load "
            f"(weights_only=True), so RecBole's own checkpoints (they pickle a Config) cannot be used"
        ) from None
    except Exception as e:  # a truncated or damaged zip archive, or not a torch file at all
        raise PCLError(
            f"{path} is truncated or not a torch checkpoint ({type(e).__name__}); delete or replace it"
        ) from None
