"""Ray Tune for a method's settings (PCL's t, lambda, learning rates, prompt initialisation, adapter).

The search space lives in a yaml file (``properties/experiment/tune.yaml``)::

    model: PCL
    space:                                   # setting: {distribution: arguments}
      prompt_length: {choice: [5, 10, 20]}
      context_lambda: {loguniform: [0.05, 2.0]}
    samples: 12                              # trials
    grace_epochs: 3                          # ASHA: epochs every trial gets before it can be cut
    reduction_factor: 3

Each trial is a run of the method on the validation users (its test users are never looked at for
the choice). After every epoch of every downstream stage the trial reports ``score``: the mean over
the tasks learned so far of each task's best validation metric (NDCG@10 for link tasks, accuracy for
class tasks), so that ASHA can stop trials that fall behind; T1 pretraining does not depend on these
settings and is done once, before the trials. The best complete trial's settings are written as
``best.yaml``, which ``--config_files`` accepts. The first trial runs the current defaults (marked in
the table). ASHA's clock is :class:`StageClock`.
"""

import json
import math
import os
import time

import yaml
from tabulate import tabulate

from recbole_pcl.config import Config
from recbole_pcl.data.tasks import valid_metric
from recbole_pcl.experiment.experiment import Experiment
from recbole_pcl.experiment.runner import Job, failures, run_jobs
from recbole_pcl.experiment.search import check_space
from recbole_pcl.pipeline import TaskPipeline
from recbole_pcl.utils import get_model
from recbole_pcl.utils.checkpoint import atomic_write_text
from recbole_pcl.utils.errors import PCLError
from recbole_pcl.utils.plots import new_figure


def search_space(space, check=None):
    """Ray Tune domains from the yaml mapping ``{setting: {distribution: arguments}}``, checked when
    loaded, before any pretraining (:func:`~recbole_pcl.experiment.search.check_space`)."""
    from ray import tune

    if not space:
        raise PCLError("tune: the definition has no 'space'")
    check_space(space, "tune space", check)
    domains = {}
    for key, spec in space.items():
        kind, args = next(iter(spec.items()))
        domains[key] = getattr(tune, kind)(args) if kind in ("choice", "grid_search") else getattr(tune, kind)(*args)
    return domains


def trial(params, model, dataset, files, config_dict, cmd_args):
    """One trial (runs in a Ray Tune worker): the method with ``params``, reporting after every epoch."""
    from ray import tune

    config = Config(model, dataset, files, dict(config_dict, **params), cmd_args)
    clock = StageClock(config["epochs"], tune.report)
    result = TaskPipeline(config, get_model(model), epoch_callback=clock.epoch).run()
    clock.finish(
        {index: s["valid"][valid_metric(s["kind"], config)] for index, s in enumerate(result["stages"]) if index > 0}
    )


class StageClock:
    """ASHA's clock for a continual run. ASHA compares trials at the same value of ``step``, so a step
    must mean the same tasks in every trial although early stopping ends stages after different
    numbers of epochs: downstream task k owns steps ``(k-1)*epochs + 1 .. k*epochs``, and a stage
    that stops early reports its final score again at its last step. (Counting epochs instead would
    compare one trial's first task with another's mean over three, and cut the trials whose stages
    stop early.) ``score`` is the mean over the tasks learned so far of each one's best validation
    metric."""

    def __init__(self, epochs, emit):
        self.epochs, self.emit = epochs, emit
        self.step, self.best = 0, {}  # best: stage index -> best validation metric so far

    def epoch(self, stage, epoch, score):
        if stage == 0:
            return  # pretraining, shared by every trial
        if self.best and self.step < (stage - 1) * self.epochs:
            self._send((stage - 1) * self.epochs, stage - 1)  # the stage before stopped early: close its steps
        self.best[stage] = max(self.best.get(stage, -math.inf), score)
        self._send((stage - 1) * self.epochs + epoch, stage)

    def finish(self, scores):
        """The run's final validation metric per downstream stage (stages reused from an earlier run
        report no epochs), one step after the last stage's."""
        self.best.update(scores)
        self._send(len(scores) * self.epochs + 1, len(scores), complete=True)

    def _send(self, step, stage, complete=False):
        self.step = step
        self.emit(
            {"score": sum(self.best.values()) / len(self.best), "step": step, "stage": stage, "complete": complete}
        )


