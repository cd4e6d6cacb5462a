"""Each baseline's defining property, on a tiny fixture (the PCL paper's Table 1 methods)."""

import copy
import os

import numpy as np
import pytest
import torch
from conftest import ML100K_TASKS

from recbole_pcl.quick_start import run_recbole_pcl
from recbole_pcl.trainer.mgda import min_norm_weights, project_to_simplex
from recbole_pcl.utils import safe_load

TASKS = ML100K_TASKS[:4]


@pytest.fixture
def tiny(task_run):
    return dict(task_run, epochs=1)


def _stages(run_dir):
    return {
        f: safe_load(os.path.join(run_dir, f))["state_dict"]
        for f in sorted(os.listdir(run_dir))
        if f.startswith("stage-")
    }


# ----- MGDA's min-norm solver -----------------------------------------------------------------------
def _weights(gradients):
    g = np.asarray(gradients, dtype=float)
    return min_norm_weights(g @ g.T)


@pytest.mark.parametrize(
    "gradients, weights",
    [
        ([[1, 0], [0, 1]], [0.5, 0.5]),  # orthogonal: the midpoint
        ([[2, 0], [0, 1]], [0.2, 0.8]),  # min |(2a, 1-a)|: a = 1/5
        ([[1, 0], [-1, 0]], [0.5, 0.5]),  # opposite: the zero vector
        ([[1, 1], [2, 2]], [1.0, 0.0]),  # the shorter of two parallel gradients
        ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [1 / 3, 1 / 3, 1 / 3]),  # orthonormal: the centroid
        ([[1, 0], [0, 1], [1, 1]], [0.5, 0.5, 0.0]),  # the third adds nothing: (0.5, 0.5) is the min-norm point
        ([[3, 0, 0], [0, 2, 0], [0, 0, 1]], [4 / 49, 9 / 49, 36 / 49]),  # weights proportional to 1/|g|^2
    ],
)
def test_min_norm_solver_finds_the_known_point(gradients, weights):
    found = _weights(gradients)
    assert (found >= 0).all() and found.sum() == pytest.approx(1.0)
    assert found == pytest.approx(weights, abs=1e-6)


def test_min_norm_solver_on_random_gradients_is_optimal():
    rng = np.random.default_rng(0)
    for k in (2, 3, 5, 8):
        g = rng.normal(size=(k, 20))
        c = _weights(g)
        assert (c >= 0).all() and c.sum() == pytest.approx(1.0)
        best = np.linalg.norm(c @ g)
        for _ in range(2000):  # no point of the simplex is shorter
            other = rng.dirichlet(np.ones(k))
            assert np.linalg.norm(other @ g) >= best - 1e-9
    assert project_to_simplex(np.array([0.2, 0.9, -0.5])) == pytest.approx([0.15, 0.85, 0.0])


# ----- continual baselines --------------------------------------------------------------------------
BACKBONE = ("item_embedding.", "position_embedding.", "trm_encoder.", "LayerNorm.")


def test_fineall_keeps_one_backbone_per_task_from_t1s(tiny, monkeypatch):
    from recbole_pcl.model.sequential_recommender.fineall import FineAll

    copied = {}
    init_task = FineAll.init_task

    def record(self, name):  # each task's backbone when its stage starts
        init_task(self, name)
        copied[name] = {k: v.clone() for k, v in self.task_backbones[name].state_dict().items()}

    monkeypatch.setattr(FineAll, "init_task", record)
    result = run_recbole_pcl("FineAll", "ml-100k", config_dict=tiny)
    stages = _stages(result["run_dir"])
    t1 = stages["stage-00-next_click.pth"]
    assert result["summary"]["backbones_kept"] == 4
    for name in ("next_4star", "next_5star", "next_genre"):
        own = stages[[f for f in stages if f.endswith(f"{name}.pth")][0]]
        assert not any(k.startswith(BACKBONE) for k in own)  # T1's backbone is never rewritten
        for key, value in copied[name].items():  # every task starts from the pretrained weights ...
            assert torch.equal(value, t1[key]), (name, key)
        assert not torch.equal(
            own[f"task_backbones.{name}.item_embedding.weight"], t1["item_embedding.weight"]
        )  # ... and moves
    rows = {r["task"]: r for r in result["tasks"]}
    assert rows["next_click"]["after_stage"] == rows["next_click"]["hit@10"]  # T1 is served by its own backbone
    assert all(rows[n]["BWT%"] == 0 for n in ("next_4star", "next_5star", "next_genre"))


