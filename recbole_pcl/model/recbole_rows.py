r"""RecBole's own models as rows of the continual comparison: each task learned alone by its own
instance of the model, from scratch (the "SASRec" row of the PCL paper's Table 1, for any RecBole
model). ``--model=PCL,GRU4Rec,BPR`` in a comparison runs ``GRU4RecPerTask`` and ``BPRPerTask``: the
row of a RecBole model ``M`` is the class ``<M>PerTask`` that :func:`per_task_row` makes (and that
``get_model('<M>PerTask')`` finds, so ``run_recbole_pcl.py --model=GRU4RecPerTask`` runs it alone).
``SASRecPerTask`` is this mechanism with SASRec, whose T1 is the SASRec pretraining the other
SASRec-based methods share.

How a task is learned, by the model's kind (:func:`recbole_row_kind`):

* **sequential** models (RecBole's ``SequentialRecommender``): T1 and each link task are learned with
  the model's own ``calculate_loss`` on the task's training rows (input sequence, user id, label as
  the target item) and scored with its own ``full_sort_predict`` (sampled ranking reads the
  candidates' scores from it, as for every other row). A class task gets a head (``adapter``:
  linear) on the model's sequence representation: ``forward``'s output, given the input sequence,
  its length and the user id as its arguments are named. Where that differs, per model:
  BERT4Rec's ``forward`` returns every position: its representation is the position it ranks items
  from (the mask token its ``reconstruct_test_data`` appends); NextItNet's ``forward`` reads the
  last position of the padded sequence (RecBole's code: its ``full_sort_predict`` scores from the
  same vector); CORE's is L2-normalised; SASRecCPR's ``forward`` returns every layer: the last
  layer's; RepeatNet's ``forward`` is already its item distribution, and the head reads that. A
  model whose ``forward`` needs more than these inputs (FPMC: the candidate item) has no
  representation: its class-task cells are "n/a".
  Models that embed the user id (Caser, HGN, NPE, SHAN, HRM, FOSSIL, TransRec) take part: each
  task's rows carry the user id. On a downstream task the test users are never among its training
  users, so their user embedding keeps its initial value: those models meet them as new users.
  BERT4Rec trains by RecBole's cloze transform (``transform: mask_itemseq``), which masks items of
  the input and never reads the row's target: on a downstream link task its training rows are the
  input followed by the label (on T1, RecBole's own rows), so that the label is learned at all.
* **general** models (``GeneralRecommender``: Pop, ItemKNN, BPR, LightGCN...) and **context-aware**
  ones (``ContextRecommender``: FM, DeepFM..., with the user and item ids as their only fields: the
  task data carry no other feature) score items for a user id, as RecBole does, by their
  ``full_sort_predict`` (context-aware models: ``predict`` of every (user, item) pair). They have
  no sequence representation, so their class-task cells are "n/a". Each task's model is built and
  trained on (user, item) interactions with RecBole's general protocol (its negative sampler never
  draws a user's training items; context-aware models learn 0/1 labels of the sampled pairs), and
  never ranks the items it was trained on for that user (RecBole's full-ranking rule for them):

  - T1: each user's T1 history but its last two interactions (T1's validation and test targets),
    as RecBole's leave-one-out trains a general model;
  - a downstream link task: every user's whole T1 history (the interactions before the label
    window, all of which T1 rows see) and the task's *training* users' labels. Never a validation
    or test user's label, never another interaction of the label window.

  RecBole's traditional models (``ModelType.TRADITIONAL``: Pop, ItemKNN, EASE...) compute from the
  interactions in one epoch, as RecBole's ``TraditionalTrainer`` runs them, and without sampled
  negatives (Pop counts training interactions only).
* refused before any training, one line each (:func:`refusal`): knowledge-aware and decision-tree
  models, models RecBole trains through a trainer of their own (RecVAE, RaCT...), and the models
  in :data:`REFUSED` (S3Rec, KD_DAGFM: chained runs; FDSA, SASRecF, GRU4RecF: item features;
  GRU4RecKG, KSR: knowledge-graph embeddings; DIN, DIEN: click-through-rate models).

Settings, lowest precedence first: the model's own RecBole yaml (``properties/model/<M>.yaml`` of
RecBole: sizes, dropout, loss_type...), recbole-pcl's ``overall.yaml``, ``RecBoleRow.yaml`` (the
training every row shares with the SASRec-based methods: epochs, early stopping, batch sizes,
learning rates, sequence length; and ``pretrain_mode: prefix``: T1 as RecBole's one sample per
prefix), the dataset's yaml, then the user's files, ``config_dict`` and options. ``#B`` = the
tasks it has a model for.
"""

