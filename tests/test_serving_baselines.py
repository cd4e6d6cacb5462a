"""Serving the final model, the TaskPrior and head-only references, and dataset builders."""

import csv
import logging
import os

import pytest
import torch
from conftest import ML100K_TASKS, REPO, SHARED, TINY_MODEL

from recbole_pcl.quick_start import load_continual_run, run_recbole_pcl
from recbole_pcl.utils import PCLError

TASKS = ML100K_TASKS[:4]


@pytest.fixture
def tiny_run(task_run):
    return dict(task_run, contextual_prompt="none", train_batch_size=64)


def test_serving_predictions_and_user_vectors(tiny_run, tmp_path):
    run_recbole_pcl("PCL", "ml-100k", config_dict=tiny_run)
    predictor = load_continual_run("PCL", "ml-100k", config_dict=tiny_run)
    users = predictor.data.dataset.id2token("user_id", predictor.data.users[:3])
    genre = predictor.predict("next_genre", users)
    assert genre.shape == (3, 19) and torch.allclose(genre.sum(1), torch.ones(3))
    scores = predictor.predict("next_4star", users)
    assert scores.shape == (3, predictor.data.dataset.item_num)
    top = predictor.recommend("next_4star", users, k=5)
    assert len(top) == 3 and all(len(r) == 5 and "[PAD]" not in r for r in top)
    # different tasks give different user vectors; T1 = the plain backbone
    v1, v4 = predictor.user_representation(users), predictor.user_representation(users, task="next_4star")
    assert v1.shape == (3, 16) and not torch.allclose(v1, v4)
    # the served class prediction agrees with what the evaluator scored (same model, same inputs)
    path = predictor.export_user_representations(str(tmp_path / "users.csv"))
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows[0][:2] == ["user_id", "d0"] and len(rows) == len(predictor.data.users) + 1
    assert float(rows[1][1]) == pytest.approx(float(predictor.user_representation([rows[1][0]])[0, 0]), abs=1e-5)
    with pytest.raises(PCLError, match="unknown task 'nope'"):
        predictor.predict("nope", users)
    with pytest.raises(PCLError, match="task 'next_genre' predicts classes, not items: use predict"):
        predictor.recommend("next_genre", users)


def test_serving_refuses_missing_runs_and_bad_requests(tiny_run, monkeypatch):
    from recbole_pcl.model import text_encoder

    monkeypatch.setattr(text_encoder, "encode_texts", None)  # the language model must not even load
    with pytest.raises(PCLError, match="no run at .*: run this configuration first"):
        load_continual_run("PCL", "ml-100k", config_dict=dict(tiny_run, contextual_prompt="lm"))
    assert not os.path.exists(tiny_run["checkpoint_dir"])  # nothing created
    monkeypatch.undo()
    two = dict(tiny_run, tasks=TASKS[:2], epochs=1)
    run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    with pytest.raises(PCLError, match=r"has not finished stage 2 \(next_5star\)"):
        load_continual_run("PCL", "ml-100k", config_dict=dict(two, tasks=TASKS[:3], run_dir=run_recbole_pcl_dir(two)))
    predictor = load_continual_run("PCL", "ml-100k", config_dict=two)
    user = predictor.data.dataset.id2token("user_id", predictor.data.users[:1])
    n_items = predictor.data.dataset.item_num - 1
    assert len(predictor.recommend("next_4star", user, k=n_items)[0]) == n_items  # every item, never [PAD]
    for k in (0, -1, n_items + 1, 2.5):
        with pytest.raises(
            PCLError, match=f"k must be an integer from 1 to the number of items \\({n_items}\\), got {k}"
        ):
            predictor.recommend("next_4star", user, k=k)


def run_recbole_pcl_dir(config_dict):
    from recbole_pcl.config import Config
    from recbole_pcl.pipeline import TaskPipeline
    from recbole_pcl.utils import get_model

    return TaskPipeline(Config("PCL", "ml-100k", config_dict=config_dict), get_model("PCL")).run_dir


