"""RecBole's own models as rows of the continual comparison (recbole_pcl/model/recbole_rows.py): each
listed model runs a tiny comparison fold, the SASRec row is the generic mechanism with SASRec, general
models train on nothing a validation or test user labelled and never rank their training items,
their class-task cells are "n/a" with the reason, and models that cannot take part are refused by
name before anything trains."""

import copy
import json
import os

import pytest
import torch
import yaml
from conftest import ML100K_TASKS, REPO, TINY_MODEL, module_folder
from recbole.model.sequential_recommender.sasrec import SASRec
from torch import nn

from recbole_pcl.config import Config
from recbole_pcl.data.continual import ContinualData
from recbole_pcl.data.pretraining import t1_history
from recbole_pcl.experiment import run_comparison
from recbole_pcl.experiment.compare import Method
from recbole_pcl.model.abstract_recommender import ContinualRecommender, TaskSASRec
from recbole_pcl.model.recbole_rows import T1, general_training_sets, make_row
from recbole_pcl.pipeline import TaskPipeline
from recbole_pcl.utils import PCLError, get_model, safe_load

# On one pytest worker: its module fixtures (a comparison of every listed model) are built once
pytestmark = pytest.mark.xdist_group("recbole_rows")

TASKS = ML100K_TASKS[:4]
SEQUENTIAL = ["GRU4Rec", "NARM", "Caser", "NextItNet", "BERT4Rec", "SRGNN", "LightSANs", "CORE"]
GENERAL = ["Pop", "BPR", "FM"]  # FM: a context-aware model, ranking as the general ones
# the task_run fixture of conftest, one epoch per stage, for runs shared by the whole module
TINY = {
    **TINY_MODEL,
    "user_inter_num_interval": "[20,40]",
    "epochs": 1,
    "contextual_prompt": "random",
    "train_batch_size": 128,
    "fwt_reference": False,
    "runner": "serial",
    "tasks": copy.deepcopy(TASKS),
}


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """One fold of the README's comparison: PCL, the SASRec row and every listed RecBole model (and
    FM, a context-aware one)."""
    with module_folder(tmp_path_factory, "rows") as folder:
        settings = dict(TINY, checkpoint_dir=str(folder / "saved"), n_folds=2, compare_folds=[0])
        yield run_comparison(["PCL", "SASRecPerTask", *SEQUENTIAL, *GENERAL], "ml-100k", config_dict=settings)


@pytest.mark.parametrize("model", SEQUENTIAL + GENERAL)
def test_a_recbole_model_is_a_row_of_the_comparison(comparison, model):
    assert not any(k.startswith(f"{model}/") for k in comparison["failures"]), comparison["failures"]
    row = next(m for m in comparison["methods"] if m["method"] == model)
    assert row["model"] == f"{model}PerTask" and row["strategy"] == "sequential" and row["F"] == 1
    general = model in GENERAL
    assert row["B"] == (3 if general else 4)  # one model per task it learns
    for task in ("next_click", "next_4star", "next_5star"):
        for metric in ("hit@5", "hit@10", "ndcg@10"):
            assert 0 <= row["tasks"][task][metric]["mean"] <= 1 and len(row["tasks"][task][metric]["folds"]) == 1
    assert row["tasks"]["next_click"]["hit@10"]["mean"] > 0  # it ranks T1's test items at all
    if general:
        assert row["tasks"]["next_genre"] == {} and "sequence representation" in row["not_applicable"]["next_genre"]
    else:
        assert 0 <= row["tasks"]["next_genre"]["accuracy"]["mean"] <= 1 and "not_applicable" not in row
    params = row["trainable_params"]
    assert all(p > 0 for p in params[: 3 if general else 4]) and row["seconds"][0] > 0
    line = next(line for line in comparison["table"].splitlines() if line.startswith(f"| {model} "))
    assert line.count("n/a") == (1 if general else 0)


