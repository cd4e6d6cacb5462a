"""RecBole 1.2.1 on numpy 2 / pandas 3: the compat module's fixes, shown on real loading, and applied
only where recbole-pcl runs (importing it changes nothing outside it)."""

import numpy as np
import pytest
from recbole.data.dataset import SequentialDataset

from recbole_pcl.compat import dataset_class, scipy_dok_update
from recbole_pcl.config import Config
from recbole_pcl.utils import PCLError


def test_a_config_sets_recboles_numpy_aliases():
    Config("SASRec", "ml-100k")
    assert np.float is np.float64 and np.long is np.int_ and np.bool is np.bool_ and np.unicode is np.str_


def _load(tmp_path, inter_rows, item_rows=None, **settings):
    d = tmp_path / "nanset"
    d.mkdir()
    (d / "nanset.inter").write_text("\n".join(inter_rows) + "\n")
    load_col = {"inter": inter_rows[0].replace(":token", "").replace(":float", "").split("\t")}
    if item_rows:
        (d / "nanset.item").write_text("\n".join(item_rows) + "\n")
        load_col["item"] = ["item_id", "class"]
    config = Config(
        "SASRec",
        "nanset",
        config_dict={
            "data_path": str(tmp_path),
            "load_col": load_col,
            "normalize_all": False,
            "state": "WARNING",
            **settings,
        },
    )
    return dataset_class(SequentialDataset)(config)


NAN_ROWS = [
    "user_id:token\titem_id:token\ttimestamp:float\tscore:float\tsource:token",
    "u1\ti1\t1\t1.0\ta",
    "u1\ti2\t2\t\tb",  # NaN float
    "u1\ti3\t3\t3.0\t",  # NaN token
    "u2\ti1\t1\t5.0\ta",
    "u2\ti3\t2\tNaN\t",  # both
]


def test_nan_in_float_and_token_fields_is_filled_when_asked(tmp_path):
    ds = _load(tmp_path, NAN_ROWS, missing_values="fill")
    df = ds.inter_feat
    assert not df["score"].isna().any() and not df["source"].isna().any()
    rows = {
        (ds.id2token("user_id", u), ds.id2token("item_id", i)): (s, ds.id2token("source", t))
        for u, i, s, t in zip(df["user_id"], df["item_id"], df["score"], df["source"])
    }
    # float NaN -> mean of the present values (1, 3, 5); token NaN -> [PAD] (id 0)
    assert rows[("u1", "i2")] == (pytest.approx(3.0), "b")
    assert rows[("u1", "i3")] == (pytest.approx(3.0), "[PAD]")
    assert rows[("u2", "i3")] == (pytest.approx(3.0), "[PAD]")
    assert rows[("u1", "i1")] == (pytest.approx(1.0), "a")


def test_empty_or_nan_ratings_are_refused_by_default_naming_file_line_column(tmp_path):
    with pytest.raises(PCLError, match=r"nanset\.inter, line 3, column 'score': empty or NaN value \(2 such rows\)"):
        _load(tmp_path, NAN_ROWS)


def test_empty_or_nan_ratings_are_dropped_and_counted_when_asked(tmp_path, caplog):
    ds = _load(tmp_path, NAN_ROWS, missing_values="drop")
    pairs = {
        (ds.id2token("user_id", u), ds.id2token("item_id", i))
        for u, i in zip(ds.inter_feat["user_id"], ds.inter_feat["item_id"])
    }
    assert pairs == {("u1", "i1"), ("u1", "i3"), ("u2", "i1")}
    assert "2 interactions with an empty or NaN timestamp, score dropped" in caplog.text


def test_empty_token_seq_cell_loads_as_empty_sequence(tmp_path):
    ds = _load(
        tmp_path,
        ["user_id:token\titem_id:token\ttimestamp:float", "u1\ti1\t1", "u1\ti2\t2"],
        ["item_id:token\tclass:token_seq", "i1\tDrama Comedy", "i2\t"],
    )
    classes = {
        ds.id2token("item_id", i): list(ds.id2token("class", c))
        for i, c in zip(ds.item_feat["item_id"], ds.item_feat["class"])
    }
    assert sorted(classes["i1"]) == ["Comedy", "Drama"]
    assert len(classes["i2"]) == 0


