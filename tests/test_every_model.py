"""Every model name ``--model`` accepts trains one epoch through ``run_recbole_pcl`` on a tiny atomic
dataset written here: users and items with features, interactions with rating and timestamp, and a
small knowledge graph linked to the items (plus pretrained entity/relation vectors for KSR and
GRU4RecKG). Each model passes, is skipped naming the optional package it lacks, or is an expected
failure naming RecBole's own reason.

The methods on a task sequence (PCL, TaskPrior and the baselines of recbole_pcl.model) are excluded:
they need the task data and are trained end to end in tests/test_pcl.py and tests/test_methods.py.
"""

import numpy as np
import pytest
from recbole.utils import ModelType

from recbole_pcl.quick_start import run_recbole_pcl
from recbole_pcl.utils import get_model, model_names
from recbole_pcl.utils.utils import missing_requirement

# On one pytest worker: its module fixture (the data folder) is built once
pytestmark = pytest.mark.xdist_group("every_model")

DATASET = "tiny"
N_USERS, N_ITEMS, PER_USER = 24, 30, 10
N_ENTITIES_EXTRA = 8  # KG entities that are not items (genres, directors)
EMB = 8  # width of the pretrained entity/relation vectors


# RecBole 1.2.1 itself stops these models on any stack; the reason is RecBole's, not ours.
RECBOLE_FAILS = {
    "SASRecCPR": (AssertionError, "RecBole's SASRecCPR reaches its own `assert False` (a path it disables)"),
    "GRU4RecCPR": (AssertionError, "RecBole's GRU4RecCPR reaches its own `assert False` (a path it disables)"),
    "KSR": (
        RuntimeError,
        "RecBole's KSR multiplies float32 states by its preloaded relation vectors, kept as float64 "
        "(torch.from_numpy of RecBole's float64 preload matrix): dtype mismatch",
    ),
}

# Tiny sizes shared by all models; keys a model does not read are ignored by it.
COMMON = {
    "epochs": 1,
    "train_batch_size": 64,
    "eval_batch_size": 512,
    "embedding_size": 8,
    "hidden_size": 8,
    "inner_size": 16,
    "mlp_hidden_size": [8, 8],
    "n_layers": 1,
    "n_heads": 1,
    "MAX_ITEM_LIST_LENGTH": 5,
    "pretrain_epochs": 1,  # S3Rec (500) and RaCT (150) pretrain inside fit
    "seed": 2020,
    "reproducibility": True,
    "use_gpu": False,
    "show_progress": False,
    "state": "ERROR",
    "load_col": {
        "inter": ["user_id", "item_id", "rating", "timestamp"],
        "user": ["user_id", "age", "gender"],
        "item": ["item_id", "price", "class"],
        "kg": ["head_id", "relation_id", "tail_id"],
        "link": ["item_id", "entity_id"],
    },
}
# Context-aware models learn the label rating >= 4, as in RecBole's tests, and embed the float fields
# (RecBole 1.2.1 embeds only floats listed in numerical_features).
CONTEXT = {"threshold": {"rating": 4}, "numerical_features": ["age", "price"]}
PRETRAINED_KG = {  # KSR and GRU4RecKG read pretrained entity/relation vectors from extra atomic files
    # RecBole's quick-start yaml for these two lacks the sequential split (leave-one-out by time)
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
    "additional_feat_suffix": ["ent", "rel"],
    "load_col": dict(COMMON["load_col"], ent=["ent_id", "ent_emb"], rel=["rel_id", "rel_emb"]),
    "alias_of_entity_id": ["ent_id"],
    "alias_of_relation_id": ["rel_id"],
    "preload_weight": {"ent_id": "ent_emb", "rel_id": "rel_emb"},
    "kg_embedding_size": EMB,
}
# RecBole ships these two models' defaults as lightgbm.yaml/xgboost.yaml but looks for
# LightGBM.yaml/XGBoost.yaml, so on a case-sensitive file system they must be given, as its tests do.
BOOSTERS = {
    "LightGBM": {
        "lgb_params": {"boosting": "gbdt", "objective": "binary", "metric": ["auc", "binary_logloss"]},
        "lgb_num_boost_round": 1,
    },
    "XGBoost": {
        "xgb_params": {"booster": "gbtree", "objective": "binary:logistic", "eval_metric": ["auc", "logloss"]},
        "xgb_num_boost_round": 1,
    },
}
OVERRIDES = {
    **BOOSTERS,
    "KSR": PRETRAINED_KG,
    "GRU4RecKG": dict(PRETRAINED_KG, embedding_size=EMB),
    "NCL": {"num_clusters": 4},
    "ConvNCF": {"embedding_size": 64},  # its default CNN halves 64 down to 1
    "FEARec": {"n_layers": 2},  # divides by n_layers - 1
}


