"""Results pages rewritten from their result files: one command turns a comparison folder's
``compare.json`` into its page (``compare.md``) and plot (``compare.png``), and an experiment folder's
``rq2.json``, ``rq3.json``, ``rq4.json`` or ``tune.json`` into its ``.md`` and ``.png``, exactly as the
comparison or experiment wrote them::

    python -m recbole_pcl.experiment.pages docs/results/ml-100k [more folders]

``tests/test_pages.py`` regenerates every committed page and fails on any difference, so prose cannot
drift from the numbers.
"""

import argparse
import os
import sys

from recbole_pcl.experiment.output import write_experiment_page, write_page
from recbole_pcl.utils.checkpoint import read_json
from recbole_pcl.utils.cli import exit_status
from recbole_pcl.utils.errors import PCLError


def experiment_pages():
    """Each experiment's name and the function that renders its page and figure from its result."""
    from recbole_pcl.experiment.research import rq2_page, rq3_page, rq4_page
    from recbole_pcl.experiment.tune import tune_page

    return {"rq2": rq2_page, "rq3": rq3_page, "rq4": rq4_page, "tune": tune_page}


def regenerate(folder):
    """Rewrite ``folder``'s page and figure from its result file (compare.json, or an experiment's
    <name>.json); the page's path."""
    path = os.path.join(folder, "compare.json")
    if os.path.isfile(path):
        return write_page(folder, read_json(path, "comparison"))
    for name, page in experiment_pages().items():
        path = os.path.join(folder, f"{name}.json")
        if os.path.isfile(path):
            return write_experiment_page(folder, name, page(read_json(path, f"{name} result")))
    raise PCLError(f"{folder} holds no compare.json, {', '.join(f'{n}.json' for n in experiment_pages())}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="comparison or experiment folders (with their result file)")
    args = parser.parse_args(argv)

    def run():
        for folder in args.folders:
            print(regenerate(folder))

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
