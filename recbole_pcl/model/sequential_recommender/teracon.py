r"""TERACON
################################################

Reference:
    Sein Kim, Namkyeong Lee, Donghyun Kim, Minchul Yang and Chanyoung Park. "Task Relation-aware
    Continual User Representation Learning." In KDD 2023. (Code read to learn, not copied:
    github.com/Sein-Kim/TERACON.)

One backbone learns every task in turn, all of its parameters each time, and keeps old tasks by:

* **task-specific soft masks** on the output of each layer (Eq. 6-7): ``m = sigmoid(s * e)`` from a
  task embedding ``e`` per masked layer, with ``s`` annealed per batch from ``1/s_max`` to ``s_max``
  within each epoch (Eq. 19) and ``s_max`` at evaluation;
* **relation-aware masks** once several tasks exist (Eq. 12-13): ``m_k = sigmoid(s * f_k[tanh(s e_k) ||
  tanh(s e_j) || tanh(-s e_j) ...])`` over the other learned tasks j, with ``f_k`` a linear map over
  the task axis per masked layer; every task's ``f`` restarts when a new task begins (its input grows);
* **knowledge retention** (Eq. 9-10, 16): a frozen copy of the model as the previous task left it
  gives each earlier task's raw logits on the current batch; the model learns to reproduce them
  through that task's own mask and head (MSE), weighted by ``rho_j / sum(rho)``;
* **relation-aware user sampling** (Eq. 14-15): for earlier task j only a share
  ``rho_j = 1 - mean_layers sigmoid(c * cos(m^{current}, m~^{j}))`` of the batch's users is used,
  ``rho`` measured on the previous batch (0.9 at first).

On SASRec instead of the paper's NextItNet (TCN): each transformer layer has two masked outputs, the
attention sublayer's and the feed-forward sublayer's, masked before their dropout, residual addition
and LayerNorm (the reference masks the two activations of each residual branch, never the residual
stream). Other choices, as every method here: T1 and link tasks score the shared item table (link
tasks through a per-task linear projection) rather than separate output layers over all items; early
stopping follows the task's validation metric (NDCG@10 / accuracy) rather than hit@1; T1's
pseudo-labels use the whole input sequence. As in the reference code, T1 is trained with its own mask
(so stage 0 is not the plain SASRec pretraining the other methods share), the task embeddings are kept
within [-6, 6], and the student reproduces task j's logits with task j's mask.
"""

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole_pcl.model.abstract_recommender import T1, ContinualRecommender, TaskSASRec, task_key


def _apply_mask(module, inputs, output):
    """Forward hook of a masked sublayer: its output times the mask of the task being encoded."""
    mask = getattr(module, "task_mask", None)
    return output if mask is None else output * mask


