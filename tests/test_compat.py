"""RecBole 1.2.1 on numpy 2 / pandas 3: the compat module's fixes, shown on real loading."""

import numpy as np
import pytest
from recbole.data.dataset import SequentialDataset

import recbole_pcl  # noqa: F401  (applies the compat shims)
from recbole_pcl.config import Config
from recbole_pcl.utils import PCLError


def test_numpy_aliases_restored():
    assert np.float_ is np.float64 and np.complex_ is np.complex128 and np.unicode_ is np.str_


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
    return SequentialDataset(config)


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


def test_recbole_does_not_leave_anomaly_detection_on():
    import torch
    from recbole.model.sequential_recommender import sine  # noqa: F401  (switches it on at import)

    assert not torch.is_anomaly_enabled()
