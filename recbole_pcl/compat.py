"""Compatibility of RecBole 1.2.1 with today's numpy, pandas, scipy and torch.

RecBole 1.2.1 (its latest release) was written for numpy 1.x, pandas 1.x, scipy < 1.12 and
torch < 2.6. Every incompatibility we measured is handled here, in one place. Nothing in RecBole's
files is changed, and **importing recbole_pcl changes nothing outside it**: each fix lives in one of
our subclasses or is applied by our entry points for the time they run (and undone after).

1. numpy 2 removed ``np.float_``, ``np.complex_`` and ``np.unicode_``, which RecBole's
   ``Config.compatibility_settings`` reads to set the aliases its code uses (``np.float``,
   ``np.long``...; e.g. its evaluator's metrics). Our :class:`~recbole_pcl.config.Config` sets the
   same aliases from the types they always meant (:func:`numpy_aliases`), as RecBole's does on numpy 1.
2. pandas 3 (copy-on-write): ``feat[field].fillna(..., inplace=True)`` fills a temporary copy and
   silently leaves every NaN in place. RecBole does this in ``Dataset._fill_nan`` (NaN survives in
   token and float fields) and in ``Dataset._load_feat`` (an empty token_seq/float_seq cell then
   crashes the split). :class:`DatasetCompat` (mixed into every dataset class we load, see
   :func:`dataset_class`) replaces the two methods with the same semantics (token -> 0 = [PAD],
   float -> column mean, empty sequences -> empty arrays), assigning results instead of filling in
   place; its ``_load_feat`` also applies the ``missing_values`` setting (:func:`missing_values`).
3. pandas 3 changed ``Series.agg(len)`` to return the length of the Series instead of each cell's
   length. RecBole uses it on every token_seq/float_seq field (``_remap``, normalisation,
   discretisation, KG remapping, benchmark presets, sequential augmentation) to split flattened ids
   back into sequences, so a token_seq field such as ml-100k's genres is silently mangled or
   crashes. :func:`elementwise_len_agg` restores the element-wise meaning of exactly that call while
   one of our datasets is built (``__init__`` and ``build`` of :class:`DatasetCompat`), and only then.
4. torch >= 2.6 loads with ``weights_only=True``; RecBole's checkpoints pickle its whole ``Config``.
   That is not patched here: our trainer (:mod:`recbole_pcl.trainer.trainer`) writes checkpoints of
   tensors and plain data only, which load safely with ``weights_only=True``.
5. ``recbole.quick_start`` imports ``ray.tune`` at import time and RecBole pins ``ray<=2.6.3``
   (no wheel for Python 3.12, crashes under numpy 2). We install a current Ray and never import
   ``recbole.quick_start`` on our own paths.
6. scipy 1.12 rebuilt ``dok_matrix`` on a private dict (scipy PR #18929) and dropped ``_update``
   (absent in 1.17 here), which RecBole calls to build every normalised user-item adjacency matrix
   (LightGCN, NGCF, SpectralCF, GCMC, NCL, KGIN, MCCLK):
   ``AttributeError: 'dok_matrix' object has no attribute '_update'``. :func:`dok_update` is the
   method with its old meaning, ``A._update({(row, col): value})`` stores each value at its (row,
   col), through scipy's public fancy-index assignment (only difference: an explicit 0 is not
   stored; RecBole only passes 1s). It is present while our entry point builds a RecBole model
   (:func:`scipy_dok_update`, used by ``run_recbole_pcl``). ``tests/test_compat.py`` compares the
   resulting LightGCN/NGCF matrix with one built independently.
7. RecBole's ``sequential_recommender/sine.py`` calls ``torch.autograd.set_detect_anomaly(True)`` when
   it is imported, i.e. whenever any sequential model (SASRec, and so PCL) is: every backward pass of
   every model would then run with anomaly detection, a debugging mode that checks each gradient for
   NaN (measured: 30-45 % more time on tiny SASRec/GRU4Rec runs, the same metrics).
   :func:`import_recbole_models` imports RecBole's models and puts the mode back as it was.
"""

