"""Methods compared on the same task data over k user folds (the PCL paper's Table 1, with intervals).

The labelled downstream users are split into ``n_folds`` folds (seeded); each fold is the test set once
and validation users are drawn from the other folds, so every labelled user is tested exactly once.
Each (method, fold) is an ordinary run of :class:`~recbole_pcl.pipeline.TaskPipeline` with ``fold``
set, a job of :mod:`.runner` (on Ray by default): finished runs are reused under the run-identity
rules, and T1 pretraining, which does not depend on the downstream split, is one stage shared by every
fold and every method that starts from it. Every metric is reported as the mean over folds with a 95 %
t-interval, and as the paired difference to PCL (per fold) with its interval.

    python run_recbole_pcl.py --model=PCL,SASRecPerTask,FineAll --dataset=ml-100k [--n_folds=5]
"""

import json
import os
import time
from dataclasses import dataclass, field
from logging import getLogger

import numpy as np
from recbole.utils import init_logger, set_color

from recbole_pcl.config import Config
from recbole_pcl.experiment.output import write_comparison
from recbole_pcl.experiment.runner import Job, failures, run_jobs, runner_settings
from recbole_pcl.experiment.search import check_space, sample
from recbole_pcl.experiment.statistics import interval, paired_differences
from recbole_pcl.experiment.tables import differences_table, table, transfer_table
from recbole_pcl.model.recbole_rows import task_method
from recbole_pcl.pipeline.identity import digest
from recbole_pcl.pipeline.pipeline import require_task_method
from recbole_pcl.utils.errors import PCLError
from recbole_pcl.utils.utils import get_model


@dataclass(frozen=True)
class Method:
    """A row of the comparison: ``model`` with ``settings`` on top of the shared configuration."""

    label: str
    model: str
    settings: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, spec):
        """A model name, or a mapping ``{label, model, <setting>: <value>...}`` (experiment yaml files).
        A RecBole model (GRU4Rec, BPR...) is its row on the task sequence, ``<Model>PerTask``."""
        if isinstance(spec, Method):
            return spec
        if isinstance(spec, str):
            method = _task_method(spec)
            return cls(method.label(), method.__name__)
        if not isinstance(spec, dict) or "model" not in spec:
            raise PCLError(f"a compared method is a model name or a mapping with 'model' (and 'label'), got {spec!r}")
        settings = {k: v for k, v in spec.items() if k not in ("label", "model")}
        method = _task_method(spec["model"])
        return cls(spec.get("label") or method.label(), method.__name__, settings)


def _task_method(model):
    try:
        return require_task_method(task_method(get_model(model)))
    except PCLError as e:
        raise PCLError(f"method '{model}': {e}") from None


