r"""TaskPrior
################################################

The label prior of each task, the floor every task model must beat: item popularity among the
task's training labels (link tasks, like RecBole's ``Pop``) and the majority class (class tasks).
It ignores the input sequence. Runs through the same continual stages and evaluator as PCL:
``python run_recbole_pcl.py --model=TaskPrior --dataset=ml-100k``.
"""

import torch
from torch import nn

from recbole_pcl.model.abstract_recommender import T1, ContinualRecommender, task_key


class TaskPrior(ContinualRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.counts = nn.ParameterDict({T1: nn.Parameter(torch.zeros(self.n_items), requires_grad=False)})
        self.fake_loss = nn.Parameter(torch.zeros(1))  # RecBole's trainer needs something to step

    def backbones_kept(self):
        return 0

    def add_task(self, name, kind, num_classes=0, attribute=None):
        super().add_task(name, kind, num_classes, attribute)
        self.counts[name] = nn.Parameter(
            torch.zeros(self.n_items if kind == "link" else num_classes), requires_grad=False
        )

    def init_task(self, name):
        self.counts[name].zero_()

    def trainable_parameters(self, name):
        return [self.fake_loss]

    def stage_keys(self, name, keys):
        return [f"counts.{self._key(name)}"]

    def train(self, mode=True):
        # RecBole's trainer switches to training mode at the start of every epoch: count each
        # epoch afresh, so the prior is one pass over the labels however many epochs run
        if mode and self.fake_loss.requires_grad:
            self.counts[self._key(self.active_task)].zero_()
        return super().train(mode)

    @staticmethod
    def _key(task):
        return task_key(task)

    def task_loss(self, interaction, task):
        labels = interaction[self.LABEL] if self.is_class(task) else interaction[self.POS_ITEM_ID]
        counts = self.counts[self._key(task)]
        counts.add_(torch.bincount(labels, minlength=len(counts)).to(counts.dtype))
        return self.fake_loss.sum()

    def t1_loss(self, interaction):
        return self.task_loss(interaction, None)

    def task_logits(self, interaction, task=None):
        counts = self.counts[self._key(task)]
        # a real [B, n] tensor, not an expanded view: RecBole's full-sort evaluator writes into the scores
        return counts.unsqueeze(0).repeat(len(interaction[self.ITEM_SEQ]), 1)

    def user_representation(self, interaction, task=None):
        return self.task_logits(interaction, task)
