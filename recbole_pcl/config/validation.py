"""Settings checked when a :class:`~recbole_pcl.config.Config` is loaded, before any data or training.

Two checks, both on the keys the user gave (files, ``config_dict``, ``--key=value``):

* **unknown keys**: a key that neither RecBole, nor this plugin, nor any property file knows is an
  error naming the closest known one (``--learnin_rate`` -> ``learning_rate``). Known keys are those
  of every RecBole and recbole-pcl property file, RecBole's argument lists, and every ``config["key"]``
  read in either package's source (so a key that some model reads without a yaml default is known).
* **values**: :data:`RULES` states the type, range or allowed values of the keys whose wrong value
  would otherwise surface as a traceback deep inside (or be accepted silently); any other key whose
  default is a number or a boolean must be given as one.
"""

import difflib
import functools
import inspect
import os
import re
from pathlib import Path

import yaml

from recbole_pcl.utils.errors import PCLError
from recbole_pcl.utils.utils import properties_dir


class Rule:
    """Type, bounds and choices of one setting. ``kind``: int, float, bool, str, list."""

    def __init__(self, kind, low=None, high=None, low_open=False, high_open=False, choices=None, nullable=False):
        self.kind, self.low, self.high = kind, low, high
        self.low_open, self.high_open, self.choices, self.nullable = low_open, high_open, choices, nullable

    def check(self, key, value):
        if value is None:
            if self.nullable:
                return
            raise PCLError(f"setting '{key}' must be given a value ({self.describe()}), got none")
        if not _is_kind(value, self.kind):
            raise PCLError(f"setting '{key}' must be {self.describe()}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise PCLError(f"setting '{key}' must be one of {', '.join(map(str, self.choices))}, got {value!r}{hint}")
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise PCLError(f"setting '{key}' must be {self.describe()}, got {value!r}")
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise PCLError(f"setting '{key}' must be {self.describe()}, got {value!r}")

    def describe(self):
        text = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a text", "list": "a list"}[
            self.kind
        ]
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return text + (" " + " and ".join(bounds) if bounds else "")


def _is_kind(value, kind):
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    return isinstance(value, (list, tuple))


def _positive_int():
    return Rule("int", low=1)


def _probability():
    return Rule("float", low=0, high=1, high_open=True)


