"""Link and class metrics through RecBole's evaluator, against hand-computed values."""

import math

import pytest
import torch
from recbole.evaluator import Collector, Evaluator
from recbole.evaluator.collector import DataStruct

from recbole_pcl.config import Config


def _config(metrics, topk=None):
    extra = {"metrics": metrics, "state": "WARNING"}
    if topk:
        extra["topk"] = topk
        extra["valid_metric"] = f"{metrics[0]}@{topk[0]}"
    else:
        extra["valid_metric"] = metrics[0]
        extra["eval_args"] = {"mode": "labeled", "order": "TO", "split": {"LS": "valid_and_test"}}
    return Config("SASRec", "ml-100k", config_dict=extra)


def test_hit_ndcg_mrr_match_hand_computation():
    config = _config(["Hit", "NDCG", "MRR"], [1, 5, 10])
    collector = Collector(config)
    # three users, 12 items (id 0 = padding, masked as RecBole does); positives at ranks 1, 4 and 11
    scores = torch.arange(12, 0, -1, dtype=torch.float).repeat(3, 1)
    scores[:, 0] = -math.inf
    positive_u = torch.tensor([0, 1, 2])
    positive_i = torch.tensor([1, 4, 11])  # ranks: item 1 -> 1st, item 4 -> 4th, item 11 -> 11th
    interaction = {"user_id": torch.tensor([1, 2, 3])}
    collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
    result = Evaluator(config).evaluate(collector.get_data_struct())
    assert result["hit@1"] == pytest.approx(1 / 3, abs=1e-4)
    assert result["hit@5"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["hit@10"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["ndcg@5"] == pytest.approx((1 + 1 / math.log2(5)) / 3, abs=1e-4)
    assert result["mrr@10"] == pytest.approx((1 + 1 / 4) / 3, abs=1e-4)


def test_accuracy_is_registered_and_counts_correct_classes():
    config = _config(["Accuracy"])
    assert config["eval_type"].name == "VALUE"
    struct = DataStruct()
    struct.set("rec.score", torch.tensor([2.0, 0.0, 1.0, 1.0, 3.0]))
    struct.set("data.label", torch.tensor([2, 1, 1, 0, 3]))
    assert Evaluator(config).evaluate(struct)["accuracy"] == pytest.approx(0.6)
