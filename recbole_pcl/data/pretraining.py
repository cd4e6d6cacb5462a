"""T1, the self-supervised pretraining task: next-item prediction on every interaction before each
user's label window (``pretrain_mode``: in windows of n trained at every position, each user's latest
window only, or RecBole's one sample per prefix), with RecBole's leave-one-out validation and test."""

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_pcl.data.timeline import MIN_T1_LENGTH
from recbole_pcl.utils.errors import PCLError


def cold_items(config, item_num):
    """The item ids kept out of T1 pretraining (``cold_item_share`` of all items, seeded): the
    cold-start setting of the PCL paper's RQ3."""
    share = config["cold_item_share"] or 0.0
    items = np.arange(1, item_num)
    return np.sort(
        items[np.random.default_rng(config["seed"]).permutation(len(items))[: int(round(share * len(items)))]]
    )


def t1_history(timeline, cold):
    """``(rows, last_two)``: the rows of the sorted table T1 may use (each user's interactions before
    the label window, the ``cold`` items excepted) and which of them are each user's last two (T1's
    validation and test targets, by RecBole's leave-one-out)."""
    eligible = timeline.position < timeline.window_start  # T1 never sees the interactions reserved for labels
    if len(cold):
        eligible &= ~np.isin(timeline.items, cold)
    t1_rows = np.flatnonzero(eligible)
    t1_count, t1_rank = _counts_and_ranks(timeline, t1_rows)
    return t1_rows, t1_rank >= t1_count[timeline.user_of(t1_rows)] - 2


def _counts_and_ranks(timeline, t1_rows):
    t1_user = timeline.user_of(t1_rows)
    t1_count = np.bincount(t1_user, minlength=len(timeline.starts))  # W: T1 interactions per user
    return t1_count, np.arange(len(t1_rows)) - np.repeat(np.cumsum(t1_count) - t1_count, t1_count)


def build_t1(config, dataset, timeline, cold):
    """T1's built train/valid/test datasets (RecBole's, from ``dataset``'s copies) and its rows'
    source; the ``cold`` items never enter T1."""
    t1_rows, _ = t1_history(timeline, cold)
    t1_user = timeline.user_of(t1_rows)
    t1_count, t1_rank = _counts_and_ranks(timeline, t1_rows)
    mode = config["pretrain_mode"]
    keep = np.ones(len(t1_rows), dtype=bool)
    if mode in ("causal", "causal_last"):
        # RecBole's leave-one-out gives the valid and test rows from each user's latest n + 3 T1
        # interactions; its prefix augmentation of whole histories is never materialised
        keep = t1_rank >= t1_count[t1_user] - (config["MAX_ITEM_LIST_LENGTH"] + MIN_T1_LENGTH)
    source = dataset.copy(timeline.inter.iloc[t1_rows[keep]].reset_index(drop=True))
    built = source.build()
    if mode == "causal":
        built[0] = _windows(config, dataset, timeline, built[0], t1_rows, t1_count)
    elif mode == "causal_last":
        built[0] = _last_prefix_per_user(built[0])
    empty = [phase for phase, part in zip(("training", "validation", "test"), built) if len(part) == 0]
    if empty:
        raise PCLError(
            f"T1 has no {' and no '.join(empty)} rows: label_window={config['label_window']} reserves all but "
            f"{MIN_T1_LENGTH} interactions of every user for downstream labels, and T1 needs "
            f"{MIN_T1_LENGTH + 1} (a train, a valid and a test target after the first item): lower label_window"
        )
    return source, built


def _windows(config, dataset, timeline, template, t1_rows, t1_count):
    """Every T1 training target of every user, in windows of ``MAX_ITEM_LIST_LENGTH`` items (one
    row each, trained at every position by causal pretraining). A user's T1 history is
    ``x_0 .. x_{W-1}`` (``t1_rows``: the rows of the sorted table T1 may use, ``W`` of them per user);
    ``x_{W-2}`` and ``x_{W-1}`` are the valid and test targets, so the training targets
    ``x_1 .. x_{W-3}`` are covered by rows ending at ``e = W-3, W-3-n, ...``: input
    ``x_{max(0,e-n)} .. x_{e-1}``, last target ``x_e``."""
    n = config["MAX_ITEM_LIST_LENGTH"]
    first = np.cumsum(t1_count) - t1_count  # each user's first position in t1_rows
    rows_per_user = np.where(t1_count >= MIN_T1_LENGTH + 1, -(-(t1_count - MIN_T1_LENGTH) // n), 0)
    user = np.repeat(np.arange(len(t1_count)), rows_per_user)
    back = np.arange(len(user)) - np.repeat(np.cumsum(rows_per_user) - rows_per_user, rows_per_user)
    end = t1_count[user] - MIN_T1_LENGTH - back * n  # e, >= 1
    length = np.minimum(end, n)
    offsets = np.arange(n)
    index = (first[user] + end - length)[:, None] + offsets
    iids = timeline.items[t1_rows]
    seq = np.where(offsets < length[:, None], iids[np.minimum(index, len(iids) - 1)], 0)
    return template.copy(
        Interaction(
            {
                dataset.uid_field: torch.as_tensor(timeline.users[user]),
                template.item_id_list_field: torch.as_tensor(seq),
                template.item_list_length_field: torch.as_tensor(length),
                dataset.iid_field: torch.as_tensor(iids[first[user] + end]),
            }
        )
    )


def _last_prefix_per_user(train):
    """One row per user: the longest (latest) prefix, for all-positions (causal) pretraining."""
    feat = train.inter_feat
    uid = feat[train.uid_field].numpy()
    order = np.lexsort((feat[train.item_list_length_field].numpy(), feat[train.time_field].numpy(), uid))
    last = order[np.r_[uid[order][1:] != uid[order][:-1], True]]
    return train.copy(feat[torch.as_tensor(np.sort(last))])


def t1_summary(built):
    ds = built[0]
    return {
        "kind": "link",
        "labelled users": int(len(np.unique(ds.inter_feat[ds.uid_field].numpy()))),
        "train": len(built[0]),
        "valid": len(built[1]),
        "test": len(built[2]),
        "labels": int(len(np.unique(ds.inter_feat[ds.iid_field].numpy()))),
    }