def _write_tiny_dataset(root):
    """Deterministic atomic files: every user rates PER_USER distinct items at increasing times."""
    rng = np.random.RandomState(0)
    d = root / DATASET
    d.mkdir()
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(1, N_USERS + 1):
        for t, i in enumerate(rng.choice(np.arange(1, N_ITEMS + 1), PER_USER, replace=False)):
            rows.append(f"u{u}\ti{i}\t{rng.randint(1, 6)}\t{1000 * u + t}")
    users = ["user_id:token\tage:float\tgender:token"]
    users += [f"u{u}\t{rng.randint(18, 60)}\t{'MF'[u % 2]}" for u in range(1, N_USERS + 1)]
    genres = ["Drama", "Comedy", "Action", "Horror"]
    items = ["item_id:token\tprice:float\tclass:token_seq"]
    items += [
        f"i{i}\t{rng.uniform(1, 20):.2f}\t{' '.join(rng.choice(genres, rng.randint(1, 3), replace=False))}"
        for i in range(1, N_ITEMS + 1)
    ]
    # Items are entities e1..eN; each has a genre and a director entity.
    links = ["item_id:token\tentity_id:token"] + [f"i{i}\te{i}" for i in range(1, N_ITEMS + 1)]
    kg = ["head_id:token\trelation_id:token\ttail_id:token"]
    for i in range(1, N_ITEMS + 1):
        kg.append(f"e{i}\thas_genre\tg{i % 4}")
        kg.append(f"e{i}\tdirected_by\td{i % (N_ENTITIES_EXTRA - 4)}")
    entities = [f"e{i}" for i in range(1, N_ITEMS + 1)] + [f"g{k}" for k in range(4)]
    entities += [f"d{k}" for k in range(N_ENTITIES_EXTRA - 4)]

    def vectors(n):
        return " ".join(f"{x:.4f}" for x in rng.normal(size=n))

    ent = ["ent_id:token\tent_emb:float_seq"] + [f"{e}\t{vectors(EMB)}" for e in entities]
    rel = ["rel_id:token\trel_emb:float_seq"] + [f"{r}\t{vectors(EMB)}" for r in ("has_genre", "directed_by")]
    files = {"inter": rows, "user": users, "item": items, "link": links, "kg": kg, "ent": ent, "rel": rel}
    for suffix, lines in files.items():
        (d / f"{DATASET}.{suffix}").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return str(_write_tiny_dataset(tmp_path_factory.mktemp("every_model")))


def _config(name, data_path, tmp_path):
    config = dict(COMMON, data_path=data_path, checkpoint_dir=str(tmp_path / "saved"))
    if get_model(name).type in (ModelType.CONTEXT, ModelType.DECISIONTREE):
        config.update(CONTEXT)
    config.update(OVERRIDES.get(name, {}))
    return config


def _params():
    from recbole_pcl.model.abstract_recommender import TaskRecommender

    for name in model_names():
        if missing_requirement(name) is None and issubclass(get_model(name), TaskRecommender):
            continue
        marks = []
        if name in RECBOLE_FAILS:
            error, reason = RECBOLE_FAILS[name]
            marks.append(pytest.mark.xfail(reason=reason, raises=error, strict=True))
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_params()))
def test_model_trains_one_epoch(name, data_path, tmp_path, quick_runs):
    missing = missing_requirement(name)
    if missing:
        pytest.skip(missing)
    # saved=False as in RecBole's own model suite: test the weights of the one epoch
    result = run_recbole_pcl(name, DATASET, config_dict=_config(name, data_path, tmp_path), saved=False)
    test = result["test_result"]
    if "auc" in test:  # context-aware models (and DIN/DIEN): label prediction
        assert set(test) == {"auc", "logloss"} and 0 <= test["auc"] <= 1 and test["logloss"] > 0, test
    else:  # ranking: every per-user metric is at most the user's hit indicator
        assert set(test) == {"recall@10", "mrr@10", "ndcg@10", "hit@10", "precision@10"}, test
        assert 0 < test["hit@10"] <= 1, test
        for key in ("recall@10", "mrr@10", "ndcg@10", "precision@10"):
            assert 0 <= test[key] <= test["hit@10"], test


# ---- Optional packages: fail at once, before any data is loaded, naming the package ----


def _no_data_loading(monkeypatch):
    import recbole_pcl.quick_start.quick_start as qs

    def refuse(*args, **kwargs):
        raise AssertionError("data loading started")

    monkeypatch.setattr(qs, "create_dataset", refuse)


