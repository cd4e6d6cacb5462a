"""Experiments over many runs: comparisons over folds, the research questions, tuning (on Ray)."""

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
    return definition


def run_experiment(experiment, dataset, config_file_list=None, config_dict=None, cmd_args=None, definition=None):
    """Run ``experiment`` (rq1..rq4, tune) on ``dataset``; ``definition``: its yaml file (optional)."""
    return EXPERIMENTS[experiment](
        load_definition(experiment, definition), dataset, config_file_list, config_dict, cmd_args
    )
