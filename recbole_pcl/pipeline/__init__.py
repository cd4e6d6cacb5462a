from recbole_pcl.pipeline.pipeline import JointStrategy, SequentialStrategy, TaskPipeline

__all__ = ["JointStrategy", "SequentialStrategy", "TaskPipeline"]