@pytest.mark.parametrize(
    "name, modules, pips", [("KGAT", ["dgl"], "dgl"), ("XGBoost", ["xgboost"], "xgboost lightgbm")]
)
def test_missing_optional_package_is_one_line_exit_2(name, modules, pips, monkeypatch, capsys):
    import sys

    import run_recbole_pcl as cli

    for module in modules + ["lightgbm"]:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed, whatever this machine has
    _no_data_loading(monkeypatch)
    assert cli.main([f"--model={name}", "--dataset=ml-100k"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"model '{name}' needs the optional package" in err[0]
    assert f"{modules[0]} (not installed)" in err[0] and f"pip install {pips}" in err[0]
    assert "unknown model" not in err[0]


def test_installed_but_broken_package_is_named(tmp_path, monkeypatch):
    import sys

    from recbole_pcl.utils import PCLError, get_model

    (tmp_path / "faiss.py").write_text("raise ImportError('built for another numpy')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "faiss", raising=False)
    why = r"faiss-cpu \(installed but fails to import: ImportError: built for another numpy\)"
    with pytest.raises(PCLError, match=why):
        get_model("NCL")


def test_unknown_model_lists_names_marking_extra_packages(monkeypatch, capsys):
    import run_recbole_pcl as cli

    _no_data_loading(monkeypatch)
    assert cli.main(["--model=NoSuchModel", "--dataset=ml-100k"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "unknown model 'NoSuchModel'" in line
    choices = line.split("valid choices: ", 1)[1].split(", ")
    assert {"PCL", "SASRec", "BPR", "LightGCN", "KGAT (needs dgl)", "XGBoost (needs xgboost+lightgbm)"} <= {*choices}
    assert len(choices) == len(model_names())
    assert [c for c in choices if "(needs " in c] == [
        "KGAT (needs dgl)",
        "KGIN (needs torch-scatter)",
        "LightGBM (needs lightgbm+xgboost)",
        "MCCLK (needs torch-scatter)",
        "NCL (needs faiss-cpu)",
        "XGBoost (needs xgboost+lightgbm)",
    ]


# ---- The best-epoch checkpoint (saved=True, the command line's default) of models whose state is
# not only tensors: scipy matrices, sub-modules, dicts, or a pretraining stage ----
NON_TENSOR_STATE = [
    "ItemKNN",
    "AsymKNN",
    "EASE",
    "SLIMElastic",
    "DIN",
    "DIEN",
    "FDSA",
    "GRU4RecF",
    "SASRecF",
    "RippleNet",
    "RaCT",
    "S3Rec",
]


@pytest.mark.parametrize("name", NON_TENSOR_STATE)
def test_best_epoch_checkpoint_reloads_for_non_tensor_state(name, data_path, tmp_path, quick_runs):
    import torch

    config = _config(name, data_path, tmp_path)
    if name in ("RaCT", "S3Rec"):  # their pretraining stage writes a file every save_step epochs (50 by default)
        config["save_step"] = 1
    saved = run_recbole_pcl(name, DATASET, config_dict=config, saved=True)
    unsaved = run_recbole_pcl(
        name, DATASET, config_dict=dict(config, checkpoint_dir=str(tmp_path / "other")), saved=False
    )
    assert saved["test_result"] == unsaved["test_result"]  # the reloaded best (only) epoch is that epoch
    assert torch.load(saved["checkpoint"], weights_only=True)["state_dict"]


def test_plain_encoding_round_trips_recbole_other_parameters(tmp_path):
    import scipy.sparse as sp
    import torch

    from recbole_pcl.trainer.trainer import decode_plain, encode_plain

    matrix = sp.random(5, 7, density=0.4, format="csr", random_state=0)
    module = torch.nn.Linear(3, 2)
    value = {
        "w": matrix,
        "layer": module,
        "ripple": {3: [([1, 2], [0, 1], [4, 5])]},
        "adj": np.arange(6).reshape(2, 3),
        "n": np.int64(4),
    }
    path = tmp_path / "state.pth"
    torch.save(encode_plain(value), path)
    fresh = torch.nn.Linear(3, 2)
    decoded = decode_plain(torch.load(path, weights_only=True), {"layer": fresh})
    assert decoded["w"].format == "csr" and (decoded["w"] != matrix).nnz == 0
    assert decoded["layer"] is fresh and torch.equal(fresh.weight, module.weight)
    assert decoded["ripple"] == {3: [([1, 2], [0, 1], [4, 5])]}
    assert (decoded["adj"] == value["adj"]).all() and decoded["n"] == 4
