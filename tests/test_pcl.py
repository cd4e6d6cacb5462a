"""PCL and the continual run: prompts, frozen backbone, pretraining modes, stages, resume."""

import copy
import json
import os

import pytest
import torch
from conftest import ML100K_TASKS
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_pcl.config import Config
from recbole_pcl.data.continual import ContinualData
from recbole_pcl.quick_start import run_recbole_pcl
from recbole_pcl.utils import safe_load

TASKS = ML100K_TASKS[:4]
BACKBONE = ("item_embedding.", "position_embedding.", "trm_encoder.", "LayerNorm.")


@pytest.fixture
def tiny_pcl(task_run):
    return task_run


def _stage_files(run_dir):
    return sorted(f for f in os.listdir(run_dir) if f.startswith("stage-"))


def test_backbone_frozen_and_t1_unchanged(tiny_pcl, monkeypatch):
    from recbole_pcl.pipeline import TaskPipeline

    final_states = []
    evaluate = TaskPipeline.evaluate
    monkeypatch.setattr(
        TaskPipeline,
        "evaluate",
        lambda self, model, task, phase="test": (
            final_states.append({k: v.clone() for k, v in model.state_dict().items()})
            or evaluate(self, model, task, phase)
        ),
    )
    result = run_recbole_pcl("PCL", "ml-100k", config_dict=tiny_pcl)
    files = _stage_files(result["run_dir"])
    assert files == [
        "stage-00-next_click.pth",
        "stage-01-next_4star.pth",
        "stage-02-next_5star.pth",
        "stage-03-next_genre.pth",
    ]
    states = [safe_load(os.path.join(result["run_dir"], f))["state_dict"] for f in files]
    # stage 0 holds the backbone; later stages hold their task's tensors only, never the backbone
    assert set(states[0]) == set(SASRec_keys(states[0])) and "item_embedding.weight" in states[0]
    for later in states[1:]:
        assert not any(k.startswith(BACKBONE) for k in later)
    assert set(states[1]) >= {"prompts.next_4star", "context_proj.weight"}
    assert not any("next_5star" in k or "next_genre" in k for k in states[1])
    # the model that answers the final evaluation still has stage 0's backbone, bit for bit
    for key, tensor in states[0].items():
        assert torch.equal(final_states[-1][key], tensor), key
    # ... and each task's own prompt as its stage left it
    assert torch.equal(final_states[-1]["prompts.next_4star"], states[1]["prompts.next_4star"])
    rows = {r["task"]: r for r in result["tasks"]}
    assert rows["next_click"]["after_stage"] == rows["next_click"]["hit@10"]  # T1 right after pretraining = final
    for name in ("next_4star", "next_5star", "next_genre"):
        assert rows[name]["BWT%"] == 0  # nothing forgotten
    assert rows["next_genre"]["accuracy"] > 0
    # machine-readable and human results
    saved = json.loads(open(os.path.join(result["run_dir"], "results.json")).read())
    assert [r["task"] for r in saved["tasks"]] == list(rows)
    for name in ("results.csv", "results.md", "results.png"):
        assert os.path.getsize(os.path.join(result["run_dir"], name)) > 0
    # prompt tuning trains far fewer parameters than pretraining
    assert rows["next_4star"]["trainable_params"] < rows["next_click"]["trainable_params"] / 3


def SASRec_keys(state):
    return [k for k in state if k.startswith(BACKBONE)]


def _model_and_batch(tiny_pcl, mode, **settings):
    no_dropout = dict(hidden_dropout_prob=0.0, attn_dropout_prob=0.0, contextual_prompt="none")
    config = Config(
        "PCL", "ml-100k", config_dict=dict(tiny_pcl, tasks=TASKS, pretrain_mode=mode, **dict(no_dropout, **settings))
    )
    data = ContinualData(config)
    dataset = data.tasks[0].train._dataset
    from recbole_pcl.model.sequential_recommender.pcl import PCL

    torch.manual_seed(0)
    pcl = PCL(config, dataset)
    sasrec = SASRec(config, dataset)
    sasrec.load_state_dict({k: v for k, v in pcl.state_dict().items() if k in sasrec.state_dict()})
    batch = next(iter(data.tasks[0].train))
    return pcl.eval(), sasrec.eval(), batch, config


