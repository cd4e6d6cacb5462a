"""Where the time of recbole-pcl's work goes: one profile, from data loading to serving, as a table.

    python benchmarks/time_profile.py [--dataset=ml-100k] [--out=DIR] [--parts data pretrain ...]
                                 [--t1_epochs=N] [--joint_epochs=N] [--key=value ...]

Every part runs in its own process (so that its peak RSS is its own) from a fresh temporary
checkpoint_dir (nothing is reused between parts), with ``fold=0``, ``runner=serial`` and
``fwt_reference=False``; ``--key=value`` settings apply to every part:

* ``data``: the run's set-up (``TaskPipeline``: task specs, identity, fingerprints of the atomic
  files) and data loading (``ContinualData``: atomic files -> T1 windows and downstream tasks).
* ``pretrain``: T1 pretraining (PCL's stage 0, the backbone every continual method shares): each
  training epoch, each validation, the test evaluation and the stage in all; ``--t1_epochs`` caps its
  epochs (default: the configured ones, with early stopping).
* ``downstream``: a PCL run, then a FineAll run from the same pretrained stage 0 (shared through the
  part's checkpoint_dir): each downstream stage's training epochs, validations, test evaluation and
  total, the final evaluation of every task with the final model, and the rest of each run.
* ``MTL``, ``MTLPlus``, ``MMoE``, ``MMoEPlus`` (one process each): ``--joint_epochs`` joint epochs
  (default 1) split into forward (``task_losses``), backward, MGDA weights, the weighted sum of the
  tasks' gradients and the optimiser step, then the evaluation of every task after each epoch.
* ``serving``: after a PCL run (T1 capped as above, one epoch per downstream stage: the weights do not
  change what serving costs), ``load_continual_run``'s start-up, then ``user_representation`` and
  top-10 ``recommend`` of the first downstream link task for every user.

Timers wrap, at run time, a few stable entry points: ``ContinualData.__init__``, ``TaskPipeline.run``,
``ContinualTrainer._train_epoch`` / ``_valid_epoch`` / ``evaluate`` (and RecBole's ``fit``, to cap
epochs), ``JointTrainer._train_epoch`` / ``_valid_epoch`` / ``task_gradients`` / ``task_weights`` /
``step_from`` / ``step``, ``JointRecommender.task_losses`` and torch's optimiser-step hooks; no library
code is changed. An entry point that no longer exists leaves its rows empty ("not measured"), the
rest of the profile is still made. On CUDA every timer synchronises the device first.

Writes profile.json and profile.md into ``--out`` (default docs/performance/); the rows are numbered
P1, P2 ... in the order above, so that a change can cite "profile row P7" of a committed profile.
Timings are wall-clock on the machine the table names; the test suite asserts none of them.
"""

import argparse
import functools
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The standard library has a module named ``profile`` (cProfile imports it): this script's folder must
# not come first on the path, or any ``import profile`` would load this file instead.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)
else:
    sys.path.insert(0, str(REPO))

JOINT = ("MTL", "MTLPlus", "MMoE", "MMoEPlus")
PART_NAMES = ("data", "pretrain", "downstream", *JOINT, "serving")