import contextlib
import functools

import numpy as np

# What RecBole's Config.compatibility_settings sets, from the types the names always meant.
_NUMPY_ALIASES = {
    "bool": np.bool_,
    "int": np.int_,
    "float": np.float64,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "long": np.int_,
    "unicode": np.str_,
}


def numpy_aliases():
    """The numpy aliases RecBole's code uses, set as RecBole's own Config sets them (on numpy 2 its
    ``compatibility_settings`` fails reading the removed ``np.float_``)."""
    for name, value in _NUMPY_ALIASES.items():
        setattr(np, name, value)


def import_recbole_models():
    """Import RecBole's model packages, keeping torch's anomaly-detection mode as it was (RecBole's
    sine.py switches it on when imported)."""
    import torch

    mode = torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()
    import recbole.model.sequential_recommender  # noqa: F401

    torch.autograd.set_detect_anomaly(*mode)


def fill_nan(self):
    """Copy-on-write-safe replacement of ``recbole.data.dataset.Dataset._fill_nan``."""
    from recbole.utils import FeatureType

    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                feat[field] = feat[field].apply(
                    lambda x, dtype=dtype: np.array([], dtype=dtype) if isinstance(x, float) else x
                )


def load_feat(self, filepath, source):
    """Copy-on-write-safe replacement of ``recbole.data.dataset.Dataset._load_feat``."""
    import pandas as pd
    from recbole.utils import FeatureSource, FeatureType

    load_col, unload_col = self._get_load_and_unload_col(source)
    if load_col == set():
        return None
    sep, encoding = self.config["field_separator"], self.config["encoding"]
    with open(filepath, encoding=encoding) as f:
        header = f.readline().rstrip("\r\n").split(sep)
    fields, usecols, dtype = [], [], {}
    for column in header:
        field, ftype = column.split(":")
        try:
            ftype = FeatureType(ftype)
        except ValueError:
            raise ValueError(f"Type {ftype} from field {field} is not supported.") from None
        if (load_col is not None and field not in load_col) or (unload_col is not None and field in unload_col):
            continue
        if isinstance(source, FeatureSource) or source != "link":
            self.field2source[field], self.field2type[field] = source, ftype
            if not ftype.value.endswith("seq"):
                self.field2seqlen[field] = 1
            if "float" in ftype.value:
                self.field2bucketnum[field] = 2
        fields.append(field)
        usecols.append(column)
        dtype[column] = np.float64 if ftype == FeatureType.FLOAT else str
    if not fields:
        self.logger.warning(f"No columns has been loaded from [{source}]")
        return None
    df = pd.read_csv(filepath, delimiter=sep, usecols=usecols, dtype=dtype, encoding=encoding, engine="python")
    df.columns = fields
    if source == FeatureSource.INTERACTION:
        df = missing_values(df, [f for f in fields if self.field2type[f] == FeatureType.FLOAT], filepath, self)
    for field in fields:
        ftype = self.field2type[field]
        if not ftype.value.endswith("seq"):
            continue
        cast = str if ftype == FeatureType.TOKEN_SEQ else float
        df[field] = [
            np.array([cast(x) for x in cell.split(self.config["seq_separator"]) if x])
            for cell in df[field].fillna("").values
        ]
        max_len = max(map(len, df[field].values))
        seq_len = (self.config["seq_len"] or {}).get(field)
        if seq_len:
            df[field] = [seq[:seq_len] for seq in df[field].values]
            self.field2seqlen[field] = min(seq_len, max_len)
        else:
            self.field2seqlen[field] = max_len
    return df


