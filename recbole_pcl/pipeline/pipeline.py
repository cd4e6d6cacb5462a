"""The pipeline of every method on a task sequence: data, stages, checkpoints, evaluation, report.

:class:`TaskPipeline` holds what all methods share: the task data (:class:`ContinualData`), the run's
identity and directory (:mod:`.identity`, :mod:`.run_directory`), the final evaluation of every task
with the one model, the FWT reference and the report (:mod:`.report`). How the model learns is the
strategy of its contract (:mod:`recbole_pcl.model.abstract_recommender`):

* :class:`SequentialStrategy` (``ContinualRecommender``): one stage per task — T1, then each
  downstream task in order — each seeded from (seed, stage index), fitted by RecBole's trainer on
  the task's data and saved as one file; a rerun resumes at the first unfinished stage, and tasks
  appended later are trained without redoing earlier ones.
* :class:`JointStrategy` (``JointRecommender``): one stage in which every task is learned at once
  (:class:`recbole_pcl.trainer.JointTrainer`).

Trainers fit and evaluate, as in RecBole; the pipeline decides what is fitted when.
"""

import copy
import os
import time
from logging import getLogger

import numpy as np
from recbole.utils import init_seed, set_color

from recbole_pcl.data.continual import ContinualData, task_sequence
from recbole_pcl.data.tasks import valid_metric
from recbole_pcl.model.abstract_recommender import ContinualRecommender, JointRecommender
from recbole_pcl.model.recbole_rows import SUFFIX
from recbole_pcl.pipeline.identity import (
    RunIdentity,
    differences,
    digest,
    fingerprint_files,
    numeric_environment,
    stage_seed,
)
from recbole_pcl.pipeline.report import write_report
from recbole_pcl.pipeline.run_directory import STORE, RunDirectory
from recbole_pcl.trainer import ContinualTrainer, JointTrainer
from recbole_pcl.utils.checkpoint import read_json
from recbole_pcl.utils.errors import PCLError
from recbole_pcl.utils.utils import get_model


def require_task_method(model_class):
    """``model_class`` if it learns the task sequence (a method of recbole-pcl), else a :class:`PCLError`."""
    if not issubclass(model_class, (ContinualRecommender, JointRecommender)):
        name = model_class.__name__
        raise PCLError(
            f"model '{name}' does not learn the task sequence, so it cannot run on it (--model={name} alone is "
            f"RecBole's own protocol; its row of a comparison, each task learned alone: --model={name}{SUFFIX})"
        )
    return model_class


def count_trainable(model):
    return model.count_trainable()


def with_settings(config, **changes):
    """A shallow copy of a RecBole Config with some settings changed."""
    copied = copy.copy(config)
    copied.final_config_dict = dict(config.final_config_dict, **changes)
    return copied


