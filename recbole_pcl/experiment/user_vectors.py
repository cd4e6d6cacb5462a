"""RQ4's probe of universal user representations: user vectors from a method (under the prompts of the
tasks it learned), from the pretrained backbone alone (SSP) or random (NP), each with a one-hot user id,
fed to a one-hidden-layer MLP trained on the target class task."""

import time

import torch
from torch import nn

from recbole_pcl.config import Config
from recbole_pcl.pipeline import TaskPipeline
from recbole_pcl.utils import get_model


def user_vector_mlp(exp, model, tasks, fold):
    """Fit the MLP of RQ4 on each source of user vectors: ``model``'s finished run on every task but
    the last (the mean of its vectors under those tasks), its T1 backbone (SSP) and random vectors
    (NP); ``{source: fit}`` (see :func:`fit_mlp`)."""
    settings = dict(exp.config_dict, fold=fold)
    learned = TaskPipeline(
        Config(model, exp.dataset, exp.files, dict(settings, tasks=tasks[:-1]), exp.cmd_args), get_model(model)
    ).load_final()
    full = TaskPipeline(
        Config(model, exp.dataset, exp.files, dict(settings, tasks=tasks), exp.cmd_args), get_model(model)
    )
    target = full.tasks[-1]
    learned_tasks = [t["name"] for t in tasks[1:-1]]
    device = next(learned.parameters()).device

    def vectors(split, source):
        inter = getattr(target, split)._dataset.inter_feat.to(device)
        with torch.no_grad():
            if source == model:
                return torch.stack([learned.user_representation(inter, name) for name in learned_tasks]).mean(0)
            backbone = learned.user_representation(inter, None)
            if source == "SSP":
                return backbone
            g = torch.Generator(device="cpu").manual_seed(exp.base["seed"] + fold)
            return torch.randn(backbone.shape, generator=g).to(device)

    out = {}
    for source in (model, "SSP", "NP"):
        data = {
            split: (vectors(split, source), getattr(target, split)._dataset.inter_feat)
            for split in ("train", "valid", "test")
        }
        out[source] = fit_mlp(data, exp.base, target.num_classes, full.data.dataset.user_num)
    return out


def fit_mlp(data, config, num_classes, num_users, max_epochs=200, patience=10):
    """One-hidden-layer MLP on [vector ‖ one-hot user id], early stopping on valid accuracy. Returns the
    test accuracy of the best epoch, when it came (epoch, seconds) and the valid accuracy per epoch."""
    torch.manual_seed(config["seed"])
    vectors, inter = data["train"]
    width = vectors.size(1)
    device = vectors.device
    user_field, label_field = config["USER_ID_FIELD"], config["LABEL_FIELD"]
    users = nn.Embedding(num_users, width).to(device)  # one-hot user ids times a weight matrix
    mlp = nn.Sequential(nn.Linear(2 * width, width), nn.ReLU(), nn.Linear(width, num_classes)).to(device)
    optimizer = torch.optim.Adam(list(users.parameters()) + list(mlp.parameters()), lr=1e-3)

    def logits(split):
        v, x = data[split]
        return mlp(torch.cat([v, users(x[user_field].to(device))], dim=1))

    def accuracy(split):
        with torch.no_grad():
            return float((logits(split).argmax(1).cpu() == data[split][1][label_field]).float().mean())

    best, best_state, curve, times, start = -1.0, None, [], [], time.time()
    labels = inter[label_field].to(device)
    generator = torch.Generator().manual_seed(config["seed"])
    for epoch in range(max_epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(256):
            loss = nn.functional.cross_entropy(logits("train")[batch], labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        curve.append(accuracy("valid"))
        times.append(time.time() - start)
        if curve[-1] > best:
            best, best_epoch = curve[-1], epoch + 1
            best_state = (
                {k: v.clone() for k, v in mlp.state_dict().items()},
                {k: v.clone() for k, v in users.state_dict().items()},
            )
        elif epoch + 1 - best_epoch >= patience:
            break
    mlp.load_state_dict(best_state[0])
    users.load_state_dict(best_state[1])
    return {
        "test_accuracy": accuracy("test"),
        "best_epoch": best_epoch,
        "seconds_to_best": times[best_epoch - 1],
        "curve": curve,
        "times": times,
    }
