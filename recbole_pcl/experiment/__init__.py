"""Experiments over many runs: comparisons over folds, the research questions, tuning (on Ray)."""

import difflib

import yaml

from recbole_pcl.experiment.compare import Method, run_comparison
from recbole_pcl.experiment.research import rq1, rq2, rq3, rq4
from recbole_pcl.experiment.runner import Job, run_jobs
from recbole_pcl.experiment.tune import run_tune
from recbole_pcl.utils.errors import PCLError
from recbole_pcl.utils.utils import properties_dir

__all__ = ["EXPERIMENTS", "Job", "Method", "load_definition", "run_comparison", "run_experiment", "run_jobs"]

EXPERIMENTS = {"rq1": rq1, "rq2": rq2, "rq3": rq3, "rq4": rq4, "tune": run_tune}


def load_definition(experiment, path=None):
    """An experiment's definition: ``path``, else ``properties/experiment/<experiment>.yaml``."""
    if experiment not in EXPERIMENTS:
        raise PCLError(f"unknown experiment '{experiment}' (valid: {', '.join(EXPERIMENTS)})")
    path = path or properties_dir() / "experiment" / f"{experiment}.yaml"
    try:
        with open(path, encoding="utf-8") as f:
            definition = yaml.safe_load(f) or {}
    except OSError as e:
        raise PCLError(f"experiment definition {path} cannot be read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise PCLError(f"experiment definition {path} is not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(definition, dict):
        raise PCLError(f"experiment definition {path} must be a mapping")
    check_definition(experiment, definition, path)
    return definition


# The keys of each experiment's definition and what each must be (checked before anything runs).
DEFINITION_KEYS = {
    "rq1": {"methods": list, "settings": dict},
    "rq2": {"model": str, "settings": dict},
    "rq3": {"methods": list, "settings": dict},
    "rq4": {"model": str, "settings": dict},
    "tune": {
        "model": str,
        "space": dict,
        "samples": int,
        "grace_epochs": int,
        "reduction_factor": int,
        "settings": dict,
    },
}
REQUIRED_KEYS = {
    "rq1": ("methods",),
    "rq2": ("model",),
    "rq3": ("methods",),
    "rq4": ("model",),
    "tune": ("model", "space"),
}


def check_definition(experiment, definition, path):
    """One line naming the key of ``definition`` that is unknown, missing, empty or of the wrong type."""
    keys = DEFINITION_KEYS[experiment]
    for key, value in definition.items():
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(keys)}"
            raise PCLError(f"experiment definition {path}: unknown key '{key}'; {hint}")
        kind = keys[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise PCLError(f"experiment definition {path}: '{key}' must be a {kind.__name__}, got {value!r}")
        if kind in (list, dict) and not value:
            raise PCLError(f"experiment definition {path}: '{key}' is empty")
        if kind is int and value < 1:
            raise PCLError(f"experiment definition {path}: '{key}' must be at least 1, got {value}")
    for key in REQUIRED_KEYS.get(experiment, ()):
        if key not in definition:
            raise PCLError(f"experiment definition {path}: '{key}' is missing")


def run_experiment(experiment, dataset, config_file_list=None, config_dict=None, cmd_args=None, definition=None):
    """Run ``experiment`` (rq1..rq4, tune) on ``dataset``; ``definition``: its yaml file (optional)."""
    return EXPERIMENTS[experiment](
        load_definition(experiment, definition), dataset, config_file_list, config_dict, cmd_args
    )
