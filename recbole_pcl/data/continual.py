"""Continual task data: T1 and every downstream task of a dataset on one RecBole id mapping.

Splits (leakage-free by construction; ``tests/test_tasks.py`` checks each property):
  * Each user's last ``label_window`` interactions (never more than all but 3) are reserved for
    downstream labels. T1 (next-item pretraining) sees only the interactions before them and uses
    RecBole's leave-one-out by time, so no downstream label was ever a T1 training target.
  * A link label is the first reserved interaction that passes the task's filter; its input is the
    user's history strictly before it (last ``MAX_ITEM_LIST_LENGTH`` items). Labels about the next
    click (its item's field) use the first reserved interaction. Profile labels (user fields) carry
    no time; their input is the user's latest history.
  * Labelled users are split once into train/valid/test by ``task_split`` with ``seed``; the same
    split holds for every downstream task, so a test user's labels are never trained on, in any task.
"""

import copy
import os
from dataclasses import dataclass
from logging import getLogger

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.utils import EvaluatorType, FeatureType
from tabulate import tabulate

from recbole_pcl.data.builders import prepare_dataset
from recbole_pcl.data.tasks import TaskSpec, parse_tasks, valid_metric
from recbole_pcl.data.utils import build_dataloaders, check_dataset_files, load_dataset
from recbole_pcl.utils.errors import PCLError

MIN_T1_LENGTH = 3  # leave-one-out needs a train, a valid and a test target


@dataclass
class TaskData:
    spec: TaskSpec
    index: int
    train: object  # RecBole dataloaders
    valid: object
    test: object
    config: object  # the task's Config view (metrics, eval mode, label field)
    classes: list[str] | None = None  # class tasks: label names, index = class id
    summary: dict | None = None

    @property
    def num_classes(self):
        return len(self.classes) if self.classes is not None else 0


def _ensure_loaded(config, source, fields):
    load_col = config["load_col"]
    if load_col is None or not fields:
        return
    cols = load_col.setdefault(source, [config["USER_ID_FIELD"]] if source == "user" else [config["ITEM_ID_FIELD"]])
    cols += [f for f in fields if f not in cols]


def prepare_config(config, tasks):
    """Load the columns the tasks need (RecBole's ml-100k yaml loads only four inter columns) and keep
    raw values: labels compare ratings with thresholds, so no normalisation."""
    _ensure_loaded(
        config, "inter", [config["TIME_FIELD"]] + [t.field for t in tasks if t.source == "next_item" and t.field]
    )
    _ensure_loaded(
        config,
        "item",
        [t.field for t in tasks if t.source == "next_item_field"] + [t.attribute for t in tasks if t.attribute],
    )
    _ensure_loaded(config, "user", [t.field for t in tasks if t.source == "user_field"])
    config["normalize_all"] = False
    config["normalize_field"] = None


def task_config(config, spec):
    """A copy of ``config`` set up for evaluating ``spec`` through RecBole's evaluator."""
    tc = copy.deepcopy(config)
    tc["eval_args"] = dict(tc["eval_args"])
    if spec.is_link:
        tc["metrics"] = list(config["link_metrics"])
        tc["topk"] = list(config["link_topk"])
        tc["valid_metric"] = valid_metric(spec.kind, config)
        tc["eval_type"] = EvaluatorType.RANKING
        mode = config["task_eval_mode"]
    else:
        tc["metrics"] = ["Accuracy"]
        tc["valid_metric"] = "accuracy"
        tc["eval_type"] = EvaluatorType.VALUE
        tc["train_neg_sample_args"] = None  # cross-entropy over classes: no sampled items
        tc._set_train_neg_sample_args()
        mode = "labeled"
    tc["eval_args"]["mode"] = {"valid": mode, "test": mode}
    tc["valid_metric_bigger"] = True
    tc._set_eval_neg_sample_args("valid")
    tc._set_eval_neg_sample_args("test")
    return tc


