"""The SASRec of the joint methods (MTL, MMoE and their MGDA variants), encoded in one batched pass.

:func:`encode_stacked` runs several RecBole ``TransformerEncoder`` s of the same shape on one input
as a single pass: each layer's weights are stacked over the encoders at every call (the modules and
their state-dict keys stay as RecBole has them) and applied with batched matrix products, instead of
one encoder after another. Two more savings, neither of which changes a result beyond float rounding:

* the query, key and value projections are one product, and the feed-forward activation is torch's
  fused kernel of the same function (RecBole composes ``gelu`` and ``swish`` from five and two
  elementwise operations);
* where only the output at one position of each sequence is wanted (every user vector: the
  downstream tasks, evaluation), the last layer computes that position only. The encoder is causal:
  the last layer's other positions reach no output there; the keys and values of all positions
  still enter its attention.

Dropout draws the very same masks as the encoders run one after another (the same shapes in the same
order from the same generator, drawn before the pass), so training follows the same random stream
as RecBole's modules would, and the results are theirs up to float rounding (tests/test_methods.py).
That holds on the CPU, where torch's dropout is this ``bernoulli_``; CUDA's fused dropout kernel
draws its masks differently, so there the masks only have the same distribution.
"""

import torch
import torch.nn.functional as F

from recbole_pcl.model.abstract_recommender import JointRecommender, TaskSASRec

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "swish": F.silu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def _draw_masks(layers, batch, length, device):
    """Every dropout factor of a training pass: per depth, ``(attention, output, feed-forward)``, each
    ``[E, ...]`` over the encoders, or None where its p is 0. A factor is what RecBole's
    ``nn.Dropout(p)`` multiplies by on the CPU: ``bernoulli_(1 - p)`` into a tensor of the input's
    shape, divided by ``1 - p``. They are drawn in the order of the encoders run one after another
    (encoder by encoder, layer by layer: attention probabilities, attention output, feed-forward
    output), each into its own slice. The p are the first encoder's (the experts are copies)."""
    factors = []
    for layer in layers:
        attention, feed_forward = layer[0].multi_head_attention, layer[0].feed_forward
        shapes = [
            (batch, attention.num_attention_heads, length, length),
            (batch, length, attention.all_head_size),
            (batch, length, attention.all_head_size),
        ]
        ps = [attention.attn_dropout.p, attention.out_dropout.p, feed_forward.dropout.p]
        factors.append([(torch.empty((len(layer),) + shape, device=device), p) for shape, p in zip(shapes, ps)])
    for e in range(len(layers[0])):
        for depth in range(len(layers)):
            for buffer, p in factors[depth]:
                if 0 < p < 1:
                    buffer[e].bernoulli_(1 - p)
    return [
        tuple(None if p <= 0 else buffer.zero_() if p >= 1 else buffer.div_(1 - p) for buffer, p in depth)
        for depth in factors
    ]


def _linear(x, modules, part=None):
    """``x @ W_e^T + b_e`` for each encoder e, ``[E, rows, out]``: ``x`` is ``[E, rows, in]``, or
    ``[rows, in]`` shared by every encoder (one product with their weights side by side); ``modules``
    the encoders' ``nn.Linear`` (or tuples of them, applied as one); ``part`` a slice of the outputs."""
    groups = [m if isinstance(m, tuple) else (m,) for m in modules]
    weight = torch.stack([torch.cat([m.weight for m in g]) for g in groups])
    bias = torch.stack([torch.cat([m.bias for m in g]) for g in groups])
    if part is not None:
        weight, bias = weight[:, part], bias[:, part]
    if x.dim() == 2:
        out = torch.addmm(bias.reshape(-1), x, weight.reshape(-1, weight.size(-1)).T)
        return out.view(x.size(0), len(groups), -1).transpose(0, 1)
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _layer_norm(x, modules):
    """Each encoder's ``nn.LayerNorm`` on its slice of ``x`` (``[E, ..., d]``)."""
    weight = torch.stack([m.weight for m in modules])
    bias = torch.stack([m.bias for m in modules])
    shape = (len(modules),) + (1,) * (x.dim() - 2) + (x.size(-1),)
    normed = F.layer_norm(x, x.shape[-1:], eps=modules[0].eps)
    return torch.addcmul(bias.view(shape), normed, weight.view(shape))


