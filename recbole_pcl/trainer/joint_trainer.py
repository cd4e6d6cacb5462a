"""The trainer of methods that learn every task at once (MTL, MMoE and their MGDA variants)."""

import numpy as np
import torch
from recbole.utils import set_color
from tqdm import tqdm

from recbole_pcl.trainer.continual_trainer import ContinualTrainer, batches
from recbole_pcl.trainer.mgda import min_norm_weights


def _forever(loader):
    while True:
        yield from loader


class JointTrainer(ContinualTrainer):
    """Fits a :class:`~recbole_pcl.model.abstract_recommender.JointRecommender` on every task at once.

    An epoch is one pass over T1's training data; each step adds one batch of every downstream task
    (their loaders start over when they run out). The tasks' losses are summed with equal weights, or
    with MGDA's weights (``task_weighting: mgda``), computed at every step from the gradients of each
    task's loss on the shared parameters (normalised by ``mgda_normalization``); the step then sums
    those same per-task gradients with the weights instead of back-propagating the weighted loss
    again (one backward pass per task, not one more). Every task is validated after every
    ``eval_step`` epochs (RecBole's ``fit``). The best epoch is the one with the best mean over tasks
    of each task's validation metric (``evaluate_valid(task)``); its parameters are kept
    (:meth:`restore_best`). Stopping follows ``joint_stopping``: ``mean`` stops after ``stopping_step``
    validations without a better mean; ``any`` (the default) only once no task has improved its own
    best for ``stopping_step`` validations, so that one task still learning (T1 learned from scratch
    beside the others) is not cut short by a mean that others hold flat. Each task's validation curve
    is kept in :attr:`task_history`.
    """

    def __init__(self, config, model, tasks, evaluate_valid, epoch_callback=None):
        super().__init__(config, model, epoch_callback)
        self.tasks, self.evaluate_valid = tasks, evaluate_valid
        self.weighting, self.normalization = config["task_weighting"], config["mgda_normalization"]
        self.last_weights = None  # the task weights of the latest step, {task: weight}
        self._shared, self._flat = None, None  # MGDA: where each shared gradient goes in a float64 buffer
        self.epoch = 0  # epochs trained so far
        self.stopping = config["joint_stopping"]
        self.task_history = {t.spec.name: [] for t in tasks}  # each task's validation metric per validation

    def task_gradients(self, losses):
        """``{task: gradients}``: each task's gradient on every trainable parameter (None where its loss
        does not reach one), one backward pass per task. MGDA needs them for its weights, and their
        weighted sum is the step's gradient, so no backward pass of the weighted loss follows."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        last = len(losses) - 1
        return {
            task: torch.autograd.grad(loss, params, retain_graph=i < last, allow_unused=True)
            for i, (task, loss) in enumerate(losses.items())
        }

    def task_weights(self, losses, gradients=None):
        if self.weighting != "mgda":
            return {task: 1.0 for task in losses}
        gram = self.shared_gram(gradients)
        norms = gram.diagonal().sqrt().clamp(min=1e-12)
        values = torch.stack([loss.detach().double() for loss in losses.values()]).clamp(min=1e-12)
        scale = {"l2": norms, "loss": values, "loss+": values * norms, "none": torch.ones_like(norms)}[
            self.normalization
        ]
        # the Gram matrix of the normalised gradients g_k / scale_k, without dividing the gradients
        weights = min_norm_weights((gram / torch.outer(scale, scale)).cpu().numpy())
        return dict(zip(losses, weights.tolist()))

    def shared_gram(self, gradients):
        """``[K, K]`` (float64): the inner products of the tasks' gradients on the shared parameters.
        Each gradient is copied once, into a float64 buffer kept across steps (a parameter no loss
        of a task reaches counts as zero for that task), and the Gram matrix is one product."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self._shared is None:
            shared = {id(p) for p in self.model.shared_parameters()}
            offsets, start = [], 0
            for i, p in enumerate(params):
                if id(p) in shared:
                    offsets.append((i, start, start + p.numel()))
                    start += p.numel()
            self._shared = offsets, start
        offsets, size = self._shared
        if self._flat is None or self._flat.shape != (len(gradients), size):
            self._flat = torch.empty(len(gradients), size, dtype=torch.float64, device=params[0].device)
        for row, grads in zip(self._flat, gradients.values()):
            for i, start, end in offsets:
                part = row[start:end]
                if grads[i] is None:
                    part.zero_()
                else:
                    part.view_as(grads[i]).copy_(grads[i])
        return self._flat @ self._flat.T

    def step_from(self, gradients, weights):
        """The optimiser step along ``sum_k weights[k] * gradients[k]`` (what ``backward`` of the
        weighted loss would give), summed into each parameter's ``grad`` without stacking."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        for i, p in enumerate(params):
            grad = None
            for task, grads in gradients.items():
                if grads[i] is not None:
                    grad = grads[i] * weights[task] if grad is None else grad.add_(grads[i] * weights[task])
            p.grad = grad
        self.apply_gradients()

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.epoch = epoch_idx + 1  # the validation that may follow reports this epoch
        self.model.train()
        self.model.start_epoch(len(train_data))
        names = [None] + [t.spec.name for t in self.tasks[1:]]
        t1 = batches(train_data, self.config, self.device, self.device_batches)
        others = [_forever(batches(t.train, t.config, self.device, self.device_batches)) for t in self.tasks[1:]]
        iterator = (
            tqdm(t1, total=len(t1), ncols=100, desc=set_color(f"Train {epoch_idx:>5}", "pink")) if show_progress else t1
        )
        total = torch.zeros((), device=self.device)
        for t1_batch in iterator:
            step = [t1_batch] + [next(it) for it in others]
            with self.autocast():
                losses = self.model.task_losses({n: b.to(self.device) for n, b in zip(names, step)})
            if self.weighting == "mgda":
                gradients = self.task_gradients(losses)
                weights = self.task_weights(losses, gradients)
                self.step_from(gradients, weights)
            else:
                weights = self.task_weights(losses)
                self.step(sum(losses.values()))
            loss = sum(weights[task] * value.detach() for task, value in losses.items())
            self.last_weights = weights
            total = total + loss.detach().float()
        total = float(total)
        if np.isnan(total):
            raise ValueError("Training loss is nan")
        return total

    def _valid_epoch(self, valid_data, show_progress=False):
        results = {t.spec.name: self.evaluate_valid(t) for t in self.tasks}
        improved = False
        for t in self.tasks:
            curve = self.task_history[t.spec.name]
            value = float(results[t.spec.name][t.config["valid_metric"].lower()])
            improved |= not curve or value > max(curve)
            curve.append(value)
        score = float(np.mean([curve[-1] for curve in self.task_history.values()]))
        if self.stopping == "any" and improved and self.history and score < max(self.history):
            # RecBole's fit counts this validation as one without progress (cur_step + 1) because the
            # mean did not improve; a task did, so the patience starts over
            self.cur_step = -1
        self.history.append(score)
        if self.epoch_callback is not None:
            self.epoch_callback(self.epoch, score)
        return score, {f"{task}/{k}": v for task, result in results.items() for k, v in result.items()}