def test_general_models_class_cells_say_na_with_the_reason_in_the_notes(comparison):
    page = open(os.path.join(comparison["directory"], "compare.md")).read()
    stored = json.load(open(os.path.join(comparison["directory"], "compare.json")))
    for model in GENERAL:
        why = next(m for m in stored["methods"] if m["method"] == model)["not_applicable"]["next_genre"]
        assert f"- n/a: {model} on next_genre: {why}" in page  # the reason, from compare.json
    differences = {line.split("|")[1].strip(): line for line in comparison["differences"].splitlines()}
    assert differences["Pop"].rstrip(" |").endswith("n/a")
    # the best class-task accuracy (bold) is one of a method that has a model of the task
    cells = {line.split("|")[1].strip(): line.split("|")[-6] for line in comparison["table"].splitlines()[2:]}
    assert {cells[m].strip() for m in GENERAL} == {"n/a"} and any("**" in c for c in cells.values())


def test_a_general_rows_finished_stages_restore_its_state(comparison):
    """Pop's counts are no parameters: its stage files keep them (as RecBole's checkpoints keep a
    model's other parameters), so the model loaded from the run scores as it did."""
    run = [d for d in os.listdir(os.path.dirname(comparison["directory"])) if d.startswith("PopPerTask-")]
    results = json.load(open(os.path.join(os.path.dirname(comparison["directory"]), run[0], "results.json")))
    config = Config(
        "PopPerTask",
        "ml-100k",
        config_dict=dict(TINY, checkpoint_dir=os.path.dirname(comparison["directory"]), n_folds=2, fold=0),
    )
    pipeline = TaskPipeline(config, get_model("PopPerTask"))
    model = pipeline.load_final()
    assert model.task_backbones[T1].item_cnt.sum() > 0
    for task in pipeline.tasks[:3]:
        assert pipeline.evaluate(model, task) == pytest.approx(results["final"][task.spec.name])


def test_a_traditional_model_computes_in_one_epoch_from_its_training_interactions(tmp_path):
    """Pop counts its training interactions in one epoch (as RecBole's TraditionalTrainer) and no
    sampled negative, however many epochs the shared setting says. (RecBole's Pop counts an item
    once per batch however often the batch holds it: at most its training count.)"""
    settings = dict(TINY, tasks=TASKS[:2], epochs=3, checkpoint_dir=str(tmp_path / "saved"))
    pipeline, result = _run(get_model("PopPerTask"), settings)
    assert [len(stage["valid_history"]) for stage in result["stages"]] == [1, 1]
    model = pipeline.load_final()
    for key in (T1, "next_4star"):
        trained = model.training_sets[key].inter_feat[pipeline.data.dataset.iid_field]
        counts = torch.bincount(trained, minlength=model.n_items)
        counted = model.task_backbones[key].item_cnt.view(-1).cpu()
        assert torch.equal(counted > 0, counts > 0) and (counted <= counts).all()  # never a negative, one epoch
        assert counted[counts == 1].eq(1).all()


# ----- the SASRec row --------------------------------------------------------------------------------
class OldSASRecPerTask(TaskSASRec, ContinualRecommender):
    """SASRecPerTask as it was before it became the generic mechanism: a copy of T1's backbone
    modules per task, drawn again from SASRec's initialiser, scored through TaskSASRec."""

    display_name = "SASRec"
    modules = ("item_embedding", "position_embedding", "trm_encoder", "LayerNorm")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.task_backbones = nn.ModuleDict()

    def backbones_kept(self):
        return 1 + len(self.task_backbones)

    def add_task(self, name, kind, num_classes=0, attribute=None):
        super().add_task(name, kind, num_classes, attribute)
        self.task_backbones[name] = nn.ModuleDict({m: copy.deepcopy(getattr(self, m)) for m in self.modules})

    def backbone(self, task):
        return self.task_backbones[task] if task in self.task_backbones else self

    def init_task(self, name):
        super().init_task(name)
        self.task_backbones[name].apply(self._init_weights)

    def trainable_parameters(self, name):
        params = super().trainable_parameters(name)
        return params if name is None else params + list(self.task_backbones[name].parameters())

    def stage_keys(self, name, keys):
        own = super().stage_keys(name, keys)
        return own if name is None else own + [k for k in keys if k.startswith(f"task_backbones.{name}.")]


def _run(model_class, settings):
    pipeline = TaskPipeline(Config(model_class, "ml-100k", config_dict=settings), model_class)
    return pipeline, pipeline.run()