import copy
import dataclasses
import functools
import importlib
import inspect

import numpy as np
import torch
import torch.nn.functional as F
from recbole.data.dataset import Dataset
from recbole.data.interaction import Interaction
from recbole.data.transform import construct_transform
from recbole.data.utils import create_samplers, get_dataloader
from recbole.model.abstract_recommender import ContextRecommender, GeneralRecommender, SequentialRecommender
from recbole.utils import ModelType
from torch import nn

from recbole_pcl.compat import dataset_class, scipy_dok_update
from recbole_pcl.data.pretraining import t1_history
from recbole_pcl.model.abstract_recommender import T1, ContinualRecommender, TaskRecommender, make_head, task_key
from recbole_pcl.utils.errors import PCLError

NO_NEGATIVES = {"distribution": "none", "sample_num": "none", "alpha": "none", "dynamic": False, "candidate_num": 0}
SUFFIX = "PerTask"

# forward's argument names -> the model attribute naming the field of the task rows that feeds it
FORWARD_INPUTS = {
    "item_seq": "ITEM_SEQ",
    "seq_item": "ITEM_SEQ",
    "item_seq_len": "ITEM_SEQ_LEN",
    "seq_item_len": "ITEM_SEQ_LEN",
    "user": "USER_ID",
}

# RecBole models that cannot take part (besides whole kinds, _BY_TYPE), and why
REFUSED = {
    "S3Rec": "it is trained in two runs, a self-supervised pre-training (train_stage: pretrain) and a fine-tuning "
    "that loads its checkpoint file (pre_model_path), which the task pipeline does not chain",
    "KD_DAGFM": "its student model is trained in three runs (phase: teacher_training, distillation, finetuning) "
    "chained by checkpoint files (warm_up), which the task pipeline does not chain",
    "GRU4RecKG": "it reads pre-trained knowledge-graph entity embeddings (ent_id preloaded from a .ent file) "
    "that the task data do not load",
    "KSR": "it reads pre-trained knowledge-graph entity and relation embeddings (.ent/.rel files, a "
    "KnowledgeBasedDataset) that the task data do not load",
    "FDSA": "it embeds item feature fields (selected_features) that the task rows do not carry",
    "SASRecF": "it embeds item feature fields (selected_features) that the task rows do not carry",
    "GRU4RecF": "it embeds item feature fields (selected_features) that the task rows do not carry",
    "DIN": "it is a click-through-rate model: it scores one candidate item from item features with a 0/1 label "
    "and has no ranking of all items",
    "DIEN": "it is a click-through-rate model: it scores one candidate item from item features with a 0/1 label "
    "and has no ranking of all items",
}

_BY_TYPE = {
    ModelType.KNOWLEDGE: "it is knowledge-aware: it needs RecBole's knowledge-graph dataset "
    "(KnowledgeBasedDataset over the .kg and .link files, with its KG sampler), and the task pipeline reads "
    "every task through a SequentialDataset",
    ModelType.DECISIONTREE: "it is a decision-tree model trained outside torch on a feature table "
    "(xgboost/lightgbm), not by RecBole's trainer",
}


def recbole_row_kind(model_class):
    """``'sequential'`` or ``'general'`` (general and context-aware models): how :class:`RecBoleRows`
    learns ``model_class``."""
    return "general" if issubclass(model_class, (GeneralRecommender, ContextRecommender)) else "sequential"


