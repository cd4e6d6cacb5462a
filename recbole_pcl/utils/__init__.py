from recbole_pcl.utils.errors import PCLError
from recbole_pcl.utils.checkpoint import atomic_path, atomic_torch_save, atomic_write_text, safe_load
from recbole_pcl.utils.utils import get_model, get_trainer, properties_dir, model_names