class TaskPipeline:
    """Runs (or resumes) a method of ``model_class`` on the dataset's task sequence.

    The run's identity and directory come from the settings, task specs and data files alone, so a
    busy or foreign run directory is refused before the data are loaded (:attr:`data`, on first use).
    """

    def __init__(self, config, model_class, epoch_callback=None):
        require_task_method(model_class)
        self.config, self.model_class = config, model_class
        self.logger = getLogger()
        self.specs = task_sequence(config)
        self.identity = RunIdentity(config, self.specs, fingerprint_files(config), model_class)
        self.run_dir = config["run_dir"] or os.path.join(
            config["checkpoint_dir"], f"{config['model']}-{config['dataset']}-{digest(self.identity.run())[:8]}"
        )
        self.store = os.path.join(config["checkpoint_dir"], STORE)
        self.strategy = (SequentialStrategy if issubclass(model_class, ContinualRecommender) else JointStrategy)(self)
        if self.reports_fwt():  # the reference is checked now, not after training
            require_task_method(get_model(config["fwt_reference_model"]))
        self.epoch_callback = epoch_callback  # (stage index, epoch, validation score) after each epoch
        self._data, self._evaluators = None, {}

    @property
    def data(self):
        if self._data is None:
            self._data = ContinualData(self.config, self.specs)
        return self._data

    @property
    def tasks(self):
        return self.data.tasks

    @staticmethod
    def task_name(index, specs):
        return None if index == 0 else specs[index].name

    # ----- model ------------------------------------------------------------------------------
    def new_model(self):
        init_seed(self.config["seed"], self.config["reproducibility"])
        model = self.model_class(self.config, self.tasks[0].train._dataset)
        model.setup(self.data)  # the method declares the tasks and takes what else it needs of the run
        return model.to(self.config["device"])

    def stage_seed(self, *stage):
        """The seed of a stage: from (seed, stage), and the fold where each fold pretrains its own
        T1 (``fold_pretraining``; stage 0 and a joint stage, which learns T1 too)."""
        fold = self.identity.t1_fold
        return stage_seed(
            self.config["seed"], *stage, *(("fold", fold) if fold is not None and stage[0] in (0, "joint") else ())
        )

    def seed_stage(self, loaders, *stage):
        """Every random draw of a stage (initialisation, dropout, shuffling, negatives) starts from
        :meth:`stage_seed`, so a resumed or appended run repeats it exactly."""
        seed = self.stage_seed(*stage)
        init_seed(seed, self.config["reproducibility"])
        for loader in loaders:
            loader.generator.manual_seed(seed)

    # ----- the run ----------------------------------------------------------------------------
    def run(self, wait=False):
        """Run (or resume, or read the results of) this run; ``wait`` for its directory when another
        process holds it (as a run that this one needs: its FWT reference), instead of refusing. A
        finished run is read without taking its directory (which may be read-only)."""
        finished = self.finished_results()
        if finished is None:
            with RunDirectory(self.run_dir, self.store, self.identity, wait=wait) as directory:
                finished = self._finished(directory)  # finished meanwhile, by the run this one waited for
                if finished is None:
                    model = self.new_model()
                    records = self.strategy.fit(model, directory)
                    final = self.strategy.final(model, records)
                    valid = self.strategy.final(model, records, "valid")
                    score = np.mean(
                        [
                            valid[t.spec.name][valid_metric(t.spec.kind, self.config)]
                            for t in self.tasks
                            if self.applies(t)
                        ]
                    )
                    # valid_score: what a comparison's tuning chooses trials by (never test users)
                    summary = dict(self.summary(model), final_valid=valid, valid_score=float(score))
                    references = self.references() if self.reports_fwt() else {}
                    return write_report(self.run_dir, self.config, self.tasks, records, final, references, summary)
        self.logger.info(set_color("Finished before", "green") + f": {self.run_dir}")
        return finished

    def _finished(self, directory):
        result = directory.results()
        if (
            result
            and result["summary"].get("identity") == digest(self.identity.run())
            and self.strategy.is_finished(directory)
        ):
            return result
        return None

    def finished_results(self):
        """This run's results if it finished before (read without loading data or taking the lock)."""
        if not os.path.isdir(self.run_dir):
            return None
        return self._finished(RunDirectory(self.run_dir, self.store, self.identity))

    def stage0_digest(self):
        return digest(self.identity.stage(0))

    def pretrained(self):
        """Whether stage 0 of this run is finished (here or in the shared store)."""
        return os.path.isfile(os.path.join(self.store, f"{self.stage0_digest()}.pth")) or os.path.isfile(
            os.path.join(self.run_dir, self.strategy.stage_file(0))
        )

    def pretrain(self):
        """Train (or find) stage 0 only, e.g. before several runs that share it go in parallel."""
        with RunDirectory(self.run_dir, self.store, self.identity) as directory:
            return {"run_dir": self.run_dir, "stage": self.strategy.stage(self.new_model(), directory, 0)}

    def summary(self, model):
        """What the comparison table says of the method besides its metrics."""
        return {
            "method": self.model_class.label(),
            "strategy": self.strategy.name,
            "backbones_kept": model.backbones_kept(),
            "tasks_optimised_jointly": len(self.tasks) if self.strategy.name == "joint" else 1,
            "identity": digest(self.identity.run()),
        }

    def load_final(self):
        """The model after the whole run (read only: nothing is written)."""
        if not os.path.isdir(self.run_dir):
            raise PCLError(
                f"no run at {self.run_dir}: run this configuration first (run_recbole_pcl); {self.other_runs()}"
            )
        directory = RunDirectory(self.run_dir, self.store, self.identity)
        self.strategy.check_finished(directory)
        model = self.new_model()
        self.strategy.restore_all(model, directory)
        return model.eval()

    def other_runs(self):
        """What finished runs of this model and dataset exist beside this configuration's, and the
        first setting in which the nearest one differs (the one with the fewest differences)."""
        root, prefix = self.config["checkpoint_dir"], f"{self.config['model']}-{self.config['dataset']}-"
        found = []
        for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            run_file = os.path.join(root, name, "run.json")
            if name.startswith(prefix) and os.path.isfile(run_file):
                found.append((name, differences(read_json(run_file, "run file"), self.identity.run())))
        if not found:
            return f"there is no run of {self.config['model']} on {self.config['dataset']} in {root}"
        name, diffs = min(found, key=lambda f: len(f[1]))
        what, there, here = diffs[0] if diffs else ("nothing", None, None)
        return (
            f"runs of {self.config['model']} on {self.config['dataset']} in {root}: {', '.join(n for n, _ in found)}; "
            f"the nearest, {name}, differs in {len(diffs)} place(s), first in {what}: {there!r} there, {here!r} here"
        )

    def applies(self, task):
        """Whether the method has a model of ``task`` (else its results are "n/a", see
        :meth:`~recbole_pcl.model.abstract_recommender.TaskRecommender.task_support`)."""
        return self.model_class.task_support(task.spec.kind) is None

    def stage_callback(self, index):
        return None if self.epoch_callback is None else (lambda epoch, score: self.epoch_callback(index, epoch, score))

    def fit_and_test(self, model, task, learning_rate):
        """Fit the trainable parameters on ``task`` with early stopping; ``(valid, test, history)``: the
        results of the best epoch's weights and the validation metric after each epoch. With nothing
        to tune (a link task without prompts) it is evaluated as it is."""
        trainer = ContinualTrainer(
            with_settings(task.config, learning_rate=learning_rate), model, self.stage_callback(task.index)
        )
        valid = None
        if trainer.optimizer is not None:
            valid = trainer.fit(task.train, task.valid, saved=True, show_progress=self.config["show_progress"])[1]
        if valid is None:
            valid = trainer.evaluate(task.valid, load_best_model=True)
        test = trainer.evaluate(task.test, load_best_model=True)
        return {k: float(v) for k, v in valid.items()}, {k: float(v) for k, v in test.items()}, trainer.history

    def evaluator(self, model, task):
        key = (id(model), task.index)
        if key not in self._evaluators:
            self._evaluators = {k: v for k, v in self._evaluators.items() if k[0] == id(model)}
            self._evaluators[key] = ContinualTrainer(task.config, model)
        return self._evaluators[key]

    def evaluate(self, model, task, phase="test"):
        model.active_task = self.task_name(task.index, self.specs)
        result = self.evaluator(model, task).evaluate(getattr(task, phase), load_best_model=False)
        model.active_task = None
        return {k: float(v) for k, v in result.items()}

    # ----- forward transfer -------------------------------------------------------------------
    def reports_fwt(self):
        reference = self.config["fwt_reference_model"]
        return (
            bool(self.config["fwt_reference"] and reference)
            and self.strategy.name == "sequential"
            and (self.model_class.__name__ != reference)
        )

    def references(self):
        """Each downstream task learned alone (``fwt_reference_model``: the SASRec row by default), for
        FWT: the reference method's own run, with the same settings (shared and reused like any run)."""
        name = self.config["fwt_reference_model"]
        reference = TaskPipeline(self.config.for_model(name), get_model(name))
        rows = reference.run(wait=True)["stages"]  # may be running beside this run (a comparison on Ray)
        return {r["task"]: r["test"] for r in rows[1:]}


