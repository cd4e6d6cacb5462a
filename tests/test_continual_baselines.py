"""The continual-learning baselines beside the paper's (CONURE, EWC, LwF, Replay): each one's defining
property on a tiny fixture, a tiny run of each, their shared T1 pretraining, and bit-identical
resume and append."""

import os
import re

import pytest
import torch
from conftest import ML100K_TASKS, REPO

from recbole_pcl.config import Config
from recbole_pcl.model.sequential_recommender.lwf import LwF
from recbole_pcl.model.sequential_recommender.replay import Replay
from recbole_pcl.model.sequential_recommender.sinmo import SinMo
from recbole_pcl.pipeline import TaskPipeline
from recbole_pcl.pipeline.identity import digest
from recbole_pcl.pipeline.run_directory import RunDirectory
from recbole_pcl.quick_start import run_recbole_pcl
from recbole_pcl.utils import PCLError, get_model, safe_load

METHODS = ("CONURE", "EWC", "LwF", "Replay")
TASKS = ML100K_TASKS[:3]  # T1, next_4star, next_5star


@pytest.fixture
def tiny(task_run):
    return dict(task_run, epochs=1, tasks=TASKS)


def _stages(run_dir):
    return {
        f: safe_load(os.path.join(run_dir, f))["state_dict"]
        for f in sorted(os.listdir(run_dir))
        if f.startswith("stage-")
    }


def _pipeline(model, settings):
    return TaskPipeline(Config(model, "ml-100k", config_dict=settings), get_model(model))


def _restored(pipeline, run_dir, stages):
    """A model with the first ``stages`` stages of the finished run in ``run_dir`` loaded."""
    model = pipeline.new_model()
    directory = RunDirectory(run_dir, pipeline.store, pipeline.identity)
    for index in range(stages):
        pipeline.strategy.restore(model, index, pipeline.strategy.find_stage(directory, index))
    return model.eval()


def _rows(task, n=None):
    rows = task.train._dataset.inter_feat
    return rows if n is None else rows[:n]


# ----- shared by all four ---------------------------------------------------------------------------
def test_t1_pretraining_is_shared_with_pcl_and_own_settings_act_downstream(tiny):
    stage0 = {m: digest(_pipeline(m, tiny).identity.stage(0)) for m in ("PCL", "FineAll", "SinMo") + METHODS}
    assert len(set(stage0.values())) == 1  # one T1 pretraining for a comparison of all of them
    own = {
        "CONURE": {"conure_prune_ratio": 0.5},
        "EWC": {"ewc_lambda": 1.0},
        "LwF": {"lwf_alpha": 0.5, "lwf_temperature": 1.0},
        "Replay": {"replay_size": 7, "replay_weight": 0.5},
    }
    for model, settings in own.items():  # a method's own settings change its downstream stages only
        base, changed = _pipeline(model, tiny).identity, _pipeline(model, dict(tiny, **settings)).identity
        assert digest(base.stage(0)) == digest(changed.stage(0)) and digest(base.stage(1)) != digest(changed.stage(1))


@pytest.mark.parametrize("model", METHODS)
def test_each_method_runs_end_to_end(tiny, model):
    result = run_recbole_pcl(model, "ml-100k", config_dict=tiny)
    assert result["summary"]["method"] == model
    assert result["summary"]["backbones_kept"] == 1 and result["summary"]["tasks_optimised_jointly"] == 1
    stages = result["stages"]
    assert [s["task"] for s in stages] == ["next_click", "next_4star", "next_5star"]
    assert all(s["trainable_params"] > 0 for s in stages) and all(len(s["valid_history"]) >= 1 for s in stages)
    assert set(result["final"]) == {"next_click", "next_4star", "next_5star"}
    # stage 0 is the plain pretraining, a file of the backbone only
    files = _stages(result["run_dir"])
    pipeline = _pipeline(model, tiny)
    assert set(files["stage-00-next_click.pth"]) == set(pipeline.new_model().backbone_keys)


