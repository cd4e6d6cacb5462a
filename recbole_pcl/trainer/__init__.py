from recbole_pcl.trainer.continual_trainer import ContinualTrainer
from recbole_pcl.trainer.joint_trainer import JointTrainer
from recbole_pcl.trainer.trainer import SafeCheckpointMixin, Trainer, with_safe_checkpoints

__all__ = ["ContinualTrainer", "JointTrainer", "SafeCheckpointMixin", "Trainer", "with_safe_checkpoints"]
