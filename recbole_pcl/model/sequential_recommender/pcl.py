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

Prompt-free prefix (``prefix_cache``): SASRec is causal and a task adds nothing before the last t
items, so every layer's states there are the frozen backbone's own. A stage computes each row's
prefix keys and values once (:meth:`PCL.prefix`, kept in a :class:`PrefixCache`) and trains and
predicts through the last t positions only (:meth:`PCL.suffix`); serving several tasks shares one
prefix pass per batch (:meth:`PCL.tasks_logits`).
"""

import os
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from recbole_pcl.model.abstract_recommender import ContinualRecommender, TaskSASRec
from recbole_pcl.model.prefix_cache import PrefixCache
from recbole_pcl.model.text_encoder import encode_texts
from recbole_pcl.utils.errors import PCLError


def transformer_layer(layer, hidden, keys, values, mask, training):
    """RecBole's ``TransformerLayer.forward`` (its ``MultiHeadAttention`` then ``FeedForward``, with
    their own weights) for the queries of ``hidden`` ``[B, Q, d]`` over the projected ``keys`` and
    ``values`` ``[B, K, d]``, with RecBole's additive ``mask`` ``[B, 1, Q, K]``; dropout only when
    ``training``. With ``keys``/``values`` projected from ``hidden`` itself it is RecBole's layer."""
    mha, ff = layer.multi_head_attention, layer.feed_forward

    def heads(x):  # [B, len, d] -> [B, heads, len, d / heads]
        return mha.transpose_for_scores(x).transpose(1, 2)

    scores = heads(mha.query(hidden)) @ heads(keys).transpose(-1, -2) / mha.sqrt_attention_head_size + mask
    probs = F.dropout(mha.softmax(scores), mha.attn_dropout.p, training)
    context = (probs @ heads(values)).transpose(1, 2).reshape(hidden.shape)
    hidden = mha.LayerNorm(F.dropout(mha.dense(context), mha.out_dropout.p, training) + hidden)
    inner = ff.dense_2(ff.intermediate_act_fn(ff.dense_1(hidden)))
    return ff.LayerNorm(F.dropout(inner, ff.dropout.p, training) + hidden)


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
        "prefix_cache",
        "prefix_cache_gib",
    )

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.prompt_length = config["prompt_length"]  # t
        self.context_lambda = config["context_lambda"]
        self.normalize_context = config["normalize_context"]
        self.tune_cold_items = config["tune_cold_items"]
        self.contextual_prompt = config["contextual_prompt"]  # lm | random | none
        self.prompt_init = config["prompt_init"]  # previous | random
        self.prefix_cache = config["prefix_cache"]
        self._prefix_store = PrefixCache(config["prefix_cache_gib"] * 2**30)
        self._shared = None  # (item_seq, its prefix) while shared_prefix is open

        # task -> [t, d] position-wise prompt: row i on the i-th of the last t items (p_k[-t:] of Eq. 1;
        # the earlier rows of p_k would never be used)
        self.prompts = nn.ParameterDict()
        self.attributes = nn.ModuleDict()  # task -> attribute-value embedding
        self.frozen_context = nn.ParameterDict()  # task -> its contextual prompt, frozen when it ends
        self.finished = set()  # tasks whose stage has ended: they use frozen_context
        self.last_prompted = None

        self._item_features = dataset.get_item_feature() if dataset.item_feat is not None else None
        self.task_names = []
        self.register_buffer("task_text", torch.zeros(0, 0), persistent=False)
        self.context_text_dim, self.context_heads = config["context_text_dim"], config["context_heads"]
        self.text_encoder, self.seed = config["text_encoder"], config["seed"]
        self.text_cache = os.path.join(config["checkpoint_dir"], "text-cache")
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
    def setup(self, data):
        """The run's task descriptions, encoded (Eq. 2), and its cold-start items (RQ3), then the tasks."""
        if self.uses_context:
            self.set_task_texts([t.spec.name for t in data.tasks], self.encode_descriptions(data.tasks))
        if self.tune_cold_items:
            self.set_cold_items(data.cold_items)
        super().setup(data)

    def set_cold_items(self, items):
        """RQ3: the items kept out of T1 (``cold_item_share``); downstream stages also learn their
        embeddings, and only theirs (the warm rows' gradients are zeroed)."""
        cold = torch.zeros(self.n_items, 1)
        cold[torch.as_tensor(items, dtype=torch.long)] = 1.0
        self.register_buffer("cold_rows", cold.to(self.item_embedding.weight.device), persistent=False)
        self.item_embedding.weight.register_hook(
            lambda grad: grad if self.active_task is None else grad * self.cold_rows
        )

    def encode_descriptions(self, tasks):
        """``E_T``: the tasks' descriptions encoded by the sentence transformer (``lm``), or random
        vectors seeded by ``seed`` (``random``: the ablation w/o PLM)."""
        if self.contextual_prompt == "random":
            generator = torch.Generator().manual_seed(self.seed)
            return torch.randn(len(tasks), self.context_text_dim, generator=generator)
        embeddings = encode_texts([t.spec.description for t in tasks], self.text_cache, self.text_encoder)
        if embeddings.size(1) != self.context_text_dim:
            raise PCLError(
                f"text_encoder gives {embeddings.size(1)}-dim vectors but context_text_dim is {self.context_text_dim}"
            )
        return embeddings

    def set_task_texts(self, names, embeddings):
        """Encoded descriptions of the run's tasks in order, ``E_T`` (``[|T|, context_text_dim]``)."""
        self.task_names = list(names)
        self.task_text = embeddings.to(self.item_embedding.weight.device)

    def add_task(self, name, kind, num_classes=0, attribute=None):
        """Create task ``name``'s prompt, adapter and attribute embedding; :meth:`init_task`
        initialises them (under the stage's seed)."""
        super().add_task(name, kind, num_classes, attribute)
        self.prompts[name] = nn.Parameter(torch.zeros(self.prompt_length, self.hidden_size))
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

    def begin_task(self, name):
        self._prefix_store.clear()  # the backbone may have changed since the cache was filled
        super().begin_task(name)

    def end_task(self, name):
        """Freeze what task ``name`` learned, so later tasks cannot change its predictions."""
        if name is not None:
            if self.uses_context:
                with torch.no_grad():
                    self.frozen_context[name].copy_(self._live_context(name))
            self.finished.add(name)
            self.last_prompted = name
        self._prefix_store.clear()
        super().end_task(name)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        self._prefix_store.clear()  # new weights: every cached prefix is stale
        return super().load_state_dict(state_dict, strict, assign)

    def count_trainable(self):
        count = super().count_trainable()
        if self.tune_cold_items and self.active_task is not None and self.item_embedding.weight.requires_grad:
            count -= int(self.n_items - self.cold_rows.sum()) * self.hidden_size  # warm rows get no gradient
        return count

    # ----- prompts ------------------------------------------------------------------------------
    def _live_context(self, name):
        """Row ``name`` of ``P_T = MHA(E_T W)`` (Eq. 2) over the tasks learned up to ``name``; of unit
        norm with ``normalize_context`` (then lambda is its norm, in the scale of item embeddings)."""
        k = self.task_names.index(name)
        e = self.context_proj(self.task_text[: k + 1]).unsqueeze(0)  # [1, k + 1, d]
        p_t, _ = self.context_attn(e, e, e, need_weights=False)
        return torch.nn.functional.normalize(p_t[0, k], dim=0) if self.normalize_context else p_t[0, k]

    def _prompt_at(self, name, positions, item_seq_len):
        """Task ``name``'s prompts (Eq. 1, 3) at the item ``positions`` ``[B, P]`` of each sequence:
        prompt row i on the i-th of its last t items, nothing elsewhere. Shape ``[B, P, d]``."""
        t = self.prompt_length
        # sequences are left-aligned and padded on the right: the last t items end at item_seq_len
        row = positions - (item_seq_len.unsqueeze(1) - t)
        on = ((row >= 0) & (row < t)).unsqueeze(-1)
        prompt = self.prompts[name][row.clamp(0, t - 1)]
        if self.uses_context:
            context = self.frozen_context[name] if name in self.finished else self._live_context(name)
            prompt = prompt + self.context_lambda * context
        return prompt * on

    def task_input(self, name, item_seq, item_seq_len):
        """What task ``name`` adds to the item-embedding sequence: prompts on the last t items (Eq. 1, 3)
        and the optional attribute embeddings on every item. Shape ``[B, n, d]``."""
        add = torch.zeros(*item_seq.shape, self.hidden_size, device=item_seq.device)
        if self.prompt_length > 0:
            positions = torch.arange(item_seq.size(1), device=item_seq.device).expand_as(item_seq)
            add = add + self._prompt_at(name, positions, item_seq_len)
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

    # ----- the prompt-free prefix ---------------------------------------------------------------
    def uses_prefix(self, task):
        """Whether ``task`` (None = T1) may start from the prompt-free prefix: it adds nothing before
        the last t items (no item attribute) and the item embeddings stay frozen."""
        return self.prefix_cache and not self.tune_cold_items and task not in self.attributes

    @torch.no_grad()
    def prefix_pass(self, item_seq):
        """Each layer's keys and values of the frozen backbone without prompts, at every position:
        ``[B, n_layers, 2, n, d]``. Without dropout: it stands for the backbone, not a training sample."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device).expand_as(item_seq)
        hidden = self.LayerNorm(self.item_embedding(item_seq) + self.position_embedding(positions))
        mask = self.get_attention_mask(item_seq)
        layers, kv = self.trm_encoder.layer, []
        for i, layer in enumerate(layers):
            mha = layer.multi_head_attention
            keys, values = mha.key(hidden), mha.value(hidden)
            kv.append(torch.stack([keys, values], 1))
            if i + 1 < len(layers):  # the last layer's output is not needed
                hidden = transformer_layer(layer, hidden, keys, values, mask, training=False)
        return torch.stack(kv, 1)

    def prefix(self, item_seq):
        """:meth:`prefix_pass` of ``item_seq``, from the stage's cache for the rows it holds (the
        others are computed and kept while ``prefix_cache_gib`` allows; beyond, per batch)."""
        return self._prefix_store.get(item_seq, self.prefix_pass)

    def suffix(self, task, item_seq, item_seq_len, prefix):
        """The user vector for ``task`` (None = T1), ``[B, d]``, from the ``prefix`` keys and values
        (:meth:`prefix_pass`), running the layers on the last ``w = max(t, 1)`` positions only.

        Exact (up to float rounding, without dropout): with causal attention the state at a position
        depends only on the inputs up to it, and the task adds nothing before the last t items, so at
        every position p < s = max(L - w, 0) of a row of length L each layer's input, and so its keys
        and values, are those of the prompt-free backbone. The suffix positions s..s+w-1 (all of
        0..w-1, some of them padding, when L < w) attend over exactly the keys RecBole's mask lets
        them see: the prefix's at p < s (causal, non-padding) and the suffix's own, causally, where
        the item is not padding. Everything else in a layer is position-wise. The output is read at
        position L - 1, which is in the suffix. Dropout: the suffix keeps it in training; the prefix,
        computed once, has none (the full pass would drop out there too)."""
        n, w = item_seq.size(1), max(self.prompt_length, 1)
        start = (item_seq_len - w).clamp(min=0)
        positions = start.unsqueeze(1) + torch.arange(w, device=item_seq.device)  # < n: w <= n
        items = item_seq.gather(1, positions)
        emb = self.item_embedding(items) + self.position_embedding(positions)
        if task is not None and self.prompt_length > 0:
            emb = emb + self._prompt_at(task, positions, item_seq_len)
        hidden = self.dropout(self.LayerNorm(emb))
        before = (torch.arange(n, device=item_seq.device) < start.unsqueeze(1)) & item_seq.ne(0)  # [B, n]
        causal = torch.ones(w, w, dtype=torch.bool, device=item_seq.device).tril() & items.ne(0).unsqueeze(1)
        visible = torch.cat([before.unsqueeze(1).expand(-1, w, -1), causal], 2)  # [B, w, n + w]
        mask = torch.where(visible, 0.0, -10000.0).unsqueeze(1)  # RecBole's values
        for i, layer in enumerate(self.trm_encoder.layer):
            mha = layer.multi_head_attention
            keys = torch.cat([prefix[:, i, 0].to(hidden.dtype), mha.key(hidden)], 1)
            values = torch.cat([prefix[:, i, 1].to(hidden.dtype), mha.value(hidden)], 1)
            hidden = transformer_layer(layer, hidden, keys, values, mask, self.training)
        return self.gather_indexes(hidden, item_seq_len - 1 - start)

    def forward(self, item_seq, item_seq_len, task=None):
        """The user vector for ``task``. Where :meth:`uses_prefix` allows, through :meth:`suffix`
        from the batch's shared prefix (:meth:`shared_prefix`) or, in a stage (RecBole's calls for
        the active task), from :meth:`prefix`; otherwise the full pass."""
        if self.uses_prefix(task):
            if self._shared is not None and self._shared[0] is item_seq:
                return self.suffix(task, item_seq, item_seq_len, self._shared[1])
            if task is not None and self.active_task is not None:
                return self.suffix(task, item_seq, item_seq_len, self.prefix(item_seq))
        return super().forward(item_seq, item_seq_len, task)

    @contextmanager
    def shared_prefix(self, item_seq):
        """Within, every task's forward on this very ``item_seq`` tensor starts from one prefix pass."""
        self._shared = (item_seq, self.prefix_pass(item_seq))
        try:
            yield
        finally:
            self._shared = None

    def _sharing(self, interaction, tasks):
        """:meth:`shared_prefix` of the batch when two or more of ``tasks`` start from it (for one
        task, its full pass is less work than prefix and suffix)."""
        if sum(self.uses_prefix(task) for task in set(tasks)) < 2:
            return nullcontext()
        return self.shared_prefix(interaction[self.ITEM_SEQ])

    def tasks_logits(self, interaction, tasks):
        with self._sharing(interaction, tasks):
            return super().tasks_logits(interaction, tasks)

    def user_representations(self, interaction, tasks):
        with self._sharing(interaction, tasks):
            return super().user_representations(interaction, tasks)
