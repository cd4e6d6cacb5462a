"""The contract of a method on a task sequence, stated as RecBole states a model's.

A task sequence is T1 (next-item prediction, self-supervised) followed by downstream tasks, each a
*link* task (predict an item) or a *class* task (predict one of C classes); see
:mod:`recbole_pcl.data.tasks`. Every method serves all tasks from one model object through
:meth:`TaskRecommender.task_logits` and :meth:`TaskRecommender.user_representation` (task None = T1),
and answers RecBole's model API (``calculate_loss`` / ``predict`` / ``full_sort_predict``) for
:attr:`TaskRecommender.active_task`, so RecBole's trainer and evaluator run every task unchanged.

* :class:`ContinualRecommender`: tasks are learned one after another, one *stage* per task
  (the sequential strategy of :mod:`recbole_pcl.pipeline`).
* :class:`JointRecommender`: all tasks are learned at once (the joint strategy).

:class:`TaskSASRec` is the shared machinery of the methods built on RecBole's SASRec.
"""

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.utils import InputType
from torch import nn

from recbole_pcl.model.prefix_cache import distinct_rows
from recbole_pcl.utils.errors import PCLError

T1 = "__t1__"  # T1's key where tasks key a ModuleDict or a dict (None cannot be a key there)


def task_key(task):
    """The key of ``task`` (None = T1) in a ModuleDict or dict of per-task state."""
    return T1 if task is None else task


