"""Files of recbole-pcl: written atomically, read back safely.

Checkpoints are tensors plus plain data, loaded with ``weights_only=True``; JSON files that cannot be
parsed and file-system errors (read-only, full disk, a file where a folder should be) become
one-line errors (:class:`PCLError`) naming the path.
"""

import contextlib
import errno
import hashlib
import json
import os
import pickle
import shutil
import tempfile

import torch

from recbole_pcl.utils.errors import PCLError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` (same suffix, so writers that infer the format from it
    work); it replaces ``path`` only if the block succeeds, so a crash never leaves a truncated file.
    A file-system error while writing is a :class:`PCLError` naming ``path``; ``path`` is unchanged."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    except OSError as e:
        raise PCLError(f"cannot write {path}: {describe_os_error(e, directory)}") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results should follow the user's umask
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        problem = write_problem(e, directory)
        if problem:
            raise PCLError(f"cannot write {path}: {problem}") from None
        raise


def describe_os_error(error, path):
    """One line for a file-system error at ``path``."""
    if isinstance(error, (NotADirectoryError, FileExistsError)) or error.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"a file is in the way of a folder ({error.filename or path})"
    return error.strerror or str(error)


def write_problem(error, directory):
    """Why a write failed, if it was the file system's doing (else None: a bug to show as it is).
    torch's zip writer reports a full disk as a RuntimeError ('file write failed', 'unexpected pos')."""
    if isinstance(error, OSError):
        return describe_os_error(error, directory)
    if isinstance(error, RuntimeError) and any(
        s in str(error) for s in ("write failed", "unexpected pos", "PytorchStreamWriter")
    ):
        free = shutil.disk_usage(directory).free if os.path.isdir(directory) else None
        full = " (no space left on the device)" if free is not None and free < 64 * 2**20 else ""
        return f"{str(error).splitlines()[0]}{full}"
    return None


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


def read_json(path, what="file"):
    """The JSON content of ``path``; a missing, unreadable or damaged file is a :class:`PCLError`
    naming it (a truncated file would otherwise surface as a bare JSONDecodeError)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise PCLError(f"{what} {path} cannot be read: {describe_os_error(e, path)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PCLError(f"{what} {path} is damaged (not valid JSON: {e}); remove it and run again") from None


def tensor_checksum(state_dict, plain=None):
    """sha256 over every tensor's name, dtype, shape and bytes (sorted by name), and over ``plain``
    data as canonical JSON: a stage file's content, checked whenever the file is loaded."""
    sha = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        sha.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    sha.update(json.dumps(plain, sort_keys=True, default=str).encode())
    return sha.hexdigest()
