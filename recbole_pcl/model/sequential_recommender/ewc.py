r"""EWC
################################################

Reference:
    James Kirkpatrick, Razvan Pascanu, Neil Rabinowitz et al. "Overcoming catastrophic forgetting in
    neural networks." In PNAS 114(13), 2017.

One SASRec learns the tasks in order, all of its parameters each time, as SinMo, with elastic weight
consolidation: when the stage of task k begins, the task before it (T1 at the first downstream stage)
is finished, and its diagonal Fisher information ``F`` and its weights ``θ*`` (the backbone as that
task left it) are kept; task k's loss adds ``ewc_lambda * Σ_j Σ_i F_j,i (θ_i - θ*_j,i)²`` over every
finished task j (T1 included) and every backbone parameter i. Each task has its own head (class
tasks) or linear projection before the item table (link tasks, as TERACON), trained in its own
stage only; an earlier task's head is not changed later, so the penalty is on the shared backbone.

Fisher estimate: the *batch empirical Fisher*: the task's training rows in their stored order (no
shuffling), in batches of its ``train_batch_size``, without dropout (the model in evaluation mode);
``F`` is the mean over batches of the squared gradient of the batch's mean loss (the task's own
training loss, with the observed labels rather than labels sampled from the model). With batches of
B rows it is about 1/B of the per-sample empirical Fisher where per-row gradients are uncorrelated:
``ewc_lambda`` absorbs the factor. Other choices: the penalty has no factor 1/2 (also absorbed in
``ewc_lambda``); one penalty per finished task, as in the paper, not a running sum (online EWC).

State: ``F`` and ``θ*`` of the task before a stage are estimated when the stage begins and written
with it (its ``stage_keys``), so a resumed or appended run finds every earlier task's penalty in the
stage files; T1's are written by the first downstream stage, which keeps stage 0 the plain SASRec
pretraining the other methods share.
"""

import torch
from torch import nn

from recbole_pcl.model.abstract_recommender import Tensors, task_key, training_batches
from recbole_pcl.model.sequential_recommender.sinmo import SinMo


class EWC(SinMo):
    link_heads = True
    downstream_settings = SinMo.downstream_settings + ("ewc_lambda",)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.ewc_lambda = config["ewc_lambda"]
        self.fisher = nn.ModuleDict()  # finished task -> F per backbone parameter
        self.anchor = nn.ModuleDict()  # finished task -> θ* per backbone parameter

    @staticmethod
    def key(task):
        return task_key(task)

    def finished_before(self, name):
        """The task whose F and θ* the stage of ``name`` estimates: the one learned just before it."""
        order = self.task_order()
        return order[order.index(name) - 1]

    def prepare_task(self, name):
        if name is None:
            return
        key = self.key(self.finished_before(name))
        if key not in self.fisher:  # placeholders, filled when the stage begins or loaded from its file
            named = dict(self.named_parameters())
            self.fisher[key] = Tensors({k: torch.zeros_like(named[k]) for k in self.backbone_keys if k in named})
            self.anchor[key] = Tensors({k: torch.zeros_like(named[k]) for k in self.backbone_keys if k in named})

    def stage_keys(self, name, keys):
        own = super().stage_keys(name, keys)
        if name is None:
            return own
        key = self.key(self.finished_before(name))
        return own + [k for k in keys if k.startswith((f"fisher.{key}.", f"anchor.{key}."))]

    def stage_fits(self, task, earlier):
        name = self.active_task
        if name is not None:
            finished = self.finished_before(name)
            key = self.key(finished)
            fisher = self.estimate_fisher(earlier[-1], finished)
            named = dict(self.named_parameters())
            with torch.no_grad():
                for k, value in fisher.items():
                    self.fisher[key][k].copy_(value)
                    self.anchor[key][k].copy_(named[k])
        yield task

    def estimate_fisher(self, data, task):
        """``{backbone parameter: F}`` of ``task`` on its training rows (``data``: its TaskData)."""
        named = dict(self.named_parameters())
        params = {k: named[k] for k in self.backbone_keys if k in named}
        was_training, required = self.training, {k: p.requires_grad for k, p in params.items()}
        total = {k: torch.zeros_like(p) for k, p in params.items()}
        batches = 0
        self.eval()  # no dropout: the estimate is deterministic
        try:
            for p in params.values():
                p.requires_grad_(True)
            size = data.config["train_batch_size"]
            for batch in training_batches(data, size, self.item_embedding.weight.device):
                loss = super().task_loss(batch, task)  # the task's own loss, without any penalty
                grads_of_batch = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                for k, grad in zip(params, grads_of_batch):
                    if grad is not None:  # a parameter the task's loss does not reach has no information
                        total[k] += grad.detach() ** 2
                batches += 1
        finally:
            for k, p in params.items():
                p.requires_grad_(required[k])
            self.train(was_training)
        return {k: value / max(batches, 1) for k, value in total.items()}

    def penalty(self):
        """``Σ_j Σ_i F_j,i (θ_i - θ*_j,i)²`` over the finished tasks j (0 before the first)."""
        named = dict(self.named_parameters())
        total = self.item_embedding.weight.new_zeros(())
        for key, fisher in self.fisher.items():
            anchor = self.anchor[key]
            for k, f in fisher.items():
                total = total + (f * (named[k] - anchor[k]) ** 2).sum()
        return total

    def task_loss(self, interaction, task):
        loss = super().task_loss(interaction, task)
        if task is not None and task == self.active_task:  # the task being learned, not an earlier one
            loss = loss + self.ewc_lambda * self.penalty()
        return loss