class TaskRecommender(SequentialRecommender):
    """A model of every task of a sequence. Subclasses implement :meth:`task_logits`,
    :meth:`user_representation`, :meth:`t1_loss` and :meth:`backbones_kept`."""

    input_type = InputType.POINTWISE
    display_name = None  # the name in comparison tables (default: the class name)
    # Settings only the downstream part of the method reads: they do not identify a shared stage 0
    # (see recbole_pcl.pipeline.identity).
    downstream_settings = ()
    # Methods whose stage 0 is this plain backbone pretraining on T1 name it: they share it.
    pretraining = None

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.LABEL = config["LABEL_FIELD"]
        self.task_kind = {}  # downstream task name -> "link" | "class", in order
        self.active_task = None  # None = T1

    @classmethod
    def label(cls):
        return cls.display_name or cls.__name__

    def setup(self, data):
        """Called once after construction with the run's data
        (:class:`~recbole_pcl.data.continual.ContinualData`, whose ``tasks`` list T1 first): declares
        each downstream task (:meth:`add_task`). A method that needs more of the run (PCL: the task
        descriptions, the cold-start items) reads it here."""
        for task in data.tasks[1:]:
            self.add_task(task.spec.name, task.spec.kind, task.num_classes, task.spec.attribute)

    def add_task(self, name, kind, num_classes=0, attribute=None):
        """Declare downstream task ``name`` (before its stage, or before loading a finished run)."""
        self.task_kind[name] = kind

    @classmethod
    def task_support(cls, kind):
        """Why the method has no model of a task of ``kind`` ("link" or "class"), or None when it has
        one. Such a task is neither trained nor evaluated: its results say "n/a" with the reason
        (a RecBole general model has no sequence representation for a class-task head)."""
        return None

    def is_class(self, task):
        return task is not None and self.task_kind[task] == "class"

    def task_order(self):
        """Every task in the order it is learned: None (T1), then the downstream tasks."""
        return [None, *self.task_kind]

    def backbones_kept(self):
        """#B: how many backbones the method keeps to serve every task."""
        raise NotImplementedError

    # ----- scores of any task -------------------------------------------------------------------
    def task_logits(self, interaction, task=None):
        """``[B, n_items]`` item scores (link tasks, T1) or ``[B, n_classes]`` class logits."""
        raise NotImplementedError

    def user_representation(self, interaction, task=None):
        """``[B, d]`` the user vector the method scores ``task`` from."""
        raise NotImplementedError

    def t1_loss(self, interaction):
        raise NotImplementedError

    def tasks_logits(self, interaction, tasks):
        """``{task: task_logits(interaction, task)}`` for several tasks of one batch (serving); methods
        whose tasks share part of the work do it once."""
        return {task: self.task_logits(interaction, task) for task in tasks}

    def user_representations(self, interaction, tasks):
        """``{task: user_representation(interaction, task)}``, as :meth:`tasks_logits`."""
        return {task: self.user_representation(interaction, task) for task in tasks}

    def count_trainable(self):
        """How many numbers the current stage learns (the report's trainable parameters)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def start_epoch(self, num_batches):
        """Called by the trainer before each training epoch of ``num_batches`` batches (for methods
        whose training schedule follows the batch index)."""

    def task_loss(self, interaction, task):
        """Cross-entropy of ``task`` on a batch of its training rows (T1: :meth:`t1_loss`)."""
        if task is None:
            return self.t1_loss(interaction)
        target = interaction[self.LABEL] if self.is_class(task) else interaction[self.POS_ITEM_ID]
        return F.cross_entropy(self.task_logits(interaction, task), target)

    # ----- RecBole's model API, for the active task -----------------------------------------------
    def calculate_loss(self, interaction):
        return self.task_loss(interaction, self.active_task)

    def predict(self, interaction):
        task = self.active_task
        if self.is_class(task):
            return self.task_logits(interaction, task).argmax(-1).float()  # class id, read by Accuracy
        # sampled ranking repeats each user's row for every candidate (RecBole tiles the batch): score
        # each distinct sequence once
        first, inverse = distinct_rows(interaction[self.ITEM_SEQ])
        logits = self.task_logits(interaction[first], task)
        return logits[inverse, interaction[self.ITEM_ID]]

    def full_sort_predict(self, interaction):
        return self.task_logits(interaction, self.active_task)


class ContinualRecommender(TaskRecommender):
    """Learns tasks one after another. For each stage the pipeline calls :meth:`begin_task`, fits
    the parameters that require grad with RecBole's trainer on the task's data, calls
    :meth:`end_task` and saves :meth:`stage_state`; a finished stage is restored by
    :meth:`prepare_task`, loading its tensors, then :meth:`end_task`. Subclasses implement the hooks
    :meth:`init_task`, :meth:`trainable_parameters` and :meth:`stage_keys`."""

    def begin_task(self, name):
        """Prepare the stage of ``name`` (None = T1): initialise its parameters, choose which learn."""
        self.active_task = name
        self.prepare_task(name)
        if name is not None:
            self.init_task(name)
        train = {id(p) for p in self.trainable_parameters(name)}
        for p in self.parameters():
            p.requires_grad_(id(p) in train)

    def stage_fits(self, task, earlier):
        """The fits of a stage, as a generator (after :meth:`begin_task`, before :meth:`end_task`): the
        pipeline fits each :class:`~recbole_pcl.data.continual.TaskData` it yields (RecBole's trainer,
        early stopping, the best epoch's weights restored) before resuming it. ``task``: the stage's
        task; ``earlier``: the tasks learned before it (T1 first). The default fits ``task`` once.

        Code before the first ``yield`` prepares the stage and code after the last one closes it: a
        method that retains earlier tasks reads their training data here (``earlier[i].train``, never
        their validation or test data): EWC's Fisher information, LwF's recorded outputs, Replay's
        buffer. Yielding again asks for another fit (CONURE retrains after pruning), of ``task`` or of
        an earlier task; the method sets :attr:`active_task` (and what trains) for each. A fit of
        ``task`` may be a copy of it (``dataclasses.replace``) with other training rows or settings,
        never other validation or test rows (RecBole's general models train on their own (user, item)
        set: :mod:`recbole_pcl.model.recbole_rows`). The stage's record is the last fit of ``task``. Anything computed here that a later stage needs is either
        written by :meth:`stage_keys` or recomputed from the data as exactly, so that a resumed or
        appended run equals an uninterrupted one."""
        yield task

    def end_task(self, name):
        """Close the stage of ``name``: nothing trains until the next stage begins."""
        for p in self.parameters():
            p.requires_grad_(False)
        self.active_task = None

    def stage_state(self, name):
        """The tensors the stage of ``name`` wrote (its file holds these and nothing else)."""
        state = self.state_dict()
        return {k: state[k] for k in self.stage_keys(name, list(state))}

    def prepare_task(self, name):
        """Give the model the parameters the stage of ``name`` has (before they are initialised or
        loaded): for methods whose structure grows with the tasks learned."""

    def init_task(self, name):
        raise NotImplementedError

    def trainable_parameters(self, name):
        raise NotImplementedError

    def stage_keys(self, name, keys):
        """Which of the state-dict ``keys`` the stage of ``name`` writes."""
        raise NotImplementedError


class JointRecommender(TaskRecommender):
    """Learns every task at once: the pipeline fits :meth:`task_losses` over one batch of each task
    per step (weighted equally, or by MGDA when ``task_weighting: mgda``)."""

    def task_losses(self, batches):
        """``{task: loss}`` for ``{task: batch}`` (task None = T1)."""
        return {task: self.task_loss(batch, task) for task, batch in batches.items()}

    def shared_parameters(self):
        """The parameters every task's loss reaches (MGDA weighs the tasks' gradients on these)."""
        raise NotImplementedError

    def backbones_kept(self):
        return 1


def make_head(kind, hidden_size, num_classes, dropout):
    """A task head: ``linear`` or ``mlp`` (one hidden layer) from the user vector to the classes."""
    if kind == "linear":
        return nn.Linear(hidden_size, num_classes)
    return nn.Sequential(
        nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_size, num_classes)
    )


def training_batches(task, batch_size, device):
    """The training rows of ``task`` (a :class:`~recbole_pcl.data.continual.TaskData`) in their stored
    order, in batches on ``device``: no shuffling and no random draw, so what a method computes from
    them outside a fit (EWC's Fisher, LwF's recorded outputs) is the same however the run got there."""
    rows = task.train._dataset.inter_feat
    for start in range(0, len(rows), batch_size):
        yield rows[start : start + batch_size].to(device)


class Tensors(nn.Module):
    """Named tensors kept as buffers (state a method keeps beside its parameters and saves with the
    stage that writes it): ``tensors[name]``, where ``name`` may be a parameter's dotted name."""

    def __init__(self, tensors=()):
        super().__init__()
        self.keys = {}  # name -> buffer name (buffer names cannot hold dots)
        for name, value in dict(tensors).items():
            self[name] = value

    def __setitem__(self, name, value):
        self.keys[name] = name.replace(".", "__")
        self.register_buffer(self.keys[name], value)

    def __getitem__(self, name):
        return self._buffers[self.keys[name]]

    def items(self):
        return [(name, self._buffers[key]) for name, key in self.keys.items()]