def test_dok_update_stores_entries_like_old_scipy():
    import scipy.sparse as sp

    a = sp.dok_matrix((3, 4), dtype=np.float32)
    with scipy_dok_update():
        a._update({(0, 1): 1, (2, 3): 5})
        a._update({(2, 3): 2, (1, 0): 1})  # a later value overwrites, as dict.update did
        a._update({})
    assert a.dtype == np.float32 and a.nnz == 3
    assert a.toarray().tolist() == [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 2]]


@pytest.mark.parametrize("model_name", ["LightGCN", "NGCF"])
def test_normalised_adjacency_equals_independent_build(model_name, tiny):
    """RecBole's own get_norm_adj_mat (dok_matrix._update under the compat fix) against
    D^-1/2 A D^-1/2 built here straight from the training interactions with scipy's csr."""
    import scipy.sparse as sp

    from recbole_pcl.data import create_dataset, data_preparation
    from recbole_pcl.utils import get_model

    config = Config(model_name, "ml-100k", config_dict=dict(tiny, embedding_size=8))
    train, _, _ = data_preparation(config, create_dataset(config))
    with scipy_dok_update():
        model = get_model(model_name)(config, train._dataset)
    ours = model.norm_adj_matrix.coalesce()

    inter = train._dataset.inter_feat
    users, items = inter["user_id"].numpy(), inter["item_id"].numpy() + model.n_users
    n = model.n_users + model.n_items
    a = sp.csr_matrix((np.ones(2 * len(users)), (np.r_[users, items], np.r_[items, users])), shape=(n, n))
    a.data[:] = 1.0  # a repeated (user, item) pair is one edge
    degree = np.asarray(a.sum(axis=1)).ravel()
    d = sp.diags(np.divide(1.0, np.sqrt(degree), out=np.zeros(n), where=degree > 0))
    expected = (d @ a @ d).tocoo()

    assert ours.shape == (n, n)
    assert ours.values().numel() == expected.nnz == 2 * len(set(zip(users, items)))
    got = sp.coo_matrix((ours.values().numpy(), tuple(ours.indices().numpy())), shape=(n, n)).tocsr()
    expected = expected.tocsr()
    assert (got != got.T).nnz == 0  # symmetric
    assert np.array_equal(got.indptr, expected.indptr) and np.array_equal(got.indices, expected.indices)
    np.testing.assert_allclose(got.data, expected.data, rtol=1e-6)


NO_SIDE_EFFECTS = """
import sys
import matplotlib, pandas as pd, scipy.sparse as sp, torch
sys.path.insert(0, {repo!r})
state = lambda: (pd.Series.agg, pd.Series.aggregate, hasattr(sp.dok_matrix, "_update"), torch.is_anomaly_enabled(),
                 matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
before = state()
import recbole_pcl
from recbole.model.sequential_recommender import sine  # RecBole's own models are imported by now
assert state() == before, ("import", before, state())
from recbole_pcl.quick_start import run_recbole_pcl
result = run_recbole_pcl("PCL", "ml-100k", config_dict={settings!r})
import os
assert os.path.getsize(os.path.join(result["run_dir"], "results.png")) > 0  # the run drew its plot
assert state() == before, ("run", before, state())
print("unchanged")
"""


def test_importing_and_running_change_nothing_outside_the_package(task_run, tmp_path):
    """pandas' Series.agg, scipy's dok_matrix, torch's anomaly mode and matplotlib's backend are the
    same after ``import recbole_pcl`` and after a run that writes its plots (a fresh interpreter, so
    nothing imported before counts)."""
    import subprocess
    import sys

    from conftest import REPO

    settings = dict(task_run, tasks=task_run["tasks"][:2], epochs=1, contextual_prompt="none")
    code = NO_SIDE_EFFECTS.format(repo=str(REPO), settings=settings)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0 and "unchanged" in result.stdout, result.stderr[-3000:]


def test_training_runs_without_anomaly_detection(task_run):
    """RecBole's sine.py switches anomaly detection on when imported; our import keeps the mode."""
    import torch

    assert not torch.is_anomaly_enabled()
