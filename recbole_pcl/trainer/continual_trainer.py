"""Continual learning in stages: pretrain T1, then each downstream task, then evaluate all tasks.

:class:`ContinualTrainer` is a RecBole ``Trainer`` that fits one stage: RecBole's own ``fit`` and
``evaluate`` on the stage's task data and config, with only the parameters the model marks as
trainable in the optimizer.

:class:`ContinualRun` is the pipeline. A method plugs in through the model's continual protocol,
not by copying the stages: ``add_task(name, kind, num_classes, attribute)``,
``begin_task(name, train_all=False)`` (None = T1), ``end_task(name)``, ``set_task_texts`` and
``active_task`` (see :class:`recbole_pcl.model.sequential_recommender.pcl.PCL`). Every stage writes one
checkpoint (tensors + plain data, atomically) into the run directory; a rerun resumes at the first
unfinished stage, and tasks appended to the yaml later are trained without redoing earlier ones.
"""
import copy
import csv
import hashlib
import json
import os
import time
from logging import getLogger

import numpy as np
import torch
from recbole.utils import init_seed, set_color
from tabulate import tabulate

from recbole_pcl.trainer.trainer import Trainer
from recbole_pcl.utils.checkpoint import atomic_path, atomic_torch_save, atomic_write_text, safe_load
from recbole_pcl.utils.errors import PCLError

# Keys that make a checkpoint incompatible: the backbone's (checked for every stage, also for a
# given pretrained T1 checkpoint) and the downstream stages' (checked for stages >= 1).
BACKBONE_KEYS = ("dataset", "MAX_ITEM_LIST_LENGTH", "hidden_size", "inner_size", "n_layers", "n_heads", "label_window")
TASK_KEYS = ("model", "loss_type", "prompt_length", "contextual_prompt", "context_heads", "context_text_dim", "adapter", "task_split", "seed", "pretrain_mode")
TASK_MODULES = ("prompts.", "adapters.", "attributes.", "frozen_context.", "context_", "counts.")


class ContinualTrainer(Trainer):
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's evaluate with the same sampled negatives every time (uni100 draws them from
        numpy's global RNG): seeded for the evaluation, then the training RNG state is restored."""
        state = np.random.get_state()
        np.random.seed(self.config["seed"])
        try:
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
        finally:
            np.random.set_state(state)

    def _build_optimizer(self, **kwargs):
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            return None  # an evaluation-only trainer (nothing left to tune)
        return super()._build_optimizer(params=params, **kwargs)