def test_prefix_mode_is_sasrec(tiny_pcl):
    pcl, sasrec, batch, _ = _model_and_batch(tiny_pcl, "prefix")
    assert torch.allclose(pcl.calculate_loss(batch), sasrec.calculate_loss(batch))
    assert torch.allclose(pcl.full_sort_predict(batch), sasrec.full_sort_predict(batch))


def test_causal_mode_is_mean_over_all_prefixes(tiny_pcl):
    pcl, sasrec, batch, config = _model_and_batch(tiny_pcl, "causal")
    seq, length, target = batch["item_id_list"], batch["item_length"], batch["item_id"]
    seq, length, target = seq[:8], length[:8], target[:8]
    batch = {"item_id_list": seq, "item_length": length, "item_id": target}
    losses = []
    for r in range(len(seq)):  # every prefix of each user's sequence, scored by stock SASRec
        full = torch.cat([seq[r, : length[r]], target[r : r + 1]])
        for j in range(1, len(full)):
            prefix = torch.zeros_like(seq[r : r + 1])
            prefix[0, :j] = full[:j]
            logits = sasrec.full_sort_predict({"item_id_list": prefix, "item_length": torch.tensor([j])})
            losses.append(torch.nn.functional.cross_entropy(logits, full[j : j + 1]))
    assert torch.allclose(pcl.calculate_loss(batch), torch.stack(losses).mean(), atol=1e-5)


def test_prompts_touch_only_the_last_t_items(tiny_pcl):
    pcl, _, _, _ = _model_and_batch(tiny_pcl, "prefix")
    pcl.add_task("t2", "link")
    pcl.begin_task("t2")
    assert pcl.prompts["t2"].shape == (3, 16)  # t rows: only the last t items are ever prompted
    with torch.no_grad():
        pcl.prompts["t2"].copy_(torch.arange(1, 4).float().unsqueeze(1).expand(3, 16))  # row r holds r + 1
    seq = torch.tensor(
        [[5, 6, 7, 8, 9, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [4, 2, 0, 0, 0, 0, 0, 0, 0, 0]]
    )
    add = pcl.task_input("t2", seq, torch.tensor([5, 10, 2]))[..., 0]
    # t = 3: the last three real items get prompt rows 1, 2, 3 (Eq. 1); padding and earlier items nothing
    assert add[0].tolist() == [0, 0, 1, 2, 3, 0, 0, 0, 0, 0]
    assert add[1].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 2, 3]
    assert add[2].tolist() == [2, 3, 0, 0, 0, 0, 0, 0, 0, 0]  # shorter than t: its items are the last of the t


def test_contextual_prompt_encodings_are_cached(tiny_pcl, monkeypatch):
    from recbole_pcl.model import text_encoder

    cache = tiny_pcl["checkpoint_dir"] + "/cache"
    texts = ["Task: a. Input: b. Output: c. Metric: d.", "Task: e. Input: f. Output: g. Metric: h."]
    first = text_encoder.encode_texts(texts, cache)
    assert first.shape == (2, 384) and len(os.listdir(cache)) == 2
    import sentence_transformers

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", None)  # any reload would fail now
    assert torch.equal(text_encoder.encode_texts(texts[::-1], cache), first.flip(0))
    # real sentence embeddings: unit-norm (MiniLM normalises) and different for different texts
    assert torch.allclose(first.norm(dim=1), torch.ones(2), atol=1e-4)
    assert not torch.allclose(first[0], first[1], atol=1e-2)