def test_task_prior_is_popularity_and_majority(tiny_run):
    result = run_recbole_pcl("TaskPrior", "ml-100k", config_dict=dict(tiny_run, pretrain_mode="prefix"))
    rows = {r["task"]: r for r in result["tasks"]}
    predictor = load_continual_run("TaskPrior", "ml-100k", config_dict=dict(tiny_run, pretrain_mode="prefix"))
    data = predictor.data
    genre = next(t for t in data.tasks if t.spec.name == "next_genre")
    train_labels = genre.train._dataset.inter_feat["label"]
    majority = int(torch.bincount(train_labels).argmax())
    test_labels = genre.test._dataset.inter_feat["label"]
    assert rows["next_genre"]["accuracy"] == pytest.approx(float((test_labels == majority).float().mean()), abs=1e-4)
    # popularity: the counts are the training-label frequencies of the task
    four = next(t for t in data.tasks if t.spec.name == "next_4star")
    counts = torch.bincount(four.train._dataset.inter_feat["item_id"], minlength=data.dataset.item_num).float()
    assert torch.equal(predictor.model.counts["next_4star"], counts)


def test_head_only_reference_trains_adapters_only(tiny_run):
    result = run_recbole_pcl("PCL", "ml-100k", config_dict=dict(tiny_run, prompt_length=0))
    rows = {r["task"]: r for r in result["tasks"]}
    assert rows["next_4star"]["trainable_params"] == 0  # link task: the frozen backbone, zero-shot
    assert rows["next_genre"]["trainable_params"] == 16 * 19 + 19  # linear adapter only


def test_tenrec_falls_back_to_synthetic_with_warning(tmp_path, caplog):
    config = {
        "data_path": str(tmp_path / "dataset"),
        "raw_data_path": str(tmp_path / "missing.csv"),
        "synthetic_tenrec": {"n_users": 150, "n_items": 120},
        **TINY_MODEL,
        "epochs": 1,
        "checkpoint_dir": str(tmp_path / "saved"),
        "fwt_reference": False,
        "contextual_prompt": "none",
    }
    with caplog.at_level(logging.WARNING):
        result = run_recbole_pcl("PCL", "tenrec", config_dict=config)
    assert any("SYNTHETIC" in r.getMessage() and "missing.csv" in r.getMessage() for r in caplog.records)
    rows = {r["task"]: r for r in result["tasks"]}
    assert list(rows) == ["next_watch", "next_like", "next_category", "age"]
    # next_category's task attribute (video_category embeddings) is tuned with its adapter
    assert rows["next_category"]["trainable_params"] > rows["age"]["trainable_params"] + 16
    assert os.path.isfile(tmp_path / "dataset" / "tenrec" / "tenrec.inter")


@pytest.mark.skipif(not (SHARED / "data" / "ml-latest-small").is_dir(), reason="../shared/data/ml-latest-small absent")
def test_movielens_builder_feeds_the_task_sequence(tmp_path):
    config = {
        "data_path": str(tmp_path / "dataset"),
        "raw_data_path": str(SHARED / "data" / "ml-latest-small"),
        "state": "WARNING",
        "pretrain_mode": "causal",
    }
    from recbole_pcl.config import Config
    from recbole_pcl.data.continual import ContinualData

    data = ContinualData(
        Config("PCL", "ml-latest-small", [str(REPO / "properties" / "dataset" / "ml-25m.yaml")], config)
    )
    summary = {r["task"]: r for r in data.summary_rows()}
    assert summary["next_click"]["labelled users"] == 610
    assert 0 < summary["next_5star"]["labelled users"] < summary["next_4star"]["labelled users"] <= 610
    assert data.tasks[3].num_classes == 19  # 18 MovieLens genres + IMAX