def run_comparison(methods, dataset, config_file_list=None, config_dict=None, cmd_args=None, name="compare"):
    """Run every method of ``methods`` (model names or :class:`Method` specs) on every fold of
    ``dataset``; returns the comparison dict and writes compare.json/.csv/.md/.png into
    ``<checkpoint_dir>/<name>-<dataset>-<hash>/``. Every method's model and settings (and search
    space) are checked before anything trains (a :class:`PCLError` names the method). With
    ``tune_trials`` > 0 each method gets that many trials per fold (:func:`tuning_trials`) and each
    fold keeps the trial with the best validation score (:func:`selection_score`): chosen on the
    fold's validation users, never on its test users. A failed (method, fold) run is reported in
    ``failures`` and its method left out of the table; the other runs' results are kept. When every
    run fails, a :class:`PCLError` names the first failure."""
    methods = list({m.label: m for m in map(Method.parse, methods)}.values())
    if any(str(a).startswith("--fold=") for a in cmd_args or []) or "fold" in (config_dict or {}):
        raise PCLError("a comparison runs every fold itself: do not set 'fold' (set n_folds)")
    base = Config(methods[0].model, dataset, config_file_list, config_dict, cmd_args)
    init_logger(base)
    logger = getLogger()
    folds = compared_folds(base)
    files, args = list(config_file_list or []), list(cmd_args or [])
    trials = {}
    for m in methods:  # every model, setting and search space is checked before anything trains
        try:
            trials[m.label] = tuning_trials(m, dataset, files, dict(config_dict or {}), args)
        except PCLError as e:
            raise PCLError(f"method '{m.label}': {e}") from None
    jobs = [
        Job(
            trial_key(m.label, f, i, len(trials[m.label])),
            m.model,
            dataset,
            files,
            dict(config_dict or {}, **m.settings, **settings, fold=f),
            args,
        )
        for f in folds
        for m in methods
        for i, settings in enumerate(trials[m.label])
    ]
    pipelines = {}
    for job in jobs:
        try:
            pipelines[job.key] = job.pipeline()
        except PCLError as e:
            raise PCLError(f"method '{job.key.split('/')[0]}': {e}") from None
    identities = {k: digest(p.identity.run()) for k, p in pipelines.items()}
    out = os.path.join(base["checkpoint_dir"], f"{name}-{dataset}-{digest(list(identities.items()))[:8]}")
    start = time.time()
    outcomes = run_jobs(jobs, **runner_settings(base), pipelines=pipelines)
    failed = failures(outcomes)
    if len(failed) == len(jobs):
        first = next(iter(failed))
        raise PCLError(f"every run of the comparison failed; the first, {first}: {failed[first]}")
    chosen, scores = {}, {}
    for m in methods:
        for f in folds:
            keys = [trial_key(m.label, f, i, len(trials[m.label])) for i in range(len(trials[m.label]))]
            scores[m.label, f] = [selection_score(outcomes[k]["result"]) if outcomes[k]["ok"] else None for k in keys]
            done = [i for i, s in enumerate(scores[m.label, f]) if s is not None]
            chosen[m.label, f] = max(done, key=lambda i: (scores[m.label, f][i], -i)) if done else 0
    pick = {
        (m.label, f): trial_key(m.label, f, chosen[m.label, f], len(trials[m.label])) for m in methods for f in folds
    }
    complete = [m for m in methods if all(outcomes[pick[m.label, f]]["ok"] for f in folds)]
    results = {(m.label, f): outcomes[pick[m.label, f]]["result"] for m in complete for f in folds}
    specs = next(iter(pipelines.values())).specs
    comparison = (
        summarise(complete, folds, specs, results, base["compare_reference"])
        if complete
        else {"methods": [], "table": "", "differences": ""}
    )
    comparison.update(
        dataset=dataset,
        folds=len(folds),
        n_folds=base["n_folds"],
        fold_indices=folds,
        seconds=round(time.time() - start, 1),
        directory=out,
        failures=failed,
        runs={
            f"{label}/fold-{f}": run_record(identities[key], outcomes[key], trials[label][chosen[label, f]])
            for (label, f), key in pick.items()
        },
        tuning=tuning_summary(base, methods, folds, trials, chosen, scores),
        shared=shared_identity(pipelines.values()),
    )
    write_comparison(out, comparison, specs)
    logger.info(set_color("Comparison", "yellow") + f" ({out}):\n{comparison['table']}")
    return comparison


def trial_key(label, fold, trial, trials):
    """A run's key: ``label/fold-f`` (untuned), or ``label/fold-f/trial-i``."""
    return f"{label}/fold-{fold}" if trials == 1 else f"{label}/fold-{fold}/trial-{trial}"


def tuning_trials(method, dataset, files, config_dict, cmd_args):
    """The settings of ``method``'s trials: ``tune_trials`` of them (all methods get the same budget),
    the first its defaults, the others drawn from the ``tune_space`` its yaml declares with a generator
    seeded by (``seed``, the method's label), so every fold tries the same settings and a rerun the
    same. One trial (its defaults) when ``tune_trials`` is 0 or the method declares no space."""
    config = Config(method.model, dataset, files, dict(config_dict, **method.settings), cmd_args)
    space, budget = config["tune_space"], config["tune_trials"]
    if not budget or not space:
        return [{}]
    check_space(
        space,
        f"tune_space of {method.label}",
        lambda key, value: Config(
            method.model, dataset, files, dict(config_dict, **method.settings, **{key: value}), cmd_args
        ),
    )
    rng = np.random.default_rng([config["seed"], int(digest(method.label)[:8], 16)])
    return [{}] + [sample(space, rng) for _ in range(budget - 1)]


def selection_score(result):
    """What a trial is chosen by: the run's ``valid_score``, the mean over every task of its validation
    metric (NDCG@10 or accuracy) on the fold's validation users, with the run's final model."""
    return result["summary"]["valid_score"]