# ----- timers ------------------------------------------------------------------------------------
class Profiler:
    """Timers around methods, wrapped at run time. Each call becomes a record: its key
    (``Class.method``), seconds, the keys of the timed calls it ran inside, the method label of the
    run (``context["method"]``) and, for trainer methods, the task and phase of the loader it was
    given (matched against ``context["pipeline"]``'s tasks)."""

    def __init__(self):
        self.records, self.missing = [], set()
        self.context = {}
        self.cuda = False
        self.active = []  # keys of the timed calls now running, outermost first
        self._running = set()  # (object, method name): a subclass calling super() is timed once
        self.fitted = weakref.WeakSet()  # trainers whose fit ran: their test evaluation is the stage's
        self.caps = {}  # "t1" / "downstream" / "joint": most epochs of such a fit (None: as configured)

    def sync(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def wrap(self, owner, name, locate=False, before=None, key=None):
        """Time ``owner.name`` (inherited or its own) as ``key`` (default ``Class.name``); False, and
        the key noted missing, if it does not exist."""
        key = key or f"{owner.__name__}.{name}"
        original = getattr(owner, name, None)
        if not callable(original):
            self.missing.add(key)
            return False
        profiler = self

        @functools.wraps(original)
        def timed(obj, *args, **kwargs):
            token = (id(obj), name)
            if token in profiler._running:
                return original(obj, *args, **kwargs)
            if before is not None:
                before(obj, args, kwargs)
            where = profiler.locate(args, kwargs) if locate else {}
            profiler._running.add(token)
            profiler.active.append(key)
            profiler.sync()
            start = time.perf_counter()
            try:
                return original(obj, *args, **kwargs)
            finally:
                profiler.sync()
                seconds = time.perf_counter() - start
                profiler.active.pop()
                profiler._running.discard(token)
                profiler.record(key, seconds, fitted=obj in profiler.fitted if locate else None, **where)

        setattr(owner, name, timed)
        self.missing.discard(key)  # found here, if not on another class timed as the same key
        return True

    def record(self, key, seconds, **fields):
        self.records.append(
            {"key": key, "seconds": seconds, "stack": list(self.active), "method": self.context.get("method"), **fields}
        )

    def locate(self, args, kwargs):
        """The task index and phase of the loader a trainer method was given, if it is one of the
        current run's."""
        pipeline = self.context.get("pipeline")
        loader = args[0] if args else next(iter(kwargs.values()), None)
        if pipeline is None or loader is None:
            return {}
        for task in pipeline.tasks:
            for phase in ("train", "valid", "test"):
                if getattr(task, phase) is loader:
                    return {"task": task.index, "phase": phase}
        return {}

    def hook_optimizers(self):
        """Time every optimiser step through torch's global step hooks (no optimiser is touched)."""
        try:
            from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
        except ImportError:  # an old torch: no optimiser-step row
            self.missing.add("optimizer.step")
            return
        starts = []

        def pre(optimizer, args, kwargs):
            self.sync()
            starts.append(time.perf_counter())

        def post(optimizer, args, kwargs):
            self.sync()
            self.record("optimizer.step", time.perf_counter() - starts.pop())

        register_optimizer_step_pre_hook(pre)
        register_optimizer_step_post_hook(post)

    def cap_epochs(self, trainer, args, kwargs):
        """Before ``fit``: at most the cap of this kind of stage (T1: its loader is the run's first)."""
        from recbole_pcl.trainer import JointTrainer

        self.fitted.add(trainer)
        pipeline = self.context.get("pipeline")
        loader = args[0] if args else kwargs.get("train_data")
        if isinstance(trainer, JointTrainer):
            kind = "joint"
        elif pipeline is not None and loader is pipeline.tasks[0].train:
            kind = "t1"
        else:
            kind = "downstream"
        if self.caps.get(kind) is not None:
            trainer.epochs = min(trainer.epochs, self.caps[kind])

    def select(self, key, **match):
        """The records of ``key`` whose fields equal ``match`` (``inside``: ran within that key)."""
        inside = match.pop("inside", None)
        return [
            r
            for r in self.records
            if r["key"] == key
            and all(r.get(k) == v for k, v in match.items())
            and (inside is None or inside in r["stack"])
        ]

    def total(self, key, **match):
        """(seconds, calls) of ``key``'s records matching ``match``; None if ``key`` was not wrapped."""
        if key in self.missing:
            return None
        records = self.select(key, **match)
        return sum(r["seconds"] for r in records), len(records)


def instrument(profiler, joint_models=()):
    """Wrap every entry point the profile reads (those that exist)."""
    from recbole_pcl.data.continual import ContinualData
    from recbole_pcl.model.abstract_recommender import JointRecommender
    from recbole_pcl.pipeline import TaskPipeline
    from recbole_pcl.trainer import ContinualTrainer, JointTrainer

    profiler.wrap(ContinualData, "__init__")
    profiler.wrap(TaskPipeline, "run")
    # RecBole's own fit: only to cap a stage's epochs and to tell a stage's trainer from an evaluator
    profiler.wrap(ContinualTrainer, "fit", before=profiler.cap_epochs)
    for name in ("_train_epoch", "_valid_epoch", "evaluate"):
        profiler.wrap(ContinualTrainer, name, locate=True)
    for name in ("_train_epoch", "_valid_epoch", "task_gradients", "task_weights", "step_from", "step"):
        profiler.wrap(JointTrainer, name)
    profiler.wrap(JointRecommender, "task_losses")
    for model in joint_models:  # a method with its own task_losses (the guard times a super() call once)
        if getattr(model, "task_losses", None) is not getattr(JointRecommender, "task_losses", None):
            profiler.wrap(model, "task_losses", key="JointRecommender.task_losses")
    profiler.hook_optimizers()


# ----- rows --------------------------------------------------------------------------------------
def row(part, what, measured, unit=None, at="", note="", count=None, per_unit=True):
    """A row of the table: ``measured`` is (seconds, calls), seconds, or None (not measured);
    ``count`` (default: the calls) of ``unit`` gives seconds per unit (unless ``per_unit`` is False:
    a total that holds more than its units, e.g. a stage's evaluations besides its epochs)."""
    seconds, calls = measured if isinstance(measured, tuple) else (measured, None)
    count = calls if count is None else count
    if seconds is None:
        note = f"not measured: an entry point of {at} not found" + (f"; {note}" if note else "")
    elif calls == 0:
        note = f"no call of {at} recorded" + (f"; {note}" if note else "")
    per_unit = seconds / count if per_unit and seconds is not None and unit and count else None
    return {
        "part": part,
        "what": what,
        "seconds": seconds,
        "count": count,
        "unit": unit,
        "seconds_per_unit": per_unit,
        "measured_at": at,
        "note": note,
    }


def minus(a, *others):
    """``a`` less the seconds of ``others`` ((seconds, calls) or seconds); None if any is None."""
    values = [a, *others]
    if any(v is None for v in values):
        return None
    seconds = [v[0] if isinstance(v, tuple) else v for v in values]
    return seconds[0] - sum(seconds[1:])


def stopped(epochs, configured, cap, option):
    if cap is not None and epochs >= min(configured, cap) and cap < configured:
        return f"capped at {cap} ({option})"
    return "early stopping" if epochs < configured else "all configured epochs"


def _peak_memory():
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # GiB (ru_maxrss is in KiB on Linux)
    gpu = torch.cuda.max_memory_allocated() / 1024**3 if torch.cuda.is_available() else None
    return {"peak_rss_gib": round(rss, 3), "peak_gpu_gib": None if gpu is None else round(gpu, 3)}


def _settings(extra):
    return dict(a[2:].split("=", 1) for a in extra)


def _config(model, dataset, extra, workdir):
    from recbole_pcl.config import Config
    from recbole_pcl.config.configurator import literal_value

    return Config(model, dataset, config_dict=_config_dict(extra, workdir, literal_value))


def _config_dict(extra, workdir, literal_value):
    """The part's settings: the fixed ones, then ``--key=value`` read as on the command line (one
    dict, so that ``load_continual_run`` finds the same run)."""
    fixed = {
        "checkpoint_dir": os.path.join(workdir, "saved"),
        "fold": 0,
        "runner": "serial",
        "fwt_reference": False,
        "show_progress": False,
        "state": "WARNING",
    }
    return fixed | {k: literal_value(v, booleans=True) for k, v in _settings(extra).items()}


def _start(profiler, config, joint_models=()):
    instrument(profiler, joint_models)
    profiler.cuda = config["device"].type == "cuda"


# ----- parts -------------------------------------------------------------------------------------
def part_data(dataset, extra, workdir, options, profiler):
    from recbole_pcl.pipeline import TaskPipeline
    from recbole_pcl.utils import get_model

    config = _config("PCL", dataset, extra, workdir)
    _start(profiler, config)
    start = time.perf_counter()
    pipeline = TaskPipeline(config, get_model("PCL"))
    setup = time.perf_counter() - start
    data = pipeline.data
    loaded = profiler.total("ContinualData.__init__")
    interactions = len(data.dataset.inter_feat)
    t1 = data.tasks[0]
    return config, [
        row(
            "data",
            "run set-up: task specs, identity, sha256 of the atomic files",
            setup,
            at="TaskPipeline.__init__",
        ),
        row(
            "data",
            "data loading: atomic files -> T1 windows and downstream tasks",
            loaded,
            "interaction",
            "ContinualData.__init__",
            f"{interactions:,} interactions, {data.dataset.user_num - 1:,} users, {len(t1.train._dataset):,} T1 training rows, "
            f"{len(data.tasks) - 1} downstream tasks",
            count=interactions if loaded else None,
        ),
    ]


def part_pretrain(dataset, extra, workdir, options, profiler):
    from recbole_pcl.pipeline import TaskPipeline
    from recbole_pcl.utils import get_model

    config = _config("PCL", dataset, extra, workdir)
    _start(profiler, config)
    profiler.caps["t1"] = options.t1_epochs
    pipeline = TaskPipeline(config, get_model("PCL"))
    profiler.context = {"method": "PCL", "pipeline": pipeline}
    record = pipeline.pretrain()["stage"]
    t1 = pipeline.tasks[0]
    train = profiler.total("ContinualTrainer._train_epoch", task=0)
    valid = profiler.total("ContinualTrainer._valid_epoch", task=0)
    test = profiler.total("ContinualTrainer.evaluate", task=0, phase="test")
    epochs = train[1] if train else None
    how = stopped(epochs, config["epochs"], options.t1_epochs, "--t1_epochs") if epochs else ""
    part = "pretrain"
    return config, [
        row(
            part,
            "T1 training epochs",
            train,
            "epoch",
            "ContinualTrainer._train_epoch",
            f"{len(t1.train._dataset):,} rows, {len(t1.train)} batches / epoch",
        ),
        row(
            part,
            "T1 validations",
            valid,
            "validation",
            "ContinualTrainer._valid_epoch",
            f"{len(t1.valid._dataset):,} users, {config['task_eval_mode']} ranking",
        ),
        row(part, "T1 test evaluation", test, "evaluation", "ContinualTrainer.evaluate"),
        row(
            part,
            "T1 pretraining in all",
            record.get("seconds"),
            "epoch",
            "its stage record",
            f"{how}; also the test evaluation and the trainer's set-up" if epochs else "",
            count=epochs,
            per_unit=False,
        ),
    ]


def part_downstream(dataset, extra, workdir, options, profiler):
    from recbole_pcl.pipeline import TaskPipeline
    from recbole_pcl.utils import get_model

    config = _config("PCL", dataset, extra, workdir)
    _start(profiler, config)
    profiler.caps["t1"] = options.t1_epochs
    rows, part = [], "downstream"
    for method in ("PCL", "FineAll"):
        method_config = config.for_model(method)
        pipeline = TaskPipeline(method_config, get_model(method))
        profiler.context = {"method": method, "pipeline": pipeline}
        result = pipeline.run()
        stages = result.get("stages", [])
        for task in pipeline.tasks[1:]:
            k, name = task.index, task.spec.name
            train = profiler.total("ContinualTrainer._train_epoch", method=method, task=k)
            valid = profiler.total("ContinualTrainer._valid_epoch", method=method, task=k)
            test = profiler.total("ContinualTrainer.evaluate", method=method, task=k, phase="test", fitted=True)
            epochs = train[1] if train else None
            stage = stages[k] if k < len(stages) else {}
            how = stopped(epochs, method_config["epochs"], None, "") if epochs else ""
            rows += [
                row(
                    part,
                    f"{method} {name}: training epochs",
                    train,
                    "epoch",
                    "ContinualTrainer._train_epoch",
                    f"{len(task.train._dataset):,} rows, {len(task.train)} batches / epoch",
                ),
                row(part, f"{method} {name}: validations", valid, "validation", "ContinualTrainer._valid_epoch"),
                row(part, f"{method} {name}: test evaluation", test, "evaluation", "ContinualTrainer.evaluate"),
                row(
                    part,
                    f"{method} {name}: stage in all",
                    stage.get("seconds"),
                    "epoch",
                    "its stage record",
                    f"{how}; {stage.get('trainable_params', 0):,} trainable parameters",
                    count=epochs,
                    per_unit=False,
                ),
            ]
        # the final evaluation: every task on trainers that fitted nothing, outside any fit
        final = profiler.total("ContinualTrainer.evaluate", method=method, fitted=False, phase="test")
        each = {}
        for r in profiler.select("ContinualTrainer.evaluate", method=method, fitted=False, phase="test"):
            each[pipeline.tasks[r["task"]].spec.name] = each.get(pipeline.tasks[r["task"]].spec.name, 0) + r["seconds"]
        rows.append(
            row(
                part,
                f"{method}: final evaluation of every task",
                final,
                "task",
                "ContinualTrainer.evaluate",
                ", ".join(f"{n} {s:.2f} s" for n, s in each.items()),
            )
        )
        # a stage restored from the store (FineAll's stage 0) carries the seconds of the run that trained it
        trained = {r["task"] for r in profiler.select("ContinualTrainer._train_epoch", method=method)}
        stage_seconds = sum(s.get("seconds", 0) for k, s in enumerate(stages) if k in trained) if stages else None
        rows.append(
            row(
                part,
                f"{method}: rest of the run (stage 0 {'trained' if 0 in trained else 'restored'}; model, text encodings, report)",
                minus(
                    profiler.total("TaskPipeline.run", method=method),
                    profiler.total("ContinualData.__init__", method=method),
                    stage_seconds,
                    final,
                ),
                at="TaskPipeline.run - data loading, stages trained, final evaluation",
            )
        )
    return config, rows


def part_joint(method):
    def part(dataset, extra, workdir, options, profiler):
        from recbole_pcl.pipeline import TaskPipeline
        from recbole_pcl.utils import get_model

        model = get_model(method)
        config = _config(method, dataset, extra, workdir)
        _start(profiler, config, [model])
        profiler.caps["joint"] = options.joint_epochs
        pipeline = TaskPipeline(config, model)
        profiler.context = {"method": method, "pipeline": pipeline}
        pipeline.run()
        mgda = config["task_weighting"] == "mgda"
        epoch_key = "JointTrainer._train_epoch"
        epoch = profiler.total(epoch_key)
        epochs = epoch[1] if epoch else None
        per_epoch = len(pipeline.tasks[0].train)  # one step per T1 batch
        forward = profiler.total("JointRecommender.task_losses", inside=epoch_key)
        steps = forward[1] if forward else per_epoch * (epochs or 0)
        optimizer = profiler.total("optimizer.step", inside=epoch_key)
        # the calls made directly by the epoch (not inside another timed call): the rest is batching
        direct = [r for r in profiler.records if r["stack"] and r["stack"][-1] == epoch_key]
        rest = None if epoch is None else epoch[0] - sum(r["seconds"] for r in direct)
        how = stopped(epochs, config["epochs"], options.joint_epochs, "--joint_epochs") if epochs else ""
        rows = [
            row(
                method,
                f"{method}: joint epochs",
                epoch,
                "epoch",
                epoch_key,
                f"{per_epoch} steps / epoch (one batch of each of {len(pipeline.tasks)} tasks); {how}",
            ),
            row(
                method,
                f"{method}: forward (every task's loss)",
                forward,
                "step",
                "JointRecommender.task_losses",
            ),
        ]
        if mgda:
            rows += [
                row(
                    method,
                    f"{method}: backward (one per task)",
                    profiler.total("JointTrainer.task_gradients", inside=epoch_key),
                    "step",
                    "JointTrainer.task_gradients",
                ),
                row(
                    method,
                    f"{method}: MGDA weights",
                    profiler.total("JointTrainer.task_weights", inside=epoch_key),
                    "step",
                    "JointTrainer.task_weights",
                ),
                row(
                    method,
                    f"{method}: weighted sum of the tasks' gradients",
                    minus(
                        profiler.total("JointTrainer.step_from", inside=epoch_key),
                        profiler.total("optimizer.step", inside="JointTrainer.step_from"),
                    ),
                    "step",
                    "JointTrainer.step_from - optimizer.step",
                    count=steps,
                ),
            ]
        else:
            rows.append(
                row(
                    method,
                    f"{method}: backward (summed loss)",
                    minus(
                        profiler.total("JointTrainer.step", inside=epoch_key),
                        profiler.total("optimizer.step", inside="JointTrainer.step"),
                    ),
                    "step",
                    "JointTrainer.step - optimizer.step",
                    "zero_grad and backward",
                    count=steps,
                )
            )
        rows += [
            row(method, f"{method}: optimiser step", optimizer, "step", "optimizer.step"),
            row(
                method,
                f"{method}: rest of the epochs (batches, loss sums)",
                rest,
                "epoch",
                f"{epoch_key} - the timed calls it makes",
                count=epochs,
            ),
            row(
                method,
                f"{method}: evaluation of every task after an epoch",
                profiler.total("JointTrainer._valid_epoch"),
                "validation",
                "JointTrainer._valid_epoch",
            ),
            row(
                method,
                f"{method}: rest of the run (model, evaluations after fitting, report)",
                minus(
                    profiler.total("TaskPipeline.run"),
                    profiler.total("ContinualData.__init__"),
                    profiler.total("ContinualTrainer.fit"),
                ),
                at="TaskPipeline.run - ContinualData.__init__ - ContinualTrainer.fit",
            ),
        ]
        return config, rows

    return part


def part_serving(dataset, extra, workdir, options, profiler):
    import torch

    from recbole_pcl.config.configurator import literal_value
    from recbole_pcl.pipeline import TaskPipeline
    from recbole_pcl.quick_start.serving import load_continual_run
    from recbole_pcl.utils import get_model

    config = _config("PCL", dataset, extra, workdir)
    _start(profiler, config)
    profiler.caps.update(t1=options.t1_epochs, downstream=1)  # set-up only: serving costs the same
    pipeline = TaskPipeline(config, get_model("PCL"))
    profiler.context = {"method": "PCL", "pipeline": pipeline}
    pipeline.run()
    profiler.context = {"method": "serving"}

    def clock(fn):
        profiler.sync()
        start = time.perf_counter()
        result = fn()
        profiler.sync()
        return time.perf_counter() - start, result

    loaded, predictor = clock(
        lambda: load_continual_run("PCL", dataset, config_dict=_config_dict(extra, workdir, literal_value))
    )
    loading = profiler.total("ContinualData.__init__", method="serving")
    links = [t.spec.name for t in pipeline.tasks[1:] if t.spec.kind == "link"] or [pipeline.tasks[0].spec.name]
    task, users = links[0], len(predictor.users)
    represent, vectors = clock(lambda: predictor.user_representation(task=task))
    recommend, _ = clock(lambda: predictor.recommend(task, k=10))
    assert len(vectors) == users
    part = "serving"
    return config, [
        row(
            part,
            "serving start-up: config, data, final model",
            loaded,
            at="load_continual_run",
            note=f"of which data loading {loading[0]:.2f} s" if loading else "",
        ),
        row(
            part,
            f"user_representation ({task}), every user",
            represent,
            "user",
            "ContinualPredictor.user_representation",
            f"{users / represent:,.0f} users / s",
            count=users,
        ),
        row(
            part,
            f"recommend top-10 ({task}), every user",
            recommend,
            "user",
            "ContinualPredictor.recommend",
            f"{users / recommend:,.0f} users / s; device {torch.device(predictor.device)}",
            count=users,
        ),
    ]


PARTS = {
    "data": part_data,
    "pretrain": part_pretrain,
    "downstream": part_downstream,
    **{m: part_joint(m) for m in JOINT},
    "serving": part_serving,
}


def run_part(args, extra):
    """In the child process: one part, its rows and peak memory written to ``args.result``."""
    import torch

    from recbole_pcl.pipeline.identity import numeric_environment

    profiler = Profiler()
    with tempfile.TemporaryDirectory() as workdir:
        os.chdir(workdir)  # RecBole writes ./log and ./log_tensorboard: not into the repository
        config, rows = PARTS[args.part](args.dataset, extra, workdir, args, profiler)
    device = config["device"]
    result = {
        "rows": rows,
        "missing": sorted(profiler.missing),
        "machine": {
            "processor": numeric_environment("cpu")["processor"],
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": str(torch.__version__),
            "device": numeric_environment(device)["processor"] if device.type == "cuda" else "cpu",
        },
        **_peak_memory(),
    }
    Path(args.result).write_text(json.dumps(result))


# ----- the table -----------------------------------------------------------------------------------
def _duration(seconds):
    if seconds is None:
        return "—"
    if seconds >= 100:
        return f"{seconds:.1f}"
    return f"{seconds:.2f}" if seconds >= 1 else f"{seconds:.3g}"


def _plural(unit, count):
    return unit if count == 1 else f"{unit}s"


def _per_unit(seconds, unit):
    if seconds is None or not unit:
        return ""
    for scale, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if seconds >= scale or suffix == "µs":
            return f"{seconds / scale:.3g} {suffix} / {unit}"
    return ""


def markdown(report):
    m = report["machine"]
    settings = " ".join(f"--{k}={v}" for k, v in report["settings"].items()) or "defaults"
    lines = [
        f"# Where the time goes: recbole-pcl on {report['dataset']}",
        "",
        f"Command: `{report['command']}` (commit {report['commit']}); settings: {settings}.",
        "",
        f"Machine: {m['processor']}, {m['cores']} cores, torch threads {m['torch_threads']}, torch {m['torch']}, "
        f"device {m['device']}.",
        "",
        "Each part ran in its own process from a fresh checkpoint_dir (fold 0); peak RSS is that process's. "
        "Seconds are wall-clock sums over the calls counted; `measured at` names the timed entry point.",
        "",
        "| row | part | what | seconds | count | per unit | peak RSS (GiB) | measured at | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        count = (
            ""
            if r["count"] is None
            else f"{r['count']:,}" + (f" {_plural(r['unit'], r['count'])}" if r["unit"] else "")
        )
        lines.append(
            f"| {r['id']} | {r['part']} | {r['what']} | {_duration(r['seconds'])} | {count} | "
            f"{_per_unit(r['seconds_per_unit'], r['unit'])} | {r['peak_rss_gib']} | `{r['measured_at']}` | {r['note']} |"
        )
    for part, info in report["parts"].items():
        if info["missing"]:
            lines.append(f"\n{part}: entry points not found: {', '.join(info['missing'])}.")
    return "\n".join(lines) + "\n"


def _commit():
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
        return head + (" with local changes" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--out", default=str(REPO / "docs" / "performance"))
    parser.add_argument("--parts", nargs="+", default=list(PART_NAMES), choices=list(PART_NAMES))
    parser.add_argument("--t1_epochs", type=int, default=None, help="most T1 epochs (default: as configured)")
    parser.add_argument("--joint_epochs", type=int, default=1, help="joint epochs of each joint method")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # one part, in a child process
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    if args.part:
        run_part(args, extra)
        return
    command = shlex.join(["python", "benchmarks/time_profile.py", *sys.argv[1:]])
    report = {"command": command, "commit": _commit(), "dataset": args.dataset, "settings": _settings(extra)}
    report |= {"t1_epochs": args.t1_epochs, "joint_epochs": args.joint_epochs, "parts": {}, "rows": []}
    os.makedirs(args.out, exist_ok=True)
    for part in [p for p in PART_NAMES if p in args.parts]:
        result_file = os.path.abspath(os.path.join(args.out, f".{part}.json"))
        start = time.time()
        subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                f"--part={part}",
                f"--result={result_file}",
                f"--dataset={args.dataset}",
                f"--joint_epochs={args.joint_epochs}",
                *([f"--t1_epochs={args.t1_epochs}"] if args.t1_epochs is not None else []),
                *extra,
            ],
            check=True,
        )
        result = json.loads(Path(result_file).read_text())
        os.remove(result_file)
        report["machine"] = result["machine"]
        report["parts"][part] = {
            "wall_seconds": round(time.time() - start, 1),
            "peak_rss_gib": result["peak_rss_gib"],
            "peak_gpu_gib": result["peak_gpu_gib"],
            "missing": result["missing"],
        }
        for r in result["rows"]:
            report["rows"].append({"id": f"P{len(report['rows']) + 1}", **r, "peak_rss_gib": result["peak_rss_gib"]})
        print(f"{part}: {report['parts'][part]}", flush=True)
    Path(args.out, "profile.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    Path(args.out, "profile.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
