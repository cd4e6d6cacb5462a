"""Each baseline's defining property, on a tiny fixture (the PCL paper's Table 1 methods)."""

import copy
import itertools
import os
from fractions import Fraction

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


def _solve_exactly(matrix, rhs):
    """``matrix^-1 rhs`` over the rationals (Gauss-Jordan), or None if ``matrix`` is singular."""
    n = len(matrix)
    rows = [list(row) + [b] for row, b in zip(matrix, rhs)]
    for col in range(n):
        pivot = next((r for r in range(col, n) if rows[r][col] != 0), None)
        if pivot is None:
            return None
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col] / rows[col][col]
                rows[r] = [x - factor * y for x, y in zip(rows[r], rows[col])]
    return [rows[i][n] / rows[i][i] for i in range(n)]


def _exact_min_norm(gradients):
    """``(c*, |x*|^2, x*)`` of rational ``gradients``, exactly: the min-norm point of their hull has a
    support of affinely independent gradients (Caratheodory), on which it solves the nonsingular KKT
    system ``[[G_SS, 1], [1^T, 0]] [c; mu] = [0; 1]``. Supports are tried in the order of a float
    solve's value, and one is accepted only with an exact certificate: ``c >= 0`` and
    ``(G c)_j >= c^T G c`` for every j (the optimality conditions of the convex problem)."""
    k = len(gradients)
    gram = [[sum(a * b for a, b in zip(gi, gj)) for gj in gradients] for gi in gradients]
    approx = np.array([[float(v) for v in row] for row in gram])

    def float_value(support):
        size = len(support)
        system = np.ones((size + 1, size + 1))
        system[:size, :size], system[size, size] = approx[np.ix_(support, support)], 0.0
        y = np.linalg.lstsq(system, np.eye(size + 1)[size], rcond=None)[0][:size]
        return (y.min() < -1e-6, float(y @ approx[np.ix_(support, support)] @ y), size)

    supports = [s for size in range(1, k + 1) for s in itertools.combinations(range(k), size)]
    for support in sorted(supports, key=float_value):
        size = len(support)
        system = [[gram[i][j] for j in support] + [Fraction(1)] for i in support] + [[Fraction(1)] * size + [0]]
        solution = _solve_exactly(system, [Fraction(0)] * size + [Fraction(1)])
        if solution is None or min(solution[:size]) < 0:
            continue
        c = [Fraction(0)] * k
        for i, value in zip(support, solution):
            c[i] = value
        products = [sum(g * w for g, w in zip(row, c)) for row in gram]
        value = sum(w * p for w, p in zip(c, products))
        if all(p >= value for p in products):
            return c, value, [sum(w * g[t] for w, g in zip(c, gradients)) for t in range(len(gradients[0]))]
    raise AssertionError("no support certified")


def _ill_conditioned(rng, k):
    """Rational gradients of one of four hard kinds (K = k): rank-deficient (in a subspace of fewer
    than k dimensions), nearly dependent (half of them within 1e-4..1e-8 of combinations of the
    others), norms from 1e-3 to 1e3 apart, or fewer dimensions than tasks with a duplicate."""
    d = int(rng.integers(2, 10))
    g = [[Fraction(int(v)) for v in rng.integers(-9, 10, size=d)] for _ in range(k)]
    kind = rng.integers(4)
    if kind == 0:
        basis = g[: int(rng.integers(1, k))]
        g = [[sum(int(rng.integers(-3, 4)) * b[t] for b in basis) for t in range(d)] for _ in range(k)]
    elif kind == 1:
        half = k // 2
        for i in range(half, k):
            a = [Fraction(int(rng.integers(0, 4)), 3) for _ in range(half)]
            eps = Fraction(int(rng.integers(-1, 2)), 10 ** int(rng.integers(4, 9)))
            g[i] = [sum(a[j] * g[j][t] for j in range(half)) + eps for t in range(d)]
    elif kind == 2:
        g = [[v * Fraction(10) ** int(e) for v in gi] for gi, e in zip(g, rng.integers(-3, 4, size=k))]
    else:
        g = [gi[: max(1, k - 2)] for gi in g]
        g[-1] = list(g[0])
    if not any(any(gi) for gi in g):
        g[0][0] = Fraction(1)
    return g


