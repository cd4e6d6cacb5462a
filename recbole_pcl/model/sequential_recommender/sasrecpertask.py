r"""SASRecPerTask
################################################

Reference:
    Wang-Cheng Kang and Julian McAuley. "Self-Attentive Sequential Recommendation." In ICDM 2018.

The "SASRec" row of the PCL paper's Table 1: every task is learned by its own SASRec from scratch,
with nothing shared between tasks (#B = the number of tasks). It is the row every RecBole model gets
in a comparison (:mod:`recbole_pcl.model.recbole_rows`) applied to SASRec: each downstream task k
trains a freshly initialised RecBole SASRec with its own ``calculate_loss`` and ``full_sort_predict``
(class tasks: a head on its ``forward``), kept in ``task_backbones[k]``. Its T1 model is the plain
SASRec pretraining that the other SASRec-based methods share (stage 0, ``pretrain_mode``: every
position at once by default; with ``prefix``, SASRec's own ``calculate_loss``). Its results are the
reference of forward transfer (FWT) for the continual methods.
"""

from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_pcl.model.abstract_recommender import ContinualRecommender, TaskSASRec
from recbole_pcl.model.recbole_rows import RecBoleRows


class SASRecPerTask(RecBoleRows, TaskSASRec, ContinualRecommender):
    display_name = "SASRec"
    recbole_model = SASRec