def encode_stacked(encoders, hidden, attention_mask, hidden_act, last=None):
    """The outputs of RecBole ``TransformerEncoder`` s ``encoders`` (one shape) on the same input
    ``hidden`` ``[B, n, d]`` with ``attention_mask`` ``[B, 1, n, n]``: ``[E, B, n, d]``, as
    ``torch.stack([e(hidden, attention_mask)[-1] for e in encoders])``; or, given positions ``last``
    ``[B]``, only the output at ``last[b]`` of each row, ``[E, B, d]``."""
    layers = [list(group) for group in zip(*(encoder.layer for encoder in encoders))]  # [depth][encoder]
    batch, length, size = hidden.shape
    count = len(encoders)
    masks = _draw_masks(layers, batch, length, hidden.device) if encoders[0].training else None
    act = ACTIVATIONS[hidden_act]
    rows = torch.arange(batch, device=hidden.device)
    x = hidden  # [B, n, d], the same for every encoder until the first layer's output [E, B, n, d]
    for depth, layer in enumerate(layers):
        attention = [m.multi_head_attention for m in layer]
        feed_forward = [m.feed_forward for m in layer]
        heads, head_size = attention[0].num_attention_heads, attention[0].attention_head_size
        attn_noise, out_noise, ffn_noise = masks[depth] if masks else (None, None, None)
        projections = [(a.query, a.key, a.value) for a in attention]
        shared = x.dim() == 3
        inputs = x.reshape(batch * length, size) if shared else x.reshape(count, batch * length, size)
        if last is not None and depth == len(layers) - 1:
            # one query per row: its position's input, mask row and dropout factors
            residual = x[rows, last] if shared else x[:, rows, last]  # [(E,) B, d]
            query = _linear(residual, projections, slice(0, size)).unflatten(-1, (heads, head_size)).unsqueeze(2)
            key, value = (
                _linear(inputs, projections, slice(size, 3 * size))
                .unflatten(1, (batch, length))
                .unflatten(-1, (2, heads, head_size))
                .unbind(3)
            )
            residual = residual.unsqueeze(-2)
            mask = attention_mask[rows, 0, last][:, None, None, :]  # [B, 1, 1, n]
            if attn_noise is not None:
                attn_noise = attn_noise.transpose(2, 3)[:, rows, last].unsqueeze(3)  # [E, B, h, 1, n]
            out_noise, ffn_noise = (
                None if t is None else t[:, rows, last].unsqueeze(2) for t in (out_noise, ffn_noise)
            )
            queries = 1
        else:
            residual, mask, queries = x, attention_mask, length
            query, key, value = (
                _linear(inputs, projections)
                .unflatten(1, (batch, length))
                .unflatten(-1, (3, heads, head_size))
                .unbind(3)
            )
        # RecBole's MultiHeadAttention, operation for operation
        scores = torch.matmul(query.permute(0, 1, 3, 2, 4), key.permute(0, 1, 3, 4, 2))  # [E, B, h, q, n]
        scores = scores / attention[0].sqrt_attention_head_size
        probs = torch.softmax(scores + mask, dim=-1)
        if attn_noise is not None:
            probs = probs * attn_noise
        context = torch.matmul(probs, value.permute(0, 1, 3, 2, 4)).permute(0, 1, 3, 2, 4)  # [E, B, q, h, dh]
        context = context.reshape(count, batch * queries, size)
        out = _linear(context, [a.dense for a in attention]).view(count, batch, queries, size)
        if out_noise is not None:
            out = out * out_noise
        out = _layer_norm(out + residual, [a.LayerNorm for a in attention])
        # RecBole's FeedForward
        inner = act(_linear(out.reshape(count, batch * queries, size), [f.dense_1 for f in feed_forward]))
        ffn = _linear(inner, [f.dense_2 for f in feed_forward]).view(count, batch, queries, size)
        if ffn_noise is not None:
            ffn = ffn * ffn_noise
        x = _layer_norm(ffn + out, [f.LayerNorm for f in feed_forward])
    return x.squeeze(2) if last is not None else x.expand(count, batch, length, size)


class JointSASRec(TaskSASRec, JointRecommender):
    """:class:`TaskSASRec` whose encoders (:meth:`encoders`) run in one batched pass
    (:func:`encode_stacked`) and whose outputs :meth:`mix` combines into each task's states. A user
    vector (:meth:`forward`) computes the last layer at the last item only."""

    link_heads = True

    def encoders(self):
        """The RecBole ``TransformerEncoder`` s every task's input runs through."""
        return [self.trm_encoder]

    def mix(self, outputs, items, item_seq, task):
        """Task ``task``'s states from the encoders' ``outputs`` ``[E, B, (n,) d]`` (``items``: the
        input item embeddings)."""
        return outputs[0]

    def encode(self, item_seq, item_seq_len, task=None, last=None):
        """Encoder output at every position, ``[B, n, d]``; or at position ``last[b]`` of each row, ``[B, d]``."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0).expand_as(item_seq)
        items = self.item_embedding(item_seq)
        hidden = self.dropout(self.LayerNorm(items + self.position_embedding(positions)))
        outputs = encode_stacked(self.encoders(), hidden, self.get_attention_mask(item_seq), self.hidden_act, last=last)
        return self.mix(outputs, items, item_seq, task)

    def forward(self, item_seq, item_seq_len, task=None):
        return self.encode(item_seq, item_seq_len, task, last=item_seq_len - 1)
