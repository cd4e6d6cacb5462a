from recbole_pcl.utils.checkpoint import atomic_path, atomic_torch_save, atomic_write_text, safe_load
from recbole_pcl.utils.errors import PCLError
from recbole_pcl.utils.utils import get_model, get_trainer, model_names, properties_dir

__all__ = [
    "atomic_path",
    "atomic_torch_save",
    "atomic_write_text",
    "safe_load",
    "PCLError",
    "get_model",
    "get_trainer",
    "model_names",
    "properties_dir",
]