def _numbers(result):
    return result["final"], [stage["test"] for stage in result["stages"]], [s["valid"] for s in result["stages"]]


def test_the_sasrec_row_is_the_generic_mechanism_with_sasrec(tmp_path, quick_runs):
    settings = dict(TINY, downstream_learning_rate=0.002, task_eval_mode="full")
    sasrec_row = get_model("SASRecPerTask")
    assert (Method.parse("SASRec").model, Method.parse("SASRec").label) == ("SASRecPerTask", "SASRec")
    # 1. its results and stage files are those of the implementation it replaced
    saved = str(tmp_path / "saved")
    new_pipeline, new = _run(sasrec_row, dict(settings, checkpoint_dir=saved))
    _, old = _run(OldSASRecPerTask, dict(settings, checkpoint_dir=saved))
    assert _numbers(new) == _numbers(old) and new["summary"]["backbones_kept"] == 4
    model = new_pipeline.new_model()
    for index in range(len(new_pipeline.specs)):  # the old run's files load into the new model
        state = safe_load(os.path.join(old["run_dir"], new_pipeline.strategy.stage_file(index)))
        new_pipeline.strategy.restore(model, index, state)
    model.eval()
    for task in new_pipeline.tasks:
        assert new_pipeline.evaluate(model, task) == old["final"][task.spec.name]
    # 2. through the mechanism every RecBole model gets (its own T1 model trained by SASRec's
    # calculate_loss: the SASRec row's T1 with RecBole's rows, pretrain_mode prefix)
    prefix = dict(settings, pretrain_mode="prefix", hidden_dropout_prob=0.2, attn_dropout_prob=0.2)
    generic = make_row(SASRec)
    assert generic is not sasrec_row and issubclass(generic, ContinualRecommender)
    _, through_generic = _run(generic, dict(prefix, checkpoint_dir=str(tmp_path / "generic")))
    _, through_row = _run(sasrec_row, dict(prefix, checkpoint_dir=str(tmp_path / "row")))
    assert _numbers(through_generic) == _numbers(through_row)
    assert through_generic["summary"]["backbones_kept"] == through_row["summary"]["backbones_kept"] == 4


# ----- general models: what they train on, what they rank -------------------------------------------
@pytest.fixture(scope="module")
def general_data(tmp_path_factory):
    with module_folder(tmp_path_factory, "general") as folder:
        config = Config("BPRPerTask", "ml-100k", config_dict=dict(TINY, checkpoint_dir=str(folder), fold=0))
        yield config, ContinualData(config)


def test_general_models_train_on_no_label_of_a_validation_or_test_user(general_data):
    config, data = general_data
    timeline, uid = data.timeline, data.dataset.uid_field
    pairs = {}
    for key, dataset in general_training_sets(data).items():
        inter = dataset.inter_feat
        pairs[key] = list(zip(inter[uid].tolist(), inter[data.dataset.iid_field].tolist()))
    rows, last_two = t1_history(timeline, data.cold_items)
    user_ids, items = timeline.inter[uid].to_numpy(), timeline.items
    history = list(zip(user_ids[rows].tolist(), items[rows].tolist()))  # every interaction T1 rows see
    t1_train = list(zip(user_ids[rows[~last_two]].tolist(), items[rows[~last_two]].tolist()))
    assert sorted(pairs[T1]) == sorted(t1_train)  # T1: its training interactions, as RecBole's split has them
    assert set(pairs) == {T1, "next_4star", "next_5star"}  # no general model of a class task
    window = timeline.position >= timeline.window_start
    reserved = set(zip(user_ids[window].tolist(), items[window].tolist()))
    for task in data.tasks[1:3]:
        labels = task.train._dataset.inter_feat
        train_labels = list(zip(labels[uid].tolist(), labels[data.dataset.iid_field].tolist()))
        assert sorted(pairs[task.spec.name]) == sorted(history + train_labels)
        outside = {u for u, _ in train_labels}
        assert outside.isdisjoint(data.split["valid"]) and outside.isdisjoint(data.split["test"])
        for phase in ("valid", "test"):  # no validation or test user's label
            held = getattr(task, phase)._dataset.inter_feat
            assert not set(zip(held[uid].tolist(), held[data.dataset.iid_field].tolist())) & set(pairs[task.spec.name])
        assert (set(pairs[task.spec.name]) & reserved) <= set(train_labels)  # of the label window: those only