def test_pipeline_names_no_method():
    source = (REPO / "recbole_pcl" / "pipeline" / "pipeline.py").read_text(encoding="utf-8")
    assert not re.search(r"\b(CONURE|EWC|LwF|Replay|PCL|SinMo|TERACON|FineAll)\b", source)


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("conure_prune_ratio", 1.0, r"setting 'conure_prune_ratio' must be a number >= 0 and < 1, got 1\.0"),
        ("ewc_lambda", -1.0, r"setting 'ewc_lambda' must be a number >= 0, got -1\.0"),
        ("lwf_temperature", 0.0, r"setting 'lwf_temperature' must be a number > 0, got 0\.0"),
        ("lwf_alpha", "x", r"setting 'lwf_alpha' must be a number >= 0, got 'x'"),
        ("replay_size", 0, r"setting 'replay_size' must be an integer >= 1, got 0"),
        ("replay_weight", -0.5, r"setting 'replay_weight' must be a number >= 0, got -0\.5"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(tiny, setting, value, message):
    model = {"conure": "CONURE", "ewc": "EWC", "lwf": "LwF", "replay": "Replay"}[setting.split("_")[0]]
    with pytest.raises(PCLError, match=message):
        Config(model, "ml-100k", config_dict=dict(tiny, **{setting: value}))


def test_conure_refuses_weight_decay(tiny):
    with pytest.raises(PCLError, match=r"setting 'weight_decay' must be 0 for CONURE"):
        _pipeline("CONURE", dict(tiny, weight_decay=0.01)).new_model()


# ----- CONURE -----------------------------------------------------------------------------------
def test_conure_freezes_kept_weights_and_serves_each_task_with_its_masks(tiny, monkeypatch):
    fits = []
    fit_and_test = TaskPipeline.fit_and_test

    def record_fit(self, model, task, learning_rate):
        fits.append(task.spec.name)
        return fit_and_test(self, model, task, learning_rate)

    monkeypatch.setattr(TaskPipeline, "fit_and_test", record_fit)
    result = run_recbole_pcl("CONURE", "ml-100k", config_dict=tiny)
    # stage 0 pretrains T1; stage 1 retrains T1's kept weights, then trains and retrains its task
    assert fits == ["next_click", "next_click", "next_4star", "next_4star", "next_5star", "next_5star"]
    files = _stages(result["run_dir"])
    s0, s1, s2 = (files[f] for f in sorted(files))
    pipeline = _pipeline("CONURE", tiny)
    model = pipeline.load_final()
    assert model.kept == [None, "next_4star", "next_5star"]
    retrained = False
    for name in model.masked:
        o1, o2 = (s[f"owners.{name.replace('.', '__')}"] for s in (s1, s2))
        assert set(o1.unique().tolist()) <= {0, 1, 2} and set(o2.unique().tolist()) <= {0, 1, 2, 3}
        kept = o1 != 0
        assert torch.equal(o2[kept], o1[kept])  # an entry once kept stays its task's
        assert torch.equal(s2[name][kept], s1[name][kept]), name  # ... and bit-identical after later tasks
        n = o1.numel()  # T1 keeps 30 % of each weight, next_4star 30 % of the rest, next_5star of what is left
        t1 = n - round(0.7 * n)
        assert int((o1 == 1).sum()) == t1 and int((o1 == 2).sum()) == (n - t1) - round(0.7 * (n - t1))
        assert int((o2 == 3).sum()) == int((o1 == 0).sum()) - round(0.7 * int((o1 == 0).sum()))
        retrained |= not torch.equal(s1[name][o1 == 1], s0[name][o1 == 1])
    assert retrained  # T1's kept weights were retrained in stage 1
    assert all(k in model.masked or k.startswith(("owners.", "heads.")) for k in s1)  # biases, norms: T1's only
    # task k is served by the entries of tasks 1..k: changing any other entry leaves it as it is
    batch = _rows(pipeline.tasks[1], 40)
    with torch.no_grad():
        for k, task in enumerate(model.task_order(), start=1):
            served = model.task_logits(batch, task)
            for outside in (True, False):
                saved = {name: model.get_parameter(name).clone() for name in model.masked}
                for name in model.masked:
                    owner = model.owners[name]
                    model.get_parameter(name)[((owner == 0) | (owner > k)) if outside else (owner == k)] += 0.5
                assert torch.equal(model.task_logits(batch, task), served) == outside, (task, outside)
                for name, value in saved.items():
                    model.get_parameter(name).copy_(value)
    rows = {r["task"]: r for r in result["tasks"]}
    assert rows["next_4star"]["BWT%"] == 0 and rows["next_5star"]["BWT%"] == 0  # nothing of them can change


# ----- EWC --------------------------------------------------------------------------------------
def test_ewc_penalty_is_zero_at_the_anchor_and_grows_with_fisher_and_distance(tiny):
    pipeline = _pipeline("EWC", dict(tiny, ewc_lambda=3.0))
    model = pipeline.new_model()
    model.begin_task("next_4star")  # its stage keeps T1's F and θ*
    named = dict(model.named_parameters())
    fisher, anchor = model.fisher["__t1__"], model.anchor["__t1__"]
    generator = torch.Generator().manual_seed(0)
    direction = {}
    with torch.no_grad():
        for key, f in fisher.items():
            f.copy_(torch.rand(f.shape, generator=generator))
            anchor[key].copy_(named[key])
            direction[key] = torch.randn(f.shape, generator=generator)

    def penalty_at(scale):
        with torch.no_grad():
            for key, d in direction.items():
                named[key].copy_(anchor[key] + scale * d)
        return float(model.penalty().detach())

    assert penalty_at(0.0) == 0.0
    expected = sum(float((f * direction[k] ** 2).sum()) for k, f in fisher.items())
    one, two = penalty_at(1.0), penalty_at(2.0)
    assert one == pytest.approx(expected, rel=1e-5) and two == pytest.approx(4 * one, rel=1e-5)
    with torch.no_grad():
        for _, f in fisher.items():
            f.mul_(2.0)
    assert penalty_at(1.0) == pytest.approx(2 * one, rel=1e-5)
    # the task being learned pays ewc_lambda times the penalty; an earlier task's loss does not
    model.train()
    for task, data, extra in (("next_4star", pipeline.tasks[1], 3.0 * penalty_at(1.0)), (None, pipeline.tasks[0], 0.0)):
        batch = _rows(data, 40)
        torch.manual_seed(1)  # the same dropout in both
        with_penalty = float(model.task_loss(batch, task).detach())
        torch.manual_seed(1)
        plain = float(SinMo.task_loss(model, batch, task).detach())
        assert with_penalty - plain == pytest.approx(extra, rel=1e-4, abs=1e-6), task


def test_ewc_fisher_is_the_mean_squared_batch_gradient_of_the_finished_task(tiny):
    pipeline = _pipeline("EWC", tiny)
    model = pipeline.new_model()
    model.end_task(None)  # as between stages: nothing trains
    t1 = pipeline.tasks[0]
    fisher = model.estimate_fisher(t1, None)
    assert model.training and not any(p.requires_grad for p in model.parameters())  # left as it was
    rows, size = _rows(t1), t1.config["train_batch_size"]
    named = dict(model.named_parameters())
    expected = {k: torch.zeros_like(named[k]) for k in fisher}
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    starts = range(0, len(rows), size)
    for start in starts:  # the rows in order, the batch's mean loss, squared gradients averaged over batches
        model.zero_grad()
        SinMo.task_loss(model, rows[start : start + size], None).backward()
        for k in expected:
            expected[k] += named[k].grad ** 2 / len(starts)
    assert len(starts) > 1 and set(fisher) == set(model.backbone_keys)
    for k, value in fisher.items():
        assert torch.allclose(value, expected[k], rtol=1e-4, atol=1e-12), k
    assert float(fisher["item_embedding.weight"].sum()) > 0


def test_ewc_stages_write_each_finished_tasks_fisher_and_weights(tiny):
    result = run_recbole_pcl("EWC", "ml-100k", config_dict=tiny)
    s0, s1, s2 = (v for _, v in sorted(_stages(result["run_dir"]).items()))
    for stage, before, key in ((s1, s0, "__t1__"), (s2, s1, "next_4star")):
        for name in s0:  # θ* of the task before a stage: the backbone as that task left it
            stored = name.replace(".", "__")
            assert torch.equal(stage[f"anchor.{key}.{stored}"], before[name]), (key, name)
            assert (stage[f"fisher.{key}.{stored}"] >= 0).all()
        assert float(stage[f"fisher.{key}.item_embedding__weight"].sum()) > 0
    assert not any(k.startswith("fisher.next_4star") for k in s1)  # a stage writes only its finished task's


# ----- LwF --------------------------------------------------------------------------------------
def test_lwf_records_the_outputs_of_the_model_before_the_task(tiny, monkeypatch):
    captured = {}
    record = LwF.record

    def spy(self, data, tasks):
        record(self, data, tasks)
        was_training = self.training
        self.eval()  # the model as recorded: distilling from its own outputs costs nothing
        at_start = float(self.distillation(_rows(data, 50)).detach())
        self.train(was_training)
        captured[data.spec.name] = ({t: v.clone() for t, v in self.recorded.items()}, at_start)

    monkeypatch.setattr(LwF, "record", spy)
    result = run_recbole_pcl("LwF", "ml-100k", config_dict=tiny)
    assert set(captured["next_4star"][0]) == {None} and set(captured["next_5star"][0]) == {None, "next_4star"}
    assert all(at_start == pytest.approx(0.0, abs=1e-6) for _, at_start in captured.values())
    pipeline = _pipeline("LwF", tiny)
    data = pipeline.tasks[2]
    before, after = _restored(pipeline, result["run_dir"], 2), _restored(pipeline, result["run_dir"], 3)
    with torch.no_grad():
        for task, recorded in captured["next_5star"][0].items():
            assert recorded.shape[0] == len(_rows(data))
            assert torch.allclose(recorded, before.task_logits(_rows(data), task), rtol=0, atol=1e-5), task
            assert (recorded - after.task_logits(_rows(data), task)).abs().max() > 1e-3, task  # not the model after


# ----- Replay -----------------------------------------------------------------------------------
def _row_keys(rows, label):
    return {(int(u), tuple(s.tolist()), int(y)) for u, s, y in zip(rows["user_id"], rows["item_id_list"], rows[label])}


@pytest.mark.parametrize("size", [20, 100000])
def test_replay_buffer_is_bounded_and_holds_only_earlier_tasks_training_rows(tiny, monkeypatch, size):
    seen = {}
    buffer = Replay.buffer
    losses = []
    replay_loss = Replay.replay_loss

    def spy(self, data):
        rows = buffer(self, data)
        seen.setdefault(self.active_task, {})[data.index] = rows
        return rows

    monkeypatch.setattr(Replay, "buffer", spy)
    monkeypatch.setattr(Replay, "replay_loss", lambda self, n: losses.append(n) or replay_loss(self, n))
    run_recbole_pcl("Replay", "ml-100k", config_dict=dict(tiny, replay_size=size))
    assert set(seen) == {"next_4star", "next_5star"}
    assert set(seen["next_4star"]) == {0} and set(seen["next_5star"]) == {0, 1}  # earlier tasks only
    assert losses  # the steps of the downstream stages replayed
    pipeline = _pipeline("Replay", dict(tiny, replay_size=size))
    split = pipeline.data.split
    for stage in seen.values():
        for index, rows in stage.items():
            data = pipeline.tasks[index]
            train = _rows(data)
            assert len(rows) == min(size, len(train))
            label = "item_id" if data.spec.kind == "link" else pipeline.config["LABEL_FIELD"]
            assert _row_keys(rows, label) <= _row_keys(train, label)  # rows of its training data, as they are
            if index > 0:
                users = set(rows["user_id"].tolist())
                assert users <= set(split["train"].tolist())
                assert not users & (set(split["valid"].tolist()) | set(split["test"].tolist()))
    # the same buffer of T1 in every stage (seeded by the task, not by the stage)
    assert torch.equal(seen["next_4star"][0]["item_id_list"], seen["next_5star"][0]["item_id_list"])


# ----- resume and append ------------------------------------------------------------------------
@pytest.mark.parametrize("model", METHODS)
def test_resume_and_append_are_bit_identical(task_run, tmp_path, model):
    settings = dict(task_run, epochs=1)  # T1 and three downstream tasks
    full = run_recbole_pcl(model, "ml-100k", config_dict=settings)
    reference = _stages(full["run_dir"])
    store = os.path.join(settings["checkpoint_dir"], "stages")
    # interrupted after stage 0 (CONURE's stage 1 retrains T1 on its data); the append below restores
    # downstream stages and continues from them
    for name in ("stage-01-next_4star.pth", "stage-02-next_5star.pth", "stage-03-next_genre.pth"):
        path = os.path.join(full["run_dir"], name)
        for shared in os.listdir(store):
            if os.path.samefile(os.path.join(store, shared), path):
                os.remove(os.path.join(store, shared))
        os.remove(path)
    resumed = run_recbole_pcl(model, "ml-100k", config_dict=settings)
    _assert_same(_stages(resumed["run_dir"]), reference)
    assert resumed["final"] == full["final"]
    # three tasks, the fourth appended later, equal the four-task run from scratch
    appended_settings = dict(settings, checkpoint_dir=str(tmp_path / "appended"))
    run_recbole_pcl(model, "ml-100k", config_dict=dict(appended_settings, tasks=ML100K_TASKS[:3]))
    appended = run_recbole_pcl(model, "ml-100k", config_dict=appended_settings)
    _assert_same(_stages(appended["run_dir"]), reference)
    assert appended["final"] == full["final"]


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)
