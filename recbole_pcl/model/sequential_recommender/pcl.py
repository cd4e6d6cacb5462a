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
import torch.nn.functional as F
from torch import nn

from recbole.model.sequential_recommender.sasrec import SASRec
from recbole_pcl.utils.errors import PCLError


class PCL(SASRec):
    # Stage 0 is plain SASRec pretraining, shared with every method that declares the same; these
    # settings are read by the downstream stages only (see recbole_pcl.pipeline.identity).
    pretraining = "SASRec"
    downstream_settings = (
        "prompt_length", "context_lambda", "contextual_prompt", "context_heads", "context_text_dim",
        "text_encoder", "adapter", "prompt_init",
    )

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._backbone_keys = list(self.state_dict())  # what SASRec has is the backbone (stage 0)
        self.prompt_length = config["prompt_length"]  # t
        self.context_lambda = config["context_lambda"]
        self.contextual_prompt = config["contextual_prompt"]  # lm | random | none
        self.adapter_type = config["adapter"]
        self.prompt_init = config["prompt_init"]  # previous | random
        self.pretrain_mode = config["pretrain_mode"]  # causal | prefix
        if self.pretrain_mode == "causal" and self.loss_type != "CE":
            raise PCLError("pretrain_mode=causal trains every position with cross-entropy: set loss_type=CE")
        self.LABEL = config["LABEL_FIELD"]

        self.prompts = nn.ParameterDict()  # task -> [n, d] position-wise prompt
        self.adapters = nn.ModuleDict()  # class task -> head
        self.attributes = nn.ModuleDict()  # task -> attribute-value embedding
        self.frozen_context = nn.ParameterDict()  # task -> its contextual prompt, frozen when it ends
        self.finished = set()  # tasks whose stage has ended: they use frozen_context
        self.task_kind = {}
        self.active_task = None  # None = T1 (plain SASRec)
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

    # ----- the continual protocol (used by recbole_pcl.pipeline) -----------------------------------
    def set_task_texts(self, names, embeddings):
        """Encoded descriptions of the run's tasks in order, ``E_T`` (``[|T|, context_text_dim]``)."""
        self.task_names = list(names)
        self.task_text = embeddings.to(self.item_embedding.weight.device)

    def add_task(self, name, kind, num_classes=0, attribute=None):
        """Create task ``name``'s prompt, adapter and attribute embedding; :meth:`begin_task`
        initialises them (under the stage's seed)."""
        self.task_kind[name] = kind
        self.prompts[name] = nn.Parameter(torch.zeros(self.max_seq_length, self.hidden_size))
        if self.uses_context:
            self.frozen_context[name] = nn.Parameter(torch.zeros(self.hidden_size), requires_grad=False)
        if kind == "class":
            d = self.hidden_size
            self.adapters[name] = (
                nn.Linear(d, num_classes)
                if self.adapter_type == "linear"
                else nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(self.hidden_dropout_prob), nn.Linear(d, num_classes))
            )
        if attribute is not None:
            if self._item_features is None or attribute not in self._item_features:
                raise PCLError(f"task '{name}': attribute field '{attribute}' is not an item feature")
            values = self._item_features[attribute]
            # item id -> attribute ids, kept on the model's device (not saved: derived from the data)
            self.register_buffer(f"attribute_of_item_{name}", values.to(self.item_embedding.weight.device), persistent=False)
            self.attributes[name] = nn.Embedding(int(values.max()) + 1, self.hidden_size, padding_idx=0)

    def begin_task(self, name, train_all=False):
        """Prepare tuning of ``name`` (None = T1 pretraining): initialise its parameters and choose
        which learn. ``train_all`` trains everything (a model learning ``name`` from scratch)."""
        self.active_task = name
        if name is not None:
            self._init_task(name)
        train = self.backbone_parameters() if name is None else self.task_parameters(name)
        if train_all:
            train = list(train) + list(self.backbone_parameters())
        for p in self.parameters():
            p.requires_grad_(False)
        for p in train:
            p.requires_grad_(True)

    def _init_task(self, name):
        with torch.no_grad():
            if self.prompt_init == "previous" and self.last_prompted is not None:
                self.prompts[name].copy_(self.prompts[self.last_prompted])
            else:
                self.prompts[name].normal_(0.0, self.initializer_range)
        for modules in (self.adapters, self.attributes):
            if name in modules:
                modules[name].apply(self._init_weights)
        if self.uses_context and not self.finished:
            self._new_context()

    def backbone_parameters(self):
        named = dict(self.named_parameters())
        return [named[k] for k in self._backbone_keys if k in named]

    def task_parameters(self, name):
        """The parameters tuned for task ``name`` (backbone and item embeddings stay frozen)."""
        params = [self.prompts[name]] if self.prompt_length > 0 else []
        for modules in (self.adapters, self.attributes):
            if name in modules:
                params += list(modules[name].parameters())
        if self.uses_context:
            params += list(self.context_proj.parameters()) + list(self.context_attn.parameters())
        return params

    def end_task(self, name):
        """Freeze what task ``name`` learned, so later tasks cannot change its predictions."""
        if name is not None:
            if self.uses_context:
                with torch.no_grad():
                    self.frozen_context[name].copy_(self._live_context(name))
            self.finished.add(name)
            self.last_prompted = name
        for p in self.parameters():
            p.requires_grad_(False)
        self.active_task = None

    def stage_state(self, name):
        """What stage ``name`` wrote (None = T1: the backbone): its task's tensors and the shared
        attention it leaves to the next task."""
        state = self.state_dict()
        if name is None:
            return {k: state[k] for k in self._backbone_keys}
        prefixes = [f"prompts.{name}", f"adapters.{name}.", f"attributes.{name}.", f"frozen_context.{name}"]
        if self.uses_context:
            prefixes += ["context_proj.", "context_attn."]
        return {k: v for k, v in state.items() if k.startswith(tuple(prefixes))}

    # ----- prompts ------------------------------------------------------------------------------
    def _live_context(self, name):
        """Row ``name`` of ``P_T = MHA(E_T W)`` (Eq. 2) over the tasks learned up to ``name``."""
        k = self.task_names.index(name)
        e = self.context_proj(self.task_text[: k + 1]).unsqueeze(0)  # [1, k + 1, d]
        p_t, _ = self.context_attn(e, e, e, need_weights=False)
        return p_t[0, k]

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

    # ----- backbone -----------------------------------------------------------------------------
    def encode(self, item_seq, item_seq_len, task=None):
        """Transformer output at every position, ``[B, n, d]``; ``task`` None = T1 (no prompts)."""
        position_ids = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0).expand_as(item_seq)
        emb = self.item_embedding(item_seq)
        if task is not None:
            emb = emb + self.task_input(task, item_seq, item_seq_len)
        x = self.dropout(self.LayerNorm(emb + self.position_embedding(position_ids)))
        return self.trm_encoder(x, self.get_attention_mask(item_seq), output_all_encoded_layers=True)[-1]

    def forward(self, item_seq, item_seq_len, task=None):
        """The user representation for ``task``: the output at the last item, ``[B, d]``."""
        return self.gather_indexes(self.encode(item_seq, item_seq_len, task), item_seq_len - 1)

    def user_representation(self, interaction, task=None):
        return self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], task)

    # ----- RecBole's model API, for the active task ---------------------------------------------
    def calculate_loss(self, interaction):
        task = self.active_task
        if task is None and self.pretrain_mode == "causal":
            return self._causal_loss(interaction)
        if task is not None and self.task_kind[task] == "class":
            return F.cross_entropy(self.task_logits(interaction, task), interaction[self.LABEL])
        seq_output = self.user_representation(interaction, task)
        pos_items = interaction[self.POS_ITEM_ID]
        if self.loss_type == "BPR":
            neg_items = interaction[self.NEG_ITEM_ID]
            pos = (seq_output * self.item_embedding(pos_items)).sum(-1)
            neg = (seq_output * self.item_embedding(neg_items)).sum(-1)
            return self.loss_fct(pos, neg)
        return self.loss_fct(seq_output @ self.item_embedding.weight.T, pos_items)

    def _causal_loss(self, interaction):
        """Next-item cross-entropy at every position of each sequence (original SASRec training)."""
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        output = self.encode(item_seq, item_seq_len)
        targets = torch.cat([item_seq[:, 1:], torch.zeros_like(item_seq[:, :1])], dim=1)
        targets = targets.scatter(1, (item_seq_len - 1).unsqueeze(1), interaction[self.POS_ITEM_ID].unsqueeze(1))
        valid = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0) < item_seq_len.unsqueeze(1)
        logits = output[valid] @ self.item_embedding.weight.T
        return self.loss_fct(logits, targets[valid])

    def task_logits(self, interaction, task=None):
        """Scores of ``task``: over all items (link tasks) or over its classes (class tasks)."""
        seq_output = self.user_representation(interaction, task)
        if task is not None and self.task_kind[task] == "class":
            return self.adapters[task](seq_output)
        return seq_output @ self.item_embedding.weight.T

    def predict(self, interaction):
        task = self.active_task
        if task is not None and self.task_kind[task] == "class":
            return self.task_logits(interaction, task).argmax(-1).float()  # class id, read by Accuracy
        # sampled ranking repeats each user's sequence for every candidate: encode each sequence once
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        unique_seq, inverse = torch.unique(item_seq, dim=0, return_inverse=True)
        first = torch.empty(len(unique_seq), dtype=torch.long, device=item_seq.device)
        first.scatter_(0, inverse, torch.arange(len(item_seq), device=item_seq.device))
        seq_output = self.forward(unique_seq, item_seq_len[first], task)[inverse]
        return (seq_output * self.item_embedding(interaction[self.ITEM_ID])).sum(-1)

    def full_sort_predict(self, interaction):
        return self.task_logits(interaction, self.active_task)
