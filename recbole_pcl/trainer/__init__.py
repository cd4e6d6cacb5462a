from recbole_pcl.trainer.trainer import SafeCheckpointMixin, Trainer, with_safe_checkpoints
