r"""SinMo
################################################

Reference:
    The single-model baseline of the PCL paper (Yang et al., WWW Companion 2025), Table 1.

One SASRec is trained on the tasks in order, all of its parameters each time, with nothing of the
earlier tasks kept apart (#B = 1): after T1, each task fine-tunes the whole backbone and item
embeddings (and trains its head), so the final model serves every task with the weights the last
task left. Earlier tasks' heads stay as their stages left them.
"""

from recbole_pcl.model.abstract_recommender import ContinualRecommender, TaskSASRec


class SinMo(TaskSASRec, ContinualRecommender):
    def backbones_kept(self):
        return 1

    def trainable_parameters(self, name):
        params = super().trainable_parameters(name)
        return params if name is None else params + self.backbone_parameters()

    def stage_keys(self, name, keys):
        own = super().stage_keys(name, keys)
        return own if name is None else own + self.backbone_keys
