"""RecBole models through ``run_recbole_pcl`` give exactly the metrics of RecBole's own ``run_recbole``
with the same configuration and seed: a general model (BPR), a graph model built on the compat
adjacency fix (LightGCN) and a recurrent sequential model (GRU4Rec). SASRec is covered in
tests/test_plugin.py::test_sasrec_equals_stock_recbole.
"""

import pytest
from test_plugin import _stock_recbole

from recbole_pcl.quick_start import run_recbole_pcl


@pytest.mark.parametrize(
    "model, extra",
    [
        ("BPR", {}),
        ("LightGCN", {"n_layers": 2}),
        ("GRU4Rec", {"train_neg_sample_args": None}),  # CE loss: stock RecBole needs it said
    ],
)
def test_metrics_equal_stock_recbole(model, extra, tiny, monkeypatch, quick_runs):
    config_dict = dict(tiny, embedding_size=16, **extra)
    ours = run_recbole_pcl(model, "ml-100k", config_dict=config_dict, saved=False)
    theirs = _stock_recbole(model, config_dict, monkeypatch)
    assert ours["test_result"] == theirs["test_result"]
    assert ours["best_valid_result"] == theirs["best_valid_result"]
    assert ours["best_valid_score"] == theirs["best_valid_score"]
    assert ours["test_result"]["hit@10"] > 0
