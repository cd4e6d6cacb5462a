"""What every experiment shares: the user's configuration, its jobs, its output directory, and the
files it writes (``<name>.json/.csv/.md/.png`` in ``<checkpoint_dir>/<name>-<dataset>-<hash>/``)."""

import json
import os
import time
from logging import getLogger

from recbole.utils import init_logger, set_color

from recbole_pcl.config import Config
from recbole_pcl.data.tasks import parse_tasks
from recbole_pcl.experiment.output import write_experiment_page
from recbole_pcl.experiment.runner import Job, failures, run_jobs, runner_settings
from recbole_pcl.pipeline.identity import digest
from recbole_pcl.pipeline.report import write_csv
from recbole_pcl.utils.checkpoint import atomic_write_text
from recbole_pcl.utils.errors import PCLError


class Experiment:
    """What the experiments share: the user's configuration, its output directory, the files."""

    def __init__(self, name, definition, dataset, config_file_list=None, config_dict=None, cmd_args=None):
        self.name, self.definition, self.dataset = name, definition, dataset
        self.files, self.cmd_args = list(config_file_list or []), list(cmd_args or [])
        self.config_dict = dict(config_dict or {}, **definition.get("settings", {}))
        # the method the experiment studies, or (a comparison of methods) its first method's model
        methods = definition.get("methods") or [{}]
        self.model = definition.get("model") or (methods[0] if isinstance(methods[0], str) else methods[0].get("model"))
        self.base = Config(self.model, dataset, self.files, self.config_dict, self.cmd_args)
        init_logger(self.base)
        self.logger = getLogger()
        self.runner = runner_settings(self.base)
        self.pipelines = {}

    def job(self, key, model, **settings):
        return Job(key, model, self.dataset, self.files, dict(self.config_dict, **settings), self.cmd_args)

    def enabled_tasks(self):
        """The dataset's enabled task entries (as in its yaml), T1 first."""
        raw = [t for t in self.base["tasks"] or [] if t.get("enabled", True) is not False]
        parse_tasks(raw)  # the same checks as a run
        return raw

    def directory(self, jobs):
        """The output directory of ``jobs`` (named by their identities; every job's settings are
        checked here, before anything runs)."""
        self.pipelines = {j.key: j.pipeline() for j in jobs}
        key = digest([[key, digest(p.identity.run())] for key, p in self.pipelines.items()])
        return os.path.join(self.base["checkpoint_dir"], f"{self.name}-{self.dataset}-{key[:8]}")

    def run(self, jobs):
        """Run ``jobs``; their outcomes and the seconds it took. When every run fails, a
        :class:`PCLError` names the first failure."""
        start = time.time()
        outcomes = run_jobs(jobs, **self.runner, pipelines=self.pipelines)
        failed = failures(outcomes)
        if jobs and len(failed) == len(jobs):
            first = next(iter(failed))
            raise PCLError(f"every run of {self.name} failed; the first, {first}: {failed[first]}")
        return outcomes, round(time.time() - start, 1)

    def write(self, out, result, rows, page):
        """Write ``result`` (<name>.json), its ``rows`` (.csv) and what ``page(result)`` renders from
        it: the page (.md) and figure (.png), as ``python -m recbole_pcl.experiment.pages`` does."""
        result = dict(result, experiment=self.name, directory=out)
        os.makedirs(out, exist_ok=True)
        write_csv(os.path.join(out, f"{self.name}.csv"), rows)
        rendered = page(result)
        write_experiment_page(out, self.name, rendered)
        atomic_write_text(os.path.join(out, f"{self.name}.json"), json.dumps(result, indent=1))
        self.logger.info(set_color(self.name, "yellow") + f" ({out}):\n{rendered[0]}")
        return result
