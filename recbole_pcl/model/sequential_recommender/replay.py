r"""Replay
################################################

Reference:
    Experience replay with a small episodic memory, as in Arslan Chaudhry, Marcus Rohrbach, Mohamed
    Elhoseiny, Thalaiyasingam Ajanthan, Puneet K. Dokania, Philip H. S. Torr and Marc'Aurelio Ranzato.
    "On Tiny Episodic Memories in Continual Learning." arXiv:1902.10486, 2019 (and the replay
    strategies of continual-learning libraries such as Avalanche).

One SASRec learns the tasks in order, all of its parameters each time, as SinMo, rehearsing a small
memory of each earlier task: a buffer of at most ``replay_size`` labelled training rows per earlier
task (T1's rows are its training windows; a downstream task's, rows of its training users, never of
validation or test users). Every training step of task k adds, for each earlier task j, the loss of
task j on one minibatch drawn from j's buffer (as many rows as the step's batch, or the whole buffer
when smaller; drawn without replacement, from torch's generator, which each stage seeds) with weight
``replay_weight``: ``L_k + replay_weight * Σ_j L_j(minibatch of buffer j)``. Each task has its own
head (class tasks) or linear projection before the item table (link tasks, as TERACON), trained
again whenever its task is replayed.

Buffer: a seeded random subset, one per earlier task (the paper's reservoir serves a stream whose
length is unknown; a finished task's training rows are all known at once, and a uniform subset of
them is what a reservoir holds in distribution): ``replay_size`` rows drawn uniformly without
replacement by a generator seeded from (``seed``, the task's name), kept in their stored order. The
paper concatenates the memory minibatch to the current one; here each earlier task's minibatch has
its own loss (its task differs), added with one weight. State: the buffers are not written: each
stage draws them again, the same rows, from the earlier tasks' training data.
"""

import zlib

import numpy as np
import torch

from recbole_pcl.model.sequential_recommender.sinmo import SinMo


class Replay(SinMo):
    link_heads = True
    trains_earlier_heads = True  # replayed tasks train their heads again
    downstream_settings = SinMo.downstream_settings + ("replay_size", "replay_weight")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.size, self.weight, self.seed = config["replay_size"], config["replay_weight"], config["seed"]
        self.buffers = {}  # earlier task -> Interaction of its buffered training rows, during a stage

    def stage_fits(self, task, earlier):
        if self.active_task is not None:
            self.buffers = {self.task_order()[t.index]: self.buffer(t) for t in earlier}
        try:
            yield task
        finally:
            self.buffers = {}

    def buffer(self, data):
        """At most ``replay_size`` training rows of ``data`` (a finished task's TaskData), seeded by its name."""
        rows = data.train._dataset.inter_feat
        rng = np.random.default_rng([self.seed, zlib.crc32(data.spec.name.encode("utf-8"))])
        chosen = np.sort(rng.permutation(len(rows))[: self.size])
        return rows[torch.as_tensor(chosen)].to(self.item_embedding.weight.device)

    def replay_loss(self, batch_size):
        """``Σ_j L_j`` on one minibatch of each earlier task's buffer."""
        loss = self.item_embedding.weight.new_zeros(())
        for task, rows in self.buffers.items():
            drawn = torch.randperm(len(rows), device=self.item_embedding.weight.device)[:batch_size]
            loss = loss + super().task_loss(rows[drawn], task)
        return loss

    def task_loss(self, interaction, task):
        loss = super().task_loss(interaction, task)
        if task is not None and task == self.active_task and self.buffers:
            loss = loss + self.weight * self.replay_loss(len(interaction))
        return loss
