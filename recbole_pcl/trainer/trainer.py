"""RecBole trainers whose checkpoints hold tensors and plain data only.

RecBole 1.2.1 pickles its whole ``Config`` into each checkpoint, so on torch >= 2.6 (``weights_only``
by default) best-model evaluation and resuming fail, and loading such a file would execute code.
:class:`SafeCheckpointMixin` changes only checkpoint I/O: files are written atomically under a name
unique per trainer (RecBole's one-second timestamps collide), and read with ``weights_only=True``.
A model's ``other_parameter()`` (scipy sparse matrices of ItemKNN/EASE, sub-modules of DIN/FDSA,
RippleNet's dict…) is encoded as tensors and plain data (:func:`encode_plain`) and decoded on load.
"""

import os
import uuid

import numpy as np
import scipy.sparse as sp
import torch
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import get_local_time, set_color
from torch import nn

from recbole_pcl.utils.checkpoint import atomic_torch_save, safe_load
from recbole_pcl.utils.errors import PCLError


def encode_plain(value):
    """``value`` as data that ``torch.load(weights_only=True)`` accepts (see :func:`decode_plain`)."""
    if isinstance(value, nn.Module):  # a sub-module: its weights (the module itself stays in the model)
        return {"__plain__": "module", "state": value.state_dict()}
    if sp.issparse(value):
        coo = value.tocoo()
        return {
            "__plain__": "sparse",
            "format": value.format,
            "shape": list(value.shape),
            "row": torch.from_numpy(coo.row.astype(np.int64)),
            "col": torch.from_numpy(coo.col.astype(np.int64)),
            "data": torch.from_numpy(np.ascontiguousarray(coo.data)),
        }
    if isinstance(value, np.ndarray):
        return {"__plain__": "ndarray", "data": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {"__plain__": "dict", "items": [[encode_plain(k), encode_plain(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"__plain__": type(value).__name__, "items": [encode_plain(v) for v in value]}
    return value  # tensors, numbers, text, None


def decode_plain(value, current=None):
    """The value :func:`encode_plain` encoded; a module's weights are loaded into ``current`` (the
    model's present value, looked up key by key through dicts)."""
    kind = value.get("__plain__") if isinstance(value, dict) else None
    if kind == "module":
        current.load_state_dict(value["state"])
        return current
    if kind == "sparse":
        matrix = sp.coo_matrix(
            (value["data"].numpy(), (value["row"].numpy(), value["col"].numpy())), shape=tuple(value["shape"])
        )
        return matrix.asformat(value["format"])
    if kind == "ndarray":
        return value["data"].numpy()
    if kind == "dict":
        known = current if isinstance(current, dict) else {}
        decoded = ((decode_plain(k), v) for k, v in value["items"])
        return {k: decode_plain(v, known.get(k)) for k, v in decoded}
    if kind in ("list", "tuple"):
        items = [decode_plain(v) for v in value["items"]]
        return items if kind == "list" else tuple(items)
    return value


class SafeCheckpointMixin:
    def __init__(self, config, model):
        super().__init__(config, model)
        name = f"{config['model']}-{get_local_time()}-{uuid.uuid4().hex[:8]}.pth"
        self.saved_model_file = os.path.join(self.checkpoint_dir, name)

    def checkpoint_state(self, epoch):
        return {
            "model": self.config["model"],
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": encode_plain(self.model.other_parameter()),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        atomic_torch_save(self.checkpoint_state(epoch), saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _load_model_state(self, checkpoint_file):
        checkpoint = safe_load(checkpoint_file, map_location=self.device)
        if checkpoint.get("model", "").lower() != self.config["model"].lower():
            raise PCLError(
                f"checkpoint {checkpoint_file} holds model '{checkpoint.get('model')}', not '{self.config['model']}'"
            )
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(decode_plain(checkpoint.get("other_parameter"), self.model.other_parameter()))
        return checkpoint

    def save_pretrained_model(self, epoch, saved_model_file):
        """RecBole's pretraining stages (S3Rec, RaCT) save through here: weights only, atomically."""
        atomic_torch_save(self.checkpoint_state(epoch), saved_model_file)
        self.saved_model_file = saved_model_file

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        checkpoint = self._load_model_state(resume_file)
        self.saved_model_file = resume_file
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            self._load_model_state(checkpoint_file)
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


def with_safe_checkpoints(trainer_class):
    """``trainer_class`` with :class:`SafeCheckpointMixin`, for any RecBole ``Trainer`` subclass.

    Trainers outside the ``Trainer`` family (decision trees) keep their own I/O.
    """
    if not issubclass(trainer_class, RecBoleTrainer) or issubclass(trainer_class, SafeCheckpointMixin):
        return trainer_class
    return type(trainer_class.__name__, (SafeCheckpointMixin, trainer_class), {})


Trainer = with_safe_checkpoints(RecBoleTrainer)
