"""Task sequences from yaml, leakage-free splits and per-task data (issue: continual task datasets)."""

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ML100K_TASKS

from recbole_pcl.config import Config
from recbole_pcl.data.continual import ContinualData
from recbole_pcl.data.tasks import parse_tasks
from recbole_pcl.utils import PCLError

DESC = {"task": "t", "input": "i", "output": "o", "metric": "m"}


def _task(name, kind, **label):
    return {"name": name, "kind": kind, "label": label, "description": dict(DESC)}


FIXTURE_TASKS = [
    _task("next", "link", source="next_item"),
    _task("liked", "link", source="next_item", field="rating", interval="[4,5]"),
    _task("genre", "class", source="next_item_field", field="class"),
    {**_task("age", "class", source="user_field", field="age", bins=[30, 50])},
]


@pytest.fixture
def fixture_dataset(tmp_path):
    """40 users x 18-25 distinct items with ratings, item genres and ages; timestamps with ties."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(40):
        n = int(rng.integers(18, 26))
        times = np.sort(rng.integers(0, 40, n)) + 1000  # ties on purpose
        for t, i in zip(times, rng.permutation(30)[:n]):
            rows.append((f"u{u}", f"i{i}", int(rng.integers(1, 6)), int(t)))
    d = tmp_path / "fx"
    d.mkdir()
    pd.DataFrame(rows).to_csv(
        d / "fx.inter",
        sep="\t",
        index=False,
        header=["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
    )
    genres = ["Drama", "Comedy Drama", "Action", "Horror Comedy"]
    (d / "fx.item").write_text(
        "item_id:token\tclass:token_seq\n" + "".join(f"i{i}\t{genres[i % 4]}\n" for i in range(30))
    )
    (d / "fx.user").write_text("user_id:token\tage:token\n" + "".join(f"u{u}\t{20 + u}\n" for u in range(40)))
    return tmp_path, pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])


def _config(data_path, tasks, **extra):
    cfg = {
        "data_path": str(data_path),
        "tasks": tasks,
        "MAX_ITEM_LIST_LENGTH": 8,
        "label_window": 5,
        "state": "WARNING",
        "show_progress": False,
        "train_batch_size": 64,
        "eval_batch_size": 64,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "pretrain_mode": "prefix",
    }
    cfg.update(extra)
    return Config("SASRec", "fx" if "dataset" not in extra else extra.pop("dataset"), config_dict=cfg)


def _rows(ds, loader):
    inter = loader._dataset.inter_feat
    users = [ds.id2token("user_id", u) for u in inter["user_id"].tolist()]
    return users, inter


def test_leakage_free_splits(fixture_dataset):
    path, raw = fixture_dataset
    data = ContinualData(_config(path, FIXTURE_TASKS))
    ds = data.dataset
    raw = raw.sort_values(["user", "ts"], kind="stable")
    seqs = {u: g for u, g in raw.groupby("user")}
    window = {u: len(g) - min(5, len(g) - 3) for u, g in seqs.items()}

    # T1 rows (train, valid and test) are each user's own history, a target and the items right before
    # it, and every target lies before the window reserved for downstream labels
    for loader in (data.tasks[0].train, data.tasks[0].valid, data.tasks[0].test):
        users, inter = _rows(ds, loader)
        for r, u in enumerate(users):
            seq = list(seqs[u]["item"])  # a user's items are distinct in this fixture
            items = [ds.id2token("item_id", i) for i in inter["item_id_list"][r][: inter["item_length"][r]].tolist()]
            target = seq.index(ds.id2token("item_id", int(inter["item_id"][r])))
            assert seq[target - len(items) : target] == items
            assert target < window[u], (u, target, window[u])

    splits = [set(data.split[p].tolist()) for p in ("train", "valid", "test")]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    for task in data.tasks[1:]:
        for phase in ("train", "valid", "test"):
            users, inter = _rows(ds, getattr(task, phase))
            # the same user split for every task: no test label is seen in training of any task
            assert {ds.token2id("user_id", u) for u in users} <= set(data.split[phase].tolist())
            for r, u in enumerate(users):
                g = seqs[u]
                items = [
                    ds.id2token("item_id", i) for i in inter["item_id_list"][r][: inter["item_length"][r]].tolist()
                ]
                if task.spec.source == "user_field":
                    assert items == list(g["item"])[-8:]  # profile: the latest history
                    continue
                # the input is exactly the history strictly before the label, which lies in the window
                label_pos = list(g["item"]).index(items[-1]) + 1
                assert items == list(g["item"])[max(0, label_pos - 8) : label_pos]
                assert label_pos >= window[u]
                if task.spec.name == "liked":
                    ratings = list(g["rating"])
                    first = next(p for p in range(window[u], len(g)) if ratings[p] >= 4)
                    assert label_pos == first
                    assert ds.id2token("item_id", int(inter["item_id"][r])) == list(g["item"])[first]
                else:  # genre of the next click: first reserved interaction's first genre
                    assert label_pos == window[u]
                    genre = task.classes[int(inter["label"][r])]
                    item = list(g["item"])[label_pos]
                    assert genre == {0: "Drama", 1: "Comedy", 2: "Action", 3: "Horror"}[int(item[1:]) % 4]


def test_profile_labels_are_binned_ages(fixture_dataset):
    path, _ = fixture_dataset
    data = ContinualData(_config(path, FIXTURE_TASKS))
    age = data.tasks[3]
    assert age.classes == ["<30", "[30,50)", ">=50"]
    users, inter = _rows(data.dataset, age.test)
    for u, label in zip(users, inter["label"].tolist()):
        a = 20 + int(u[1:])
        assert label == (0 if a < 30 else 1 if a < 50 else 2)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t[1].update(kind="regress"), "task 'liked': unknown kind 'regress'"),
        (lambda t: t[1]["label"].update(source="previous_item"), "task 'liked': unknown label source 'previous_item'"),
        (lambda t: t[2]["label"].pop("field"), "task 'genre': label source 'next_item_field' needs a 'field'"),
        (lambda t: t[1]["label"].update(interval="4..5"), "task 'liked': interval '4..5'"),
        (lambda t: t[2].update(name="liked"), "task names must be unique: liked"),
        (lambda t: t[0]["label"].update(field="rating", interval="[4,5]"), "the first task must be unfiltered"),
        (lambda t: t[3]["description"].pop("metric"), "task 'age': description lacks metric"),
        (lambda t: t[1].update(kind="class"), "makes a link task, but kind is 'class'"),
    ],
)
def test_bad_task_yaml_names_the_task(mutate, message):
    tasks = copy.deepcopy(FIXTURE_TASKS)
    mutate(tasks)
    with pytest.raises(PCLError, match=message.replace("(", r"\(").replace("[", r"\[").replace(".", r"\.")):
        parse_tasks(tasks)


def test_missing_label_field_names_file_and_column(fixture_dataset):
    path, _ = fixture_dataset
    tasks = copy.deepcopy(FIXTURE_TASKS)
    tasks[3]["label"]["field"] = "income"
    with pytest.raises(PCLError, match=r"task 'age': label field 'income' not found in .*fx\.user"):
        ContinualData(_config(path, tasks))


def test_task_without_labelled_users(fixture_dataset):
    path, _ = fixture_dataset
    tasks = copy.deepcopy(FIXTURE_TASKS)
    tasks[1]["label"]["interval"] = "[7,9]"
    with pytest.raises(PCLError, match="task 'liked': no labelled users"):
        ContinualData(_config(path, tasks))


def test_ml100k_task_sequence_and_profile_tasks():
    tasks = copy.deepcopy(ML100K_TASKS)
    for t in tasks:
        t["enabled"] = True
    config = Config("SASRec", "ml-100k", config_dict={"tasks": tasks, "state": "WARNING", "pretrain_mode": "causal"})
    data = ContinualData(config)
    names = [t.spec.name for t in data.tasks]
    assert names == ["next_click", "next_4star", "next_5star", "next_genre", "age_group", "gender", "occupation"]
    summary = {r["task"]: r for r in data.summary_rows()}
    counts = (
        pd.read_csv(Path(config["data_path"]) / "ml-100k.inter", sep="\t")["user_id:token"].value_counts().to_numpy()
    )
    history = counts - np.minimum(10, counts - 3)  # T1 interactions before the reserved labels
    windows = int(np.ceil((history - 3) / 50).sum())  # causal: every T1 target, in windows of n = 50
    assert summary["next_click"]["labelled users"] == 943 and summary["next_click"]["train"] == windows == 2261
    assert summary["next_4star"]["labelled users"] == 836 and summary["next_5star"]["labelled users"] == 638
    assert summary["gender"]["labelled users"] == 943
    assert data.tasks[5].classes == ["M", "F"] or sorted(data.tasks[5].classes) == ["F", "M"]
    assert len(data.tasks[6].classes) == 21 and len(data.tasks[4].classes) == 6
    assert data.tasks[3].num_classes == 19  # ml-100k genres incl. "unknown"
    assert "| next_4star |" in data.summary_table()
    # MovieLens default: the positive against 100 sampled negatives; class tasks: labels as they are
    assert data.tasks[1].config["test_neg_sample_args"] == {"distribution": "uniform", "sample_num": 100}
    assert data.tasks[3].config["test_neg_sample_args"]["distribution"] == "none"
    assert data.tasks[3].config["metrics"] == ["Accuracy"]


@pytest.mark.parametrize("mode", ["causal", "causal_last"])
def test_causal_pretraining_windows_cover_t1_targets(fixture_dataset, mode):
    """causal: every T1 training target of every user exactly once (windows of n); causal_last: the
    latest n of them. Never a validation, test or reserved-window interaction."""
    path, raw = fixture_dataset
    data = ContinualData(_config(path, FIXTURE_TASKS, pretrain_mode=mode))
    ds, n = data.dataset, 8
    raw = raw.sort_values(["user", "ts"], kind="stable")
    trained = {}
    inter = data.tasks[0].train._dataset.inter_feat
    for u, seq, length, target in zip(
        inter["user_id"].tolist(),
        inter["item_id_list"].tolist(),
        inter["item_length"].tolist(),
        inter["item_id"].tolist(),
    ):
        assert 1 <= length <= n
        targets = seq[1:length] + [target]  # what causal pretraining predicts from this row
        trained.setdefault(ds.id2token("user_id", u), []).extend(ds.id2token("item_id", targets).tolist())
    for user, group in raw.groupby("user"):
        items = group["item"].tolist()
        window = len(items) - min(5, len(items) - 3)  # T1 interactions before the reserved labels
        train_targets = items[1 : window - 2]  # x_1 .. x_{W-3}
        expected = train_targets if mode == "causal" else train_targets[-n:]
        assert sorted(trained.get(user, [])) == sorted(expected), user
