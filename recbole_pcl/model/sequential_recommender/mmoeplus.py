r"""MMoEPlus
################################################

Reference:
    Ozan Sener and Vladlen Koltun. "Multi-Task Learning as Multi-Objective Optimization." NeurIPS 2018.

"MMoE+" of the PCL paper's Table 1: :class:`MMoE` whose task weights come from MGDA's min-norm
solver at every step (``task_weighting: mgda`` in MMoEPlus.yaml; :mod:`recbole_pcl.trainer.mgda`).
"""

from recbole_pcl.model.sequential_recommender.mmoe import MMoE


class MMoEPlus(MMoE):
    display_name = "MMoE+"