def test_min_norm_solver_matches_the_exact_min_norm_point_on_ill_conditioned_cases():
    """Against the exact rational solution: the value and the min-norm vector ``sum_k c_k g_k`` (both
    unique) to 1e-6, and the weights too where the Gram matrix is well-conditioned (elsewhere they may
    not be unique)."""
    rng = np.random.default_rng(7)
    for case in range(150):
        k = 3 + case % 6
        gradients = _ill_conditioned(rng, k)
        c_star, value_star, x_star = _exact_min_norm(gradients)
        gram = np.array([[float(sum(a * b for a, b in zip(gi, gj))) for gj in gradients] for gi in gradients])
        c = min_norm_weights(gram)
        assert (c >= 0).all() and abs(c.sum() - 1) < 1e-12, case
        x = [sum(Fraction(float(w)) * g[t] for w, g in zip(c, gradients)) for t in range(len(x_star))]
        scale = max(sum(v * v for v in g) for g in gradients)  # the largest squared gradient norm
        value = sum(v * v for v in x)
        assert abs(value - value_star) <= Fraction(1, 10**6) * value_star + Fraction(1, 10**12) * scale, case
        assert sum((a - b) ** 2 for a, b in zip(x, x_star)) <= Fraction(1, 10**12) * scale, case
        if np.linalg.cond(gram) < 1e6:
            assert c == pytest.approx([float(w) for w in c_star], abs=1e-6), case


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


def test_mgda_gram_of_shared_gradients():
    """The Gram matrix MGDA weighs comes from the shared parameters only, counts a shared parameter
    that a task's loss does not reach as zero, and is rebuilt from each step's gradients (its buffer
    is reused)."""
    from recbole_pcl.trainer import JointTrainer

    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {"shared": torch.nn.Linear(4, 3), "only_a": torch.nn.Linear(3, 3), "head": torch.nn.Linear(3, 1)}
    )
    model.shared_parameters = lambda: [*model["shared"].parameters(), *model["only_a"].parameters()]
    trainer = object.__new__(JointTrainer)
    trainer.model, trainer._shared, trainer._flat = model, None, None
    for _ in range(2):
        x = torch.randn(5, 4)
        h = torch.tanh(model["shared"](x))
        losses = {"a": model["head"](model["only_a"](h)).pow(2).mean(), "b": model["head"](h).abs().mean()}
        gradients = trainer.task_gradients(losses)
        assert gradients["b"][2] is None  # b does not reach only_a
        expected = torch.stack(
            [
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(grads[:4], model.parameters())
                    ]
                )
                for grads in gradients.values()
            ]
        ).double()
        assert torch.allclose(trainer.shared_gram(gradients), expected @ expected.T, rtol=1e-12, atol=0)


# ----- joint methods: the batched encoder pass and the MGDA step --------------------------------------
def _sequential_encoders(encoders, hidden, attention_mask, hidden_act, last=None):
    """RecBole's encoders run one after another, whole (how MTL and MMoE encoded before the batched pass)."""
    outputs = torch.stack([e(hidden, attention_mask, output_all_encoded_layers=True)[-1] for e in encoders])
    return outputs if last is None else outputs[:, torch.arange(len(last)), last]


def _joint_pipeline(task_run, model, **settings):
    from recbole_pcl.config import Config
    from recbole_pcl.pipeline import TaskPipeline
    from recbole_pcl.utils import get_model

    config = dict(task_run, n_layers=2, n_heads=2, **settings)  # two layers: the last-position path differs
    return TaskPipeline(Config(model, "ml-100k", config_dict=config), get_model(model))


@pytest.mark.parametrize("model", ["MTL", "MMoE"])
def test_batched_encoder_pass_equals_recbole_encoders_one_after_another(task_run, model):
    """Same outputs (all positions, or the last item's only) from the same weights, with the same
    dropout masks in training: the random stream advances exactly as RecBole's modules advance it."""
    from recbole.model.layers import TransformerEncoder

    from recbole_pcl.model.joint_sasrec import encode_stacked

    pipeline = _joint_pipeline(task_run, model)
    net = pipeline.new_model()
    item_seq = next(iter(pipeline.tasks[1].train))[net.ITEM_SEQ]
    lengths = torch.randint(1, item_seq.size(1) + 1, (len(item_seq),), generator=torch.Generator().manual_seed(0))
    item_seq = item_seq.masked_fill(torch.arange(item_seq.size(1)) >= lengths.unsqueeze(1), 0)  # padded rows
    last = lengths - 1
    hidden = torch.randn(*item_seq.shape, net.hidden_size)
    mask = net.get_attention_mask(item_seq)
    outputs = {}
    for mode in ("train", "eval"):
        getattr(net, mode)()
        for positions in (None, last):
            torch.manual_seed(1)
            batched = encode_stacked(net.encoders(), hidden, mask, net.hidden_act, positions)
            after_batched = torch.rand(4)
            torch.manual_seed(1)
            reference = _sequential_encoders(net.encoders(), hidden, mask, net.hidden_act, positions)
            after_reference = torch.rand(4)
            assert batched.shape == reference.shape
            assert torch.allclose(batched, reference, atol=1e-5), (mode, positions is None)
            assert torch.equal(after_batched, after_reference), mode
            outputs[mode, positions is None] = batched
    assert not torch.allclose(outputs["train", True], outputs["eval", True])  # dropout was on in training
    for task in (None, "next_4star"):  # a user vector (last item only) is the full encoding's last state
        everywhere = net.gather_indexes(net.encode(item_seq, lengths, task), last)
        assert torch.allclose(net.forward(item_seq, lengths, task), everywhere, atol=1e-5), task
    # the parameters stay RecBole's modules: a stored model's keys load as before
    encoders = ["trm_encoder"] if model == "MTL" else [f"experts.{e}" for e in range(3)]
    recbole_keys = TransformerEncoder(n_layers=2, n_heads=2, hidden_size=16, inner_size=32).state_dict()
    assert {f"{e}.{k}" for e in encoders for k in recbole_keys} <= set(net.state_dict())
    pipeline.new_model().load_state_dict(net.state_dict())