def refusal(model_class):
    """Why RecBole's ``model_class`` cannot be a row of a comparison (one line), or None."""
    name = model_class.__name__
    if issubclass(model_class, TaskRecommender):
        return "it is a method on the task sequence already"
    if name in REFUSED:
        return REFUSED[name]
    if model_class.type in _BY_TYPE:
        return _BY_TYPE[model_class.type]
    if not issubclass(model_class, (GeneralRecommender, ContextRecommender, SequentialRecommender)):
        return "it is not a sequential, general or context-aware recommender"
    trainer = getattr(importlib.import_module("recbole.trainer"), f"{name}Trainer", None)
    if trainer is not None:
        return f"RecBole trains it with a trainer of its own ({trainer.__name__}), which the task pipeline does not run"
    return None


def forward_inputs(model_class):
    """``(fields, reason)``: the model attributes naming the fields its ``forward`` reads, in order
    (``fields`` None and ``reason`` why, when it has no sequence representation)."""
    if issubclass(model_class, GeneralRecommender):
        return None, "a general model ranks items for a user id and has no sequence representation"
    if issubclass(model_class, ContextRecommender):
        return None, "a context-aware model scores (user, item) pairs and has no sequence representation"
    fields = []
    for name, parameter in list(inspect.signature(model_class.forward).parameters.items())[1:]:
        if name in FORWARD_INPUTS:
            fields.append(FORWARD_INPUTS[name])
        elif parameter.default is inspect.Parameter.empty:
            return None, f"its forward needs '{name}' besides the input sequence, so it has no sequence representation"
    return fields, None


def _plugin_row(name):
    module = f"recbole_pcl.model.sequential_recommender.{name.lower()}"
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(importlib.import_module(module), name, None)


def per_task_row(model_class):
    """The row of RecBole's ``model_class``: recbole-pcl's ``<Name>PerTask`` where it has one
    (SASRecPerTask), else :func:`make_row`'s."""
    existing = _plugin_row(model_class.__name__ + SUFFIX)
    return existing if existing is not None else make_row(model_class)


@functools.cache
def make_row(model_class):
    """``<Name>PerTask``: :class:`RecBoleRow` for ``model_class`` (the same class for the same model),
    or a :class:`PCLError` naming the model and why it cannot take part."""
    name = model_class.__name__ + SUFFIX
    reason = refusal(model_class)
    if reason:
        raise PCLError(f"model '{model_class.__name__}' cannot join a continual run or a comparison: {reason}")
    attributes = {
        "recbole_model": model_class,
        "display_name": model_class.__name__,
        "__module__": __name__,
        "__doc__": f"{model_class.__name__}, each task learned alone (see :mod:`{__name__}`).",
    }
    if hasattr(model_class, "input_type"):  # else the Config derives it from loss_type, as RecBole does
        attributes["input_type"] = model_class.input_type
    return type(name, (RecBoleRow,), attributes)


def task_method(model_class):
    """``model_class`` if it is a method on the task sequence; the row of a RecBole model; else a
    :class:`PCLError` naming the model and why it cannot take part."""
    if issubclass(model_class, TaskRecommender):
        return model_class
    return per_task_row(model_class)


def row_model_name(name):
    """The RecBole model that ``'<Name>PerTask'`` names, or None."""
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) and len(name) > len(SUFFIX) else None


def _with(config, **changes):
    copied = copy.copy(config)
    copied.final_config_dict = dict(config.final_config_dict, **changes)
    return copied


def _reinitialise(module, model, config, dataset):
    """Draw ``module``'s weights again as ``model`` initialises itself: its ``_init_weights`` (RecBole's
    convention; what it leaves untouched keeps the values drawn when the model was built), else the
    weights of a freshly built model (``module`` is ``model``) or a layer's own reset."""
    if hasattr(model, "_init_weights"):
        module.apply(model._init_weights)
    elif module is model:
        with scipy_dok_update():
            module.load_state_dict(type(model)(config, dataset).state_dict())
    else:
        for layer in module.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()


