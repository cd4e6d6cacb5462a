r"""PCL
################################################

Reference:
    Mingdai Yang et al. "PCL: Prompt-based Continual Learning for User Modeling in Recommender
    Systems." In WWW Companion 2025.

A SASRec backbone (RecBole's) is pretrained on next-item prediction (T1), then frozen with its item
embeddings. Each downstream task k gets, on the last ``t`` items of the input sequence:

* a position-wise prompt ``p_k`` (Eq. 1), initialised randomly for the first downstream task and
  from ``p_{k-1}`` afterwards;
* a contextual prompt ``lambda * p'_k`` (Eq. 2-3): row k of a multi-head attention over the encoded
  task descriptions. Read continually: when task k is learned, later tasks do not exist yet, so row k
  attends over the descriptions of tasks 1..k only;
* optionally an item-attribute embedding sequence (e.g. genre), added at every position;
* for class tasks, an adapter (linear or MLP) from the user vector to the classes.
Link tasks score against the frozen item table. **Prompts are attached in** :meth:`PCL.task_input`.

The attention layer is shared and keeps learning with each new task; to keep old tasks exactly as
they were, each task's contextual prompt vector is frozen when its stage ends (:meth:`end_task`).
"""

import torch
from torch import nn

from recbole_pcl.data.continual import cold_items
from recbole_pcl.model.abstract_recommender import ContinualRecommender, TaskSASRec
from recbole_pcl.utils.errors import PCLError