class SequentialStrategy:
    """One stage per task, T1 first; each stage's file holds what that stage changed."""

    name = "sequential"

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def stage_file(self, index):
        return f"stage-{index:02d}-{self.pipeline.specs[index].name}.pth"

    def find_stage(self, directory, index):
        """The stored stage ``index`` of this run (a given pretrained checkpoint for stage 0), or None."""
        p = self.pipeline
        identity = p.identity.stage(index)
        given = p.config["pretrained_checkpoint"] if index == 0 else None
        if not given:
            return directory.load(self.stage_file(index), identity)
        state = directory.verified(
            given, identity, [given], foreign=f"pretrained_checkpoint {given} is not this run's stage 0"
        )
        if directory.writable:
            directory.adopt(self.stage_file(index), given, identity)  # the run holds its stage 0, servable
        return state

    def restore(self, model, index, state):
        """Load a finished stage into ``model``; it must hold exactly what that stage writes."""
        name = TaskPipeline.task_name(index, self.pipeline.specs)
        model.prepare_task(name)
        expected = set(model.stage_state(name))
        if set(state["state_dict"]) != expected:
            raise PCLError(
                f"stage {index} ({self.pipeline.specs[index].name}) of {self.pipeline.run_dir} does not fit the model: "
                f"missing {sorted(expected - set(state['state_dict']))}, unexpected {sorted(set(state['state_dict']) - expected)}"
            )
        model.load_state_dict(state["state_dict"], strict=False)
        model.end_task(name)
        self.pipeline.logger.info(
            set_color(f"Stage {index} ({self.pipeline.specs[index].name})", "green") + ": finished before, reused"
        )
        return state["meta"]["record"]

    def fit(self, model, directory):
        return [self.stage(model, directory, index) for index in range(len(self.pipeline.tasks))]

    def stage(self, model, directory, index):
        """Restore stage ``index`` if it is finished, else train and save it; its record."""
        state = self.find_stage(directory, index)
        if state is not None:
            return self.restore(model, index, state)
        record = self.train_stage(model, self.pipeline.tasks[index], index)
        name = TaskPipeline.task_name(index, self.pipeline.specs)
        directory.save(self.stage_file(index), self.pipeline.identity.stage(index), model.stage_state(name), record)
        return record

    def final(self, model, records, phase="test"):
        """Every task's ``phase`` metrics with the model after the last stage ({} where the method has
        no model of the task: "n/a")."""
        p = self.pipeline
        return {t.spec.name: p.evaluate(model, t, phase) if p.applies(t) else {} for t in p.tasks}

    def check_finished(self, directory):
        for index, spec in enumerate(self.pipeline.specs):
            if not os.path.isfile(directory.file(self.stage_file(index))):
                raise PCLError(
                    f"run {self.pipeline.run_dir} has not finished stage {index} ({spec.name}): run it first"
                )

    def is_finished(self, directory):
        return all(os.path.isfile(directory.file(self.stage_file(i))) for i in range(len(self.pipeline.specs)))

    def restore_all(self, model, directory):
        for index in range(len(self.pipeline.specs)):
            self.restore(model, index, self.find_stage(directory, index))

    def train_stage(self, model, task, index):
        p = self.pipeline
        name = TaskPipeline.task_name(index, p.specs)
        p.logger.info(set_color(f"Stage {index}: {task.spec.name} ({task.spec.kind})", "green"))
        start = time.time()
        if not p.applies(task):  # nothing to learn: the record says why
            return {
                "task": task.spec.name,
                "kind": task.spec.kind,
                "not_applicable": model.task_support(task.spec.kind),
                "test": {},
                "valid": {},
                "valid_history": [],
                "trainable_params": 0,
                "seconds": 0.0,
            }
        p.seed_stage([t.train for t in p.tasks[: index + 1]], index)  # a stage may fit earlier tasks' data
        model.begin_task(name)
        learning_rate = p.config["learning_rate"] if index == 0 else p.config["downstream_learning_rate"]
        trainable, history = None, []
        # the method's fits: its task once by default; a fit of the stage's own task may carry other
        # training rows or settings (a copy of its TaskData: RecBole's general models, see recbole_rows)
        for fit in model.stage_fits(task, p.tasks[:index]):
            own = fit.index == task.index
            if own and trainable is None:
                trainable = count_trainable(model)
            result = p.fit_and_test(model, fit, learning_rate)
            if own:  # the stage's record: its own task's last fit (epochs: all of its fits)
                valid, test, history = result[0], result[1], history + result[2]
        if trainable is None:
            raise RuntimeError(f"{type(model).__name__}.stage_fits never fitted the stage's task {task.spec.name}")
        model.end_task(name)
        return {
            "task": task.spec.name,
            "kind": task.spec.kind,
            "test": test,
            "valid": valid,
            "valid_history": history,
            "trainable_params": trainable,
            "seconds": round(time.time() - start, 2),
            "seed": p.stage_seed(index),
            "environment": numeric_environment(p.config["device"]),
        }


