"""The trainer of one stage of a continual run (the stages themselves: :mod:`recbole_pcl.pipeline`)."""
import numpy as np
import torch

from recbole_pcl.trainer.trainer import Trainer


class ContinualTrainer(Trainer):
    """RecBole's ``fit`` and ``evaluate`` for one stage, with three differences:

    * only the parameters the model marks as trainable are optimised;
    * the best epoch's trainable parameters are kept in memory rather than written to disk (a
      stage tunes few parameters): a killed run leaves no checkpoint behind and no epoch waits on a file;
    * evaluation draws the same sampled negatives every time (``uni100`` uses numpy's global RNG):
      seeded for the evaluation, then the training RNG state is restored.
    """

    def __init__(self, config, model, epoch_callback=None):
        super().__init__(config, model)
        self.best_parameters = None
        self.history = []  # the validation metric after each epoch
        self.epoch_callback = epoch_callback  # called as (epoch, valid score) after each validation

    def _build_optimizer(self, **kwargs):
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            return None  # an evaluation-only trainer (nothing left to tune)
        return super()._build_optimizer(params=params, **kwargs)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.start_epoch(len(train_data))
        return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress)
        self.history.append(float(score))
        if self.epoch_callback is not None:
            self.epoch_callback(len(self.history), float(score))
        return score, result

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        self.best_parameters = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def restore_best(self):
        if self.best_parameters is not None:
            params = dict(self.model.named_parameters())
            for name, value in self.best_parameters.items():
                params[name].copy_(value)

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model:
            self.restore_best()
        state = np.random.get_state()
        np.random.seed(self.config["seed"])
        try:
            return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        finally:
            np.random.set_state(state)
