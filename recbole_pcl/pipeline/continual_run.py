"""Continual learning in stages: pretrain T1, then each downstream task, then evaluate all tasks.

A method plugs in through the model's continual protocol, not by copying the stages:
``add_task(name, kind, num_classes, attribute)``, ``begin_task(name, train_all=False)`` (None = T1),
``end_task(name)``, ``stage_state(name)`` (the tensors a stage wrote), ``set_task_texts`` and
``active_task`` (see :class:`recbole_pcl.model.sequential_recommender.pcl.PCL`).

Each stage is identified (:mod:`.identity`), seeded from (seed, stage index) and written as one
file into the run directory (:mod:`.run_directory`): a rerun resumes at the first unfinished stage,
tasks appended later are trained without redoing earlier ones, and a stage is reused only by a run
whose identity up to that stage is the same.
"""
import copy
import os
import time
from logging import getLogger

import torch
from recbole.utils import init_seed, set_color

from recbole_pcl.data.continual import ContinualData, task_sequence
from recbole_pcl.pipeline.identity import RunIdentity, digest, fingerprint_files, first_difference, stage_seed
from recbole_pcl.pipeline.report import write_report
from recbole_pcl.pipeline.run_directory import STORE, RunDirectory
from recbole_pcl.trainer.continual_trainer import ContinualTrainer
from recbole_pcl.utils.checkpoint import safe_load
from recbole_pcl.utils.errors import PCLError