def _plain_other(value):
    return value is None or torch.is_tensor(value)


class RecBoleRows:
    """Each task learned alone by its own instance of RecBole's :attr:`recbole_model`, kept in
    ``task_backbones[task]`` (T1 under its key ``T1``), with a head for class tasks (``heads[task]``).
    Mixed into a :class:`ContinualRecommender`: :class:`RecBoleRow` for any RecBole model;
    SASRecPerTask with TaskSASRec, whose T1 is the shared SASRec pretraining (a class with
    ``pretraining`` set learns T1 itself, this mixin the downstream tasks)."""

    recbole_model = None
    starts_from_pretrained = False  # FineAll: a task's model starts from T1's weights, not afresh

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.own_t1 = not self.pretraining
        # models are built with the fields RecBole's batch transform adds (BERT4Rec's masked items),
        # which RecBole's data preparation sets on the config before it builds a model
        self.model_config = _with(config)
        construct_transform(self.model_config)
        self.t1_dataset = dataset
        self.kind = recbole_row_kind(self.recbole_model)
        self.inputs, self.no_representation = forward_inputs(self.recbole_model)
        self.uses_user = self.kind == "general" or "USER_ID" in (self.inputs or [])
        if "heads" not in self._modules:
            self.heads = nn.ModuleDict()
        self.task_backbones = nn.ModuleDict()
        self.training_sets = {}  # task key -> the RecBole dataset its model is built and trained on
        self.seen = {}  # task key -> (indptr, items): what a general model must not rank, per user

    @classmethod
    def task_support(cls, kind):
        if kind == "class":
            return forward_inputs(cls.recbole_model)[1]
        return None

    @staticmethod
    def _key(task):
        return task_key(task)

    def setup(self, data):
        if self.kind == "general":
            self.training_sets = general_training_sets(data)
            for key, dataset in self.training_sets.items():
                self.seen[key] = _by_user(dataset)
        else:
            self.training_sets = {self._key(t.spec.name if t.index else None): t.train._dataset for t in data.tasks}
        if self.own_t1:
            self.task_backbones[T1] = self.new_task_model(T1)
        super().setup(data)

    def new_task_model(self, key):
        with scipy_dok_update():  # graph models build their adjacency matrix here (see recbole_pcl.compat)
            return self.recbole_model(self.model_config, self.training_sets.get(key, self.t1_dataset))

    def add_task(self, name, kind, num_classes=0, attribute=None):
        super().add_task(name, kind, num_classes, attribute)
        if self.task_support(kind):
            return
        model = self.task_backbones[name] = self.new_task_model(name)
        if kind == "class" and name not in self.heads:
            dropout = self.model_config["hidden_dropout_prob"] or 0.0
            size = self.representation_size(model)
            self.heads[name] = make_head(self.model_config["adapter"], size, num_classes, dropout)

    def backbones_kept(self):
        return len(self.task_backbones) + (0 if self.own_t1 else 1)

    def model_of(self, task):
        return self.task_backbones[self._key(task)]

    # ----- the stages ---------------------------------------------------------------------------
    def init_task(self, name):
        model = self.task_backbones[name]
        dataset = self.training_sets.get(name, self.t1_dataset)
        if name in self.heads:
            _reinitialise(self.heads[name], model, self.model_config, dataset)
        if self.starts_from_pretrained:
            model.load_state_dict(self.t1_state())
        elif self.recbole_model.type != ModelType.TRADITIONAL:  # a traditional model's weights are computed
            _reinitialise(model, model, self.model_config, dataset)

    def t1_state(self):
        """T1's model weights, by the names a task's model has."""
        if self.own_t1:
            return self.task_backbones[T1].state_dict()
        state = self.state_dict()
        return {k: state[k] for k in self.backbone_keys}

    def trainable_parameters(self, name):
        if name is None and not self.own_t1:
            return super().trainable_parameters(None)
        params = list(self.task_backbones[self._key(name)].parameters())
        return params + (list(self.heads[name].parameters()) if name in self.heads else [])

    def stage_keys(self, name, keys):
        if name is None and not self.own_t1:
            return super().stage_keys(None, keys)
        key = self._key(name)
        return [k for k in keys if k.startswith((f"task_backbones.{key}.", f"heads.{key}."))]

    def stage_fits(self, task, earlier):
        """Each task once, on its training rows; general models on their own (user, item) training
        set, traditional ones for one epoch, cloze-trained ones with the label after the input."""
        name = None if task.index == 0 else task.spec.name
        if self.task_support(task.spec.kind) or (name is None and not self.own_t1):
            yield task
            return
        train, config = None, task.config
        if self.recbole_model.type == ModelType.TRADITIONAL:
            config = _with(config, epochs=1, train_neg_sample_args=NO_NEGATIVES)
        if self.kind == "general":
            train = self.training_loader(task, self.training_sets[self._key(name)], config)
        elif name is not None and task.spec.is_link and task.config["transform"] == "mask_itemseq":
            train = self.training_loader(task, _label_appended(task.train._dataset), config)
        yield (
            task
            if train is None and config is task.config
            else dataclasses.replace(task, train=train or task.train, config=config)
        )

    def training_loader(self, task, dataset, config):
        """RecBole's training loader of ``dataset`` for the model (its own kind of loader, general
        models' negative sampler), seeded as the stage seeded the task's own loader."""
        config = _with(config, model=self.recbole_model.__name__, repeatable=self.kind != "general")
        sampler = create_samplers(config, dataset, [dataset, task.valid._dataset, task.test._dataset])[0]
        loader = get_dataloader(config, "train")(config, dataset, sampler, shuffle=config["shuffle"])
        loader.generator.manual_seed(task.train.generator.initial_seed())
        return loader

    # ----- what a finished stage keeps: its tensors, and the model's tensor "other parameters" ---
    def _others(self, key):
        model = self.task_backbones[key] if key in self.task_backbones else None
        names = getattr(model, "other_parameter_name", [])
        return {n: getattr(model, n) for n in names if _plain_other(getattr(model, n))}

    def stage_state(self, name):
        """As RecBole's checkpoints keep a model's ``other_parameter()`` (Pop's counts, LightGCN's
        cached embeddings): those that are tensors (an empty tensor where not computed yet)."""
        state = super().stage_state(name)
        if name is None and not self.own_t1:
            return state
        key = self._key(name)
        for other, value in self._others(key).items():
            state[f"other_parameters.{key}.{other}"] = torch.empty(0) if value is None else value
        return state

    def load_state_dict(self, state_dict, strict=True, **kwargs):
        state = dict(state_dict)
        for name in [k for k in state if k.startswith("other_parameters.")]:
            value = state.pop(name)
            _, key, other = name.split(".", 2)
            device = self.model_config["device"]
            setattr(self.task_backbones[key], other, None if value.numel() == 0 else value.to(device))
        return super().load_state_dict(state, strict, **kwargs)

    def _active_model(self):
        key = self._key(self.active_task)
        if (self.active_task is None and not self.own_t1) or key not in self.task_backbones:
            return None
        return self.task_backbones[key]

    def other_parameter(self):
        """The active task's model's (the trainer keeps them with the best epoch, as RecBole's does)."""
        model = self._active_model()
        return super().other_parameter() if model is None else model.other_parameter()

    def load_other_parameter(self, para):
        model = self._active_model()
        return super().load_other_parameter(para) if model is None else model.load_other_parameter(para)

    # ----- scores, representations, losses ------------------------------------------------------
    def representation(self, model, interaction):
        """The model's sequence representation, ``[B, d]`` (see the module's notes per model)."""
        if self.inputs is None:
            raise PCLError(f"{type(self).__name__}: {self.no_representation}")
        args = [interaction[getattr(model, field)] for field in self.inputs]
        seq_len = interaction[model.ITEM_SEQ_LEN]
        if hasattr(model, "reconstruct_test_data"):  # BERT4Rec: its mask token after the input
            index = self.inputs.index("ITEM_SEQ")
            args[index] = model.reconstruct_test_data(args[index], seq_len)
        output = model(*args)
        if isinstance(output, (list, tuple)):  # every layer's output (SASRecCPR): the last layer's
            output = output[-1]
        if output.dim() == 3:  # every position: the one the model ranks items from
            output = model.gather_indexes(output, seq_len - 1)
        return output

    def representation_size(self, model):
        """The width of ``model``'s representation, from one placeholder row (evaluation mode)."""
        device, n = self.model_config["device"], self.model_config["MAX_ITEM_LIST_LENGTH"]
        row = Interaction(
            {
                model.USER_ID: torch.ones(1, dtype=torch.long),
                model.ITEM_SEQ: F.pad(torch.ones(1, 1, dtype=torch.long), (0, n - 1)),
                model.ITEM_SEQ_LEN: torch.ones(1, dtype=torch.long),
            }
        ).to(device)
        training = model.training
        model.to(device).eval()
        with torch.no_grad():
            size = self.representation(model, row).shape[-1]
        model.train(training)
        return size

    def item_scores(self, model, interaction, key):
        """``[B, n_items]``: the model's own full ranking; a general model's training items of each
        user excluded (RecBole's rule for those models)."""
        try:
            scores = model.full_sort_predict(interaction)
        except NotImplementedError:
            scores = _scores_by_predict(model, interaction[self.USER_ID], self.USER_ID, self.ITEM_ID, self.n_items)
        scores = scores.view(len(interaction), -1).float()  # Pop's are float64; the evaluator's float32
        if key in self.seen:
            rows, items = _seen_of(self.seen[key], interaction[self.USER_ID], scores.device)
            scores = scores.index_put((rows, items), torch.tensor(-np.inf, dtype=scores.dtype, device=scores.device))
        return scores

    def task_logits(self, interaction, task=None):
        if task is None and not self.own_t1:
            return super().task_logits(interaction, None)
        why = None if task is None else self.task_support(self.task_kind[task])
        if why:
            raise PCLError(f"{self.label()} has no model of task '{task}': {why}")
        model = self.model_of(task)
        if self.is_class(task):
            return self.heads[task](self.representation(model, interaction))
        return self.item_scores(model, interaction, self._key(task))

    def user_representation(self, interaction, task=None):
        if task is None and not self.own_t1:
            return super().user_representation(interaction, None)
        return self.representation(self.model_of(task), interaction)

    def task_loss(self, interaction, task):
        if task is None and not self.own_t1:
            return super().task_loss(interaction, None)
        model = self.model_of(task)
        if self.is_class(task):
            return F.cross_entropy(self.heads[task](self.representation(model, interaction)), interaction[self.LABEL])
        loss = model.calculate_loss(interaction)
        return sum(loss) if isinstance(loss, tuple) else loss  # several losses: summed, as RecBole's trainer does

    def t1_loss(self, interaction):
        if not self.own_t1:
            return super().t1_loss(interaction)
        return self.task_loss(interaction, None)

    def predict(self, interaction):
        if not self.uses_user or self.is_class(self.active_task):
            return super().predict(interaction)
        # sampled ranking repeats each row for every candidate: score each (user, sequence) once
        key = torch.cat([interaction[self.USER_ID].unsqueeze(1), interaction[self.ITEM_SEQ]], dim=1)
        unique, inverse = torch.unique(key, dim=0, return_inverse=True)
        first = torch.empty(len(unique), dtype=torch.long, device=key.device)
        first.scatter_(0, inverse, torch.arange(len(key), device=key.device))
        return self.task_logits(interaction[first], self.active_task)[inverse, interaction[self.ITEM_ID]]