class TaskSASRec(TaskRecommender, SASRec):
    """RecBole's SASRec as the backbone of a method on a task sequence.

    T1 is SASRec's next-item prediction, trained on every position of each sequence at once
    (``pretrain_mode: causal`` / ``causal_last``) or on RecBole's one sample per prefix (``prefix``,
    stock SASRec). Class
    tasks get a head (``adapter``: linear or mlp) on the user vector; link tasks score the user vector
    against the item table (through a per-task linear head where :attr:`link_heads`). Methods change
    :meth:`backbone` (whose modules encode a task), :meth:`input_embedding` (what enters the encoder)
    and :meth:`encoder_layers` (how its layers run).
    """

    pretraining = "SASRec"  # stage 0 = plain SASRec pretraining on T1
    downstream_settings = ("adapter",)  # heads exist for downstream tasks only
    link_heads = False

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.backbone_keys = list(self.state_dict())  # what SASRec has is the backbone
        self.pretrain_mode = config["pretrain_mode"]
        if self.pretrain_mode != "prefix" and self.loss_type != "CE":
            raise PCLError(
                f"setting 'loss_type' must be CE with pretrain_mode={self.pretrain_mode} (every position is trained "
                f"with cross-entropy), got {self.loss_type!r}"
            )
        self.head_type = config["adapter"]
        self.heads = nn.ModuleDict()

    def add_task(self, name, kind, num_classes=0, attribute=None):
        super().add_task(name, kind, num_classes, attribute)
        if kind == "class":
            self.heads[name] = make_head(self.head_type, self.hidden_size, num_classes, self.hidden_dropout_prob)
        elif self.link_heads:
            self.heads[name] = nn.Linear(self.hidden_size, self.hidden_size)

    def backbone_parameters(self):
        named = dict(self.named_parameters())
        return [named[k] for k in self.backbone_keys if k in named]

    # defaults of the continual hooks: T1 trains and writes the backbone; a task's head is its own
    def init_task(self, name):
        if name in self.heads:
            self.heads[name].apply(self._init_weights)

    def trainable_parameters(self, name):
        return (
            self.backbone_parameters()
            if name is None
            else list(self.heads[name].parameters())
            if name in self.heads
            else []
        )

    def stage_keys(self, name, keys):
        if name is None:
            return self.backbone_keys
        return [k for k in keys if k.startswith(f"heads.{name}.")]

    # ----- the encoder, and the hooks methods change --------------------------------------------
    def backbone(self, task):
        """The module holding ``item_embedding``, ``position_embedding``, ``trm_encoder`` and
        ``LayerNorm`` that encodes ``task``: this model itself (one shared backbone) by default."""
        return self

    def input_embedding(self, task, item_seq, item_seq_len):
        return self.backbone(task).item_embedding(item_seq)

    def encoder_layers(self, task, hidden, attention_mask):
        return self.backbone(task).trm_encoder(hidden, attention_mask, output_all_encoded_layers=True)[-1]

    def encode(self, item_seq, item_seq_len, task=None):
        """Encoder output at every position, ``[B, n, d]``."""
        b = self.backbone(task)
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0).expand_as(item_seq)
        hidden = self.dropout(
            b.LayerNorm(self.input_embedding(task, item_seq, item_seq_len) + b.position_embedding(positions))
        )
        return self.encoder_layers(task, hidden, self.get_attention_mask(item_seq))

    def forward(self, item_seq, item_seq_len, task=None):
        """The user vector for ``task``: the output at the last item, ``[B, d]``."""
        return self.gather_indexes(self.encode(item_seq, item_seq_len, task), item_seq_len - 1)

    def user_representation(self, interaction, task=None):
        return self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], task)

    def task_logits(self, interaction, task=None):
        return self.score(self.user_representation(interaction, task), task)

    def score(self, vector, task=None):
        """``task``'s logits from its user vector: through its head, against the item table (link)."""
        if task in self.heads:
            vector = self.heads[task](vector)
        if self.is_class(task):
            return vector
        return vector @ self.backbone(task).item_embedding.weight.T

    def t1_loss(self, interaction):
        if self.pretrain_mode == "prefix":
            return F.cross_entropy(self.task_logits(interaction, None), interaction[self.POS_ITEM_ID])
        # next-item cross-entropy at every position of each sequence (original SASRec training)
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        output = self.encode(item_seq, item_seq_len)
        targets = torch.cat([item_seq[:, 1:], torch.zeros_like(item_seq[:, :1])], dim=1)
        targets = targets.scatter(1, (item_seq_len - 1).unsqueeze(1), interaction[self.POS_ITEM_ID].unsqueeze(1))
        valid = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0) < item_seq_len.unsqueeze(1)
        return F.cross_entropy(output[valid] @ self.backbone(None).item_embedding.weight.T, targets[valid])
