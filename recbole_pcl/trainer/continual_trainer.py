"""The trainer of one stage of a continual run (the stages themselves: :mod:`recbole_pcl.pipeline`)."""

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader
from recbole.utils import set_color
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from recbole_pcl.trainer.trainer import Trainer


class DeviceBatches:
    """The batches a RecBole training loader gives, in the same order, sliced from its data kept on
    ``device``: no collation on the CPU and no host-to-device copy per step. The order comes from the
    loader's own batch sampler (its seeded generator), so training is the same as through the loader."""

    def __init__(self, loader, device):
        self.loader = loader
        self.data = loader._dataset.inter_feat.to(device)
        self.device = device

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        # a DataLoader's iterator draws its workers' base seed from the generator first: so do we, so
        # that the shuffling that follows (and every later epoch) is the loader's own
        torch.empty((), dtype=torch.int64).random_(generator=self.loader.generator)
        for index in self.loader.batch_sampler:
            yield self.data[torch.as_tensor(index, device=self.device)]

    @staticmethod
    def usable(loader, config):
        """RecBole's training batches are the rows themselves: no sampled negatives, no transform,
        one process (anything else goes through the loader)."""
        neg = config["train_neg_sample_args"] or {}
        return (
            isinstance(loader, TrainDataLoader)
            and neg.get("distribution", "none") == "none"
            and not config["transform"]
            and config["single_spec"]
            and not config["worker"]
        )


def batches(loader, config, device, cache):
    """``loader`` itself, or its :class:`DeviceBatches` (kept in ``cache`` for the next epochs)."""
    if not DeviceBatches.usable(loader, config):
        return loader
    if id(loader) not in cache:
        cache[id(loader)] = DeviceBatches(loader, device)
    return cache[id(loader)]


def _tensors(others):
    """Copies of the tensors (and not-yet-computed Nones) among a model's other parameters."""
    return {k: v if v is None else v.detach().clone() for k, v in others.items() if v is None or torch.is_tensor(v)}


class ContinualTrainer(Trainer):
    """RecBole's ``fit`` and ``evaluate`` for one stage, with these differences:

    * only the parameters the model marks as trainable are optimised;
    * the best epoch's trainable parameters are kept in memory rather than written to disk (a
      stage tunes few parameters): a killed run leaves no checkpoint behind and no epoch waits on a file;
    * training batches come from data kept on the device (:class:`DeviceBatches`), the loss is summed
      on the device and read once per epoch (no host sync per step), and ``enable_amp`` on CUDA uses
      bf16 autocast (no loss scaling needed);
    * evaluation draws the same sampled negatives every time (``uni100`` uses numpy's global RNG):
      seeded for the evaluation, then the training RNG state is restored.
    """

    def __init__(self, config, model, epoch_callback=None):
        super().__init__(config, model)
        self.best_parameters, self.best_other = None, {}
        self.history = []  # the validation metric after each epoch
        self.epoch_callback = epoch_callback  # called as (epoch, valid score) after each validation
        self.device_batches = {}

    def _build_optimizer(self, **kwargs):
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            return None  # an evaluation-only trainer (nothing left to tune)
        return super()._build_optimizer(params=params, **kwargs)

    def autocast(self):
        return torch.autocast(
            device_type=self.device.type,
            dtype=torch.bfloat16,
            enabled=bool(self.enable_amp) and self.device.type == "cuda",
        )

    def step(self, loss):
        self.optimizer.zero_grad()
        loss.backward()
        self.apply_gradients()

    def apply_gradients(self):
        """The optimiser step from the gradients set on the parameters (clipped first if asked)."""
        if self.clip_grad_norm:
            clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
        self.optimizer.step()

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.train()
        self.model.start_epoch(len(train_data))
        data = batches(train_data, self.config, self.device, self.device_batches)
        iterator = (
            tqdm(data, total=len(data), ncols=100, desc=set_color(f"Train {epoch_idx:>5}", "pink"))
            if show_progress
            else data
        )
        total = torch.zeros((), device=self.device)
        for interaction in iterator:
            with self.autocast():
                loss = (loss_func or self.model.calculate_loss)(interaction.to(self.device))
            self.step(loss)
            total = total + loss.detach().float()
        total = float(total)  # the one host sync of the epoch
        if np.isnan(total):
            raise ValueError("Training loss is nan")
        return total

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress)
        self.history.append(float(score))
        if self.epoch_callback is not None:
            self.epoch_callback(len(self.history), float(score))
        return score, result

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        self.best_parameters = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        # the model's tensor state besides its parameters, as RecBole's checkpoint keeps it (Pop's
        # counts, LightGCN's embeddings cached for the epoch's evaluation)
        self.best_other = _tensors(self.model.other_parameter())

    @torch.no_grad()
    def restore_best(self):
        if self.best_parameters is not None:
            params = dict(self.model.named_parameters())
            for name, value in self.best_parameters.items():
                params[name].copy_(value)
            if self.best_other:
                self.model.load_other_parameter(_tensors(self.best_other))

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model:
            self.restore_best()
        state = np.random.get_state()
        np.random.seed(self.config["seed"])
        try:
            data = replayed(eval_data, self.config["eval_cache_gib"]) if eval_data else eval_data
            return super().evaluate(data, load_best_model=False, show_progress=show_progress)
        finally:
            np.random.set_state(state)


class ReplayedBatches:
    """An evaluation loader that hands out the batches it recorded the first time (see :func:`replayed`)."""

    def __iter__(self):
        return iter(self._recbole_pcl_batches)


def replayed(loader, max_gib):
    """``loader`` that replays its batches from memory after their first pass, up to ``max_gib`` GiB.
    An evaluation draws the same sampled negatives every time (the evaluation is seeded), so drawing
    and collating them again (two thirds of a validation on ml-100k) gives nothing new. The recording
    lives on the loader; a loader whose batches do not fit is iterated as it is."""
    batches = getattr(loader, "_recbole_pcl_batches", ())
    if batches is None:
        return loader
    if not batches:
        limit, size, batches = max_gib * 2**30, 0, []
        for batch in loader:
            size += sum(t.numel() * t.element_size() for t in _batch_tensors(batch))
            batches.append(batch)
        loader._recbole_pcl_batches = batches if size <= limit else None
    copy = object.__new__(type(f"Replayed{type(loader).__name__}", (ReplayedBatches, type(loader)), {}))
    copy.__dict__.update(loader.__dict__)
    copy._recbole_pcl_batches = batches
    return copy


def _batch_tensors(batch):
    for part in batch if isinstance(batch, tuple) else (batch,):
        if isinstance(part, torch.Tensor):
            yield part
        elif part is not None and hasattr(part, "interaction"):
            yield from part.interaction.values()
