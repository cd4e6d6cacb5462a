"""Independent runs (methods, folds, task orders, seeds) as Ray tasks, on this machine or a cluster.

A :class:`Job` is one run of :func:`recbole_pcl.quick_start.run_recbole_pcl`. :func:`run_jobs`
executes a list of them:

* ``runner: ray`` (default) starts a local Ray instance with the CPUs/GPUs it finds, or joins the
  cluster at ``ray_address`` (then recbole-pcl and the data must be installed on its nodes); each job
  asks for ``ray_cpus_per_run`` CPUs and ``ray_gpus_per_run`` GPUs. ``runner: serial`` runs them
  one after another in this process.
* Runs that finished before (same identity, :mod:`recbole_pcl.pipeline.identity`) are skipped
  without starting a worker; T1 pretrainings that several jobs share are done first, once each, so
  that parallel jobs never train the same stage twice, then the FWT reference runs (SASRecPerTask),
  which other runs read, then the rest. Jobs that need neither (joint methods: MTL, MMoE...) start
  with the pretrainings, so no worker idles while a pretraining runs. A job whose run directory
  another job holds waits for it.
* A failing job is caught and reported with its error; every other job's result is kept.
* RecBole's ``Config`` sets ``CUDA_VISIBLE_DEVICES`` from ``gpu_id``, which would put every worker on
  the same GPU: each job's ``gpu_id`` is the device Ray assigned to its worker (:func:`device_options`).
"""

import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from logging import getLogger

from recbole.utils import set_color
from tqdm import tqdm

from recbole_pcl.config import Config
from recbole_pcl.model.abstract_recommender import TaskRecommender
from recbole_pcl.pipeline import TaskPipeline
from recbole_pcl.quick_start import run_recbole_pcl
from recbole_pcl.utils import get_model
from recbole_pcl.utils.errors import PCLError

DEVICE_KEYS = ("gpu_id", "use_gpu")


@dataclass
class Job:
    """One run: ``run_recbole_pcl(model, dataset, config_file_list, config_dict, cmd_args=cmd_args)``."""

    key: str  # unique name in its experiment, e.g. "PCL/fold-2"
    model: str
    dataset: str
    config_file_list: list[str] = field(default_factory=list)
    config_dict: dict = field(default_factory=dict)
    cmd_args: list[str] = field(default_factory=list)
    pretrain_only: bool = False  # train (or find) stage 0 and stop

    def config(self):

        return Config(self.model, self.dataset, self.config_file_list, self.config_dict, self.cmd_args)

    def pipeline(self):

        return TaskPipeline(self.config(), get_model(self.model))


def device_options(env=None):
    """``--key=value`` options that keep the device Ray assigned: Ray sets ``CUDA_VISIBLE_DEVICES``
    for a task with GPUs (and to "" for one without), and RecBole's Config would otherwise reset it
    from ``gpu_id`` (default "0")."""
    visible = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if visible is None:  # not under Ray's control: the user's own settings stand
        return []
    return [f"--gpu_id={visible}", f"--use_gpu={bool(visible.strip())}"]


def execute(job):
    """Run ``job`` here; ``{"ok": True, "result": ...}`` or ``{"ok": False, "error": ...}``, never raises."""
    start = time.time()
    try:
        cmd_args = [a for a in job.cmd_args if a[2:].partition("=")[0] not in DEVICE_KEYS] + device_options()
        job = Job(job.key, job.model, job.dataset, job.config_file_list, job.config_dict, cmd_args, job.pretrain_only)

        if job.pretrain_only:
            result = job.pipeline().pretrain()
        elif issubclass(get_model(job.model), TaskRecommender):
            # jobs of one experiment may need each other's runs (a run's FWT reference): wait, never refuse
            result = job.pipeline().run(wait=True)
        else:
            result = run_recbole_pcl(
                job.model, job.dataset, job.config_file_list, job.config_dict, cmd_args=job.cmd_args
            )
        return {"ok": True, "result": result, "seconds": round(time.time() - start, 1)}
    except Exception as e:  # noqa: BLE001  (one failed run must not lose the others)
        message = str(e).splitlines()[0] if str(e) else ""
        return {
            "ok": False,
            "error": f"{type(e).__name__}: {message}",
            "traceback": traceback.format_exc(),
            "seconds": round(time.time() - start, 1),
        }


def _pipeline(job):
    try:
        return job.pipeline()
    except PCLError:
        return None  # the job itself will report the problem


