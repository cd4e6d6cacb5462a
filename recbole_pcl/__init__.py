"""recbole-pcl: prompt-based continual learning (PCL) for user modelling, as a RecBole plugin."""
from recbole_pcl import compat

compat.apply()

__version__ = "0.1.0"
