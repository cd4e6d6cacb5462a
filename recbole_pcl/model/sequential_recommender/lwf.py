r"""LwF
################################################

Reference:
    Zhizhong Li and Derek Hoiem. "Learning without Forgetting." In ECCV 2016; IEEE TPAMI 40(12), 2017.

One SASRec learns the tasks in order, all of its parameters each time, as SinMo, with knowledge
distillation from itself: when the stage of task k begins, the model as the earlier stages left it
records its outputs for every earlier task (T1's item scores, each earlier task's item scores or
class logits) on task k's training rows (the new task's training users, their input sequences; no
dropout). Task k's loss then adds, on each batch,
``lwf_alpha * Σ_j KL(softmax(y_j / T) || softmax(ŷ_j / T))`` over the earlier tasks j, where ``y_j``
are the recorded outputs, ``ŷ_j`` the current model's and ``T`` is ``lwf_temperature`` (KL with the
recorded distribution as target has the gradient of the paper's cross-entropy with soft targets).
Each task has its own head (class tasks) or linear projection before the item table (link tasks, as
TERACON): the paper's task-specific parameters θ_o, trained on with the shared ones (θ_s) in every
later stage, as the paper trains them jointly.

Deviations: no warm-up stage that trains the new head alone before the joint training; the
distillation terms are summed over earlier tasks with one weight (the paper's λ_o = 1 per old task)
and have no T² factor (as the paper). Memory: the recorded outputs are one row of item scores per
earlier link task and training user of the new task, kept only during its stage.

State: the recorded outputs are not written: they are recomputed when a stage begins, exactly, from
the weights the earlier stages wrote and the new task's training rows in their stored order.
"""

import torch
import torch.nn.functional as F

from recbole_pcl.model.abstract_recommender import training_batches
from recbole_pcl.model.sequential_recommender.sinmo import SinMo


class LwF(SinMo):
    link_heads = True
    trains_earlier_heads = True  # the distillation reaches every earlier task's head
    downstream_settings = SinMo.downstream_settings + ("lwf_alpha", "lwf_temperature")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.alpha, self.temperature = config["lwf_alpha"], config["lwf_temperature"]
        self.recorded = {}  # earlier task -> [training rows of the stage's task, outputs], during a stage
        self.row_of_user = None  # user id -> row of the recorded outputs

    def stage_fits(self, task, earlier):
        name = self.active_task
        if name is not None:
            self.record(task, [self.task_order()[t.index] for t in earlier])
        try:
            yield task
        finally:
            self.recorded, self.row_of_user = {}, None

    @torch.no_grad()
    def record(self, data, tasks):
        """Outputs of the model as it is now for ``tasks`` on ``data``'s training rows (one per user)."""
        device = self.item_embedding.weight.device
        users = data.train._dataset.inter_feat[self.USER_ID].to(device)
        if len(users.unique()) != len(users):
            raise RuntimeError(f"LwF records one output per training user; task {data.spec.name} repeats users")
        self.row_of_user = torch.full((int(users.max()) + 1,), -1, dtype=torch.long, device=device)
        self.row_of_user[users] = torch.arange(len(users), device=device)
        was_training = self.training
        self.eval()  # the outputs the model gives, without dropout
        try:
            outputs = {task: [] for task in tasks}
            for batch in training_batches(data, data.config["eval_batch_size"], device):
                vector = self.user_representation(batch, self.active_task)  # one backbone: every task's vector
                for task in tasks:
                    outputs[task].append(self.score(vector, task))
        finally:
            self.train(was_training)
        self.recorded = {task: torch.cat(parts) for task, parts in outputs.items()}

    def distillation(self, interaction):
        """``Σ_j KL(softmax(y_j / T) || softmax(ŷ_j / T))`` over the recorded tasks j, batch mean."""
        rows = self.row_of_user[interaction[self.USER_ID]]
        vector = self.user_representation(interaction, self.active_task)
        t = self.temperature
        loss = vector.new_zeros(())
        for task, recorded in self.recorded.items():
            target = F.log_softmax(recorded[rows] / t, dim=-1)
            current = F.log_softmax(self.score(vector, task) / t, dim=-1)
            loss = loss + F.kl_div(current, target, reduction="batchmean", log_target=True)
        return loss

    def task_loss(self, interaction, task):
        loss = super().task_loss(interaction, task)
        if task is not None and task == self.active_task and self.recorded:
            loss = loss + self.alpha * self.distillation(interaction)
        return loss