def test_a_general_model_never_ranks_its_training_items(general_data):
    config, data = general_data
    model_class = get_model("BPRPerTask")
    model = model_class(config, data.tasks[0].train._dataset)
    model.setup(data)
    model.eval()
    uid, iid = data.dataset.uid_field, data.dataset.iid_field
    for index, key in ((0, T1), (1, "next_4star")):
        batch = next(iter(data.tasks[index].test))[0]
        with torch.no_grad():
            scores = model.task_logits(batch, None if index == 0 else key)
        trained = model.training_sets[key].inter_feat
        for row, user in enumerate(batch[uid].tolist()):
            seen = trained[iid][trained[uid] == user]
            assert len(seen) and torch.isinf(scores[row, seen]).all()
            unseen = torch.ones(scores.shape[1], dtype=torch.bool)
            unseen[seen], unseen[0] = False, False
            assert torch.isfinite(scores[row, unseen]).all()


# ----- settings, names, refusals ---------------------------------------------------------------------
def test_a_rows_settings_are_its_models_own_and_the_shared_training():
    shared = yaml.safe_load((REPO / "properties" / "model" / "TaskSASRec.yaml").read_text())
    row = yaml.safe_load((REPO / "properties" / "model" / "RecBoleRow.yaml").read_text())
    for key in ("MAX_ITEM_LIST_LENGTH", "epochs", "stopping_step", "learning_rate", "train_batch_size"):
        assert row[key] == shared[key], key  # what every row shares with the SASRec-based methods
    config = Config("GRU4RecPerTask", "ml-100k")
    assert (config["embedding_size"], config["dropout_prob"], config["hidden_size"]) == (64, 0.3, 128)  # GRU4Rec's
    assert config["pretrain_mode"] == "prefix" and config["epochs"] == 100 and config["fwt_reference"] is False
    assert Config("GRU4RecPerTask", "ml-100k", config_dict={"loss_type": "BPR"})["MODEL_INPUT_TYPE"].name == "PAIRWISE"
    with pytest.raises(PCLError, match="setting 'loss_type' must be one of BPR, CE for GRU4RecPerTask"):
        Config("GRU4RecPerTask", "ml-100k", config_dict={"loss_type": "NLL"})
    # an experiment definition names a RecBole model as any method
    method = Method.parse({"model": "GRU4Rec", "label": "gru", "embedding_size": 32})
    assert (method.label, method.model, method.settings) == ("gru", "GRU4RecPerTask", {"embedding_size": 32})


@pytest.mark.parametrize(
    "model, why",
    [
        ("CKE", "it is knowledge-aware: it needs RecBole's knowledge-graph dataset"),
        ("DIN", "it is a click-through-rate model"),
        ("S3Rec", "it is trained in two runs"),
        ("RecVAE", "RecBole trains it with a trainer of its own (RecVAETrainer)"),
    ],
)
def test_a_model_that_cannot_take_part_is_refused_by_name_before_training(model, why, tmp_path):
    settings = dict(TINY, checkpoint_dir=str(tmp_path / "saved"), n_folds=2)
    with pytest.raises(PCLError) as refused:
        run_comparison(["Pop", model], "ml-100k", config_dict=settings)
    line = str(refused.value)
    assert line.startswith(f"method '{model}': model '{model}' cannot join a continual run or a comparison: {why}")
    assert "\n" not in line and not os.path.exists(tmp_path / "saved" / "stages")  # nothing trained


def test_a_model_without_a_sequence_representation_has_no_class_cell():
    # FPMC's forward needs the candidate item: it ranks, but a class task has nothing to read
    fpmc = get_model("FPMCPerTask")
    assert fpmc.task_support("link") is None and "needs 'next_item'" in fpmc.task_support("class")
    assert all(get_model(f"{m}PerTask").task_support("class") is None for m in SEQUENTIAL)
