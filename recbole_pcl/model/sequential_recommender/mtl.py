r"""MTL
################################################

Reference:
    Rich Caruana. "Multitask Learning." Machine Learning 28 (1997): hard parameter sharing.

Every task, T1 included, is learned at once from scratch by one SASRec with a head per task: the
backbone and item embeddings are shared, each downstream link task scores its own linear projection
of the user vector against the item table and each class task has a classifier (#B = 1, #F = the
number of tasks). The tasks' losses are summed (``task_weighting: equal``; MTLPlus: MGDA).
"""

from recbole_pcl.model.abstract_recommender import JointRecommender, TaskSASRec


class MTL(TaskSASRec, JointRecommender):
    link_heads = True

    def shared_parameters(self):
        return self.backbone_parameters()
