"""RecBole ``Config`` that knows recbole_pcl's models and property files.

Order of precedence, lowest first: RecBole's internal defaults -> ``properties/overall.yaml`` ->
``properties/dataset/<dataset>.yaml`` -> ``properties/model/<model>.yaml`` -> user yaml files ->
``config_dict`` -> ``cmd_args`` (``--key=value`` strings).

Unlike RecBole's, this Config never reads ``sys.argv``: command-line options reach it only through
``cmd_args`` (``run_recbole_pcl.py`` passes them), so pytest's own options cannot leak in; their values
are read as Python literals (numbers, lists, dicts, true/false/none), never evaluated as code.

Every setting the user gives is checked when the Config is built (:mod:`.validation`): unknown keys,
types, ranges and allowed values fail at once with a :class:`PCLError` naming the key.
"""

import ast
import inspect
import os
from pathlib import Path

import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import InputType

from recbole_pcl.compat import numpy_aliases
from recbole_pcl.config.validation import kind_of, model_setting_keys, validate
from recbole_pcl.utils.errors import PCLError
from recbole_pcl.utils.utils import get_model, properties_dir


def literal_value(text, booleans=False):
    """``text`` read as a Python literal (number, list, dict, None…) if it is one, else ``text``; with
    ``booleans``, also 'true'/'false' in any case (as RecBole reads command-line values)."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if booleans and text.strip().lower() in ("true", "false"):
            return text.strip().lower() == "true"
        return text


class Config(RecBoleConfig):
    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
        self._inputs = (list(config_file_list or []), dict(config_dict or {}), list(cmd_args or []))
        self._cmd_args = list(cmd_args or [])
        for file in config_file_list or []:
            if not os.path.isfile(file):
                raise PCLError(f"config file not found: {file}")
        # RecBole converts config_dict's text values in place: give it a copy, not the caller's dict
        super().__init__(model, dataset, config_file_list, dict(config_dict) if config_dict else None)
        validate(self.final_config_dict, self.external_config_dict, self._default_types, self.model_class)

    def compatibility_settings(self):
        """RecBole's numpy aliases, set as RecBole sets them, on numpy 2 too (see :mod:`recbole_pcl.compat`)."""
        numpy_aliases()

    def for_model(self, model):
        """The configuration of ``model`` from the same dataset, files, ``config_dict`` and options."""
        files, config_dict, cmd_args = self._inputs
        return Config(model, self.dataset, files, config_dict, cmd_args)

    def foreign_settings(self):
        """The settings the user gave that only other models declare (``--prompt_length`` given to a
        run that also trains SASRecPerTask): they cannot change this model's numbers."""
        mine = set(self.internal_config_dict)
        return {k for k in self.external_config_dict if k not in mine and k in model_setting_keys()}

    def _load_config_files(self, file_list):
        merged = {}
        for file in file_list or []:
            try:
                with open(file, encoding="utf-8") as f:
                    content = yaml.load(f.read(), Loader=self.yaml_loader)
            except yaml.YAMLError as e:
                where = getattr(e, "problem_mark", None)
                line = f" (line {where.line + 1})" if where is not None else ""
                raise PCLError(
                    f"config file {file} is not valid YAML{line}: {getattr(e, 'problem', None) or e}"
                ) from None
            except (OSError, UnicodeDecodeError) as e:
                raise PCLError(f"config file {file} cannot be read: {e}") from None
            if content is not None and not isinstance(content, dict):
                raise PCLError(
                    f"config file {file} must be a mapping of 'key: value' lines, not a {type(content).__name__}"
                )
            merged.update(content or {})
        return merged

    def _load_cmd_line(self):
        cmd_config_dict = {}
        for arg in self._cmd_args:
            key, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
            if not key or not sep:
                raise PCLError(f"command-line option '{arg}' is not of the form --key=value")
            if key in cmd_config_dict and cmd_config_dict[key] != value:
                raise PCLError(f"command-line option --{key} is given twice with different values")
            cmd_config_dict[key] = value
        return {key: literal_value(value, booleans=True) for key, value in cmd_config_dict.items()}

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
        if model is None or dataset is None:
            missing = "model" if model is None else "dataset"
            raise PCLError(f"no {missing} given: use --{missing}=NAME, a config file or config_dict")
        model_class = get_model(model) if isinstance(model, str) else model
        return model_class.__name__, model_class, dataset

    def _set_default_parameters(self):
        # RecBole insists on train_neg_sample_args: ~ for CE-loss sequential models but its default
        # samples; drop the default (not a user's explicit choice) so `--model=SASRec` just runs.
        final = self.final_config_dict
        if final.get("loss_type") == "CE" and "train_neg_sample_args" not in self.external_config_dict:
            final["train_neg_sample_args"] = None
        super()._set_default_parameters()
        wrapped = getattr(self.model_class, "recbole_model", None)
        if wrapped is not None and not hasattr(wrapped, "input_type") and final.get("loss_type") in ("CE", "BPR"):
            # RecBole reads the input type of a model that declares none from its loss, as here
            final["MODEL_INPUT_TYPE"] = InputType.PAIRWISE if final["loss_type"] == "BPR" else InputType.POINTWISE
        listwise = wrapped is not None and final["MODEL_INPUT_TYPE"] == InputType.LISTWISE
        if listwise and "train_neg_sample_args" not in self.external_config_dict:
            # RecBole trains a listwise model (DiffRec) on whole user rows, never with sampled negatives
            final["train_neg_sample_args"] = None

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        props = properties_dir()
        recbole_models = Path(inspect.getfile(RecBoleConfig)).resolve().parents[1] / "properties" / "model"
        # A plugin model inherits the yaml defaults of its ancestors, RecBole's (PCL extends SASRec) and
        # ours (TaskSASRec.yaml: the backbone and training every task method shares). As in RecBole, the
        # dataset's yaml comes after the model's.
        ancestors = [c.__name__ for c in reversed(model_class.__mro__[1:])]
        # the row of a RecBole model (recbole_rows) keeps that model's own RecBole defaults
        wrapped = getattr(model_class, "recbole_model", None)
        theirs = ancestors + ([c.__name__ for c in reversed(wrapped.__mro__)] if wrapped else [])
        files = [recbole_models / f"{name}.yaml" for name in dict.fromkeys(theirs)] + [props / "overall.yaml"]
        files += [props / "model" / f"{name}.yaml" for name in ancestors + [model]]
        files += [props / "dataset" / f"{dataset}.yaml"]
        for file in files:
            if file.is_file():
                config_dict = self._update_internal_config_dict(file)
                if file.parent.name == "dataset" and config_dict:
                    self.parameters["Dataset"] += [k for k in config_dict if k not in self.parameters["Dataset"]]
        self._default_types = {key: kind_of(value) for key, value in self.internal_config_dict.items()}