def count_trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class ContinualRun:
    """Runs (or resumes) the stages of the dataset's task sequence with one model of ``model_class``.

    The run's identity and directory come from the settings, task specs and data files alone, so a
    busy or foreign run directory is refused before the data are loaded (:attr:`data`, on first use)."""

    def __init__(self, config, model_class):
        self.config, self.model_class = config, model_class
        self.logger = getLogger()
        self.specs = task_sequence(config)
        self.identity = RunIdentity(config, self.specs, fingerprint_files(config), model_class)
        self.run_dir = config["run_dir"] or os.path.join(
            config["checkpoint_dir"], f"{config['model']}-{config['dataset']}-{digest(self.identity.run())[:8]}"
        )
        self.store = os.path.join(config["checkpoint_dir"], STORE)
        self._data = None

    @property
    def data(self):
        if self._data is None:
            self._data = ContinualData(self.config, self.specs)
        return self._data

    @property
    def tasks(self):
        return self.data.tasks

    # ----- model ------------------------------------------------------------------------------
    def new_model(self):
        init_seed(self.config["seed"], self.config["reproducibility"])
        model = self.model_class(self.config, self.tasks[0].train._dataset)
        if self.config["contextual_prompt"] not in (None, "none"):
            model.set_task_texts([t.spec.name for t in self.tasks], self.task_text_embeddings())
        for t in self.tasks[1:]:
            model.add_task(t.spec.name, t.spec.kind, t.num_classes, t.spec.attribute)
        return model.to(self.config["device"])

    def task_text_embeddings(self):
        specs = [t.spec for t in self.tasks]
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
        config = task.config
        if not pretraining:
            config = _with(config, learning_rate=self.config["prompt_learning_rate"])
        return config

    def seed_stage(self, task, *stage):
        """Every random draw of a stage (initialisation, dropout, shuffling, negatives) starts from
        (seed, stage), so a resumed or appended run repeats it exactly."""
        seed = stage_seed(self.config["seed"], *stage)
        init_seed(seed, self.config["reproducibility"])
        task.train.generator.manual_seed(seed)

    # ----- stages -----------------------------------------------------------------------------
    def stage_file(self, index):
        return f"stage-{index:02d}-{self.specs[index].name}.pth"

    def stage_name(self, index):
        return None if index == 0 else self.specs[index].name

    def find_stage(self, directory, index):
        """The stored stage ``index`` of this run (a given pretrained checkpoint for stage 0), or None."""
        identity = self.identity.stage(index)
        given = self.config["pretrained_checkpoint"] if index == 0 else None
        if not given:
            return directory.load(self.stage_file(index), identity)
        state = safe_load(given)
        meta = state.get("meta", {}) if isinstance(state, dict) else {}
        if meta.get("digest") != digest(identity):
            what, there, here = first_difference(meta.get("identity", {}), identity) or ("its identity", None, None)
            raise PCLError(f"pretrained_checkpoint {given} is not this run's stage 0: {what} is {there!r} there, {here!r} here")
        return state

    def restore(self, model, index, state):
        """Load a finished stage into ``model``; it must hold exactly what that stage writes."""
        name = self.stage_name(index)
        model.end_task(name)  # the bookkeeping of a finished stage; its values come from the file
        expected = set(model.stage_state(name))
        if set(state["state_dict"]) != expected:
            raise PCLError(
                f"stage {index} ({self.tasks[index].spec.name}) of {self.run_dir} does not fit the model: "
                f"missing {sorted(expected - set(state['state_dict']))}, unexpected {sorted(set(state['state_dict']) - expected)}"
            )
        model.load_state_dict(state["state_dict"], strict=False)
        self.logger.info(set_color(f"Stage {index} ({self.tasks[index].spec.name})", "green") + ": finished before, reused")
        return state["meta"]["record"]

    def run(self):
        with RunDirectory(self.run_dir, self.store, self.identity) as directory:
            model = self.new_model()
            records = []
            for index, task in enumerate(self.tasks):
                state = self.find_stage(directory, index)
                if state is not None:
                    records.append(self.restore(model, index, state))
                    continue
                record = self.train_stage(model, task, index)
                directory.save(self.stage_file(index), self.identity.stage(index), model.stage_state(self.stage_name(index)), record)
                records.append(record)
            final = {t.spec.name: self.evaluate(model, t) for t in self.tasks}
            references = self.references(directory) if self.config["fwt_reference"] else {}
            return write_report(self.run_dir, self.config, self.tasks, records, final, references)

    def load_final(self):
        """The model after the last stage of a finished run (read only: nothing is written)."""
        if not os.path.isdir(self.run_dir):
            raise PCLError(f"no run at {self.run_dir}: run this configuration first (run_recbole_pcl)")
        directory = RunDirectory(self.run_dir, self.store, self.identity)
        for index, spec in enumerate(self.specs):
            if not os.path.isfile(directory.file(self.stage_file(index))):
                raise PCLError(f"run {self.run_dir} has not finished stage {index} ({spec.name}): run it first")
        model = self.new_model()
        for index in range(len(self.specs)):
            self.restore(model, index, self.find_stage(directory, index))
        return model.eval()

    def train_stage(self, model, task, index):
        name = self.stage_name(index)
        self.logger.info(set_color(f"Stage {index}: {task.spec.name} ({task.spec.kind})", "green"))
        start = time.time()
        self.seed_stage(task, index)
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
        if trainer.optimizer is not None:
            trainer.fit(task.train, task.valid, saved=True, show_progress=self.config["show_progress"])
        result = trainer.evaluate(task.test, load_best_model=True)
        return {k: float(v) for k, v in result.items()}

    def evaluate(self, model, task):
        model.active_task = self.stage_name(task.index)
        result = ContinualTrainer(task.config, model).evaluate(task.test, load_best_model=False)
        model.active_task = None
        return {k: float(v) for k, v in result.items()}

    def references(self, directory):
        """Each downstream task learned alone by a fresh model (from scratch), for FWT."""
        results = {}
        for index, task in enumerate(self.tasks[1:], start=1):
            file, identity = f"reference-{task.spec.name}.pth", self.identity.reference(index)
            state = directory.load(file, identity)
            if state is not None:
                results[task.spec.name] = state["meta"]["record"]
                continue
            model = self.new_model()
            self.seed_stage(task, "reference", task.spec.name)
            model.begin_task(task.spec.name, train_all=True)
            results[task.spec.name] = self.fit_and_test(model, task, pretraining=True)
            directory.save(file, identity, {}, results[task.spec.name])
        return results


def _with(config, **changes):
    """A shallow copy of a RecBole Config with some settings changed."""
    copied = copy.copy(config)
    copied.final_config_dict = dict(config.final_config_dict, **changes)
    return copied