def test_serving_in_batches_equals_serving_at_once(tiny_run):
    run_recbole_pcl("PCL", "ml-100k", config_dict=dict(tiny_run, tasks=TASKS[:2], epochs=1))
    predictor = load_continual_run("PCL", "ml-100k", config_dict=dict(tiny_run, tasks=TASKS[:2], epochs=1))
    everyone = predictor.predict("next_4star", batch_size=len(predictor.users))
    assert everyone.shape == (len(predictor.users), predictor.data.dataset.item_num)
    assert torch.allclose(predictor.predict("next_4star", batch_size=7), everyone, atol=1e-5)
    assert predictor.recommend("next_4star", k=5, batch_size=7) == predictor.recommend(
        "next_4star", k=5, batch_size=10_000
    )
    assert torch.allclose(
        predictor.user_representation(batch_size=7), predictor.user_representation(batch_size=10_000), atol=1e-6
    )


def _fail(*args, **kwargs):
    raise AssertionError("the full pass ran")


def test_serving_several_tasks_shares_one_prefix_pass_per_batch(tiny_run, monkeypatch):
    run_recbole_pcl("PCL", "ml-100k", config_dict=dict(tiny_run, epochs=1))
    predictor = load_continual_run("PCL", "ml-100k", config_dict=dict(tiny_run, epochs=1))
    model, users, names = predictor.model, predictor.users[:20], list(predictor.tasks)  # T1 and 3 tasks
    links = [n for n in names if predictor.tasks[n].spec.kind == "link"]
    # one call per task, as before: each its own full pass
    scores = {n: predictor.predict(n, users, batch_size=8) for n in names}
    top = {n: predictor.recommend(n, users, k=5, batch_size=8) for n in links}
    vectors = {n: predictor.user_representation(users, None if n == names[0] else n, batch_size=8) for n in names}
    passes = []
    prefix_pass = model.prefix_pass
    monkeypatch.setattr(model, "prefix_pass", lambda seq: passes.append(len(seq)) or prefix_pass(seq))
    monkeypatch.setattr(model.trm_encoder, "forward", _fail)  # every task runs its last t positions only
    several = predictor.predict(names, users, batch_size=8)
    assert passes == [8, 8, 4]  # one prefix pass per batch of users, for all four tasks
    assert list(several) == names
    for n in names:
        assert several[n].shape == scores[n].shape and torch.allclose(several[n], scores[n], atol=1e-6), n
    assert predictor.recommend(links, users, k=5, batch_size=8) == top
    several = predictor.user_representation(users, [None, *names[1:]], batch_size=8)
    assert list(several) == [None, *names[1:]]
    for n in names:
        assert torch.allclose(several[None if n == names[0] else n], vectors[n], atol=1e-6), n
    monkeypatch.undo()
    # no users: empty results of the right shape, one task or several
    assert predictor.predict("next_4star", []).shape == (0, predictor.data.dataset.item_num)
    assert predictor.predict("next_genre", []).shape == (0, 19)
    assert predictor.user_representation([]).shape == (0, 16)
    assert predictor.recommend("next_4star", [], k=5) == []
    assert {n: s.shape for n, s in predictor.predict(names[1:], []).items()} == {
        n: (0, scores[n].shape[1]) for n in names[1:]
    }
    assert predictor.recommend(links, [], k=5) == {n: [] for n in links}
    with pytest.raises(PCLError, match="unknown task 'nope'"):
        predictor.predict(["next_4star", "nope"], users)
    with pytest.raises(PCLError, match="task 'next_genre' predicts classes, not items"):
        predictor.recommend(["next_4star", "next_genre"], users)


def test_serving_settings_of_no_run_name_the_nearest_run(tiny_run):
    two = dict(tiny_run, tasks=TASKS[:2], epochs=1)
    run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    with pytest.raises(PCLError) as refused:
        load_continual_run("PCL", "ml-100k", config_dict=dict(two, prompt_length=2))
    message = str(refused.value)
    assert "runs of PCL on ml-100k in" in message and "PCL-ml-100k-" in message
    assert "differs in 1 place(s), first in setting 'prompt_length': 3 there, 2 here" in message
