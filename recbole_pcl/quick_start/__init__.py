from recbole_pcl.quick_start.quick_start import run_recbole_pcl
from recbole_pcl.quick_start.serving import ContinualPredictor, load_continual_run

__all__ = ["run_recbole_pcl", "ContinualPredictor", "load_continual_run"]
