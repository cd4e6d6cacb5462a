"""Results pages rewritten from their result files: one command turns a comparison folder's
``compare.json`` into its page (``compare.md``) and plot (``compare.png``), exactly as the comparison
wrote them (:func:`recbole_pcl.experiment.tables.comparison_markdown`)::

    python -m recbole_pcl.experiment.pages docs/results/ml-100k [more folders]

``tests/test_pages.py`` regenerates every committed page and fails on any difference, so prose cannot
drift from the numbers.
"""

import argparse
import os
import sys

from recbole_pcl.experiment.output import write_page
from recbole_pcl.utils.checkpoint import read_json
from recbole_pcl.utils.cli import exit_status
from recbole_pcl.utils.errors import PCLError


def regenerate(folder):
    """Rewrite ``folder``'s compare.md and compare.png from its compare.json; the page's path."""
    path = os.path.join(folder, "compare.json")
    if not os.path.isfile(path):
        raise PCLError(f"{folder} holds no compare.json (a comparison's folder is needed)")
    return write_page(folder, read_json(path, "comparison"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="comparison folders (each with a compare.json)")
    args = parser.parse_args(argv)

    def run():
        for folder in args.folders:
            print(regenerate(folder))

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
