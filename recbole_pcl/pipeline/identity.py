"""What a continual run and each of its stages *are*: everything that can change their numbers.

A run's identity is its resolved settings (all of them but :data:`IGNORED_SETTINGS` and settings
given for other models, ``Config.foreign_settings``), its task
specs in order (label rules, descriptions…) and a fingerprint of the dataset's atomic files. A stage
depends on less: on the tasks up to it only (so appending a task reuses every earlier stage), and
stage 0 (T1 pretraining) not on the settings that only downstream stages read
(:data:`DOWNSTREAM_SETTINGS` and the method's own ``downstream_settings``). Methods whose stage 0
is the same plain backbone pretraining declare it (``pretraining``), so they share it.
"""

import dataclasses
import functools
import hashlib
import json
import os
import platform

import numpy as np
import torch

from recbole_pcl.config.configurator import literal_value
from recbole_pcl.data.continual import t1_fold

# Settings that cannot change a stage's numbers, and why.
IGNORED_SETTINGS = {
    "data_path": "where the data is: its content is fingerprinted instead",
    "raw_data_path": "where raw input is: the atomic files built from it are fingerprinted",
    "checkpoint_dir": "where results go",
    "run_dir": "where results go",
    "state": "log level",
    "show_progress": "progress bars",
    "log_wandb": "logging",
    "wandb_project": "logging",
    "save_dataset": "refused by recbole-pcl (pickles)",
    "dataset_save_path": "refused by recbole-pcl (pickles)",
    "save_dataloaders": "refused by recbole-pcl (pickles)",
    "dataloaders_save_path": "refused by recbole-pcl (pickles)",
    "gpu_id": "device",
    "use_gpu": "device",
    "device": "device",
    "local_rank": "device",
    "single_spec": "device",
    "nproc": "device",
    "world_size": "device",
    "offset": "device",
    "ip": "device",
    "port": "device",
    "fwt_reference": "report only: the references are identified on their own",
    "fwt_reference_model": "report only: the references are identified on their own",
    "compare_reference": "which row a comparison's differences are to",
    "eval_cache_gib": "memory: evaluation batches kept, the same as drawn again",
    "tune_trials": "which runs a comparison schedules (each trial's settings are its own)",
    "tune_space": "which runs a comparison schedules (each trial's settings are its own)",
    "runner": "how runs are scheduled",
    "compare_folds": "which runs a comparison schedules (each run has its own fold)",
    "ray_address": "how runs are scheduled",
    "ray_cpus_per_run": "how runs are scheduled",
    "ray_gpus_per_run": "how runs are scheduled",
    "pretrained_checkpoint": "a given stage 0 must have this run's stage-0 identity",
    "tasks": "identified task by task, so that a stage depends only on the tasks up to it",
}

# Settings that only downstream stages read (whatever the method).
DOWNSTREAM_SETTINGS = ("task_split", "n_folds", "fold", "downstream_learning_rate")