def run_record(identity, outcome, settings):
    """What compare.json keeps of a (method, fold) run: its identity, the settings its trial chose,
    and from its result its stage-0 seed, seconds (in all and per stage), validation curves and where
    it was computed."""
    record = {"identity": identity, "settings": settings}
    if outcome.get("ok"):
        stages = outcome["result"]["stages"]
        record.update(
            stage0_seed=stages[0].get("seed"),
            seconds=round(run_seconds(outcome["result"]), 2),
            stage_seconds={s["task"]: s["seconds"] for s in stages},
            valid_history={s["task"]: s.get("valid_history", []) for s in stages},
            environment=stages[0].get("environment"),
        )
    return record


def run_seconds(result):
    """A run's training seconds: the sum of its stages (a joint run's stages each record the one
    joint training, so its seconds once)."""
    stages = result["stages"]
    return sum(s["seconds"] for s in stages) / (1 if result["summary"]["strategy"] == "sequential" else len(stages))


def tuning_summary(base, methods, folds, trials, chosen, scores):
    """The tuning of each method: its search space, trials, and per fold the chosen trial and every
    trial's validation score (None: failed)."""
    return {
        "trials": base["tune_trials"],
        "methods": {
            m.label: {
                "trials": trials[m.label],
                "chosen": {str(f): chosen[m.label, f] for f in folds},
                "scores": {str(f): scores[m.label, f] for f in folds},
            }
            for m in methods
        },
    }


def shared_identity(pipelines):
    """What every run of a comparison shares: the data files, the task sequence and the T1
    pretraining stage of the methods that start from it. Two comparisons with no method in common
    merge only when this agrees (:func:`merge_comparisons`)."""
    pipelines = list(pipelines)
    identity = pipelines[0].identity
    pretraining = sorted({p.stage0_digest() for p in pipelines if p.model_class.pretraining})
    return {"data": identity.data, "tasks": identity.tasks, "pretraining": pretraining}


def compared_folds(config):
    """The folds a comparison runs: every fold of ``n_folds``, or the ``compare_folds`` subset (to
    spread one comparison over machines or sessions; a later call with every fold reuses their runs)."""
    folds = config["compare_folds"]  # checked against n_folds when the settings were loaded
    return list(range(config["n_folds"])) if folds is None else sorted(set(folds))


def summarise(compared, folds, specs, results, reference=None):
    """Per method and task: every metric's mean and interval over folds, and the paired difference to
    the method labelled ``reference`` (``compare_reference``; the first method when absent)."""
    labels = [m.label for m in compared]
    reference = reference if reference in labels else labels[0]
    methods = []
    for method in compared:
        m = method.label
        runs = [results[m, f] for f in folds]
        described = runs[0]["summary"]
        row = {
            "model": method.model,
            "method": m,
            "settings": method.settings,
            "strategy": described["strategy"],
            "B": described["backbones_kept"],
            "F": described["tasks_optimised_jointly"],
            "tasks": {},
        }
        # the tasks the method has no model of, and why (their cells say "n/a")
        not_applicable = {r["task"]: r["not_applicable"] for r in runs[0]["stages"] if "not_applicable" in r}
        if not_applicable:
            row["not_applicable"] = not_applicable
        row["trainable_params"] = [r["trainable_params"] for r in runs[0]["stages"]]
        # where the numbers were computed (float rounding depends on it; see numeric_environment)
        row["environments"] = [
            json.loads(e)
            for e in sorted(
                {
                    json.dumps(r["environment"], sort_keys=True)
                    for run in runs
                    for r in run["stages"]
                    if "environment" in r
                }
            )
        ]
        row["seconds"] = list(interval([run_seconds(run) for run in runs]))
        for index, spec in enumerate(specs):
            task = {}
            for metric in list(runs[0]["final"][spec.name]) + ["BWT%", "FWT%"]:
                values = [
                    run["final"][spec.name].get(metric)
                    if metric in run["final"][spec.name]
                    else run["tasks"][index].get(metric)
                    for run in runs
                ]
                if any(v is None for v in values):
                    continue
                mean, half = interval(values)
                task[metric] = {"mean": mean, "ci95": half, "folds": values}
            row["tasks"][spec.name] = task
        methods.append(row)
    return summary(methods, specs, reference)


def summary(methods, specs, reference):
    """The comparison of ``methods`` (rows with fold values): paired differences to ``reference`` and
    the tables."""
    paired_differences(methods, reference)
    return {
        "methods": methods,
        "reference": reference,
        "table": table(methods, specs),
        "differences": differences_table(methods, specs, reference),
        "transfer": transfer_table(methods, specs),
    }