def missing_values(df, fields, filepath, dataset):
    """The interactions ``df`` read from ``filepath``, as the setting ``missing_values`` says for empty
    or NaN cells of its float ``fields`` (ratings...): ``refuse`` (a :class:`PCLError` naming the file,
    line and column of the first), ``drop`` (those interactions are dropped, and counted in the log) or
    ``fill`` (RecBole's own: the column mean, later)."""
    from recbole_pcl.utils.errors import PCLError

    mode = dataset.config["missing_values"] or "fill"
    missing = df[fields].isna() if fields else None
    if mode == "fill" or missing is None or not missing.to_numpy().any():
        return df
    rows = missing.any(axis=1).to_numpy()
    if mode == "drop":
        dataset.logger.warning(
            f"{filepath}: {int(rows.sum())} interactions with an empty or NaN {', '.join(fields)} dropped"
        )
        return df[~rows].reset_index(drop=True)
    first = int(np.flatnonzero(rows)[0])
    column = next(f for f in fields if missing[f].iat[first])
    raise PCLError(
        f"{filepath}, line {first + 2}, column '{column}': empty or NaN value ({int(rows.sum())} such rows); "
        f"set missing_values: drop to drop them, or fill for RecBole's column mean"
    )


@contextlib.contextmanager
def elementwise_len_agg():
    """``Series.agg(len)`` as pandas < 3 had it (each cell's length) for the duration of the block."""
    import pandas as pd

    original = pd.Series.agg
    if isinstance(pd.Series([[1, 2]]).agg(len), pd.Series):  # pandas < 3: nothing to do
        yield
        return

    def agg(self, func=None, axis=0, *args, **kwargs):
        if func is len and not args and not kwargs:
            return self.map(len)
        return original(self, func, axis, *args, **kwargs)

    pd.Series.agg = pd.Series.aggregate = agg
    try:
        yield
    finally:
        pd.Series.agg = pd.Series.aggregate = original


def dok_update(self, data):
    """``dok_matrix._update`` as scipy < 1.12 had it: store ``{(row, col): value}`` in the matrix."""
    if not data:
        return
    keys = np.fromiter((i for key in data for i in key), dtype=np.int64, count=2 * len(data))
    rows, cols = keys[0::2], keys[1::2]
    self[rows, cols] = np.fromiter(data.values(), dtype=self.dtype, count=len(data))


@contextlib.contextmanager
def scipy_dok_update():
    """``dok_matrix._update`` (:func:`dok_update`) for the duration of the block, where scipy lacks it."""
    import scipy.sparse as sp

    if hasattr(sp.dok_matrix, "_update"):
        yield
        return
    sp.dok_matrix._update = dok_update
    try:
        yield
    finally:
        del sp.dok_matrix._update


@contextlib.contextmanager
def patched_recbole():
    """Every fix above applied to RecBole's own classes and to numpy, pandas and scipy, for the
    duration of the block and undone after: to run RecBole's unmodified code (its ``run_recbole``, as
    the tests that compare with stock RecBole do) on today's stack."""
    from recbole.data.dataset import Dataset

    removed = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_}
    missing = [name for name in removed if name not in np.__dict__]
    methods = Dataset._fill_nan, Dataset._load_feat
    for name in missing:
        setattr(np, name, removed[name])
    Dataset._fill_nan, Dataset._load_feat = fill_nan, load_feat
    try:
        with elementwise_len_agg(), scipy_dok_update():
            yield
    finally:
        Dataset._fill_nan, Dataset._load_feat = methods
        for name in missing:
            delattr(np, name)


class DatasetCompat:
    """Mixed into each RecBole dataset class we load (:func:`dataset_class`): the pandas-3-safe
    ``_fill_nan`` and ``_load_feat``, and construction and building under :func:`elementwise_len_agg`."""

    def __init__(self, config):
        with elementwise_len_agg():
            super().__init__(config)

    def build(self):
        with elementwise_len_agg():
            return super().build()

    _fill_nan = fill_nan
    _load_feat = load_feat


@functools.cache
def dataset_class(recbole_class):
    """``recbole_class`` with :class:`DatasetCompat`, under the same name."""
    return type(recbole_class.__name__, (DatasetCompat, recbole_class), {"__module__": __name__})