def _reference_task_weights(self, losses, gradients=None):
    """MGDA's weights as computed before: the shared gradients flattened and concatenated per task,
    normalised, then their Gram matrix."""
    if self.weighting != "mgda":
        return {task: 1.0 for task in losses}
    params = [p for p in self.model.parameters() if p.requires_grad]
    shared = {id(p) for p in self.model.shared_parameters()}
    flat = torch.stack(
        [
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for g, p in zip(grads, params)
                    if id(p) in shared
                ]
            )
            for grads in gradients.values()
        ]
    ).double()
    norms = flat.norm(dim=1).clamp(min=1e-12)
    values = torch.stack([loss.detach().double() for loss in losses.values()]).clamp(min=1e-12)
    flat = flat / (values * norms).unsqueeze(1)  # mgda_normalization: loss+
    return dict(zip(losses, min_norm_weights((flat @ flat.T).numpy()).tolist()))


def _reference_step_from(self, gradients, weights):
    params = [p for p in self.model.parameters() if p.requires_grad]
    for i, p in enumerate(params):
        parts = [weights[task] * grads[i] for task, grads in gradients.items() if grads[i] is not None]
        p.grad = torch.stack(parts).sum(0) if parts else None
    self.apply_gradients()


@pytest.mark.parametrize("model", ["MTLPlus", "MMoE", "MMoEPlus"])
def test_joint_training_is_unchanged_by_the_faster_pass(task_run, model, monkeypatch):
    """An epoch of joint training (several steps) gives the same losses, MGDA weights and parameters
    as RecBole's encoders run one after another with MGDA's gradients flattened and stacked the plain
    way: the batched pass, the Gram matrix from one float64 buffer and the unstacked step are speed only."""
    from recbole_pcl.model import joint_sasrec
    from recbole_pcl.trainer import JointTrainer

    pipeline = _joint_pipeline(task_run, model)
    task_weights = JointTrainer.task_weights

    def train():
        net = pipeline.new_model()
        pipeline.seed_stage([t.train for t in pipeline.tasks], "joint")
        trainer = JointTrainer(pipeline.tasks[0].config, net, pipeline.tasks, evaluate_valid=None)
        weights = []
        trainer.task_weights = lambda losses, gradients=None: (
            weights.append(type(trainer).task_weights(trainer, losses, gradients)) or weights[-1]
        )
        loss = trainer._train_epoch(pipeline.tasks[0].train, 0)
        return loss, weights, {k: v.detach().clone() for k, v in net.state_dict().items()}

    loss, weights, state = train()
    monkeypatch.setattr(joint_sasrec, "encode_stacked", _sequential_encoders)
    monkeypatch.setattr(JointTrainer, "task_weights", _reference_task_weights)
    monkeypatch.setattr(JointTrainer, "step_from", _reference_step_from)
    reference_loss, reference_weights, reference_state = train()
    monkeypatch.setattr(JointTrainer, "task_weights", task_weights)

    assert len(weights) == len(reference_weights) >= 3
    assert loss == pytest.approx(reference_loss, rel=1e-5)
    for w, r in zip(weights, reference_weights):
        assert list(w.values()) == pytest.approx(list(r.values()), abs=1e-5)
    if model.endswith("Plus"):
        assert len({tuple(round(v, 4) for v in w.values()) for w in weights}) > 1  # MGDA weights move
    initial = pipeline.new_model().state_dict()
    for key, value in state.items():
        assert torch.allclose(value, reference_state[key], atol=1e-5), key
    assert not torch.equal(state["item_embedding.weight"], initial["item_embedding.weight"])  # it trained


