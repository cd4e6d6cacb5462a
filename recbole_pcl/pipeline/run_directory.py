"""A run's directory: one writer at a time, one file per finished stage, nothing stale reused.

* **One writer**: a run holds an advisory lock (``fcntl.flock``) on ``<run_dir>/.lock`` for its whole
  life; a second run on the same directory fails at once naming it. The OS drops the lock when the
  process dies, so a killed run never leaves it stuck.
* **Stages**: ``stage-NN-<task>.pth`` holds the tensors the stage wrote and, as plain data, its
  identity (:mod:`.identity`), record (metrics, parameters, time) and a sha256 checksum of both
  (:func:`~recbole_pcl.utils.checkpoint.tensor_checksum`). A file is used only if its identity is
  this run's and its checksum holds: a damaged stage (flipped bytes, truncated) is never loaded, from
  the run directory or the store; the run stops naming every file that holds it and how to remove
  them. An explicit run directory holding another run's stages is refused naming the first key that
  differs; an existing folder that recbole-pcl did not make is refused untouched.
* **Sharing**: every finished stage is also hard-linked as ``<checkpoint_dir>/stages/<digest>.pth``,
  so another run with a stage of the same identity (another fold, another method that starts from
  the same pretraining, the same run with a task appended) links it instead of training it again.
* **Nothing left behind**: files are written atomically; temporary files of a killed run are removed
  by the next holder of the lock; a run that fails before finishing anything removes the directory
  it created. File-system errors (read-only, full disk, a file in the way) are one line naming the
  path, and leave every finished stage as it was.
"""

import fcntl
import json
import os
import shutil
from logging import getLogger

from recbole_pcl.pipeline.identity import digest, first_difference
from recbole_pcl.utils.checkpoint import (
    atomic_path,
    atomic_torch_save,
    atomic_write_text,
    describe_os_error,
    read_json,
    safe_load,
    tensor_checksum,
)
from recbole_pcl.utils.errors import PCLError

LOCK, RUN_FILE, STORE = ".lock", "run.json", "stages"