def count_trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class ContinualRun:
    """Runs (or resumes) the stages of ``data.tasks`` with one model of ``model_class``."""

    def __init__(self, config, data, model_class):
        self.config, self.data, self.model_class = config, data, model_class
        self.logger = getLogger()
        self.signature = {k: config[k] for k in BACKBONE_KEYS + TASK_KEYS}
        self.signature.update(n_items=data.dataset.item_num, n_users=data.dataset.user_num)
        self.run_dir = config["run_dir"] or os.path.join(
            config["checkpoint_dir"],
            f"{config['model']}-{config['dataset']}-{hashlib.sha1(json.dumps(self.signature, sort_keys=True, default=str).encode()).hexdigest()[:8]}",
        )
        os.makedirs(self.run_dir, exist_ok=True)

    # ----- model ------------------------------------------------------------------------------
    def new_model(self):
        init_seed(self.config["seed"], self.config["reproducibility"])
        model = self.model_class(self.config, self.data.tasks[0].train._dataset)
        specs = [t.spec for t in self.data.tasks]
        if self.config["contextual_prompt"] not in (None, "none"):
            model.set_task_texts([s.name for s in specs], self.task_text_embeddings(specs))
        for t in self.data.tasks[1:]:
            model.add_task(t.spec.name, t.spec.kind, t.num_classes, t.spec.attribute)
        return model.to(self.config["device"])

    def task_text_embeddings(self, specs):
        if self.config["contextual_prompt"] == "random":  # ablation "w/o PLM": random description vectors
            g = torch.Generator().manual_seed(self.config["seed"])
            return torch.randn(len(specs), self.config["context_text_dim"], generator=g)
        from recbole_pcl.model.text_encoder import encode_texts

        cache = os.path.join(self.config["checkpoint_dir"], "text-cache")
        emb = encode_texts([s.description for s in specs], cache, self.config["text_encoder"])
        if emb.size(1) != self.config["context_text_dim"]:
            raise PCLError(f"text_encoder gives {emb.size(1)}-dim vectors but context_text_dim is {self.config['context_text_dim']}")
        return emb

    def stage_config(self, task, pretraining):
        config = copy.copy(task.config)
        config.final_config_dict = dict(task.config.final_config_dict)
        if not pretraining:
            config["learning_rate"] = self.config["prompt_learning_rate"]
        config["checkpoint_dir"] = self.run_dir
        return config

    # ----- stages -----------------------------------------------------------------------------
    def stage_file(self, index):
        return os.path.join(self.run_dir, f"stage-{index:02d}-{self.data.tasks[index].spec.name}.pth")

    def _load_stage(self, model, path, index):
        """Load stage ``index`` from ``path`` into ``model`` after checking it belongs to this run.
        Stage 0 contributes the backbone only (it may come from a run with other prompt settings)."""
        state = safe_load(path, map_location=self.config["device"])
        meta = state["meta"]
        keys = BACKBONE_KEYS + ("n_items", "n_users") + (TASK_KEYS if index > 0 else ())
        for key in keys:
            if meta["signature"].get(key) != self.signature[key]:
                raise PCLError(
                    f"checkpoint {path} does not match this run: '{key}' is {meta['signature'].get(key)!r} there, "
                    f"{self.signature[key]!r} here"
                )
        expected = [t.spec.name for t in self.data.tasks[: index + 1]]
        if meta["tasks"][index] != expected[index] or (index > 0 and meta["tasks"] != expected):
            raise PCLError(f"checkpoint {path} was trained on tasks {meta['tasks']}, this run has {expected} up to it")
        weights = state["state_dict"]
        if index == 0:
            weights = {k: v for k, v in weights.items() if not k.startswith(TASK_MODULES)}
        name = None if index == 0 else self.data.tasks[index].spec.name
        model.end_task(name)  # the bookkeeping of a finished stage; its values come from the checkpoint
        missing, unexpected = model.load_state_dict(weights, strict=False)
        later = {t.spec.name for t in self.data.tasks[index + 1 :]}
        bad = [k for k in missing if not (index == 0 and k.startswith(TASK_MODULES)) and k.split(".")[1] not in later]
        if unexpected or bad:
            raise PCLError(f"checkpoint {path} does not fit the model: missing {bad}, unexpected {list(unexpected)}")
        return meta

    def restore_stage(self, model, index):
        """Load stage ``index`` if it is finished (or given as pretrained); its metadata, else None."""
        given = self.config["pretrained_checkpoint"] if index == 0 else None
        path = given or self.stage_file(index)
        if not os.path.isfile(path):
            if given:
                raise PCLError(f"pretrained_checkpoint not found: {given}")
            return None
        meta = self._load_stage(model, path, index)
        self.logger.info(set_color(f"Stage {index} ({self.data.tasks[index].spec.name})", "green") + f": loaded {path}")
        return meta

    def run(self):
        model = self.new_model()
        stages = []
        for index, task in enumerate(self.data.tasks):
            meta = self.restore_stage(model, index)
            if meta is None:
                meta = {"stage": self.train_stage(model, task, index), "signature": self.signature,
                        "tasks": [t.spec.name for t in self.data.tasks[: index + 1]]}
                atomic_torch_save({"state_dict": model.state_dict(), "meta": meta}, self.stage_file(index))
            stages.append(meta["stage"])
        final = {t.spec.name: self.evaluate(model, t) for t in self.data.tasks}
        scratch = self.scratch_results() if self.config["fwt_reference"] else {}
        return self.report(stages, final, scratch)

    def load_final(self):
        """The model after the last stage of a finished run."""
        model = self.new_model()
        for index, task in enumerate(self.data.tasks):
            if self.restore_stage(model, index) is None:
                raise PCLError(f"run {self.run_dir} has not finished stage {index} ({task.spec.name}): run it first")
        return model.eval()

    def train_stage(self, model, task, index):
        name = None if index == 0 else task.spec.name
        self.logger.info(set_color(f"Stage {index}: {task.spec.name} ({task.spec.kind})", "green"))
        start = time.time()
        model.begin_task(name)
        trainable = count_trainable(model)
        result = self.fit_and_test(model, task, pretraining=index == 0)
        model.end_task(name)
        return {
            "task": task.spec.name,
            "kind": task.spec.kind,
            "test": result,
            "trainable_params": trainable,
            "seconds": round(time.time() - start, 2),
        }

    def fit_and_test(self, model, task, pretraining):
        """Fit the trainable parameters with early stopping, then test the best epoch's weights. With
        nothing to tune (e.g. a link task without prompts) the model is tested as it is."""
        trainer = ContinualTrainer(self.stage_config(task, pretraining), model)
        if trainer.optimizer is None:
            result = trainer.evaluate(task.test, load_best_model=False)
        else:
            trainer.fit(task.train, task.valid, saved=True, show_progress=self.config["show_progress"])
            result = trainer.evaluate(task.test, load_best_model=True)
            os.remove(trainer.saved_model_file)
        return {k: float(v) for k, v in result.items()}

    def evaluate(self, model, task):
        model.active_task = None if task.index == 0 else task.spec.name
        result = ContinualTrainer(task.config, model).evaluate(task.test, load_best_model=False)
        model.active_task = None
        return {k: float(v) for k, v in result.items()}

    def scratch_results(self):
        """Each downstream task learned alone by a fresh model (SASRec from scratch), for FWT."""
        results = {}
        for task in self.data.tasks[1:]:
            path = os.path.join(self.run_dir, f"scratch-{task.spec.name}.json")
            if not os.path.isfile(path):
                model = self.new_model()
                model.begin_task(task.spec.name, train_all=True)
                atomic_write_text(path, json.dumps(self.fit_and_test(model, task, pretraining=True)))
            with open(path, encoding="utf-8") as f:
                results[task.spec.name] = json.load(f)
        return results

    def plot(self, rows, scratch):
        """results.png: each task's main metric right after its stage, at the end, and learned alone."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [r["task"] for r in rows]
        metrics = [self.main_metric(t) for t in self.data.tasks]
        series = {
            "after its stage": [r["after_stage"] for r in rows],
            "final model": [r[m] for r, m in zip(rows, metrics)],
        }
        if scratch:
            series["alone, from scratch"] = [scratch.get(n, {}).get(m, 0.0) for n, m in zip(names, metrics)]
        fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(names), 3.6))
        width = 0.8 / len(series)
        for i, (label, values) in enumerate(series.items()):
            ax.bar([x + i * width for x in range(len(names))], values, width, label=label)
        ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(names))])
        ax.set_xticklabels([f"{n}\n({m})" for n, m in zip(names, metrics)], fontsize=8)
        ax.set_title(f"{self.config['model']} on {self.config['dataset']}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(os.path.join(self.run_dir, "results.png")) as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)

    # ----- report -----------------------------------------------------------------------------
    def main_metric(self, task):
        return "accuracy" if task.spec.kind == "class" else self.config["report_metric"].lower()

    def report(self, stages, final, scratch):
        rows = []
        for task, stage in zip(self.data.tasks, stages):
            metric = self.main_metric(task)
            after, end = stage["test"][metric], final[task.spec.name][metric]
            ref = scratch.get(task.spec.name, {}).get(metric)
            rows.append(
                {
                    "task": task.spec.name,
                    "kind": task.spec.kind,
                    **{k: round(v, 4) for k, v in final[task.spec.name].items()},
                    "trainable_params": stage["trainable_params"],
                    "seconds": stage["seconds"],
                    "after_stage": round(after, 4),
                    "BWT%": round((end - after) / after * 100, 2) if task.index > 0 and after else None,
                    "FWT%": round((after - ref) / ref * 100, 2) if ref else None,
                }
            )
        result = {"run_dir": self.run_dir, "tasks": rows, "final": final, "stages": stages, "scratch": scratch}
        atomic_write_text(os.path.join(self.run_dir, "results.json"), json.dumps(result, indent=2))
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with atomic_path(os.path.join(self.run_dir, "results.csv")) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        self.plot(rows, scratch)
        table = tabulate(rows, headers="keys", tablefmt="github")
        atomic_write_text(os.path.join(self.run_dir, "results.md"), table + "\n")
        self.logger.info(set_color("Continual results", "yellow") + f" ({self.run_dir}):\n{table}")
        result["table"] = table
        return result