def _pretraining_jobs(jobs, pipelines):
    """One pretraining job per distinct stage-0 identity that several jobs share and that is not done."""
    groups = {}
    for job in jobs:
        pipeline = pipelines[job.key]
        if pipeline is not None and pipeline.strategy.name == "sequential" and not pipeline.pretrained():
            groups.setdefault(pipeline.stage0_digest(), []).append(job)
    return [
        Job(f"pretrain/{k[:8]}", g[0].model, g[0].dataset, g[0].config_file_list, g[0].config_dict, g[0].cmd_args, True)
        for k, g in groups.items()
        if len(g) > 1
    ]


def run_jobs(jobs, runner="ray", address=None, cpus_per_run=1, gpus_per_run=0, show_progress=True, pipelines=None):
    """Execute ``jobs``; ``{job.key: outcome}`` (see :func:`execute`; finished runs have
    ``"skipped": True``). Failures are logged; they never stop the other jobs. ``pipelines``: the
    jobs' pipelines where the caller built them already (identities only: no data is loaded)."""
    logger = getLogger()
    outcomes = {}
    todo = []
    pipelines = {job.key: (pipelines or {}).get(job.key) or _pipeline(job) for job in jobs}
    for job in jobs:
        finished = None if pipelines[job.key] is None else pipelines[job.key].finished_results()
        if finished is not None:
            outcomes[job.key] = {"ok": True, "result": finished, "skipped": True, "seconds": 0.0}
        else:
            todo.append(job)
    if todo:
        logger.info(f"{len(todo)} run(s) to do, {len(outcomes)} finished before")
        submit = _serial if runner == "serial" else _ray_submitter(address, cpus_per_run, gpus_per_run)
        # a joint method reads no other job's stage or run: it starts with the pretrainings; the FWT
        # references (fwt_reference_model) run next, since other runs read them
        joint = {j.key for j in todo if pipelines[j.key] is not None and pipelines[j.key].strategy.name == "joint"}
        read = {p.config["fwt_reference_model"] for p in pipelines.values() if p is not None and p.reports_fwt()}
        references = [j for j in todo if j.model in read and j.key not in joint]
        rest = [j for j in todo if j.model not in read and j.key not in joint]
        for phase in (_pretraining_jobs(todo, pipelines) + [j for j in todo if j.key in joint], references, rest):
            if phase:
                outcomes.update(submit(phase, show_progress))
    for key, outcome in outcomes.items():
        if not outcome["ok"]:
            logger.error(set_color(f"run {key} failed", "red") + f": {outcome['error']}")
    return {job.key: outcomes[job.key] for job in jobs}


def _progress(total, show):
    return tqdm(total=total, ncols=100, desc=set_color("Runs", "pink"), disable=not show)


def _serial(jobs, show_progress):
    outcomes = {}
    with _progress(len(jobs), show_progress) as bar:
        for job in jobs:
            outcomes[job.key] = execute(job)
            bar.update()
    return outcomes


def check_ray_address(address, timeout=5.0):
    """Fail at once, naming ``address``, when nothing answers there: Ray itself retries a dead
    address for minutes. ``auto`` (a cluster started on this machine) is left to Ray."""
    if not address or address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise PCLError(f"setting 'ray_address' must be 'auto', 'host:port' or 'ray://host:port', got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise PCLError(f"setting 'ray_address': nothing answers at {address} ({e.strerror or e})") from None


def _ray_submitter(address, cpus_per_run, gpus_per_run):
    import ray

    if not ray.is_initialized():
        check_ray_address(address)
        # workers import the same recbole_pcl as this process (a checkout or an installed package)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        runtime_env = (
            None
            if address
            else {
                "env_vars": {
                    "PYTHONPATH": os.pathsep.join(
                        filter(None, [os.path.dirname(package_root), os.environ.get("PYTHONPATH")])
                    )
                }
            }
        )
        ray.init(
            address=address or None,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env=runtime_env,
            configure_logging=False,
        )
    remote = ray.remote(execute)

    def submit(jobs, show_progress):
        pending = {remote.options(num_cpus=cpus_per_run, num_gpus=gpus_per_run).remote(job): job for job in jobs}
        outcomes = {}
        with _progress(len(jobs), show_progress) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                try:
                    outcomes[job.key] = ray.get(done[0])
                except Exception as e:  # noqa: BLE001  the worker itself died (killed, out of memory)
                    outcomes[job.key] = {
                        "ok": False,
                        "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                        "seconds": 0.0,
                    }
                bar.set_postfix_str(job.key)
                bar.update()
        return outcomes

    return submit


def runner_settings(config):
    """The runner's settings from a Config (see properties/overall.yaml)."""
    return {
        "runner": config["runner"],
        "address": config["ray_address"],
        "cpus_per_run": config["ray_cpus_per_run"],
        "gpus_per_run": config["ray_gpus_per_run"],
        "show_progress": config["show_progress"],
    }


def failures(outcomes):
    return {key: o["error"] for key, o in outcomes.items() if not o["ok"]}
