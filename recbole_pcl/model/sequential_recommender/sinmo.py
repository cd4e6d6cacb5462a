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
    # Whether each stage also trains the heads of the tasks learned before it (methods whose loss
    # reaches them, LwF and Replay, which subclass this one); SinMo's loss reaches its task's head only.
    trains_earlier_heads = False

    def backbones_kept(self):
        return 1

    def trained_heads(self, name):
        """The tasks whose heads the stage of ``name`` trains (and writes)."""
        order = self.task_order()
        return order[1 : order.index(name) + 1] if self.trains_earlier_heads else [name]

    def trainable_parameters(self, name):
        if name is None:
            return super().trainable_parameters(name)
        heads = [p for task in self.trained_heads(name) if task in self.heads for p in self.heads[task].parameters()]
        return heads + self.backbone_parameters()

    def stage_keys(self, name, keys):
        if name is None:
            return super().stage_keys(name, keys)
        heads = tuple(f"heads.{task}." for task in self.trained_heads(name))
        return [k for k in keys if k.startswith(heads)] + self.backbone_keys
