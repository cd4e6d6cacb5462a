r"""MTLPlus
################################################

Reference:
    Ozan Sener and Vladlen Koltun. "Multi-Task Learning as Multi-Objective Optimization." NeurIPS 2018.

"MTL+" of the PCL paper's Table 1: :class:`MTL` whose task weights come from MGDA's min-norm solver
at every step (``task_weighting: mgda`` in MTLPlus.yaml; :mod:`recbole_pcl.trainer.mgda`).
"""

from recbole_pcl.model.sequential_recommender.mtl import MTL


class MTLPlus(MTL):
    display_name = "MTL+"
