r"""MTL
################################################

Reference:
    Rich Caruana. "Multitask Learning." Machine Learning 28 (1997): hard parameter sharing.

Every task, T1 included, is learned at once from scratch by one SASRec with a head per task: the
backbone and item embeddings are shared, each downstream link task scores its own linear projection
of the user vector against the item table and each class task has a classifier (#B = 1, #F = the
number of tasks). The tasks' losses are summed (``task_weighting: equal``; MTLPlus: MGDA). The
encoder runs as :mod:`recbole_pcl.model.joint_sasrec` runs it (the last layer at the user's last item
only, where that is all a task reads).
"""

from recbole_pcl.model.joint_sasrec import JointSASRec


class MTL(JointSASRec):
    def shared_parameters(self):
        return self.backbone_parameters()
