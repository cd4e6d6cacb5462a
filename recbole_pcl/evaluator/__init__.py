from recbole_pcl.evaluator.metrics import Accuracy, register_metric

__all__ = ["Accuracy", "register_metric"]