class PCL(TaskSASRec, ContinualRecommender):
    downstream_settings = TaskSASRec.downstream_settings + (
        "prompt_length",
        "context_lambda",
        "contextual_prompt",
        "context_heads",
        "context_text_dim",
        "text_encoder",
        "prompt_init",
        "normalize_context",
        "tune_cold_items",
    )

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.prompt_length = config["prompt_length"]  # t
        self.context_lambda = config["context_lambda"]
        self.normalize_context = config["normalize_context"]
        self.tune_cold_items = config["tune_cold_items"]
        if self.tune_cold_items:  # RQ3: downstream stages also learn the embeddings of the cold-start items
            cold = torch.zeros(self.n_items, 1)
            cold[torch.as_tensor(cold_items(config, self.n_items), dtype=torch.long)] = 1.0
            self.register_buffer("cold_rows", cold, persistent=False)
            self.item_embedding.weight.register_hook(
                lambda grad: grad if self.active_task is None else grad * self.cold_rows
            )
        self.contextual_prompt = config["contextual_prompt"]  # lm | random | none
        self.prompt_init = config["prompt_init"]  # previous | random

        self.prompts = nn.ParameterDict()  # task -> [n, d] position-wise prompt
        self.attributes = nn.ModuleDict()  # task -> attribute-value embedding
        self.frozen_context = nn.ParameterDict()  # task -> its contextual prompt, frozen when it ends
        self.finished = set()  # tasks whose stage has ended: they use frozen_context
        self.last_prompted = None

        self._item_features = dataset.get_item_feature() if dataset.item_feat is not None else None
        self.task_names = []
        self.register_buffer("task_text", torch.zeros(0, 0), persistent=False)
        self.context_text_dim, self.context_heads = config["context_text_dim"], config["context_heads"]
        if self.uses_context:
            self._new_context()

    @property
    def uses_context(self):
        return self.contextual_prompt != "none" and self.prompt_length > 0

    def _new_context(self):
        """The shared attention of Eq. 2, freshly initialised (at the first downstream task)."""
        device = self.item_embedding.weight.device
        self.context_proj = nn.Linear(self.context_text_dim, self.hidden_size).to(device)
        self.context_attn = nn.MultiheadAttention(self.hidden_size, self.context_heads, batch_first=True).to(device)

    def backbones_kept(self):
        return 1

    # ----- the continual protocol -----------------------------------------------------------------
    def set_task_texts(self, names, embeddings):
        """Encoded descriptions of the run's tasks in order, ``E_T`` (``[|T|, context_text_dim]``)."""
        self.task_names = list(names)
        self.task_text = embeddings.to(self.item_embedding.weight.device)

    def add_task(self, name, kind, num_classes=0, attribute=None):
        """Create task ``name``'s prompt, adapter and attribute embedding; :meth:`init_task`
        initialises them (under the stage's seed)."""
        super().add_task(name, kind, num_classes, attribute)
        self.prompts[name] = nn.Parameter(torch.zeros(self.max_seq_length, self.hidden_size))
        if self.uses_context:
            self.frozen_context[name] = nn.Parameter(torch.zeros(self.hidden_size), requires_grad=False)
        if attribute is not None:
            if self._item_features is None or attribute not in self._item_features:
                raise PCLError(f"task '{name}': attribute field '{attribute}' is not an item feature")
            values = self._item_features[attribute]
            # item id -> attribute ids, kept on the model's device (not saved: derived from the data)
            self.register_buffer(
                f"attribute_of_item_{name}", values.to(self.item_embedding.weight.device), persistent=False
            )
            self.attributes[name] = nn.Embedding(int(values.max()) + 1, self.hidden_size, padding_idx=0)

    def init_task(self, name):
        super().init_task(name)  # the adapter
        with torch.no_grad():
            if self.prompt_init == "previous" and self.last_prompted is not None:
                self.prompts[name].copy_(self.prompts[self.last_prompted])
            else:
                self.prompts[name].normal_(0.0, self.initializer_range)
        if name in self.attributes:
            self.attributes[name].apply(self._init_weights)
        if self.uses_context and not self.finished:
            self._new_context()

    def trainable_parameters(self, name):
        """T1: the backbone. A task: its prompt, adapter, attribute embedding and the shared
        context attention; the backbone and item embeddings stay frozen."""
        params = super().trainable_parameters(name)
        if name is None:
            return params
        if self.prompt_length > 0:
            params.append(self.prompts[name])
        if name in self.attributes:
            params += list(self.attributes[name].parameters())
        if self.uses_context:
            params += list(self.context_proj.parameters()) + list(self.context_attn.parameters())
        if self.tune_cold_items:
            params.append(self.item_embedding.weight)  # its warm rows get no gradient (see __init__)
        return params

    def stage_keys(self, name, keys):
        """T1: the backbone. A task: its own tensors and the shared attention it leaves to the next."""
        if name is None:
            return super().stage_keys(name, keys)
        prefixes = [f"heads.{name}.", f"prompts.{name}", f"attributes.{name}.", f"frozen_context.{name}"]
        if self.uses_context:
            prefixes += ["context_proj.", "context_attn."]
        if self.tune_cold_items:
            prefixes.append("item_embedding.weight")
        return [k for k in keys if k.startswith(tuple(prefixes))]

    def end_task(self, name):
        """Freeze what task ``name`` learned, so later tasks cannot change its predictions."""
        if name is not None:
            if self.uses_context:
                with torch.no_grad():
                    self.frozen_context[name].copy_(self._live_context(name))
            self.finished.add(name)
            self.last_prompted = name
        super().end_task(name)

    # ----- prompts ------------------------------------------------------------------------------
    def _live_context(self, name):
        """Row ``name`` of ``P_T = MHA(E_T W)`` (Eq. 2) over the tasks learned up to ``name``; of unit
        norm with ``normalize_context`` (then lambda is its norm, in the scale of item embeddings)."""
        k = self.task_names.index(name)
        e = self.context_proj(self.task_text[: k + 1]).unsqueeze(0)  # [1, k + 1, d]
        p_t, _ = self.context_attn(e, e, e, need_weights=False)
        return torch.nn.functional.normalize(p_t[0, k], dim=0) if self.normalize_context else p_t[0, k]

    def task_input(self, name, item_seq, item_seq_len):
        """What task ``name`` adds to the item-embedding sequence: prompts on the last t items (Eq. 1, 3)
        and the optional attribute embeddings on every item. Shape ``[B, n, d]``."""
        n, t = item_seq.size(1), self.prompt_length
        add = torch.zeros(*item_seq.shape, self.hidden_size, device=item_seq.device)
        if t > 0:
            # sequences are left-aligned and padded on the right: the last t items end at item_seq_len
            rel = torch.arange(n, device=item_seq.device).unsqueeze(0) - item_seq_len.unsqueeze(1) + n
            on = ((rel >= n - t) & (rel < n)).unsqueeze(-1)
            prompt = self.prompts[name][rel.clamp(0, n - 1)]
            if self.uses_context:
                context = self.frozen_context[name] if name in self.finished else self._live_context(name)
                prompt = prompt + self.context_lambda * context
            add = add + prompt * on
        if name in self.attributes:
            values = getattr(self, f"attribute_of_item_{name}")[item_seq]
            emb = self.attributes[name](values) * values.ne(0).unsqueeze(-1)  # missing values add nothing
            if values.dim() == 3:  # token_seq attribute: mean over the item's tokens
                emb = emb.sum(2) / values.ne(0).sum(2, keepdim=True).clamp(min=1)
            add = add + emb
        return add

    def input_embedding(self, task, item_seq, item_seq_len):
        emb = super().input_embedding(task, item_seq, item_seq_len)
        return emb if task is None else emb + self.task_input(task, item_seq, item_seq_len)