def task_sequence(config):
    """The dataset's task specs, after building its atomic files from raw input (where its yaml says
    so) and checking that they hold what the tasks need: cheap checks, before any loading."""
    prepare_dataset(config)
    try:
        specs = parse_tasks(config["tasks"])
    except PCLError:
        check_dataset_files(config)  # an unknown dataset, not its (absent) tasks, is the cause
        raise
    prepare_config(config, specs)
    inter_fields = ["USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD"]
    check_dataset_files(config, inter_fields + [s.field for s in specs if s.source == "next_item" and s.field])
    return specs


def cold_items(config, item_num):
    """The item ids kept out of T1 pretraining (``cold_item_share`` of all items, seeded): the
    cold-start setting of the PCL paper's RQ3."""
    share = config["cold_item_share"] or 0.0
    items = np.arange(1, item_num)
    return np.sort(
        items[np.random.default_rng(config["seed"]).permutation(len(items))[: int(round(share * len(items)))]]
    )


class ContinualData:
    """Loads a dataset once and derives T1 and the downstream tasks from it.

    Attributes:
        tasks (list of TaskData): T1 first (its dataloaders are RecBole's leave-one-out ones).
        dataset: the RecBole dataset that holds the id mapping (``field2id_token``) of every task.
    """

    def __init__(self, config, specs=None):
        self.logger = getLogger()
        specs = specs or task_sequence(config)
        self.config = config
        full = load_dataset(config)
        self._check_fields(full, specs)
        self.dataset = full
        inter = full.inter_feat.sort_values([full.uid_field, full.time_field], kind="stable").reset_index(drop=True)
        uid = inter[full.uid_field].to_numpy()
        starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]])
        lengths = np.diff(np.r_[starts, len(uid)])
        pos = np.arange(len(uid)) - np.repeat(starts, lengths)
        reserve = np.clip(lengths - MIN_T1_LENGTH, 0, config["label_window"])
        window_start = np.repeat(lengths - reserve, lengths)
        self._inter, self._pos, self._window_start = inter, pos, window_start
        self._starts, self._lengths, self._users = starts, lengths, uid[starts]

        t1_config = task_config(config, specs[0])
        eligible = pos < window_start  # T1 never sees the interactions reserved for labels
        self.cold_items = cold_items(config, full.item_num)
        if len(self.cold_items):  # cold-start items: kept out of T1 pretraining altogether
            eligible &= ~np.isin(inter[full.iid_field].to_numpy(), self.cold_items)
        t1_rows = np.flatnonzero(eligible)
        t1_user = np.searchsorted(starts, t1_rows, side="right") - 1  # user index of each T1 row
        t1_count = np.bincount(t1_user, minlength=len(starts))  # W: T1 interactions per user
        t1_rank = np.arange(len(t1_rows)) - np.repeat(np.cumsum(t1_count) - t1_count, t1_count)
        mode = config["pretrain_mode"]
        keep = np.ones(len(t1_rows), dtype=bool)
        if mode in ("causal", "causal_last"):
            # RecBole's leave-one-out gives the valid and test rows from each user's latest n + 3 T1
            # interactions; its prefix augmentation of whole histories is never materialised
            keep = t1_rank >= t1_count[t1_user] - (config["MAX_ITEM_LIST_LENGTH"] + MIN_T1_LENGTH)
        t1_source = full.copy(inter.iloc[t1_rows[keep]].reset_index(drop=True))
        built = t1_source.build()
        if mode == "causal":
            built[0] = self._t1_windows(built[0], t1_rows, t1_count)
        elif mode == "causal_last":
            built[0] = self._last_prefix_per_user(built[0])
        empty = [phase for phase, part in zip(("training", "validation", "test"), built) if len(part) == 0]
        if empty:
            raise PCLError(
                f"T1 has no {' and no '.join(empty)} rows: label_window={config['label_window']} reserves all but "
                f"{MIN_T1_LENGTH} interactions of every user for downstream labels, and T1 needs "
                f"{MIN_T1_LENGTH + 1} (a train, a valid and a test target after the first item): lower label_window"
            )
        t1 = TaskData(specs[0], 0, *build_dataloaders(t1_config, t1_source, built), t1_config)
        t1.summary = self._t1_summary(built)
        self._template = built[0]  # a built dataset: its copies carry downstream rows
        self.split = self._split_users(config)
        self.tasks = [t1] + [self._downstream(spec, k) for k, spec in enumerate(specs) if k > 0]
        self.logger.info("\n" + self.summary_table())

    def _t1_windows(self, template, t1_rows, t1_count):
        """Every T1 training target of every user, in windows of ``MAX_ITEM_LIST_LENGTH`` items (one
        row each, trained at every position by causal pretraining). A user's T1 history is
        ``x_0 .. x_{W-1}`` (``t1_rows``: the rows of the sorted table T1 may use, ``W`` of them per user);
        ``x_{W-2}`` and ``x_{W-1}`` are the valid and test targets, so the training targets
        ``x_1 .. x_{W-3}`` are covered by rows ending at ``e = W-3, W-3-n, ...``: input
        ``x_{max(0,e-n)} .. x_{e-1}``, last target ``x_e``."""
        n = self.config["MAX_ITEM_LIST_LENGTH"]
        first = np.cumsum(t1_count) - t1_count  # each user's first position in t1_rows
        rows_per_user = np.where(t1_count >= MIN_T1_LENGTH + 1, -(-(t1_count - MIN_T1_LENGTH) // n), 0)
        user = np.repeat(np.arange(len(t1_count)), rows_per_user)
        back = np.arange(len(user)) - np.repeat(np.cumsum(rows_per_user) - rows_per_user, rows_per_user)
        end = t1_count[user] - MIN_T1_LENGTH - back * n  # e, >= 1
        length = np.minimum(end, n)
        offsets = np.arange(n)
        index = (first[user] + end - length)[:, None] + offsets
        iids = self._inter[self.dataset.iid_field].to_numpy()[t1_rows]
        seq = np.where(offsets < length[:, None], iids[np.minimum(index, len(iids) - 1)], 0)
        return template.copy(
            Interaction(
                {
                    self.dataset.uid_field: torch.as_tensor(self._users[user]),
                    template.item_id_list_field: torch.as_tensor(seq),
                    template.item_list_length_field: torch.as_tensor(length),
                    self.dataset.iid_field: torch.as_tensor(iids[first[user] + end]),
                }
            )
        )

    @staticmethod
    def _last_prefix_per_user(train):
        """One row per user: the longest (latest) prefix, for all-positions (causal) pretraining."""
        feat = train.inter_feat
        uid = feat[train.uid_field].numpy()
        order = np.lexsort((feat[train.item_list_length_field].numpy(), feat[train.time_field].numpy(), uid))
        last = order[np.r_[uid[order][1:] != uid[order][:-1], True]]
        return train.copy(feat[torch.as_tensor(np.sort(last))])

    # ----- checks -----------------------------------------------------------------------------
    def _check_fields(self, ds, specs):
        base = os.path.join(self.config["data_path"], self.config["dataset"])
        tables = {"inter": ds.inter_feat, "item": ds.item_feat, "user": ds.user_feat}
        for spec in specs:
            needs = []
            if spec.source == "next_item" and spec.field:
                needs.append(("inter", spec.field))
            if spec.source == "next_item_field":
                needs.append(("item", spec.field))
            if spec.source == "user_field":
                needs.append(("user", spec.field))
            if spec.attribute:
                needs.append(("item", spec.attribute))
            for suffix, fld in needs:
                table = tables[suffix]
                if table is None or fld not in table.columns:
                    raise PCLError(f"task '{spec.name}': label field '{fld}' not found in {base}.{suffix}")
                if (
                    suffix != "inter"
                    and ds.field2type[fld] not in (FeatureType.TOKEN, FeatureType.TOKEN_SEQ)
                    and not (spec.bins and ds.field2type[fld] == FeatureType.FLOAT)
                ):
                    raise PCLError(
                        f"task '{spec.name}': field '{fld}' in {base}.{suffix} must be a token (or float with bins)"
                    )

    # ----- split ------------------------------------------------------------------------------
    def _split_users(self, config):
        """Labelled users into train/valid/test: by ``task_split``, or (``fold`` set) fold ``fold`` of
        ``n_folds`` as the test set and validation users drawn from the other folds (the valid share
        of ``task_split``), so that over all folds every labelled user is tested exactly once."""
        ratios = np.asarray(config["task_split"], dtype=float)
        users = self._users[self._lengths > MIN_T1_LENGTH]
        users = users[np.random.default_rng(config["seed"]).permutation(len(users))]
        if config["fold"] is None:
            cuts = np.floor(np.cumsum(ratios / ratios.sum())[:2] * len(users)).astype(int)
            return dict(zip(("train", "valid", "test"), np.split(users, cuts)))
        folds = np.array_split(users, config["n_folds"])
        rest = np.concatenate([f for i, f in enumerate(folds) if i != config["fold"]])
        n_valid = int(round(len(rest) * ratios[1] / (ratios[0] + ratios[1])))
        return {"train": rest[n_valid:], "valid": rest[:n_valid], "test": folds[config["fold"]]}

    # ----- labels -----------------------------------------------------------------------------
    def _label_positions(self, spec):
        """Row index (into the sorted inter table) of each user's label interaction, or -1."""
        if spec.source == "user_field":
            return self._starts + self._lengths - 1, True  # input: the latest history, label: profile
        ok = self._pos >= self._window_start
        if spec.interval is not None:
            ok &= spec.interval.contains(self._inter[spec.field].to_numpy())
        rows = np.flatnonzero(ok)
        users_of_rows = np.searchsorted(self._starts, rows, side="right") - 1
        first = np.full(len(self._starts), -1)
        first_rows = np.unique(users_of_rows, return_index=True)
        first[first_rows[0]] = rows[first_rows[1]]
        return first, False

    def _class_labels(self, spec, label_rows):
        """(class id per label row or -1, class names)."""
        ds = self.dataset
        if spec.source == "user_field":
            table, key = ds.user_feat, ds.uid_field
            keys = self._inter[ds.uid_field].to_numpy()[label_rows]
        else:
            table, key = ds.item_feat, ds.iid_field
            keys = self._inter[ds.iid_field].to_numpy()[label_rows]
        values = table.set_index(key)[spec.field].reindex(keys).to_numpy()
        ftype = ds.field2type[spec.field]
        if ftype == FeatureType.TOKEN_SEQ:  # first token of the sequence, 0 when empty
            values = np.array([int(v[0]) if isinstance(v, np.ndarray) and len(v) else 0 for v in values])
        if spec.bins is not None:
            raw = (
                values.astype(float)
                if ftype == FeatureType.FLOAT
                else np.array(
                    [
                        float(t) if t not in ("[PAD]", "") else np.nan
                        for t in ds.id2token(spec.field, values.astype(int))
                    ]
                )
            )
            bins = spec.bins
            names = [f"<{bins[0]:g}"] + [f"[{a:g},{b:g})" for a, b in zip(bins, bins[1:])] + [f">={bins[-1]:g}"]
            return np.where(np.isnan(raw), -1, np.digitize(np.nan_to_num(raw), bins)), names
        values = np.nan_to_num(values.astype(float), nan=0).astype(int)
        names = [str(t) for t in ds.field2id_token[spec.field][1:]]
        return values - 1, names  # id 0 is [PAD]: unlabelled

    def _downstream(self, spec, index):
        ds = self.dataset
        label_rows, inclusive = self._label_positions(spec)
        has = label_rows >= 0
        classes = None
        labels = self._inter[ds.iid_field].to_numpy()[np.maximum(label_rows, 0)]
        if not spec.is_link:
            labels, classes = self._class_labels(spec, np.maximum(label_rows, 0))
            has &= labels >= 0
        # input: up to n interactions strictly before the label (including it for profile labels)
        ends = label_rows + 1 if inclusive else label_rows
        summary = {"task": spec.name, "kind": spec.kind, "labelled users": int(has.sum())}
        loaders = []
        for phase in ("train", "valid", "test"):
            sel = has & np.isin(self._users, self.split[phase])
            u_idx = np.flatnonzero(sel)
            seq, length = self._sequences(u_idx, ends[u_idx])
            fields = {
                ds.uid_field: torch.as_tensor(self._users[u_idx]),
                self._template.item_id_list_field: torch.as_tensor(seq),
                self._template.item_list_length_field: torch.as_tensor(length),
                ds.iid_field: torch.as_tensor(labels[u_idx] if spec.is_link else np.zeros(len(u_idx), dtype=np.int64)),
            }
            if not spec.is_link:
                fields[self.config["LABEL_FIELD"]] = torch.as_tensor(labels[u_idx], dtype=torch.long)
            keep = length > 0
            loaders.append(self._template.copy(Interaction(fields)[torch.as_tensor(keep)]))
            summary[phase] = int(keep.sum())
        if summary["labelled users"] == 0:
            raise PCLError(f"task '{spec.name}': no labelled users (check its label rule against the data)")
        empty = [phase for phase in ("train", "valid", "test") if summary[phase] == 0]
        if empty:
            raise PCLError(
                f"task '{spec.name}': the user split leaves no {' and no '.join(empty)} users "
                f"({summary['labelled users']} labelled users, task_split={list(self.config['task_split'])})"
            )
        summary["labels"] = (
            len(np.unique(labels[has])) if spec.is_link else f"{len(np.unique(labels[has]))}/{len(classes)} classes"
        )
        tc = task_config(self.config, spec)
        return TaskData(spec, index, *build_dataloaders(tc, self._template, loaders), tc, classes, summary)

    def _sequences(self, user_index, ends):
        """Item sequences (left-aligned, zero-padded) of users ``user_index`` (positions in the user
        table) ending before sorted-interaction rows ``ends``: the last ``MAX_ITEM_LIST_LENGTH`` items."""
        n = self.config["MAX_ITEM_LIST_LENGTH"]
        iids = self._inter[self.dataset.iid_field].to_numpy()
        seq = np.zeros((len(user_index), n), dtype=np.int64)
        length = np.zeros(len(user_index), dtype=np.int64)
        for r, (ui, end) in enumerate(zip(user_index, ends)):
            items = iids[max(self._starts[ui], end - n) : end]
            seq[r, : len(items)], length[r] = items, len(items)
        return seq, length

    def latest_histories(self, user_ids):
        """Interaction with each user's latest ``MAX_ITEM_LIST_LENGTH`` items (all of their history),
        the input a served model sees. ``user_ids`` are RecBole's internal ids."""
        user_index = np.searchsorted(self._users, user_ids)
        if (user_index >= len(self._users)).any() or (
            self._users[np.minimum(user_index, len(self._users) - 1)] != user_ids
        ).any():
            raise PCLError("some users have no interactions in this dataset")
        seq, length = self._sequences(user_index, self._starts[user_index] + self._lengths[user_index])
        return Interaction(
            {
                self.dataset.uid_field: torch.as_tensor(np.asarray(user_ids)),
                self._template.item_id_list_field: torch.as_tensor(seq),
                self._template.item_list_length_field: torch.as_tensor(length),
            }
        )

    # ----- summary ----------------------------------------------------------------------------
    def _t1_summary(self, built):
        ds = built[0]
        return {
            "kind": "link",
            "labelled users": int(len(np.unique(ds.inter_feat[ds.uid_field].numpy()))),
            "train": len(built[0]),
            "valid": len(built[1]),
            "test": len(built[2]),
            "labels": int(len(np.unique(ds.inter_feat[ds.iid_field].numpy()))),
        }

    def summary_rows(self):
        return [{"task": t.spec.name, **t.summary} for t in self.tasks]

    def summary_table(self):
        ds, config = self.dataset, self.config
        split = (
            f"task_split={config['task_split']}"
            if config["fold"] is None
            else f"fold {config['fold']} of {config['n_folds']}"
        )
        head = (
            f"{config['dataset']}: {ds.user_num - 1} users, {ds.item_num - 1} items, {len(self._inter)} interactions; "
            f"label_window={config['label_window']}, {split}, eval={config['task_eval_mode']} (T1 rows are RecBole's prefix samples)"
        )
        return head + "\n" + tabulate(self.summary_rows(), headers="keys", tablefmt="github")