RULES = {
    # RecBole's training and model settings whose wrong values crash late or pass silently
    "epochs": _positive_int(),
    "train_batch_size": _positive_int(),
    "eval_batch_size": _positive_int(),
    "stopping_step": _positive_int(),
    "eval_step": Rule("int", low=0),
    "learning_rate": Rule("float", low=0, low_open=True),
    "weight_decay": Rule("float", low=0),
    "seed": Rule("int"),
    "hidden_size": _positive_int(),
    "inner_size": _positive_int(),
    "n_layers": _positive_int(),
    "n_heads": _positive_int(),
    "MAX_ITEM_LIST_LENGTH": _positive_int(),
    "hidden_dropout_prob": _probability(),
    "attn_dropout_prob": _probability(),
    # continual task data and runs (properties/overall.yaml)
    "label_window": _positive_int(),
    "task_split": Rule("list"),
    "task_eval_mode": Rule("str", choices=("full", "uni100")),
    "pretrain_mode": Rule("str", choices=("causal", "causal_last", "prefix"), nullable=True),
    "downstream_learning_rate": Rule("float", low=0, low_open=True),
    "n_folds": Rule("int", low=2),
    "cold_item_share": Rule("float", low=0, high=1, high_open=True),
    "tune_cold_items": Rule("bool"),
    "missing_values": Rule("str", choices=("refuse", "drop", "fill")),
    "fold": Rule("int", low=0, nullable=True),
    "compare_folds": Rule("list", nullable=True),
    "fold_pretraining": Rule("bool"),
    "tune_trials": Rule("int", low=0),
    "eval_cache_gib": Rule("float", low=0),
    "task_weighting": Rule("str", choices=("equal", "mgda")),
    "joint_stopping": Rule("str", choices=("any", "mean")),
    "mgda_normalization": Rule("str", choices=("l2", "loss", "loss+", "none")),
    "num_experts": _positive_int(),
    "runner": Rule("str", choices=("ray", "serial")),
    "ray_address": Rule("str", nullable=True),
    "ray_cpus_per_run": Rule("float", low=0),
    "ray_gpus_per_run": Rule("float", low=0),
    "mask_scale_max": Rule("float", low=0, low_open=True),
    "sampling_scale": Rule("float", low=0, low_open=True),
    "kr_alpha": Rule("float", low=0),
    # the continual baselines CONURE, EWC, LwF and Replay (properties/model/<name>.yaml)
    "conure_prune_ratio": Rule("float", low=0, high=1, high_open=True),
    "ewc_lambda": Rule("float", low=0),
    "lwf_alpha": Rule("float", low=0),
    "lwf_temperature": Rule("float", low=0, low_open=True),
    "replay_size": _positive_int(),
    "replay_weight": Rule("float", low=0),
    "fwt_reference": Rule("bool"),
    "fwt_reference_model": Rule("str", nullable=True),
    "compare_reference": Rule("str", nullable=True),
    "run_dir": Rule("str", nullable=True),
    "pretrained_checkpoint": Rule("str", nullable=True),
    # PCL (properties/model/PCL.yaml)
    "prompt_length": Rule("int", low=0),
    "context_lambda": Rule("float", low=0),
    "contextual_prompt": Rule("str", choices=("lm", "random", "none"), nullable=True),
    "context_heads": _positive_int(),
    "context_text_dim": _positive_int(),
    "adapter": Rule("str", choices=("linear", "mlp")),
    "prompt_init": Rule("str", choices=("previous", "random")),
    "normalize_context": Rule("bool"),
    "prefix_cache": Rule("bool"),
    "prefix_cache_gib": Rule("float", low=0),
}


def _divides(config, key, total_key):
    if key in config and total_key in config and config[total_key] % config[key]:
        raise PCLError(f"setting '{key}' ({config[key]}) must divide '{total_key}' ({config[total_key]})")


# Settings whose allowed values differ from model to model: read from the model's own code (the
# values it compares the setting with), so that validation never refuses what the model accepts.
MODEL_CHOICES = ("loss_type",)


def model_choices(model_class, key):
    """The values of ``key`` that ``model_class``'s code (its module and its ancestors') branches
    on, e.g. ``loss_type`` CE/BPR for SASRec, CE/BPR/NLL for SINE, MSE/BCE for CDAE; ``(values,
    case_sensitive)``, or None when its code compares the setting with nothing (any value is its own
    business)."""
    values, exact = set(), True
    wrapped = getattr(model_class, "recbole_model", None)  # a RecBole model's row: that model's choices
    for cls in model_class.__mro__ + (wrapped.__mro__ if wrapped else ()):
        module = inspect.getmodule(cls)
        if module is None or not (module.__name__.startswith(("recbole.", "recbole_pcl."))):
            continue
        source = inspect.getsource(module)
        for lower, literal in re.findall(rf"{key}(\.lower\(\))?\s*==\s*['\"](\w+)['\"]", source):
            values.add(literal)
            exact = exact and not lower
        for group in re.findall(rf"{key}\s+in\s*[\[(]([^\])]*)[\])]", source):
            values.update(re.findall(r"['\"](\w+)['\"]", group))
    return (tuple(sorted(values)), exact) if values else None


def _check_model_choice(model_class, key, value):
    found = model_choices(model_class, key) if model_class is not None else None
    if found is None or value is None:
        return
    choices, exact = found
    accepted = value in choices if exact else str(value).lower() in {c.lower() for c in choices}
    if not accepted:
        raise PCLError(f"setting '{key}' must be one of {', '.join(choices)} for {model_class.__name__}, got {value!r}")