class TERACON(TaskSASRec, ContinualRecommender):
    pretraining = None  # T1 is learned with its own task mask
    link_heads = True
    downstream_settings = TaskSASRec.downstream_settings + ("kr_alpha", "sampling_scale")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.s_max, self.alpha, self.c = config["mask_scale_max"], config["kr_alpha"], config["sampling_scale"]
        self.masked = [
            m
            for layer in self.trm_encoder.layer
            for m in (layer.multi_head_attention.dense, layer.feed_forward.dense_2)
        ]
        for module in self.masked:
            module.register_forward_hook(_apply_mask)
        self.task_emb = nn.ParameterDict(
            {T1: nn.Parameter(torch.empty(len(self.masked), self.hidden_size).uniform_(0, 2))}
        )
        self.relation_weight = nn.ParameterDict()  # task -> [masked layers, 2n - 1]: f_k over the task axis
        self.relation_bias = nn.ParameterDict()  # task -> [masked layers]
        self.known = [T1]  # the tasks learned so far, in order
        self.s = self.s_max
        self.batch_index, self.num_batches = 0, 1
        self.rho = {}  # earlier task -> its sampling rate for the next batch
        self.__dict__["teacher"] = None  # a frozen copy, not a sub-module (never saved or trained)

    def backbones_kept(self):
        return 1

    @staticmethod
    def key(task):
        return task_key(task)

    @staticmethod
    def api(key):
        return None if key == T1 else key

    # ----- masks --------------------------------------------------------------------------------
    def masks(self, task, s):
        """``[masked layers, d]`` masks of ``task`` at scale ``s``: plain while T1 is the only task."""
        key = self.key(task)
        if len(self.known) == 1:
            return torch.sigmoid(s * self.task_emb[key])
        rows = [torch.tanh(s * self.task_emb[key])]
        for other in self.known:
            if other != key:
                rows += [torch.tanh(s * self.task_emb[other]), torch.tanh(-s * self.task_emb[other])]
        stacked = torch.stack(rows, dim=1)  # [masked layers, 2n - 1, d]
        mixed = (self.relation_weight[key].unsqueeze(-1) * stacked).sum(1) + self.relation_bias[key].unsqueeze(-1)
        return torch.sigmoid(s * mixed)

    def encoder_layers(self, task, hidden, attention_mask):
        for module, mask in zip(self.masked, self.masks(task, self.s)):
            module.task_mask = mask
        try:
            return super().encoder_layers(task, hidden, attention_mask)
        finally:
            for module in self.masked:
                module.task_mask = None

    def train(self, mode=True):
        if not mode:
            self.s = self.s_max  # evaluation and serving use s_max
        return super().train(mode)

    def start_epoch(self, num_batches):
        self.batch_index, self.num_batches = 0, max(num_batches, 1)

    # ----- the continual protocol -----------------------------------------------------------------
    def begin_task(self, name):
        if name is not None:  # the teacher: the model as the previous task left it
            teacher = copy.deepcopy(self).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
            self.__dict__["teacher"] = teacher
        super().begin_task(name)

    def prepare_task(self, name):
        """A new task's embedding; every task's f restarts with one more task in its input."""
        if name is None or name in self.known:
            return
        self.known.append(name)
        device = self.item_embedding.weight.device
        self.task_emb[name] = nn.Parameter(torch.zeros(len(self.masked), self.hidden_size, device=device))
        width = 2 * len(self.known) - 1
        for key in self.known:
            self.relation_weight[key] = nn.Parameter(torch.zeros(len(self.masked), width, device=device))
            self.relation_bias[key] = nn.Parameter(torch.zeros(len(self.masked), device=device))

    def init_task(self, name):
        super().init_task(name)  # the head
        with torch.no_grad():
            self.task_emb[name].uniform_(0, 2)
            for key in self.known:
                self.relation_weight[key].normal_(0.0, 0.01)
                self.relation_bias[key].fill_(0.1)
        self.rho = {key: 0.9 for key in self.known if key != name}

    def trainable_parameters(self, name):
        """T1: the backbone and T1's embedding. A task: everything of the tasks learned so far."""
        if name is None:
            return super().trainable_parameters(name) + [self.task_emb[T1]]
        return [p for key, p in self.named_parameters() if self._learned(key)]

    def stage_keys(self, name, keys):
        return (
            super().stage_keys(name, keys) + [f"task_emb.{T1}"]
            if name is None
            else [k for k in keys if self._learned(k)]
        )

    def _learned(self, key):
        """Whether state key ``key`` belongs to the backbone or to a task learned so far."""
        return not key.startswith("heads.") or key.split(".")[1] in self.known

    def end_task(self, name):
        self.__dict__["teacher"] = None
        super().end_task(name)

    # ----- training -----------------------------------------------------------------------------
    def task_loss(self, interaction, task):
        if not self.training:
            return super().task_loss(interaction, task)
        with torch.no_grad():
            for emb in self.task_emb.values():
                emb.clamp_(-6.0, 6.0)
        progress = self.batch_index / self.num_batches
        self.s = 1 / self.s_max + (self.s_max - 1 / self.s_max) * progress
        loss = super().task_loss(interaction, task)
        if task is not None and self.teacher is not None:
            loss = loss + self.alpha * self.retention_loss(interaction, task)
        self.batch_index += 1
        return loss

    def retention_loss(self, interaction, task):
        """Eq. 16: each earlier task's logits on a sampled share of the batch, as the teacher gives them."""
        total = sum(self.rho.values())
        batch = len(interaction[self.ITEM_SEQ])
        loss = 0.0
        self.teacher.s = self.s
        for key, rho in self.rho.items():
            users = torch.randperm(batch, device=interaction[self.ITEM_SEQ].device)[: max(1, math.floor(batch * rho))]
            sample = interaction[users]
            with torch.no_grad():
                target = self.teacher.task_logits(sample, self.api(key))
            loss = loss + rho / total * F.mse_loss(self.task_logits(sample, self.api(key)), target)
        with torch.no_grad():  # Eq. 15, for the next batch
            current = self.masks(task, self.s)
            for key in self.rho:
                similarity = torch.sigmoid(
                    self.c * F.cosine_similarity(current, self.teacher.masks(self.api(key), self.s), dim=-1)
                )
                self.rho[key] = float(1 - similarity.mean())
        return loss
