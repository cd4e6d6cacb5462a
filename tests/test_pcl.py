"""PCL and the continual run: prompts, frozen backbone, pretraining modes, stages, resume."""
import copy
import json
import os

import pytest
import torch
import yaml

from conftest import REPO
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole_pcl.config import Config
from recbole_pcl.data.continual import ContinualData
from recbole_pcl.quick_start import run_recbole_pcl
from recbole_pcl.utils import PCLError, safe_load

TASKS = yaml.safe_load((REPO / "properties" / "dataset" / "ml-100k.yaml").read_text())["tasks"][:4]
BACKBONE = ("item_embedding.", "position_embedding.", "trm_encoder.", "LayerNorm.")


@pytest.fixture
def tiny_pcl(tmp_path):
    return {
        "user_inter_num_interval": "[20,40]", "MAX_ITEM_LIST_LENGTH": 10, "hidden_size": 16, "inner_size": 32,
        "n_layers": 1, "n_heads": 1, "context_heads": 1, "epochs": 2, "prompt_length": 3, "show_progress": False,
        "state": "WARNING", "use_gpu": False, "checkpoint_dir": str(tmp_path / "saved"), "fwt_reference": False,
        "contextual_prompt": "random", "train_batch_size": 128,
    }


def _stage_files(run_dir):
    return sorted(f for f in os.listdir(run_dir) if f.startswith("stage-"))


def test_backbone_frozen_and_t1_unchanged(tiny_pcl):
    result = run_recbole_pcl("PCL", "ml-100k", config_dict=tiny_pcl)
    files = _stage_files(result["run_dir"])
    assert files == ["stage-00-next_click.pth", "stage-01-next_4star.pth", "stage-02-next_5star.pth", "stage-03-next_genre.pth"]
    states = [safe_load(os.path.join(result["run_dir"], f))["state_dict"] for f in files]
    for key, tensor in states[0].items():
        if key.startswith(BACKBONE):
            for later in states[1:]:
                assert torch.equal(tensor, later[key]), key  # bit-identical after every task
    # each task's own prompt no longer moves once its stage has ended
    assert torch.equal(states[1]["prompts.next_4star"], states[3]["prompts.next_4star"])
    assert not torch.equal(states[1]["prompts.next_5star"], states[2]["prompts.next_5star"])
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


def _model_and_batch(tiny_pcl, mode):
    no_dropout = dict(hidden_dropout_prob=0.0, attn_dropout_prob=0.0, contextual_prompt="none")
    config = Config("PCL", "ml-100k", config_dict=dict(tiny_pcl, tasks=TASKS, pretrain_mode=mode, **no_dropout))
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
    with torch.no_grad():
        pcl.prompts["t2"].copy_(torch.arange(10).float().unsqueeze(1).expand(10, 16))  # row r holds r
    seq = torch.tensor([[5, 6, 7, 8, 9, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    add = pcl.task_input("t2", seq, torch.tensor([5, 10]))[..., 0]
    # t = 3: the last three real items get prompt rows 7, 8, 9 (Eq. 1); padding and earlier items nothing
    assert add[0].tolist() == [0, 0, 7, 8, 9, 0, 0, 0, 0, 0]
    assert add[1].tolist() == [0, 0, 0, 0, 0, 0, 0, 7, 8, 9]


def test_resume_append_and_mismatch(tiny_pcl):
    two = dict(tiny_pcl, tasks=TASKS[:2])
    first = run_recbole_pcl("PCL", "ml-100k", config_dict=two)
    run_dir = first["run_dir"]
    stamp = {f: os.stat(os.path.join(run_dir, f)).st_mtime_ns for f in _stage_files(run_dir)}
    # append a task: the finished stages are reused, not retrained
    three = dict(tiny_pcl, tasks=TASKS[:3], run_dir=run_dir)
    second = run_recbole_pcl("PCL", "ml-100k", config_dict=three)
    assert {f: os.stat(os.path.join(run_dir, f)).st_mtime_ns for f in stamp} == stamp
    assert _stage_files(run_dir)[-1] == "stage-02-next_5star.pth"
    assert second["tasks"][1]["after_stage"] == first["tasks"][1]["after_stage"]
    assert second["final"]["next_4star"] == first["final"]["next_4star"]  # the reloaded task is untouched
    stage1, stage2 = (safe_load(os.path.join(run_dir, f))["state_dict"] for f in _stage_files(run_dir)[1:3])
    assert torch.equal(stage1["prompts.next_4star"], stage2["prompts.next_4star"])
    assert torch.equal(stage1["frozen_context.next_4star"], stage2["frozen_context.next_4star"])
    # interrupted run: the last stage is missing, the run resumes there
    os.remove(os.path.join(run_dir, "stage-02-next_5star.pth"))
    third = run_recbole_pcl("PCL", "ml-100k", config_dict=three)
    assert [r["task"] for r in third["tasks"]] == ["next_click", "next_4star", "next_5star"]
    # a checkpoint of another configuration is refused, naming the key, and nothing is overwritten
    before = {f: os.stat(os.path.join(run_dir, f)).st_mtime_ns for f in _stage_files(run_dir)}
    with pytest.raises(PCLError, match="'hidden_size' is 16 there, 8 here"):
        run_recbole_pcl("PCL", "ml-100k", config_dict=dict(three, hidden_size=8))
    assert {f: os.stat(os.path.join(run_dir, f)).st_mtime_ns for f in _stage_files(run_dir)} == before


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
