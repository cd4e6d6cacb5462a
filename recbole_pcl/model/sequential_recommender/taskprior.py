r"""TaskPrior
################################################

The label prior of each task, the floor every task model must beat: item popularity among the
task's training labels (link tasks, like RecBole's ``Pop``) and the majority class (class tasks).
It ignores the input sequence. Runs through the same continual stages and evaluator as PCL:
``python run_recbole_pcl.py --model=TaskPrior --dataset=ml-100k``.
"""
import torch
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

T1 = "__t1__"


class TaskPrior(SequentialRecommender):
    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.LABEL = config["LABEL_FIELD"]
        self.counts = nn.ParameterDict({T1: nn.Parameter(torch.zeros(self.n_items), requires_grad=False)})
        self.task_kind = {}
        self.active_task = None
        self.fake_loss = nn.Parameter(torch.zeros(1))  # RecBole's trainer needs something to step

    # the continual protocol
    def add_task(self, name, kind, num_classes=0, attribute=None):
        self.task_kind[name] = kind
        self.counts[name] = nn.Parameter(torch.zeros(self.n_items if kind == "link" else num_classes), requires_grad=False)

    def begin_task(self, name, train_all=False):
        self.active_task = name
        self.fake_loss.requires_grad_(True)

    def end_task(self, name):
        self.active_task = None
        self.fake_loss.requires_grad_(False)

    def stage_state(self, name):
        key = f"counts.{T1 if name is None else name}"
        return {key: self.state_dict()[key]}

    def train(self, mode=True):
        # RecBole's trainer switches to training mode at the start of every epoch: count each
        # epoch afresh, so the prior is one pass over the labels however many epochs run
        if mode and self.fake_loss.requires_grad:
            self.counts[self._key()].zero_()
        return super().train(mode)

    def _key(self):
        return T1 if self.active_task is None else self.active_task

    def _is_class(self):
        return self.active_task is not None and self.task_kind[self.active_task] == "class"

    def calculate_loss(self, interaction):
        labels = interaction[self.LABEL] if self._is_class() else interaction[self.POS_ITEM_ID]
        counts = self.counts[self._key()]
        counts.add_(torch.bincount(labels, minlength=len(counts)).to(counts.dtype))
        return self.fake_loss.sum()

    def task_logits(self, interaction, task=None):
        counts = self.counts[T1 if task is None else task]
        return counts.unsqueeze(0).expand(len(interaction[self.ITEM_SEQ]), -1)

    def predict(self, interaction):
        counts = self.counts[self._key()]
        if self._is_class():
            return torch.full((len(interaction[self.ITEM_SEQ]),), float(counts.argmax()), device=counts.device)
        return counts[interaction[self.ITEM_ID]]

    def full_sort_predict(self, interaction):
        return self.task_logits(interaction, self.active_task)
