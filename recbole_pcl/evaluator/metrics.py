"""Metrics added to RecBole's evaluator (registered by name, usable in ``metrics: [...]``)."""

from recbole.evaluator import register
from recbole.evaluator.base_metric import AbstractMetric
from recbole.utils import EvaluatorType


class Accuracy(AbstractMetric):
    """Share of users whose predicted class equals their label (class tasks).

    The model's ``predict`` returns the predicted class index; RecBole's collector gathers it as
    ``rec.score`` and the task's ``LABEL_FIELD`` as ``data.label``.
    """

    metric_type = EvaluatorType.VALUE
    metric_need = ["rec.score", "data.label"]

    def calculate_metric(self, dataobject):
        pred = dataobject.get("rec.score").long().view(-1)
        label = dataobject.get("data.label").long().view(-1)
        return {"accuracy": round(float((pred == label).float().mean()), self.decimal_place)}


def register_metric(metric_class):
    """Make ``metric_class`` known to RecBole's Config, Register and Evaluator under its lower-case name."""
    name = metric_class.__name__.lower()
    register.metrics_dict[name] = metric_class
    register.metric_information[name] = metric_class.metric_need
    register.metric_types[name] = metric_class.metric_type
    if metric_class.smaller:
        register.smaller_metrics.append(name)


register_metric(Accuracy)
