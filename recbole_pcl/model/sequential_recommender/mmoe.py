r"""MMoE
################################################

Reference:
    Jiaqi Ma et al. "Modeling Task Relationships in Multi-task Learning with Multi-gate
    Mixture-of-Experts." In KDD 2018.

Every task, T1 included, is learned at once from scratch. The item and position embeddings are
shared; ``num_experts`` SASRec transformer stacks (the experts) encode the sequence; each task's gate
(a softmax over experts computed from the mean embedding of the input items) mixes the experts'
outputs into the task's user vector, and its tower (the task's head) predicts. #B = 1 (the experts
are one model), #F = the number of tasks. The experts run as one batched pass
(:mod:`recbole_pcl.model.joint_sasrec`).
"""

import copy

import torch
from torch import nn

from recbole_pcl.model.abstract_recommender import T1, task_key
from recbole_pcl.model.joint_sasrec import JointSASRec


class MMoE(JointSASRec):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        experts = [self.trm_encoder] + [copy.deepcopy(self.trm_encoder) for _ in range(config["num_experts"] - 1)]
        del self.trm_encoder
        self.experts = nn.ModuleList(experts)
        for expert in experts[1:]:
            expert.apply(self._init_weights)
        self.gates = nn.ModuleDict({T1: nn.Linear(self.hidden_size, len(experts))})

    def add_task(self, name, kind, num_classes=0, attribute=None):
        super().add_task(name, kind, num_classes, attribute)
        self.gates[name] = nn.Linear(self.hidden_size, len(self.experts))
        self.gates[name].apply(self._init_weights)

    def shared_parameters(self):
        own = {id(p) for module in (self.gates, self.heads) for p in module.parameters()}
        return [p for p in self.parameters() if id(p) not in own]

    def encoders(self):
        return list(self.experts)

    def mix(self, outputs, items, item_seq, task):
        valid = item_seq.ne(0).unsqueeze(-1)
        pooled = (items * valid).sum(1) / valid.sum(1).clamp(min=1)  # the gate's input: the mean input item
        gate = torch.softmax(self.gates[task_key(task)](pooled), dim=-1)  # [B, experts]
        weights = gate.T.reshape(*gate.T.shape, *(1,) * (outputs.dim() - 2))  # [experts, B, 1(, 1)]
        return (outputs * weights).sum(0)