def test_sasrec_per_task_starts_each_task_from_scratch(tiny):
    result = run_recbole_pcl("SASRecPerTask", "ml-100k", config_dict=tiny)
    stages = _stages(result["run_dir"])
    t1 = stages["stage-00-next_click.pth"]["item_embedding.weight"]
    task = stages["stage-01-next_4star.pth"]["task_backbones.next_4star.item_embedding.weight"]
    assert task.shape == t1.shape and torch.corrcoef(torch.stack([task.flatten(), t1.flatten()]))[0, 1].abs() < 0.2


def test_sinmo_final_model_is_the_one_after_the_last_task(tiny, monkeypatch):
    from recbole_pcl.pipeline import TaskPipeline

    final = {}
    evaluate = TaskPipeline.evaluate
    monkeypatch.setattr(
        TaskPipeline,
        "evaluate",
        lambda self, model, task, phase="test": (
            final.update({k: v.clone() for k, v in model.state_dict().items()}) or evaluate(self, model, task, phase)
        ),
    )
    result = run_recbole_pcl("SinMo", "ml-100k", config_dict=tiny)
    stages = _stages(result["run_dir"])
    last, first = stages["stage-03-next_genre.pth"], stages["stage-00-next_click.pth"]
    for key in first:  # the backbone every task is served by is the one the last task left
        assert torch.equal(final[key], last[key]), key
    assert not torch.equal(last["item_embedding.weight"], first["item_embedding.weight"])
    assert result["summary"]["backbones_kept"] == 1


def test_teracon_masks_and_scale_schedule(tiny):
    from recbole_pcl.config import Config
    from recbole_pcl.pipeline import TaskPipeline
    from recbole_pcl.utils import get_model

    pipeline = TaskPipeline(Config("TERACON", "ml-100k", config_dict=tiny), get_model("TERACON"))
    model = pipeline.new_model()
    model.begin_task(None)
    model.train()
    model.start_epoch(4)
    batch = next(iter(pipeline.tasks[0].train))
    scales = []
    for _ in range(4):
        model.calculate_loss(batch)
        scales.append(model.s)
    s_max = 50
    assert scales == pytest.approx([1 / s_max + (s_max - 1 / s_max) * b / 4 for b in range(4)])  # Eq. 19, per batch
    model.eval()
    assert model.s == s_max  # evaluation uses s_max
    assert model.masks(None, model.s).shape == (2, 16)  # two masked sublayers per layer
    for scale in (1 / s_max, 1.0, 3.0):
        m = model.masks(None, scale)
        assert bool(((m > 0) & (m < 1)).all())
    # the scale hardens the mask: at s_max the sigmoid saturates to (nearly) 0/1 values
    distance = [float((model.masks(None, s) - model.masks(None, s).round()).abs().mean()) for s in (1.0, 3.0, s_max)]
    assert distance[0] > distance[1] > distance[2] and distance[2] < 0.01
    model.end_task(None)
    model.begin_task("next_4star")  # a second task: relation-aware masks and a frozen teacher
    assert model.teacher is not None and model.teacher.known == ["__t1__"]
    for task in (None, "next_4star"):
        mask = model.masks(task, 3.0)
        assert bool(((mask > 0) & (mask < 1)).all())
    assert model.relation_weight["__t1__"].shape == (2, 3)  # f over [e_k, e_j, -e_j]
    model.train()
    model.start_epoch(10)
    loss = model.calculate_loss(next(iter(pipeline.tasks[1].train)))
    loss.backward()
    assert 0 < model.rho["__t1__"] < 1 and model.task_emb["__t1__"].grad is not None  # retention reaches T1


