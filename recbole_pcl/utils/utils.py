"""Model and trainer lookup: recbole_pcl first, then RecBole (as RecBole-GNN does)."""
import importlib
import pkgutil
from pathlib import Path

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_pcl.utils.errors import PCLError

_RECBOLE_MODEL_PACKAGES = [
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
]


def properties_dir():
    """The yaml property files: ``recbole_pcl/properties`` when installed, ``properties/`` in a checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "properties", package.parent / "properties"):
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise PCLError(f"recbole_pcl property files not found beside {package}")


def _module_class_names(package):
    mod = importlib.import_module(package)
    names = []
    for info in pkgutil.iter_modules(mod.__path__):
        sub = importlib.import_module(f"{package}.{info.name}")
        names += [n for n in dir(sub) if n.lower() == info.name and isinstance(getattr(sub, n), type)]
    return names


def model_names():
    """Every model name ``--model`` accepts: ours, then RecBole's."""
    ours = _module_class_names("recbole_pcl.model.sequential_recommender")
    theirs = []
    for package in _RECBOLE_MODEL_PACKAGES:
        try:
            theirs += _module_class_names(f"recbole.model.{package}")
        except ImportError:  # e.g. exlib models whose optional libraries are absent
            continue
    return sorted(set(ours)) + sorted(set(theirs) - set(ours))


def get_model(model_name):
    """Model class by name, looked up in ``recbole_pcl.model`` first, then in RecBole."""
    module_path = f"recbole_pcl.model.sequential_recommender.{model_name.lower()}"
    if importlib.util.find_spec(module_path) is not None:
        return getattr(importlib.import_module(module_path), model_name)
    try:
        return recbole_get_model(model_name)
    except (ValueError, AttributeError, ImportError):
        raise PCLError(
            f"unknown model '{model_name}'; valid choices: {', '.join(model_names())}"
        ) from None


def get_trainer(model_type, model_name):
    """Trainer class: ``recbole_pcl.trainer.<Name>Trainer`` if it exists, else RecBole's choice,
    given our weights-only checkpointing (RecBole's pickle the Config and fail on torch >= 2.6)."""
    from recbole_pcl import trainer as our_trainers

    if hasattr(our_trainers, model_name + "Trainer"):
        return getattr(our_trainers, model_name + "Trainer")
    return our_trainers.with_safe_checkpoints(recbole_get_trainer(model_type, model_name))
