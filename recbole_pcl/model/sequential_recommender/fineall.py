r"""FineAll
################################################

Reference:
    The fine-tuning baseline of Yuan et al. "One Person, One Model, One World: Learning Continual User
    Representation without Forgetting" (SIGIR 2021) and of the PCL paper's Table 1.

Pretrain SASRec on T1, then for each downstream task fine-tune every parameter (backbone, item
embeddings, head) starting from the pretrained weights. T1's backbone is left untouched and each task
keeps its own fine-tuned copy (#B = the number of tasks).
"""

from recbole_pcl.model.sequential_recommender.sasrecpertask import SASRecPerTask


class FineAll(SASRecPerTask):
    display_name = "FineAll"
    starts_from_pretrained = True