class JointStrategy:
    """Every task at once, in one stage (``stage-joint.pth``)."""

    name = "joint"
    FILE = "stage-joint.pth"

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def fit(self, model, directory):
        p = self.pipeline
        state = directory.load(self.FILE, p.identity.joint())
        if state is not None:
            model.load_state_dict(state["state_dict"])
            return state["meta"]["record"]
        p.logger.info(set_color(f"Joint stage: {', '.join(t.spec.name for t in p.tasks)}", "green"))
        start = time.time()
        p.seed_stage([t.train for t in p.tasks], "joint")
        for param in model.parameters():
            param.requires_grad_(True)
        trainable = count_trainable(model)
        trainer = JointTrainer(
            with_settings(p.tasks[0].config, learning_rate=p.config["learning_rate"]),
            model,
            p.tasks,
            lambda task: p.evaluate(model, task, "valid"),
            p.stage_callback(0),
        )
        trainer.fit(p.tasks[0].train, p.tasks[0].valid, saved=True, show_progress=p.config["show_progress"])
        trainer.restore_best()
        seconds = round(time.time() - start, 2)
        environment = numeric_environment(p.config["device"])
        records = [
            {
                "task": t.spec.name,
                "kind": t.spec.kind,
                "test": p.evaluate(model, t),
                "valid": p.evaluate(model, t, "valid"),
                "valid_history": trainer.task_history[t.spec.name],  # this task's curve (best epoch: best mean)
                "trainable_params": trainable,
                "seconds": seconds,
                "seed": p.stage_seed("joint"),
                "environment": environment,
            }
            for t in p.tasks
        ]
        directory.save(self.FILE, p.identity.joint(), model.state_dict(), records)
        return records

    def final(self, model, records, phase="test"):
        """Every task's ``phase`` metrics: the one stage's record holds them (the same model)."""
        return {r["task"]: r[phase] for r in records}

    def check_finished(self, directory):
        if not self.is_finished(directory):
            raise PCLError(f"run {self.pipeline.run_dir} has not finished its joint stage: run it first")

    def is_finished(self, directory):
        return os.path.isfile(directory.file(self.FILE))

    def restore_all(self, model, directory):
        model.load_state_dict(directory.load(self.FILE, self.pipeline.identity.joint())["state_dict"])
