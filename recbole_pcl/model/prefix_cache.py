"""A bounded store of per-row tensors keyed by each row's item sequence (PCL's prompt-free prefix).

RecBole's trainer and evaluator hand the model batches, never row ids: a row is found again by its
item sequence. Each sequence is hashed to 64 bits (a polynomial in its item ids, wrapping in int64),
looked up in the sorted hashes with ``torch.searchsorted`` and verified against the stored sequence,
so a hash collision costs a recomputation, never a wrong row.
"""

import torch

_BASE = 0x9E3779B97F4A7C15  # odd: the powers are distinct modulo 2^64


def _signed(x):
    return x - 2**64 if x >= 2**63 else x


def sequence_hash(seqs):
    """A 64-bit hash of each row of ``seqs`` ``[B, n]``: a polynomial in its item ids (int64 arithmetic
    wraps, so it is the polynomial modulo 2^64). Equal rows hash equal; a collision is rare and every
    user of it checks the rows themselves."""
    n = seqs.size(1)
    powers = torch.tensor([_signed(pow(_BASE, i, 2**64)) for i in range(n)], dtype=torch.long)
    return (seqs * powers.to(seqs.device)).sum(1)


def distinct_rows(seqs):
    """``(first, inverse)``: the index of one row of each distinct sequence in ``seqs``, and each row's
    distinct sequence, found by sorting the rows' hashes (not the rows). Sampled ranking repeats every
    user's row for each candidate (RecBole tiles the batch), so a batch holds few distinct rows."""
    keys, inverse = torch.unique(sequence_hash(seqs), return_inverse=True)
    first = torch.empty(len(keys), dtype=torch.long, device=seqs.device)
    first.scatter_(0, inverse, torch.arange(len(seqs), device=seqs.device))
    if not torch.equal(seqs[first][inverse], seqs):  # a hash collision: group by the rows themselves
        _, inverse = torch.unique(seqs, dim=0, return_inverse=True)
        first = torch.empty(int(inverse.max()) + 1, dtype=torch.long, device=seqs.device)
        first.scatter_(0, inverse, torch.arange(len(seqs), device=seqs.device))
    return first, inverse


class PrefixCache:
    """``compute(sequences)``'s output for every row seen, up to ``max_bytes`` of storage; rows that
    do not fit are computed again each time. Not a module: nothing of it is saved or moved by ``.to``
    (it empties itself when asked for rows on another device)."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.clear()

    def clear(self):
        self.size = 0
        self.seqs = self.values = self.keys = None  # storage: [capacity, n], [capacity, ...], [capacity]
        self.sorted_keys = self.order = None  # the index: keys[:size] sorted, and their slots

    def hash(self, seqs):
        return sequence_hash(seqs)

    def find(self, seqs, keys):
        """``(hit, slot)``: which rows are stored, and where."""
        if self.size == 0:
            return torch.zeros_like(keys, dtype=torch.bool), None
        pos = torch.searchsorted(self.sorted_keys, keys).clamp(max=self.size - 1)
        slot = self.order[pos]
        hit = (self.sorted_keys[pos] == keys) & (self.seqs[slot] == seqs).all(1)
        return hit, slot

    def get(self, seqs, compute):
        """``compute(seqs)``, from storage for the rows it holds; the others are computed once per
        distinct row and stored while there is room."""
        if self.size and self.seqs.device != seqs.device:
            self.clear()
        hit, slot = self.find(seqs, self.hash(seqs))
        if self.size and bool(hit.all()):
            return self.values[slot]
        miss = ~hit
        new_seqs, inverse = torch.unique(seqs[miss], dim=0, return_inverse=True)
        new = compute(new_seqs)
        out = new.new_empty((len(seqs), *new.shape[1:]))
        out[miss] = new[inverse]
        if bool(hit.any()):
            out[hit] = self.values[slot[hit]].to(out.dtype)
        self.add(new_seqs, new)
        return out

    def add(self, seqs, values):
        keys = self.hash(seqs)
        if self.size:  # a taken hash is a collision (stored rows are found first): keep the stored row
            fresh = ~torch.isin(keys, self.keys[: self.size])
            seqs, values, keys = seqs[fresh], values[fresh], keys[fresh]
        if len(seqs) == 0:
            return
        row_bytes = values[0].numel() * values.element_size() + seqs[0].numel() * seqs.element_size() + 8
        room = int(self.max_bytes // row_bytes) - self.size
        if room <= 0:
            return
        seqs, values, keys = seqs[:room], values[:room], keys[:room]
        end = self.size + len(seqs)
        if self.seqs is None or end > len(self.seqs):  # grow by doubling, within the bound
            capacity = min(max(end, 2 * self.size), self.size + room)
            old = self.storage
            self.seqs, self.values, self.keys = (t.new_empty((capacity, *t.shape[1:])) for t in (seqs, values, keys))
            if self.size:
                for kept, grown in zip(old, self.storage):
                    grown[: self.size] = kept[: self.size]
        self.seqs[self.size : end], self.values[self.size : end], self.keys[self.size : end] = seqs, values, keys
        self.size = end
        self.sorted_keys, self.order = torch.sort(self.keys[:end])

    @property
    def storage(self):
        return self.seqs, self.values, self.keys