def _missing_ancestors(path):
    """The folders that creating ``path`` makes, deepest first."""
    missing, folder = [], os.path.abspath(path)
    while not os.path.isdir(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


class RunDirectory:
    def __init__(self, path, store_dir, identity, wait=False):
        self.path, self.store, self.identity = os.fspath(path), os.fspath(store_dir), identity
        self.wait = wait  # wait for a busy directory (a run another needs) instead of refusing it
        self.logger = getLogger()
        self._lock_fd, self._created = None, []

    # ----- lifetime ---------------------------------------------------------------------------
    def __enter__(self):
        self._refuse_foreign_folder()
        self._created = _missing_ancestors(self.path)
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(os.path.join(self.path, LOCK), os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise PCLError(f"cannot use run directory {self.path}: {describe_os_error(e, self.path)}") from None
        try:
            if self.wait:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self.logger.info(f"waiting for the run in {self.path}")
                    fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise PCLError(
                f"run directory {self.path} is in use by another run (pid {holder}); wait for it or use another run_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        try:
            self._remove_leftovers()
            self._check_run_file()
        except BaseException:
            self.__exit__(*(None,) * 3, failed=True)
            raise
        return self

    def __exit__(self, exc_type, exc, tb, failed=None):
        failed = exc_type is not None if failed is None else failed
        if failed and self._created and not self.finished_files():
            # nothing of value: leave no empty run behind (nor the empty folders made for it)
            shutil.rmtree(self.path, ignore_errors=True)
            for folder in self._created[1:]:
                try:
                    os.rmdir(folder)
                except OSError:  # not empty: another run's
                    break
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None
        return False

    @property
    def writable(self):
        """Whether this run holds the directory (and may write into it)."""
        return self._lock_fd is not None

    def _refuse_foreign_folder(self):
        """A run never writes into, or deletes from, a folder it did not make: an existing path must be
        a run directory of recbole-pcl (it has run.json), or an empty folder."""
        if not os.path.exists(self.path):
            return
        if not os.path.isdir(self.path):
            raise PCLError(f"run directory {self.path} is a file, not a folder")
        names = set(os.listdir(self.path)) - {LOCK}
        if names and RUN_FILE not in names:
            raise PCLError(
                f"run directory {self.path} exists and was not made by recbole-pcl (no {RUN_FILE}): "
                f"choose an empty or new folder for run_dir"
            )

    def _remove_leftovers(self):
        for name in os.listdir(self.path):
            if name.startswith(".tmp-"):  # an atomic write that a killed run never finished
                os.remove(os.path.join(self.path, name))

    def finished_files(self):
        return (
            sorted(n for n in os.listdir(self.path) if n.endswith(".pth") and not n.startswith("."))
            if os.path.isdir(self.path)
            else []
        )

    # ----- identity ---------------------------------------------------------------------------
    def _check_run_file(self):
        """Refuse a directory of another run; a run with tasks appended (or fewer tasks) is the same run."""
        path = os.path.join(self.path, RUN_FILE)
        current = self.identity.run()
        if os.path.isfile(path):
            stored = read_json(path, "run file")
            shared = min(len(stored["tasks"]), len(current["tasks"]))
            trimmed = dict(stored, tasks=stored["tasks"][:shared])
            diff = first_difference(trimmed, dict(current, tasks=current["tasks"][:shared]))
            if diff:
                raise PCLError(self._mismatch(self.path, diff))
        atomic_write_text(path, json.dumps(current, indent=1, sort_keys=True))

    @staticmethod
    def _mismatch(where, diff):
        what, there, here = diff
        return f"{where} holds another run: {what} is {there!r} there, {here!r} here (use another run_dir, or the default one)"

    # ----- stages -----------------------------------------------------------------------------
    def file(self, name):
        return os.path.join(self.path, name)

    def results(self):
        """The run's results.json, or None before it finished once."""
        path = self.file("results.json")
        return read_json(path, "results file") if os.path.isfile(path) else None

    def load(self, name, identity):
        """The stored ``{"state_dict", "meta"}`` of stage file ``name`` with ``identity``, from this
        directory or else from the shared store (linked here when this run holds the directory; read in
        place when it only reads); None when neither has it. Every file is checked before use
        (:meth:`verified`); a damaged copy here whose store copy is whole is replaced by the latter."""
        key = digest(identity)
        path, shared = self.file(name), os.path.join(self.store, f"{key}.pth")
        if not os.path.isfile(path):
            if not os.path.isfile(shared):
                return None
            state = self.verified(shared, identity, self.holders(shared))  # a damaged store copy is never linked
            if self.writable:
                self._link(shared, path)
                self.logger.info(f"{name}: reusing the finished stage {shared}")
            return state
        separate = os.path.isfile(shared) and not os.path.samefile(path, shared)
        try:
            return self.verified(path, identity, self.holders(path))
        except DamagedStage:
            if not separate:
                raise
            state = self.verified(shared, identity, self.holders(shared))
            if self.writable:
                self._link(shared, path)
            self.logger.warning(f"{path} was damaged; replaced by its whole copy {shared}")
            return state

    def holders(self, path):
        """``path`` and every hard link of it in the store and in the run directories beside it (a
        shared stage is one file under several names: a damaged one must be named everywhere)."""
        found = [path]
        if os.stat(path).st_nlink > 1:
            root = os.path.dirname(os.path.abspath(self.store))
            for folder in sorted(os.listdir(root)):
                folder = os.path.join(root, folder)
                for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
                    other = os.path.join(folder, name)
                    if name.endswith(".pth") and other != path and os.path.samefile(other, path):
                        found.append(other)
        return found

    def verified(self, path, identity, holders, foreign=None):
        """The stage file at ``path`` if it is whole and of ``identity``; else a :class:`PCLError`
        (:class:`DamagedStage` for a damaged file, naming every file in ``holders`` that holds it and
        the command that removes them; ``foreign``: how to name a file of another identity)."""
        key = digest(identity)
        try:
            state = safe_load(path)
        except PCLError:
            raise DamagedStage(path, "truncated or not a torch file", holders) from None
        meta = state.get("meta") if isinstance(state, dict) else None
        if not isinstance(meta, dict) or "identity" not in meta or not isinstance(state.get("state_dict"), dict):
            raise PCLError(f"{path} is not a stage file of recbole-pcl (no identity); remove it to redo that stage")
        if meta.get("digest") != key:
            diff = first_difference(meta["identity"], identity) or ("its identity", meta.get("digest"), key)
            what, there, here = diff
            raise PCLError(f"{foreign or f'{path} belongs to another run'}: {what} is {there!r} there, {here!r} here")
        if "checksum" not in meta:
            raise DamagedStage(path, "it has no checksum: written by an older recbole-pcl", holders)
        if tensor_checksum(state["state_dict"], _checked(meta)) != meta["checksum"]:
            raise DamagedStage(path, "its checksum does not match its content", holders)
        return state

    def save(self, name, identity, state_dict, record):
        """Write stage file ``name`` atomically, with its checksum, and share it in the store."""
        key = digest(identity)
        path = self.file(name)
        meta = {"identity": identity, "digest": key, "record": record}
        meta["checksum"] = tensor_checksum(state_dict, _checked(meta))
        atomic_torch_save({"state_dict": state_dict, "meta": meta}, path)
        self.share(path, key)
        return path

    def adopt(self, name, source, identity):
        """Make the verified stage file ``source`` (a given pretrained checkpoint) this run's stage
        ``name``, so that the run directory holds every stage it was made of."""
        path = self.file(name)
        if not (os.path.isfile(path) and os.path.samefile(path, source)):
            self._link(source, path)
        self.share(path, digest(identity))
        return path

    def share(self, path, key):
        try:
            os.makedirs(self.store, exist_ok=True)
            os.link(path, os.path.join(self.store, f"{key}.pth"))
        except FileExistsError:
            pass  # an identical stage is already shared
        except OSError as e:  # e.g. another file system: the run works, only the sharing is lost
            self.logger.info(f"{os.path.basename(path)} is not shared in {self.store}: {e}")

    def _link(self, source, target):
        try:
            with atomic_path(target) as tmp:
                os.remove(tmp)
                os.link(source, tmp)
        except PCLError:
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)


def _checked(meta):
    """The plain data a stage's checksum covers besides its tensors: its identity and its record."""
    return {"identity": meta["identity"], "digest": meta["digest"], "record": meta["record"]}


class DamagedStage(PCLError):
    """A stage file that is truncated or whose checksum fails: never used."""

    def __init__(self, path, why, holders):
        files = " ".join(dict.fromkeys(holders))
        super().__init__(
            f"stage file {path} is damaged ({why}) and is not used; the same stage is held by {files}: "
            f"remove {'them' if len(set(holders)) > 1 else 'it'} to train that stage again: rm {files}"
        )
