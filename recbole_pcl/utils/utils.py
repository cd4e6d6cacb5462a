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


# RecBole models whose code imports a package that RecBole does not install: [(module, pip name)].
# RecBole's exlib_recommender package imports both xgboost and lightgbm, so each of its models needs both.
OPTIONAL_REQUIREMENTS = {
    "XGBoost": [("xgboost", "xgboost"), ("lightgbm", "lightgbm")],
    "LightGBM": [("lightgbm", "lightgbm"), ("xgboost", "xgboost")],
    "KGAT": [("dgl", "dgl")],
    "KGIN": [("torch_scatter", "torch-scatter")],
    "MCCLK": [("torch_scatter", "torch-scatter")],
    "NCL": [("faiss", "faiss-cpu")],
}
# Where the plain pip package may not fit: its compiled parts must match the installed torch.
_TORCH_BUILDS = {
    "dgl": "https://www.dgl.ai/pages/start.html",
    "torch-scatter": "https://data.pyg.org/whl/",
}


def _import_problem(module):
    """Why ``module`` cannot be used (one line), or None when it imports."""
    if importlib.util.find_spec(module) is None:
        return "not installed"
    try:
        importlib.import_module(module)
    except Exception as e:  # installed but broken, e.g. a dgl build for another torch version
        return f"installed but fails to import: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return None


def missing_requirement(model_name):
    """One line naming the optional packages ``model_name`` needs that cannot be imported, and how
    to install them; None when all import."""
    requirements = OPTIONAL_REQUIREMENTS.get(model_name, [])
    problems = [(pip, why) for module, pip in requirements if (why := _import_problem(module))]
    if not problems:
        return None
    pips = [pip for pip, _ in problems]
    builds = "".join(f"; {p} must match your torch, see {_TORCH_BUILDS[p]}" for p in pips if p in _TORCH_BUILDS)
    return (
        f"model '{model_name}' needs the optional package{'s' * (len(pips) > 1)} "
        f"{', '.join(f'{pip} ({why})' for pip, why in problems)}: pip install {' '.join(pips)}{builds}"
    )


def model_names():
    """Every model name ``--model`` accepts: ours, then RecBole's (also those whose optional packages
    are missing: they are accepted, and fail with the package to install)."""
    ours = _module_class_names("recbole_pcl.model.sequential_recommender")
    theirs = set(OPTIONAL_REQUIREMENTS)
    for package in _RECBOLE_MODEL_PACKAGES:
        try:
            theirs.update(_module_class_names(f"recbole.model.{package}"))
        except ImportError:  # exlib_recommender imports xgboost and lightgbm: listed above
            continue
    return sorted(set(ours)) + sorted(theirs - set(ours))


def _described_model_names():
    """``model_names()`` for an error message, marking the models that need extra packages."""

    def described(name):
        needs = "+".join(pip for _, pip in OPTIONAL_REQUIREMENTS.get(name, []))
        return f"{name} (needs {needs})" if needs else name

    return ", ".join(map(described, model_names()))


def get_model(model_name):
    """Model class by name, looked up in ``recbole_pcl.model`` first, then in RecBole;
    ``<Model>PerTask`` is the row of RecBole's ``<Model>`` on the task sequence (each task learned
    alone, :mod:`recbole_pcl.model.recbole_rows`).

    A RecBole model whose optional package is missing fails here, before any data is loaded, with
    the package to install; an unknown name fails with the valid names.
    """
    module_path = f"recbole_pcl.model.sequential_recommender.{model_name.lower()}"
    if importlib.util.find_spec(module_path) is not None:
        return getattr(importlib.import_module(module_path), model_name)
    rows = importlib.import_module("recbole_pcl.model.recbole_rows")  # imported here: it imports utils
    wrapped = rows.row_model_name(model_name)
    if wrapped is not None:  # '<Model>PerTask': the row of RecBole's model (each task learned alone)
        return rows.per_task_row(get_model(wrapped))
    missing = missing_requirement(model_name)
    if missing:
        raise PCLError(missing)
    try:
        return recbole_get_model(model_name)
    except (ValueError, AttributeError, ImportError):
        raise PCLError(f"unknown model '{model_name}'; valid choices: {_described_model_names()}") from None


def get_trainer(model_type, model_name):
    """Trainer class: ``recbole_pcl.trainer.<Name>Trainer`` if it exists, else RecBole's choice,
    given our weights-only checkpointing (RecBole's pickle the Config and fail on torch >= 2.6). The
    trainers are looked up by module name, as RecBole and RecBole-GNN do: utils sits below them."""
    our_trainers = importlib.import_module("recbole_pcl.trainer")

    if hasattr(our_trainers, model_name + "Trainer"):
        return getattr(our_trainers, model_name + "Trainer")
    return our_trainers.with_safe_checkpoints(recbole_get_trainer(model_type, model_name))
