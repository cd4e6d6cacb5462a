from recbole_pcl.pipeline.pipeline import JointStrategy, SequentialStrategy, TaskPipeline
