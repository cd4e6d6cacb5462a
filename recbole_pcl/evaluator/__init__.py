from recbole_pcl.evaluator.metrics import Accuracy, register_metric