class RecBoleRow(RecBoleRows, ContinualRecommender):
    """The base of every ``<Model>PerTask`` row that :func:`per_task_row` makes (its settings:
    ``properties/model/RecBoleRow.yaml``)."""


def _scores_by_predict(model, users, user_field, item_field, n_items):
    """``[B, n_items]`` from ``predict`` of every (user, item) pair, for a model without
    ``full_sort_predict`` (context-aware models, whose fields here are the user and item ids)."""
    chunk = max(1, (1 << 20) // n_items)  # users per call: about a million pairs at a time
    scores = []
    for start in range(0, len(users), chunk):
        part = users[start : start + chunk]
        pairs = Interaction(
            {
                user_field: part.repeat_interleave(n_items),
                item_field: torch.arange(n_items, device=users.device).repeat(len(part)),
            }
        )
        scores.append(model.predict(pairs).view(len(part), n_items))
    return torch.cat(scores)


def _by_user(dataset):
    """``(indptr, items)``: each user's items in ``dataset`` (CSR by user id)."""
    inter = dataset.inter_feat
    users, items = inter[dataset.uid_field].numpy(), inter[dataset.iid_field].numpy()
    order = np.argsort(users, kind="stable")
    indptr = np.zeros(dataset.user_num + 1, dtype=np.int64)
    np.add.at(indptr, users + 1, 1)
    return torch.as_tensor(np.cumsum(indptr)), torch.as_tensor(items[order])


def _seen_of(seen, users, device):
    """``(rows, items)`` of every item each of ``users`` has in ``seen``."""
    indptr, items = seen
    users = users.cpu()
    start, count = indptr[users], indptr[users + 1] - indptr[users]
    rows = torch.repeat_interleave(torch.arange(len(users)), count)
    offsets = torch.arange(int(count.sum())) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    return rows.to(device), items[torch.repeat_interleave(start, count) + offsets].to(device)


def general_training_sets(data):
    """The (user, item) training set of a general model, per task key (see the module's notes): T1
    and each link task (class tasks have no general model)."""
    ds, timeline = data.dataset, data.timeline
    template = data.tasks[0].train._dataset
    rows, last_two = t1_history(timeline, data.cold_items)
    uid, iid = timeline.inter[ds.uid_field].to_numpy(), timeline.items

    fields = (ds.uid_field, ds.iid_field)

    def dataset(users, items):
        pairs = template.copy(Interaction({ds.uid_field: torch.as_tensor(users), ds.iid_field: torch.as_tensor(items)}))
        # RecBole's plain Dataset (a SequentialDataset reads its rows as prefixes, e.g. in inter_matrix)
        pairs.__class__ = dataset_class(Dataset)
        # its fields: the user and item ids (what a context-aware model embeds), no sequence or feature
        pairs.user_feat = pairs.item_feat = None
        for table in ("field2type", "field2source", "field2seqlen"):
            setattr(pairs, table, {k: v for k, v in getattr(pairs, table).items() if k in fields})
        return pairs

    sets = {T1: dataset(uid[rows[~last_two]], iid[rows[~last_two]])}
    for task in data.tasks[1:]:
        if task.spec.is_link:
            labels = task.train._dataset.inter_feat  # the training users' labels only
            users = np.concatenate([uid[rows], labels[ds.uid_field].numpy()])
            items = np.concatenate([iid[rows], labels[ds.iid_field].numpy()])
            sets[task.spec.name] = dataset(users, items)
    return sets


def _label_appended(dataset):
    """``dataset``'s rows with the label as the last item of the input (the oldest dropped when full)."""
    inter = dataset.inter_feat
    seq, length = inter[dataset.item_id_list_field].clone(), inter[dataset.item_list_length_field].clone()
    full = length == seq.size(1)
    seq[full] = torch.roll(seq[full], -1, dims=1)
    length = torch.where(full, length - 1, length)
    seq[torch.arange(len(seq)), length] = inter[dataset.iid_field]
    return dataset.copy(
        Interaction(
            {
                dataset.uid_field: inter[dataset.uid_field],
                dataset.item_id_list_field: seq,
                dataset.item_list_length_field: length + 1,
                dataset.iid_field: inter[dataset.iid_field],
            }
        )
    )