def run_tune(definition, dataset, config_file_list=None, config_dict=None, cmd_args=None):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    exp = Experiment("tune", definition, dataset, config_file_list, config_dict, cmd_args)
    model = exp.model
    space = search_space(
        definition.get("space"),
        check=lambda key, value: Config(model, dataset, exp.files, dict(exp.config_dict, **{key: value}), exp.cmd_args),
    )
    settings = dict(exp.config_dict, **absolute_paths(exp.base))
    pretrain = Job("pretrain", model, dataset, exp.files, settings, exp.cmd_args, pretrain_only=True)
    out = (
        exp.directory([Job(f"{model}-space", model, dataset, exp.files, settings, exp.cmd_args)])
        + "-"
        + _space_key(definition)
    )
    start = time.time()
    pretrained = run_jobs([pretrain], **dict(exp.runner, runner="ray"))  # also starts (or joins) Ray
    if failures(pretrained):
        raise PCLError(f"tune: pretraining failed: {failures(pretrained)['pretrain']}")
    # The first trial runs the method's current defaults, so the table shows what tuning gains over them;
    # the others are sampled from a seeded search (a rerun tries the same settings).
    defaults = {key: exp.base[key] for key in space}
    runner = exp.runner
    trainable = tune.with_resources(
        tune.with_parameters(
            trial, model=model, dataset=dataset, files=exp.files, config_dict=settings, cmd_args=exp.cmd_args
        ),
        {"cpu": runner["cpus_per_run"], "gpu": runner["gpus_per_run"]},
    )
    scheduler = ASHAScheduler(
        time_attr="step",
        max_t=10_000,
        grace_period=definition.get("grace_epochs", 3),
        reduction_factor=definition.get("reduction_factor", 3),
    )
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="score",
            mode="max",
            num_samples=definition.get("samples", 10),
            scheduler=scheduler,
            search_alg=BasicVariantGenerator(points_to_evaluate=[defaults], random_state=exp.base["seed"]),
        ),
        run_config=tune.RunConfig(name="trials", storage_path=os.path.abspath(out), verbose=0),
    )
    grid = tuner.fit()
    trials = []
    for result in grid:
        metrics = result.metrics or {}
        frame = result.metrics_dataframe
        reported = frame is not None and "score" in frame
        trials.append(
            {
                **{k: result.config.get(k) for k in space},
                "defaults": result.config == defaults,
                "score": metrics.get("score"),
                "tasks": metrics.get("stage"),
                "step": metrics.get("step"),
                "complete": bool(metrics.get("complete")),
                "error": str(result.error).splitlines()[0] if result.error else None,
                # what the trial reported, step by step (the page's figure)
                "curve": [frame["step"].tolist(), frame["score"].tolist()] if reported else None,
            }
        )
    complete = [t for t in trials if t["complete"] and t["score"] is not None]
    if not complete:
        raise PCLError(f"tune: no trial finished ({len(trials)} trials; see {out})")
    best = max(complete, key=lambda t: t["score"])
    best_settings = {k: best[k] for k in space}
    os.makedirs(out, exist_ok=True)
    atomic_write_text(
        os.path.join(out, "best.yaml"),
        f"# Best of {len(trials)} trials of {model} on {dataset} (mean validation metric {best['score']:.4f}).\n"
        + yaml.safe_dump(best_settings, sort_keys=True),
    )
    result = {
        "model": model,
        "dataset": dataset,
        "epochs": exp.base["epochs"],
        "best": best_settings,
        "best_score": best["score"],
        "trials": trials,
        "seconds": round(time.time() - start, 1),
        "failures": {f"trial {i}": t["error"] for i, t in enumerate(trials) if t["error"]},
    }
    result = exp.write(out, result, _table_rows(trials), tune_page)
    exp.logger.info(f"tune ({out}): best {best_settings}, mean validation metric {best['score']:.4f}")
    return result


def _table_rows(trials):
    """The trials as table rows (their curves are drawn, not listed)."""
    return [{k: v for k, v in t.items() if k != "curve"} for t in trials]


def tune_page(result):
    """The tuning's page and figure from its result file. Scores compare only between trials that
    reached the same tasks: complete trials first."""
    trials = _table_rows(result["trials"])
    order = sorted(trials, key=lambda t: (not t["complete"], -(t["tasks"] or 0), -(t["score"] or -1)))
    markdown = (
        f"Ray Tune of {result['model']} on {result['dataset']}: {len(trials)} trials, ASHA; best settings "
        f"in best.yaml. score: mean best validation metric over the first `tasks` downstream tasks; "
        f"`step`: the last step the trial reported (task k owns steps (k-1)*epochs+1 .. k*epochs).\n\n"
        f"{tabulate(order, headers='keys', tablefmt='github')}\n"
    )
    if not any(t.get("curve") for t in result["trials"]):
        return markdown, None  # (tune.json files written before the curves were recorded)
    fig, (ax,) = new_figure(5.5, 3.6)
    for trial in result["trials"]:
        if trial.get("curve"):
            ax.plot(*trial["curve"], marker=".", alpha=0.8, drawstyle="steps-post")
    epochs = result["epochs"]
    ax.set_xlabel(f"ASHA step (task k: steps (k-1)*{epochs}+1 .. k*{epochs})")
    ax.set_ylabel("mean validation metric so far")
    ax.set_title(
        f"Ray Tune of {result['model']} on {result['dataset']} (ASHA stops trials that fall behind)", fontsize=9
    )
    return markdown, fig


def absolute_paths(config):
    """Trials run in their own folders: give them the data and run directories as absolute paths."""
    return {
        "checkpoint_dir": os.path.abspath(config["checkpoint_dir"]),
        "data_path": os.path.dirname(os.path.abspath(config["data_path"])),
    }


def _space_key(definition):
    import hashlib

    return hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()[:6]
