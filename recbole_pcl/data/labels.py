"""Downstream labels: which interaction labels each user for a task, and the class of a class task.

A link label is the first interaction of the user's label window that passes the task's filter; its
input is the history strictly before it. Labels about the next click (a field of its item) use the
first interaction of the window. Profile labels (user fields) carry no time: their input is the
user's latest history.
"""

import numpy as np
from recbole.utils import FeatureType


def label_rows(timeline, spec):
    """``(rows, inclusive)``: each user's label row in the sorted table (-1: none), and whether the
    input includes that row (profile labels) or ends right before it."""
    if spec.source == "user_field":
        return timeline.starts + timeline.lengths - 1, True
    ok = np.ones(len(timeline.inter), dtype=bool)
    if spec.interval is not None:
        ok &= spec.interval.contains(timeline.inter[spec.field].to_numpy())
    return timeline.first_reserved(ok), False


def class_labels(dataset, timeline, spec, rows):
    """(class id of each label row, or -1 where it has none; the class names)."""
    if spec.source == "user_field":
        table, key = dataset.user_feat, dataset.uid_field
    else:
        table, key = dataset.item_feat, dataset.iid_field
    keys = timeline.inter[key].to_numpy()[rows]
    values = table.set_index(key)[spec.field].reindex(keys).to_numpy()
    ftype = dataset.field2type[spec.field]
    if ftype == FeatureType.TOKEN_SEQ:  # first token of the sequence, 0 when empty
        values = np.array([int(v[0]) if isinstance(v, np.ndarray) and len(v) else 0 for v in values])
    if spec.bins is not None:
        if ftype == FeatureType.FLOAT:
            raw = values.astype(float)
        else:
            tokens = dataset.id2token(spec.field, values.astype(int))
            raw = np.array([float(t) if t not in ("[PAD]", "") else np.nan for t in tokens])
        bins = spec.bins
        names = [f"<{bins[0]:g}"] + [f"[{a:g},{b:g})" for a, b in zip(bins, bins[1:])] + [f">={bins[-1]:g}"]
        return np.where(np.isnan(raw), -1, np.digitize(np.nan_to_num(raw), bins)), names
    values = np.nan_to_num(values.astype(float), nan=0).astype(int)
    names = [str(t) for t in dataset.field2id_token[spec.field][1:]]
    return values - 1, names  # id 0 is [PAD]: unlabelled
