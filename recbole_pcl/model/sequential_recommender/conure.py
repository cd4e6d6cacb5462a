r"""CONURE
################################################

Reference:
    Fajie Yuan, Guoxiao Zhang, Alexandros Karatzoglou, Joemon Jose, Beibei Kong and Yudong Li. "One
    Person, One Model, One World: Learning Continual User Representation without Forgetting." In
    SIGIR 2021. (As TERACON §3.4 restates it, Eq. 4-5; after PackNet, Mallya and Lazebnik, CVPR 2018.)

One backbone serves every task by parameter isolation. Every weight matrix of the backbone (item and
position embeddings, the attention and feed-forward weights) has an owner per entry: free, or the
task that kept it. Tasks are learned in order (T1 first), each in three steps:

1. **train** every free entry (and the task's head) while the entries kept by earlier tasks are used
   as they are and receive no gradient (Eq. 4); free entries start from the values the previous task
   trained them to;
2. **prune**: of the entries still free, the ``conure_prune_ratio`` share with the smallest magnitude
   in each weight tensor is left free (Eq. 5, with the threshold set by the ratio); the others are
   kept by this task;
3. **retrain** the task's kept entries (and head) with the pruned ones removed, then freeze them for
   every later task.

Task k is served with the entries kept by tasks 1..k and nothing else (``W * Σ_{j<=k} M_j``), so
later tasks cannot change it. Each task has its own head (class tasks) or linear projection before
the item table (link tasks, as TERACON; CONURE has an output layer per task), frozen after its stage.

Stages: T1 is trained by the plain SASRec pretraining every method shares (stage 0); its pruning and
retraining open the first downstream stage, which then learns its own task: stage 1 fits T1, then its
task twice (train, retrain), and writes the weights and owners for both. Other choices: biases and
LayerNorm parameters are not pruned and stay as T1 left them (as PackNet); one pruning ratio for
every task (the papers tune one per task, 70/80/70 % on MovieLens); the retraining steps use
``downstream_learning_rate`` and the usual early stopping, T1's on T1's validation metric.
``weight_decay`` must be 0: Adam's L2 term would move the frozen entries, which receive no gradient.
"""

import torch
from torch.func import functional_call

from recbole_pcl.model.abstract_recommender import ContinualRecommender, TaskSASRec, Tensors
from recbole_pcl.utils.errors import PCLError

FREE = 0  # owner of an entry no task keeps; task k of task_order() owns entries with k + 1
MAX_TASKS = torch.iinfo(torch.uint8).max


class MaskedModule:
    """``module`` called with some of its parameters replaced (``weights``: name -> tensor)."""

    def __init__(self, module, weights):
        self.module, self.weights = module, weights

    def __call__(self, *args, **kwargs):
        return functional_call(self.module, self.weights, args, kwargs)

    @property
    def weight(self):
        return self.weights["weight"]


class MaskedBackbone:
    """The backbone modules (``item_embedding``, ``trm_encoder`` ...) as ``task`` sees them."""

    def __init__(self, model, task):
        self.model, self.task = model, task

    def __getattr__(self, module_name):
        prefix = f"{module_name}."
        weights = {
            name[len(prefix) :]: self.model.weight_for(name, self.task)
            for name in self.model.masked
            if name.startswith(prefix)
        }
        module = getattr(self.model, module_name)
        return MaskedModule(module, weights) if weights else module


class CONURE(TaskSASRec, ContinualRecommender):
    link_heads = True
    downstream_settings = TaskSASRec.downstream_settings + ("conure_prune_ratio",)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if config["weight_decay"]:
            raise PCLError(
                f"setting 'weight_decay' must be 0 for CONURE (got {config['weight_decay']}): its L2 term would "
                "move the weights earlier tasks keep frozen"
            )
        self.prune_ratio = config["conure_prune_ratio"]
        named = dict(self.named_parameters())
        self.masked = [k for k in self.backbone_keys if k in named and named[k].dim() > 1]  # weight matrices
        self.owners = Tensors({k: torch.zeros_like(named[k], dtype=torch.uint8) for k in self.masked})
        self.kept = []  # the tasks whose entries are kept (pruned and retrained), in order

    def setup(self, data):
        if len(data.tasks) > MAX_TASKS:
            raise PCLError(f"setting 'tasks': CONURE keeps at most {MAX_TASKS} tasks, got {len(data.tasks)}")
        super().setup(data)

    def backbones_kept(self):
        return 1

    def owner_id(self, task):
        return self.task_order().index(task) + 1

    # ----- the weights a task sees ----------------------------------------------------------------
    def weight_for(self, name, task):
        """Parameter ``name`` as ``task`` uses it: its own entries and those of earlier tasks (these
        without gradient); before ``task`` is kept, the free entries too; every other entry is 0."""
        weight, owner = self.get_parameter(name), self.owners[name]
        k = self.owner_id(task)
        earlier = (owner != FREE) & (owner < k)
        usable = (owner == k) | ((owner == FREE) & (task not in self.kept))
        return torch.where(earlier, weight.detach(), torch.where(usable, weight, weight.new_zeros(())))

    def backbone(self, task):
        return MaskedBackbone(self, task) if self.kept else self  # nothing kept: plain SASRec (T1's pretraining)

    # ----- the continual protocol -----------------------------------------------------------------
    def trainable_parameters(self, name):
        """T1: the backbone. A task: the weight matrices (entries it may change: see weight_for) and its head."""
        if name is None:
            return super().trainable_parameters(name)
        head = list(self.heads[name].parameters()) if name in self.heads else []
        return [self.get_parameter(k) for k in self.masked] + head

    def count_trainable(self):
        """The entries the active task changes: its free (training) or kept (retraining) ones, and its head."""
        task = self.active_task
        if task is None and not self.kept:
            return super().count_trainable()
        k = self.owner_id(task)
        entries = sum(
            int(((owner == k) if task in self.kept else (owner == FREE)).sum()) for _, owner in self.owners.items()
        )
        return entries + (sum(p.numel() for p in self.heads[task].parameters()) if task in self.heads else 0)

    def stage_keys(self, name, keys):
        if name is None:
            return super().stage_keys(name, keys)  # the plain pretraining: the backbone
        owners = [f"owners.{self.owners.keys[k]}" for k in self.masked]
        return [k for k in keys if k.startswith(f"heads.{name}.")] + self.masked + owners

    def stage_fits(self, task, earlier):
        name = self.active_task
        if name is None:
            yield task  # T1's plain pretraining: shared with the other methods
            return
        if None not in self.kept:  # the first downstream stage keeps T1's weights first
            self.keep(None)
            yield earlier[0]
        self.active_task = name
        yield task  # train the free entries
        self.keep(name)
        yield task  # retrain the kept ones

    def end_task(self, name):
        super().end_task(name)
        if name is not None:  # a finished (or restored) downstream stage has kept T1 and every task to it
            self.kept = self.task_order()[: self.owner_id(name)]

    @torch.no_grad()
    def keep(self, task):
        """Prune: ``task`` keeps the largest-magnitude (1 - conure_prune_ratio) of each weight's free
        entries; the active task becomes ``task`` (its retraining fit)."""
        k = self.owner_id(task)
        for name in self.masked:
            owner = self.owners[name].view(-1)
            free = (owner == FREE).nonzero().squeeze(1)
            keep = len(free) - int(round(self.prune_ratio * len(free)))
            magnitude = self.get_parameter(name).detach().view(-1)[free].abs()
            owner[free[torch.sort(magnitude, descending=True, stable=True).indices[:keep]]] = k
        self.kept.append(task)
        self.active_task = task