def test_joint_methods_take_every_tasks_loss_in_each_step(tiny, monkeypatch):
    from recbole_pcl.trainer import JointTrainer

    steps = []
    weights = JointTrainer.task_weights

    def record(self, losses, gradients=None):
        steps.append((self.model.__class__.__name__, set(losses), weights(self, losses, gradients)))
        return steps[-1][2]

    monkeypatch.setattr(JointTrainer, "task_weights", record)
    for model in ("MTL", "MMoE", "MTLPlus", "MMoEPlus"):
        result = run_recbole_pcl(model, "ml-100k", config_dict=tiny)
        assert result["summary"]["tasks_optimised_jointly"] == 4 and result["summary"]["backbones_kept"] == 1
        own = [s for s in steps if s[0] == model]
        assert own and all(tasks == {None, "next_4star", "next_5star", "next_genre"} for _, tasks, _ in own)
        for _, _, w in own:
            if model.endswith("Plus"):  # MGDA: a point of the simplex, differing from step to step
                assert min(w.values()) >= 0 and sum(w.values()) == pytest.approx(1.0)
            else:
                assert set(w.values()) == {1.0}
        if model.endswith("Plus"):
            assert len({tuple(round(v, 6) for v in w.values()) for _, _, w in own}) > 1
    assert os.path.isfile(os.path.join(result["run_dir"], "stage-joint.pth"))


def test_mgda_step_is_the_weighted_losses_step():
    """MGDA's step reuses the per-task gradients it weighs: it must move every parameter exactly as
    ``backward`` of the weighted loss would, and leave a parameter no loss reaches without a gradient."""
    from recbole_pcl.trainer import JointTrainer

    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {
            "shared": torch.nn.Linear(4, 3),
            "a": torch.nn.Linear(3, 1),
            "b": torch.nn.Linear(3, 2),
            "unused": torch.nn.Linear(1, 1),
        }
    )
    reference, initial = copy.deepcopy(model), copy.deepcopy(model)
    x = torch.randn(5, 4)

    def losses(m):
        h = torch.tanh(m["shared"](x))
        return {"a": m["a"](h).pow(2).mean(), "b": m["b"](h).abs().mean()}

    weights = {"a": 0.3, "b": 0.7}
    trainer = object.__new__(JointTrainer)
    trainer.model, trainer.clip_grad_norm = model, None
    trainer.optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer.step_from(trainer.task_gradients(losses(model)), weights)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    sum(weights[t] * loss for t, loss in losses(reference).items()).backward()
    optimizer.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, atol=1e-7), name
    assert model["unused"].weight.grad is None
    assert not torch.equal(model["shared"].weight, initial["shared"].weight)  # the step did move


def test_mmoe_each_task_is_mixed_by_its_own_gate(tiny):
    """Changing task k's gate changes task k's user vector and no other task's."""
    from recbole_pcl.config import Config
    from recbole_pcl.pipeline import TaskPipeline
    from recbole_pcl.utils import get_model

    pipeline = TaskPipeline(Config("MMoE", "ml-100k", config_dict=tiny), get_model("MMoE"))
    model = pipeline.new_model().eval()
    batch = next(iter(pipeline.tasks[1].train))
    tasks = [None, "next_4star", "next_5star", "next_genre"]
    with torch.no_grad():
        before = {task: model.user_representation(batch, task) for task in tasks}
        for gate, changed in (("next_5star", "next_5star"), ("__t1__", None)):
            model.gates[gate].bias.add_(torch.arange(len(model.experts), dtype=torch.float) * 3.0)
            after = {task: model.user_representation(batch, task) for task in tasks}
            for task in tasks:
                assert torch.allclose(after[task], before[task]) == (task != changed), (gate, task)
            before = after