def validate(final, user_keys, default_types, model_class=None):
    """Check the user's ``user_keys`` of the resolved settings ``final``.

    ``default_types`` maps each key to the type of its default before the user's files and options
    were applied (None where the key has no default); ``model_class``: the model they are for."""
    known = known_keys()
    for key in user_keys:
        if key not in known and key not in default_types:
            close = difflib.get_close_matches(key, sorted(known | set(default_types)), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else " (see properties/overall.yaml and RecBole's docs)"
            raise PCLError(f"unknown setting '{key}'{hint}")
        value = final[key]
        if key in MODEL_CHOICES:
            _check_model_choice(model_class, key, value)
        elif key in RULES:
            RULES[key].check(key, value)
        elif (
            value is not None
            and default_types.get(key) in ("int", "float", "bool")
            and not _is_kind(value, default_types[key])
        ):
            raise PCLError(f"setting '{key}' must be {Rule(default_types[key]).describe()}, got {value!r}")
    ratios = final.get("task_split")
    if "task_split" in user_keys and (len(ratios) != 3 or not all(_is_kind(r, "float") and r > 0 for r in ratios)):
        raise PCLError(f"setting 'task_split' must be three positive ratios (train, valid, test), got {ratios}")
    if final.get("fold") is not None and final.get("n_folds") is not None and final["fold"] >= final["n_folds"]:
        raise PCLError(f"setting 'fold' must be below 'n_folds' ({final['n_folds']}), got {final['fold']}")
    folds = final.get("compare_folds")
    if folds is not None and (not folds or any(not _is_kind(f, "int") or not 0 <= f < final["n_folds"] for f in folds)):
        raise PCLError(
            f"setting 'compare_folds' must be a non-empty list of folds below 'n_folds' ({final['n_folds']}), got {folds!r}"
        )
    folder = final.get("checkpoint_dir")
    if isinstance(folder, str) and os.path.exists(folder) and not os.path.isdir(folder):
        raise PCLError(f"setting 'checkpoint_dir' names a file, not a folder: {folder}")
    _divides(final, "n_heads", "hidden_size")
    if final.get("contextual_prompt") not in (None, "none"):
        _divides(final, "context_heads", "hidden_size")
    if (
        "prompt_length" in final
        and "MAX_ITEM_LIST_LENGTH" in final
        and final["prompt_length"] > final["MAX_ITEM_LIST_LENGTH"]
    ):
        raise PCLError(
            f"setting 'prompt_length' ({final['prompt_length']}) must not exceed "
            f"'MAX_ITEM_LIST_LENGTH' ({final['MAX_ITEM_LIST_LENGTH']})"
        )


def kind_of(value):
    """The :class:`Rule` kind of a default value, or None when it says nothing about the type."""
    for kind in ("bool", "int", "float"):
        if _is_kind(value, kind):
            return kind
    return None


_CONFIG_READ = re.compile(r"config\[\s*['\"]([A-Za-z_][A-Za-z0-9_]*)['\"]\s*\]")


@functools.lru_cache(maxsize=1)
def known_keys():
    """Every setting some property file declares or some code of RecBole or recbole-pcl reads."""
    import recbole
    from recbole.utils import argument_list

    keys = set()
    for name in ("general_arguments", "training_arguments", "evaluation_arguments", "dataset_arguments"):
        keys.update(getattr(argument_list, name))
    recbole_root = Path(inspect.getfile(recbole)).parent
    ours = Path(__file__).resolve().parents[1]
    for folder in (recbole_root / "properties", properties_dir()):
        for file in folder.rglob("*.yaml"):
            content = yaml.safe_load(file.read_text(encoding="utf-8"))
            if isinstance(content, dict):
                keys.update(content)
    for root in (recbole_root, ours):
        for file in root.rglob("*.py"):
            keys.update(_CONFIG_READ.findall(file.read_text(encoding="utf-8", errors="replace")))
    return frozenset(keys)


@functools.lru_cache(maxsize=1)
def model_setting_keys():
    """The settings some model property file (RecBole's or ours) declares."""
    import recbole

    keys = set()
    for folder in (Path(inspect.getfile(recbole)).parent / "properties" / "model", properties_dir() / "model"):
        for file in folder.glob("*.yaml"):
            content = yaml.safe_load(file.read_text(encoding="utf-8"))
            if isinstance(content, dict):
                keys.update(content)
    return frozenset(keys)
