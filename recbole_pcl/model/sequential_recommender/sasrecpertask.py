r"""SASRecPerTask
################################################

Reference:
    Wang-Cheng Kang and Julian McAuley. "Self-Attentive Sequential Recommendation." In ICDM 2018.

The "SASRec" row of the PCL paper's Table 1: every task is learned by its own SASRec from scratch,
with nothing shared between tasks (#B = the number of tasks). T1's model is the plain SASRec
pretraining that the other methods share (stage 0); each downstream task k trains a freshly
initialised copy of the backbone, with a head for class tasks. Its results are the reference of
forward transfer (FWT) for the continual methods.
"""

import copy

from torch import nn

from recbole_pcl.model.abstract_recommender import ContinualRecommender, TaskSASRec

BACKBONE_MODULES = ("item_embedding", "position_embedding", "trm_encoder", "LayerNorm")


class SASRecPerTask(TaskSASRec, ContinualRecommender):
    display_name = "SASRec"
    starts_from_pretrained = False  # a task's backbone starts from T1's weights (FineAll) or afresh

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.task_backbones = nn.ModuleDict()  # task -> its own item_embedding, position_embedding ...

    def backbones_kept(self):
        return 1 + len(self.task_backbones)

    def add_task(self, name, kind, num_classes=0, attribute=None):
        super().add_task(name, kind, num_classes, attribute)
        self.task_backbones[name] = nn.ModuleDict({m: copy.deepcopy(getattr(self, m)) for m in BACKBONE_MODULES})

    def backbone(self, task):
        return self.task_backbones[task] if task in self.task_backbones else self

    def init_task(self, name):
        super().init_task(name)  # the head
        backbone = self.task_backbones[name]
        if self.starts_from_pretrained:
            for m in BACKBONE_MODULES:
                backbone[m].load_state_dict(getattr(self, m).state_dict())
        else:
            backbone.apply(self._init_weights)

    def trainable_parameters(self, name):
        params = super().trainable_parameters(name)
        return params if name is None else params + list(self.task_backbones[name].parameters())

    def stage_keys(self, name, keys):
        own = super().stage_keys(name, keys)
        return own if name is None else own + [k for k in keys if k.startswith(f"task_backbones.{name}.")]
