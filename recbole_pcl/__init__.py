"""recbole-pcl: prompt-based continual learning (PCL) for user modelling, as a RecBole plugin."""

from recbole_pcl import compat

compat.apply()

from recbole_pcl import evaluator  # noqa: E402, F401  registers Accuracy with RecBole's evaluator

__version__ = "0.1.0"