def numeric_environment(device):
    """Where a stage's numbers were computed. Float rounding on CPU depends on the processor and on
    torch's thread count (PCL on ml-100k, fold 0: next 4★ HR@10 0.698 with one thread, 0.723 with
    two), so a stage is bit-identical only where both are the same. They are recorded with each stage
    rather than identified: a stage trained elsewhere is as valid, and runs on Ray (one thread each by
    default) share stages with runs in one process."""
    device = torch.device(device)
    if device.type == "cuda":
        processor = torch.cuda.get_device_name(device)
    else:
        names = [line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")]
        processor = names[0] if names else platform.processor() or platform.machine()
    return {
        "device": device.type,
        "processor": processor,
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
    }  # TorchVersion is not plain data


def _cpuinfo():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read().splitlines()
    except OSError:
        return []


def canonical(value):
    """``value`` as plain JSON data (enums and devices as text), for hashing and storing. A text that
    is a Python literal counts as that literal: RecBole reads ``"[20,40]"`` given in ``config_dict``
    as the list, so it is the same setting as ``[20, 40]`` in a yaml file."""
    if isinstance(value, str):
        parsed = literal_value(value)
        return value if parsed is value else canonical(parsed)
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return json.loads(json.dumps(value, default=str))


def digest(identity):
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def fingerprint_files(config):
    """sha256 of each of the dataset's atomic files (``<data_path>/<dataset>.*``)."""
    folder, prefix = config["data_path"], f"{config['dataset']}."
    result = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if name.startswith(prefix) and os.path.isfile(path):
            stat = os.stat(path)
            result[name] = file_sha256(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    return result


@functools.lru_cache(maxsize=256)
def file_sha256(path, size, mtime_ns):
    """sha256 of the file at ``path``, hashed once per process for each (size, modification time):
    a comparison builds many runs' identities from the same files (minutes on MovieLens-25M)."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def task_identity(spec):
    fields = dataclasses.asdict(spec)
    fields["interval"] = None if spec.interval is None else str(spec.interval)  # "[4,5)"
    return json.loads(json.dumps(fields))


def stage_seed(seed, *parts):
    """A seed derived from the run's ``seed`` and a stage (index or name): the same stage of the same
    run always starts from the same random state, however the run got there (resumed, appended)."""
    ints = [int(seed)] + [
        p if isinstance(p, int) else int(hashlib.sha256(str(p).encode()).hexdigest()[:8], 16) for p in parts
    ]
    return int(np.random.SeedSequence(ints).generate_state(1)[0] % (2**31 - 1))


class RunIdentity:
    """Identity of a run of ``model_class`` on ``specs`` with ``config``, and of each stage."""

    def __init__(self, config, specs, data_fingerprint, model_class):
        skip = set(IGNORED_SETTINGS) | config.foreign_settings()
        self.settings = canonical({k: v for k, v in config.final_config_dict.items() if k not in skip})
        self.tasks = [task_identity(s) for s in specs]
        self.data = dict(data_fingerprint)
        self.pretraining = getattr(model_class, "pretraining", None)
        self.downstream = set(DOWNSTREAM_SETTINGS) | set(getattr(model_class, "downstream_settings", ()))
        self.t1_fold = t1_fold(config)
        if self.t1_fold is not None:  # each fold pretrains its own T1, on its own users
            self.downstream -= {"fold", "n_folds"}

    def run(self):
        return {"settings": self.settings, "tasks": self.tasks, "data": self.data}

    def stage(self, index):
        """Stage ``index``'s identity: the settings it reads, the tasks up to it, the data."""
        settings = self.settings
        if index == 0:
            settings = {k: v for k, v in settings.items() if k not in self.downstream}
            if self.pretraining:  # the same plain pretraining, whichever method starts from it
                settings["model"] = self.pretraining
        return {"stage": index, "settings": settings, "tasks": self.tasks[: index + 1], "data": self.data}

    def joint(self):
        """Identity of the one stage of a method that learns every task at once."""
        return {"stage": "joint", "settings": self.settings, "tasks": self.tasks, "data": self.data}


def first_difference(stored, current):
    """``(what, stored value, current value)`` of the first place two identities differ, or None.
    Settings come first (alphabetically), then tasks in order, then data files."""
    for what, a, b in _walk(stored, current, ""):
        if a != b:
            return what, a, b
    return None


def differences(stored, current):
    """Every ``(what, stored value, current value)`` where two identities differ, in the order of
    :func:`first_difference`."""
    return [(what, a, b) for what, a, b in _walk(stored, current, "") if a != b]


def _walk(a, b, where):
    if isinstance(a, dict) and isinstance(b, dict):
        order = _TASK_FIELDS if where.startswith("task ") else _SECTIONS
        for key in sorted(set(a) | set(b), key=lambda k: (order.get(k, len(order)), k)):
            yield from _walk(a.get(key), b.get(key), _name(where, key))
    elif isinstance(a, list) and isinstance(b, list) and where == "tasks":
        for i in range(max(len(a), len(b))):
            ta, tb = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
            label = (ta or tb or {}).get("name")
            yield from _walk(ta, tb, f"task {i + 1} ({label})")
    else:
        yield where, a, b


_SECTIONS = {"stage": 0, "reference": 0, "settings": 1, "tasks": 2, "data": 3}
_TASK_FIELDS = {
    f: i for i, f in enumerate(("name", "kind", "source", "field", "interval", "bins", "attribute", "description"))
}


def _name(where, key):
    if where == "":
        return key
    if where == "settings":
        return f"setting '{key}'"
    if where == "data":
        return f"data file {key}"
    return f"{where} '{key}'"
