"""Serving a finished continual run: every task's predictions and users' representations from the
one final model."""

import numpy as np
import pandas as pd
import torch
from recbole.utils import init_logger, init_seed

from recbole_pcl.config import Config
from recbole_pcl.pipeline import TaskPipeline
from recbole_pcl.utils import PCLError, atomic_path, get_model


class ContinualPredictor:
    """The final model of a continual run with its data's id mapping. Users are given by their
    original tokens (as in the atomic files, e.g. ``"196"`` for ml-100k)."""

    def __init__(self, model, data):
        self.model, self.data = model.eval(), data
        self.tasks = {t.spec.name: t for t in data.tasks}

    @property
    def users(self):
        """Every user's token (as in the atomic files), in RecBole's id order."""
        return [str(token) for token in self.data.dataset.id2token(self.data.dataset.uid_field, self.data.users)]

    def _users(self, users):
        ds = self.data.dataset
        if users is None:
            return self.data.users
        users = [str(u) for u in users]
        if not users:
            return np.zeros(0, dtype=np.int64)
        try:
            return np.asarray(ds.token2id(ds.uid_field, users))
        except ValueError as e:
            raise PCLError(f"unknown user: {e}") from None

    def _task(self, name):
        if name not in self.tasks:
            raise PCLError(f"unknown task '{name}' (valid: {', '.join(self.tasks)})")
        return None if self.tasks[name].index == 0 else name

    def _tasks(self, task, t1_as_none=False):
        """``({name: the model's task}, several)`` for one task name or a list or tuple of them
        (``t1_as_none``: None names T1)."""
        several = isinstance(task, (list, tuple))
        names = list(dict.fromkeys(task)) if several else [task]
        return {n: None if n is None and t1_as_none else self._task(n) for n in names}, several

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _batches(self, users, batch_size):
        """The served input (each user's latest history), ``batch_size`` users at a time, with how many
        of its rows are the users'. No users: one user's row, for the shape of an empty result."""
        ids = self._users(users)
        if len(ids) == 0:
            yield self.data.latest_histories(self.data.users[:1]).to(self.device), 0
        for i in range(0, len(ids), batch_size):
            chunk = ids[i : i + batch_size]
            yield self.data.latest_histories(chunk).to(self.device), len(chunk)

    def _per_task(self, outputs, tasks, users, batch_size):
        """``{name: [U, ...]}`` for ``tasks`` (:meth:`_tasks`): ``outputs(interaction, model tasks)``
        (the model's ``tasks_logits`` or ``user_representations``) of every batch, concatenated; each
        batch is computed once for all the tasks."""
        parts = {name: [] for name in tasks}
        for inter, count in self._batches(users, batch_size):
            values = outputs(inter, list(tasks.values()))
            for name, task in tasks.items():
                parts[name].append(values[task][:count])
        return {name: torch.cat(values) for name, values in parts.items()}

    @torch.no_grad()
    def predict(self, task, users=None, batch_size=4096):
        """Scores of ``task`` for ``users`` (all when None): ``[U, n_items]`` item scores (link tasks;
        column = RecBole item id, see :meth:`item_tokens`) or ``[U, n_classes]`` class probabilities.
        ``task`` a list of task names: ``{task: scores}``, one pass over the users for all of them."""
        tasks, several = self._tasks(task)
        scores = self._per_task(self.model.tasks_logits, tasks, users, batch_size)
        scores = {n: s.softmax(-1) if self.tasks[n].spec.kind == "class" else s for n, s in scores.items()}
        return scores if several else scores[task]

    @torch.no_grad()
    def recommend(self, task, users=None, k=10, batch_size=4096):
        """Top-``k`` item tokens of a link task per user (padding excluded), ``batch_size`` users at a
        time: the full score matrix of all users is never built. ``task`` a list of link tasks:
        ``{task: top-k lists}``, one pass over the users for all of them."""
        tasks, several = self._tasks(task)
        for name in tasks:
            if self.tasks[name].spec.kind != "link":
                raise PCLError(
                    f"task '{name}' predicts classes, not items: use predict('{name}', users) for its class probabilities"
                )
        n_items = self.data.dataset.item_num - 1  # id 0 is padding
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_items:
            raise PCLError(f"k must be an integer from 1 to the number of items ({n_items}), got {k!r}")
        recommended = {name: [] for name in tasks}
        pad = torch.tensor([0], device=self.device)
        for inter, count in self._batches(users, batch_size):
            scores = self.model.tasks_logits(inter, list(tasks.values()))
            for name, model_task in tasks.items():
                top = scores[model_task][:count].index_fill(1, pad, -float("inf")).topk(k, dim=1).indices
                recommended[name] += [self.item_tokens(row) for row in top.cpu().numpy()]
        return recommended if several else recommended[task]

    def item_tokens(self, ids):
        """The item tokens (as in the atomic files) of RecBole item ids, as plain ``str``."""
        return [str(token) for token in self.data.dataset.id2token(self.data.dataset.iid_field, ids)]

    @torch.no_grad()
    def user_representation(self, users=None, task=None, batch_size=4096):
        """``[U, hidden_size]`` user vectors: the backbone's output for ``task``'s prompts (None = T1).
        ``task`` a list of task names (None = T1): ``{task: vectors}``, one pass over the users."""
        tasks, several = self._tasks(task, t1_as_none=True)
        vectors = self._per_task(self.model.user_representations, tasks, users, batch_size)
        return vectors if several else vectors[task]

    def export_user_representations(self, path, task=None, batch_size=4096):
        """Write every user's representation to ``path`` (CSV: user_id, d0..d{h-1}); returns the path."""
        vectors = self.user_representation(None, task, batch_size).cpu().numpy()
        frame = pd.DataFrame(vectors, columns=[f"d{i}" for i in range(vectors.shape[1])])
        frame.insert(0, "user_id", self.users)
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        return path


def load_continual_run(model="PCL", dataset="ml-100k", config_file_list=None, config_dict=None):
    """The :class:`ContinualPredictor` of the finished run that this configuration describes."""
    config = Config(model, dataset, config_file_list, config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    run = TaskPipeline(config, get_model(config["model"]))
    return ContinualPredictor(run.load_final(), run.data)