def _pcl_with_tasks(tiny_pcl, tasks=("t2", "t3"), **settings):
    """A PCL model on the tiny data with link tasks ``tasks`` and random task descriptions."""
    pcl, _, batch, _ = _model_and_batch(tiny_pcl, "prefix", **settings)
    names = ["t1", *tasks]
    pcl.set_task_texts(names, torch.randn(len(names), pcl.context_text_dim, generator=torch.Generator().manual_seed(1)))
    for name in tasks:
        pcl.add_task(name, "link")
    return pcl, batch


SEQ = torch.tensor([[5, 6, 7, 8, 9, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
SEQ_LEN = torch.tensor([5, 10])


@pytest.mark.parametrize("init", ["previous", "random"])
def test_prompt_init_previous_copies_the_last_tasks_prompt(tiny_pcl, init):
    pcl, _ = _pcl_with_tasks(tiny_pcl, prompt_init=init, contextual_prompt="random")
    pcl.begin_task("t2")
    with torch.no_grad():
        pcl.prompts["t2"].add_(1.0)  # what tuning t2 would have learned
    pcl.end_task("t2")
    pcl.begin_task("t3")
    assert torch.equal(pcl.prompts["t3"], pcl.prompts["t2"]) == (init == "previous")
    assert pcl.prompts["t3"].requires_grad and not pcl.prompts["t2"].requires_grad


def test_contextual_prompt_scaled_by_lambda_on_the_last_t_items_only(tiny_pcl):
    pcl, _ = _pcl_with_tasks(tiny_pcl, contextual_prompt="random", context_lambda=2.5)
    pcl.begin_task("t2")
    with torch.no_grad():
        pcl.prompts["t2"].zero_()
    context = pcl._live_context("t2")
    assert context.abs().sum() > 0
    add = pcl.task_input("t2", SEQ, SEQ_LEN)
    on = torch.zeros(2, 10, dtype=torch.bool)
    on[0, 2:5] = on[1, 7:10] = True  # t = 3: the last three real items of each sequence
    assert torch.allclose(add[on], (2.5 * context).expand(6, -1))
    assert torch.equal(add[~on], torch.zeros_like(add[~on]))  # padding and earlier items: nothing


def test_task_k_attends_only_over_tasks_learned_up_to_k(tiny_pcl):
    pcl, _ = _pcl_with_tasks(tiny_pcl, contextual_prompt="random")
    before = pcl._live_context("t2").detach().clone()
    with torch.no_grad():
        pcl.task_text[2].mul_(-3.0)  # a later task's description
    assert torch.equal(pcl._live_context("t2"), before)
    pcl.task_text = pcl.task_text[:2]  # t3 not declared at all (a shorter run)
    assert torch.equal(pcl._live_context("t2"), before)


def test_sampled_ranking_deduplication_keeps_each_users_own_sequence(tiny_pcl):
    pcl, _ = _pcl_with_tasks(tiny_pcl, contextual_prompt="none")
    pcl.begin_task("t2")
    pcl.eval()
    seqs = torch.tensor(
        [[1, 2, 3, 0, 0, 0, 0, 0, 0, 0], [4, 5, 6, 7, 8, 9, 0, 0, 0, 0], [1, 2, 3, 4, 0, 0, 0, 0, 0, 0]]
    )
    lens = torch.tensor([3, 6, 4])
    rows = torch.tensor([1, 0, 2, 1, 0, 2, 2, 1])  # users interleaved, each repeated (as uni100 batches are)
    items = torch.tensor([11, 12, 13, 14, 15, 16, 17, 18])
    batch = Interaction({"item_id_list": seqs[rows], "item_length": lens[rows], "item_id": items})
    with torch.no_grad():
        scores = pcl.predict(batch)
        expected = torch.stack(
            [
                (pcl.forward(seqs[r : r + 1], lens[r : r + 1], "t2")[0] * pcl.item_embedding.weight[i]).sum()
                for r, i in zip(rows.tolist(), items.tolist())
            ]
        )
    assert torch.allclose(scores, expected, atol=1e-6)


def test_token_seq_attribute_adds_the_mean_of_the_items_tokens(tiny_pcl):
    config = dict(tiny_pcl, tasks=TASKS, pretrain_mode="prefix", contextual_prompt="none", prompt_length=0)
    data = ContinualData(Config("PCL", "ml-100k", config_dict=config))
    from recbole_pcl.model.sequential_recommender.pcl import PCL

    pcl = PCL(Config("PCL", "ml-100k", config_dict=config), data.tasks[0].train._dataset)
    pcl.add_task("genre", "class", num_classes=19, attribute="class")
    pcl.begin_task("genre")
    genres = pcl.attribute_of_item_genre  # item id -> genre ids, padded with 0
    multi = int(torch.nonzero(genres.ne(0).sum(1) >= 2)[0])  # an item with several genres
    seq = torch.tensor([[multi, 0, 0]])
    add = pcl.task_input("genre", seq, torch.tensor([1]))
    tokens = genres[multi][genres[multi] != 0]
    assert torch.allclose(add[0, 0], pcl.attributes["genre"].weight[tokens].mean(0))
    assert torch.equal(add[0, 1:], torch.zeros_like(add[0, 1:]))  # padding positions get nothing
    assert any(p is pcl.attributes["genre"].weight for p in pcl.trainable_parameters("genre"))


def test_mlp_adapter_and_item_attribute_train_in_a_run(tiny_pcl):
    tasks = copy.deepcopy(TASKS[:1] + TASKS[3:4])
    tasks[1]["attribute"] = "class"  # genre embeddings of the input items (token_seq)
    result = run_recbole_pcl(
        "PCL", "ml-100k", config_dict=dict(tiny_pcl, tasks=tasks, adapter="mlp", contextual_prompt="none")
    )
    row = {r["task"]: r for r in result["tasks"]}["next_genre"]
    d, classes, genres = 16, 19, 19 + 1
    # prompt (t = 3 rows x 16) + MLP (16x16 + 16, then 16x19 + 19) + genre embeddings (20 x 16)
    assert row["trainable_params"] == 3 * d + (d * d + d) + (d * classes + classes) + genres * d
    state = safe_load(os.path.join(result["run_dir"], "stage-01-next_genre.pth"))["state_dict"]
    assert state["heads.next_genre.0.weight"].shape == (d, d) and state["heads.next_genre.3.weight"].shape == (
        classes,
        d,
    )
    assert 0 < row["accuracy"] <= 1 and row["BWT%"] == 0


def test_device_batches_are_recboles_batches_in_the_same_order(tiny_pcl):
    from recbole_pcl.trainer.continual_trainer import DeviceBatches

    config = Config("PCL", "ml-100k", config_dict=dict(tiny_pcl, tasks=TASKS, train_batch_size=64))
    loader = ContinualData(config).tasks[1].train
    assert DeviceBatches.usable(loader, loader.config)
    fast = DeviceBatches(loader, torch.device("cpu"))
    for epoch in range(3):  # the same generator: the loader's order, epoch after epoch
        loader.generator.manual_seed(7 + epoch)
        theirs = [b["item_id"].clone() for b in loader]
        loader.generator.manual_seed(7 + epoch)
        ours = [b["item_id"] for b in fast]
        assert len(ours) == len(theirs) == len(fast) and all(torch.equal(a, b) for a, b in zip(ours, theirs))
    loader.generator.manual_seed(1)
    list(loader)  # the next epoch also starts where the loader's would
    state = loader.generator.get_state()
    loader.generator.manual_seed(1)
    list(fast)
    assert torch.equal(loader.generator.get_state(), state)


def test_stage_training_loop_equals_recboles(tiny_pcl):
    import copy as copy_module

    from recbole.trainer import Trainer as RecBoleTrainer

    from recbole_pcl.model.sequential_recommender.pcl import PCL
    from recbole_pcl.pipeline import TaskPipeline
    from recbole_pcl.trainer import ContinualTrainer

    pipeline = TaskPipeline(Config("PCL", "ml-100k", config_dict=dict(tiny_pcl, tasks=TASKS)), PCL)
    task = pipeline.tasks[1]
    ours = pipeline.new_model()
    ours.begin_task("next_4star")
    theirs = copy_module.deepcopy(ours)
    results = []
    for model, trainer_class in ((ours, ContinualTrainer), (theirs, RecBoleTrainer)):
        trainer = trainer_class(task.config, model)
        task.train.generator.manual_seed(3)
        torch.manual_seed(5)  # dropout
        results.append([trainer._train_epoch(task.train, epoch) for epoch in range(2)])
    assert results[0] == pytest.approx(results[1], rel=1e-6)
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("normalize", [True, False])
def test_contextual_prompt_has_norm_lambda_when_normalised(tiny_pcl, normalize):
    pcl, _ = _pcl_with_tasks(tiny_pcl, contextual_prompt="random", context_lambda=2.5, normalize_context=normalize)
    pcl.begin_task("t2")
    with torch.no_grad():
        pcl.prompts["t2"].zero_()  # what is added is the contextual prompt alone
    norms = pcl.task_input("t2", SEQ, SEQ_LEN)[1, 7:10].norm(dim=-1)
    at_lambda = torch.allclose(norms, torch.full_like(norms, 2.5), atol=1e-5)
    assert at_lambda == normalize  # normalised: lambda is its norm; as printed: the attention's raw output


def test_stage_keeps_the_best_validation_epochs_weights(tiny_pcl, monkeypatch):
    """The validation scores are scripted (best at epoch 2 of 4): the stage file must hold the prompt
    as it was after epoch 2, not the last epoch's."""
    from recbole_pcl.trainer import ContinualTrainer

    scores, snapshots = iter([0.1, 0.5, 0.2, 0.3]), []
    valid = ContinualTrainer._valid_epoch

    def scripted(self, valid_data, show_progress=False):
        if self.model.active_task != "next_4star":
            return valid(self, valid_data, show_progress)
        snapshots.append(self.model.prompts["next_4star"].detach().clone())
        _, result = valid(self, valid_data, show_progress)
        score = next(scores)
        self.history[-1] = score
        return score, result

    monkeypatch.setattr(ContinualTrainer, "_valid_epoch", scripted)
    two = dict(tiny_pcl, tasks=TASKS[:2], epochs=4, stopping_step=10)
    result = run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    assert len(snapshots) == 4 and not torch.equal(snapshots[1], snapshots[3])
    saved = safe_load(os.path.join(result["run_dir"], "stage-01-next_4star.pth"))["state_dict"]["prompts.next_4star"]
    assert torch.equal(saved, snapshots[1])


# ----- the prompt-free prefix (prefix_cache) -------------------------------------------------------
# n = 10, t = 3: rows shorter than t, of t, up to n - t, longer than n - t, and full
LENGTHS = [1, 2, 3, 4, 6, 7, 8, 10]


def _prefix_model(tiny_pcl, task, **settings):
    """A two-layer, two-head PCL (the prefix's keys and values of every layer and the head split
    matter) with a link task t2 and a class task t3, contextual prompts, and ``task``'s stage begun
    with a prompt large enough that putting it anywhere else would show."""
    settings = dict(dict(n_layers=2, n_heads=2, contextual_prompt="random"), **settings)
    pcl, _, _, _ = _model_and_batch(tiny_pcl, "prefix", **settings)
    g = torch.Generator().manual_seed(1)
    pcl.set_task_texts(["t1", "t2", "t3"], torch.randn(3, pcl.context_text_dim, generator=g))
    pcl.add_task("t2", "link")
    pcl.add_task("t3", "class", num_classes=5)
    pcl.begin_task(task)
    with torch.no_grad():
        pcl.prompts[task].normal_(0.0, 1.0, generator=g)
    return pcl


def _rows(pcl, repeat=None):
    """A batch of the LENGTHS rows (random items, left-aligned, padded on the right), with a target
    item and a class label; ``repeat``: row indices to repeat them (as uni100 batches do)."""
    g = torch.Generator().manual_seed(2)
    seq = torch.zeros(len(LENGTHS), 10, dtype=torch.long)
    for r, length in enumerate(LENGTHS):
        seq[r, :length] = torch.randint(1, pcl.n_items, (length,), generator=g)
    rows = torch.arange(len(LENGTHS)) if repeat is None else torch.as_tensor(repeat)
    return Interaction(
        {
            "item_id_list": seq[rows],
            "item_length": torch.tensor(LENGTHS)[rows],
            "item_id": torch.randint(1, pcl.n_items, (len(rows),), generator=g),
            "label": torch.randint(0, 5, (len(rows),), generator=g),
        }
    )


def _full_pass(pcl, fn, *args):
    pcl.prefix_cache = False
    try:
        return fn(*args)
    finally:
        pcl.prefix_cache = True


def _fail(*args, **kwargs):
    raise AssertionError("the full pass ran")


@pytest.mark.parametrize("t", [3, 0])
@pytest.mark.parametrize("task", ["t2", "t3"])
def test_prefix_cache_gives_the_full_pass_logits(tiny_pcl, monkeypatch, task, t):
    pcl = _prefix_model(tiny_pcl, task, prompt_length=t, hidden_dropout_prob=0.2, attn_dropout_prob=0.2).eval()
    batch = _rows(pcl)
    with torch.no_grad():
        full = _full_pass(pcl, pcl.full_sort_predict, batch)
        monkeypatch.setattr(pcl.trm_encoder, "forward", _fail)  # only the last t positions run
        cached = pcl.full_sort_predict(batch)
        assert pcl._prefix_store.size == len(LENGTHS)
        monkeypatch.setattr(pcl, "prefix_pass", _fail)  # now every row's prefix is in the cache
        again = pcl.full_sort_predict(batch)
    assert full.shape == (len(LENGTHS), pcl.n_items if task == "t2" else 5)
    assert torch.allclose(cached, full, atol=1e-5) and torch.allclose(again, full, atol=1e-5)


def test_prefix_cache_on_repeated_rows_gives_the_full_pass_scores(tiny_pcl):
    pcl = _prefix_model(tiny_pcl, "t2").eval()
    batch = _rows(pcl, repeat=[7, 0, 3, 7, 7, 1, 0, 3, 5, 5, 2])  # users interleaved and repeated (uni100)
    with torch.no_grad():
        full = _full_pass(pcl, pcl.predict, batch)
        cached = pcl.predict(batch)
    assert pcl._prefix_store.size == 6  # each distinct row once
    assert torch.allclose(cached, full, atol=1e-5)


@pytest.mark.parametrize("task", ["t2", "t3"])
def test_prefix_cache_gives_the_full_pass_gradients(tiny_pcl, task):
    pcl = _prefix_model(tiny_pcl, task).train()  # dropout 0: the two paths compute the same function
    batch = _rows(pcl)
    grads = []
    for fn in (pcl.calculate_loss, lambda b: _full_pass(pcl, pcl.calculate_loss, b)):
        pcl.zero_grad()
        fn(batch).backward()
        grads.append({n: p.grad.clone() for n, p in pcl.named_parameters() if p.requires_grad})
    expected = {f"prompts.{task}", "context_proj.weight", "context_attn.in_proj_weight", "context_attn.out_proj.weight"}
    assert expected | ({f"heads.{task}.weight"} if task == "t3" else set()) <= set(grads[0])
    for name, grad in grads[0].items():
        assert grad.abs().sum() > 0 and torch.allclose(grad, grads[1][name], rtol=1e-4, atol=1e-7), name


def test_prefix_cache_verifies_rows_keeps_its_bound_and_empties_when_weights_change(tiny_pcl, monkeypatch):
    pcl = _prefix_model(tiny_pcl, "t2").eval()
    batch = _rows(pcl)
    full = _full_pass(pcl, pcl.full_sort_predict, batch)
    store = pcl._prefix_store
    # every row hashes alike: rows are told apart by their stored sequence, never mixed up
    with monkeypatch.context() as m:
        m.setattr(store, "hash", lambda seqs: torch.zeros(len(seqs), dtype=torch.long))
        for _ in range(2):
            assert torch.allclose(pcl.full_sort_predict(batch), full, atol=1e-5)
    # room for two rows: those are kept, the others get their prefix per batch
    store.clear()
    row = pcl.prefix_pass(batch["item_id_list"][:1])
    store.max_bytes = 2 * (row.numel() * row.element_size() + 10 * 8 + 8)
    for _ in range(2):
        assert torch.allclose(pcl.full_sort_predict(batch), full, atol=1e-5)
    assert store.size == 2
    # new backbone weights: the cache empties, else its prefixes would be the old backbone's
    store.max_bytes = 2**30
    pcl.full_sort_predict(batch)
    state = {k: v * 1.5 if k.startswith("trm_encoder.") else v for k, v in pcl.state_dict().items()}
    pcl.load_state_dict(state)
    assert store.size == 0
    new = _full_pass(pcl, pcl.full_sort_predict, batch)
    assert not torch.allclose(new, full, atol=1e-3) and torch.allclose(pcl.full_sort_predict(batch), new, atol=1e-5)
    pcl.end_task("t2")  # a stage's end (and start) empties it too
    assert store.size == 0


def test_attribute_tasks_and_cold_item_tuning_keep_the_full_pass(tiny_pcl):
    config = Config(
        "PCL",
        "ml-100k",
        config_dict=dict(tiny_pcl, tasks=TASKS, contextual_prompt="none", tune_cold_items=True, cold_item_share=0.5),
    )
    data = ContinualData(config)
    from recbole_pcl.model.sequential_recommender.pcl import PCL

    pcl = PCL(config, data.tasks[0].train._dataset)
    pcl.set_cold_items(data.cold_items)
    pcl.add_task("t2", "link")
    pcl.add_task("genre", "class", num_classes=19, attribute="class")
    assert not pcl.uses_prefix("t2") and not pcl.uses_prefix("genre")
    pcl.tune_cold_items = False
    assert pcl.uses_prefix("t2") and not pcl.uses_prefix("genre")
    pcl.tune_cold_items = True
    pcl.begin_task("t2")
    cold = len(data.cold_items)
    assert 0 < cold < pcl.n_items - 1
    # what trains: the t prompt rows and the cold items' embeddings, not the warm rows
    assert pcl.count_trainable() == 3 * 16 + cold * 16


@pytest.mark.parametrize("mode", ["uni100", "full"])
def test_evaluation_batches_are_drawn_once_and_replayed_with_the_same_results(tiny_pcl, monkeypatch, mode):
    from recbole.data.dataloader import general_dataloader

    from recbole_pcl.pipeline import TaskPipeline
    from recbole_pcl.utils import get_model

    drawn = []
    for loader in (general_dataloader.NegSampleEvalDataLoader, general_dataloader.FullSortEvalDataLoader):
        monkeypatch.setattr(
            loader, "collate_fn", lambda self, index, c=loader.collate_fn: drawn.append(1) or c(self, index)
        )
    results = {}
    for gib in (0.0, 1.0):
        config = Config(
            "PCL", "ml-100k", config_dict=dict(tiny_pcl, tasks=TASKS[:2], task_eval_mode=mode, eval_cache_gib=gib)
        )
        pipeline = TaskPipeline(config, get_model("PCL"))
        model = pipeline.new_model().eval()
        counts = []
        for _ in range(3):
            before = len(drawn)
            result = [pipeline.evaluate(model, task, phase) for task in pipeline.tasks for phase in ("valid", "test")]
            counts.append(len(drawn) - before)
        results[gib] = result
        if gib:
            assert counts[0] > 0 and counts[1] == counts[2] == 0  # drawn once, then replayed
        else:
            assert counts[0] == counts[1] == counts[2] > 0  # drawn every time
    assert results[0.0] == results[1.0]  # the same batches: the same metrics