def test_joint_validation_cadence_patience_and_best_epoch(task_run):
    """``eval_step: 2``: every task is validated after epochs 2, 4, 6 ... only; patience counts
    validations (``stopping_step: 1``: the second validation without gain stops); the callback gets
    the epoch; the weights restored are those of the best validated epoch."""
    from recbole_pcl.trainer import JointTrainer

    pipeline = _joint_pipeline(task_run, "MTL", epochs=12, eval_step=2, stopping_step=1)
    net = pipeline.new_model()
    for p in net.parameters():
        p.requires_grad_(True)
    scores = iter([0.1, 0.3, 0.2, 0.25, 0.9, 0.9])  # best at the 2nd validation (epoch 4), stop at the 4th
    snapshots, called, validated = [], [], []

    def evaluate_valid(task):
        if task.index == 0:
            snapshots.append({k: v.detach().clone() for k, v in net.named_parameters()})
            validated.append(next(scores))
        return {task.config["valid_metric"].lower(): validated[-1]}

    trainer = JointTrainer(
        pipeline.tasks[0].config,
        net,
        pipeline.tasks,
        evaluate_valid,
        lambda epoch, score: called.append((epoch, round(score, 6))),
    )
    trained = []
    train_epoch = trainer._train_epoch
    trainer._train_epoch = lambda data, epoch, **kw: trained.append(epoch) or train_epoch(data, epoch, **kw)
    trainer.fit(pipeline.tasks[0].train, pipeline.tasks[0].valid, saved=True)
    assert trained == list(range(8))  # stopped after the 4th validation, not at epochs=12
    assert called == [(2, 0.1), (4, 0.3), (6, 0.2), (8, 0.25)]
    assert trainer.history == pytest.approx([0.1, 0.3, 0.2, 0.25])
    trainer.restore_best()
    for name, value in net.named_parameters():
        assert torch.equal(value, snapshots[1][name]), name
    assert not torch.equal(snapshots[1]["item_embedding.weight"], snapshots[3]["item_embedding.weight"])


def test_sampled_ranking_scores_every_row_as_its_own_sequence(task_run):
    """``predict`` scores each run of equal sequences once: every row still gets the score of its own
    sequence and candidate item, also where equal sequences are not neighbours."""
    pipeline = _joint_pipeline(task_run, "MTL")
    net = pipeline.new_model().eval()
    net.active_task = "next_4star"
    batch = next(iter(pipeline.tasks[1].train))[:6]
    order = torch.tensor([0, 0, 0, 1, 1, 2, 0, 3, 3, 4, 5, 1])  # runs, and a sequence that comes back
    rows = batch[order]
    rows[net.ITEM_ID] = torch.arange(1, len(order) + 1)  # a different candidate in every row
    with torch.no_grad():
        scores = net.predict(rows)
        each = torch.stack([net.task_logits(rows[[i]], "next_4star")[0, i + 1] for i in range(len(order))])
    assert torch.allclose(scores, each, atol=1e-5)


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


@pytest.mark.parametrize("stopping, validations", [("any", 9), ("mean", 4)])
def test_joint_training_stops_only_when_no_task_improves(tiny, monkeypatch, stopping, validations):
    """Scripted validation metrics: the mean is best at epoch 1 and never again, while T1 keeps
    improving until epoch 6. With ``any`` training goes on while T1 improves and stops once the
    patience of 2 validations runs out after it (9 validations); with ``mean`` it stops 3 validations
    after epoch 1. Each task's validation curve is recorded."""
    from recbole_pcl.pipeline.pipeline import TaskPipeline

    curves = {
        "next_click": [0.50, 0.51, 0.52, 0.53, 0.54, 0.55, 0.55, 0.55, 0.55, 0.55],
        "next_4star": [0.50, 0.48, 0.47, 0.46, 0.45, 0.44, 0.44, 0.44, 0.44, 0.44],
    }
    served = {name: 0 for name in curves}
    evaluate = TaskPipeline.evaluate

    def scripted(self, model, task, phase="test"):
        result = evaluate(self, model, task, phase)
        if phase == "valid":
            name, metric = task.spec.name, task.config["valid_metric"].lower()
            result[metric] = curves[name][min(served[name], len(curves[name]) - 1)]
            served[name] += 1
        return result

    monkeypatch.setattr(TaskPipeline, "evaluate", scripted)
    settings = dict(tiny, tasks=TASKS[:2], epochs=10, stopping_step=2, joint_stopping=stopping)
    result = run_recbole_pcl("MTL", "ml-100k", config_dict=settings)
    recorded = {r["task"]: r["valid_history"] for r in result["stages"]}
    assert recorded == {name: curve[:validations] for name, curve in curves.items()}
