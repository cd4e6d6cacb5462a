r"""MMoE
################################################

Reference:
    Jiaqi Ma et al. "Modeling Task Relationships in Multi-task Learning with Multi-gate
    Mixture-of-Experts." In KDD 2018.

Every task, T1 included, is learned at once from scratch. The item and position embeddings are
shared; ``num_experts`` SASRec transformer stacks (the experts) encode the sequence; each task's gate
(a softmax over experts computed from the mean embedding of the input items) mixes the experts'
outputs into the task's user vector, and its tower (the task's head) predicts. #B = 1 (the experts
are one model), #F = the number of tasks.
"""

import copy

import torch
from torch import nn

from recbole_pcl.model.abstract_recommender import JointRecommender, TaskSASRec

T1 = "__t1__"


class MMoE(TaskSASRec, JointRecommender):
    link_heads = True

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

    def encode(self, item_seq, item_seq_len, task=None):
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0).expand_as(item_seq)
        items = self.item_embedding(item_seq)
        hidden = self.dropout(self.LayerNorm(items + self.position_embedding(positions)))
        mask = self.get_attention_mask(item_seq)
        outputs = torch.stack([e(hidden, mask, output_all_encoded_layers=True)[-1] for e in self.experts], dim=-1)
        valid = item_seq.ne(0).unsqueeze(-1)
        pooled = (items * valid).sum(1) / valid.sum(1).clamp(min=1)  # the gate's input: the mean input item
        gate = torch.softmax(self.gates[T1 if task is None else task](pooled), dim=-1)  # [B, experts]
        return (outputs * gate[:, None, None, :]).sum(-1)
