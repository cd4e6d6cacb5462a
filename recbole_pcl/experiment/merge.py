"""Command line: one comparison from comparisons run apart (see :func:`.compare.merge_comparisons`).

python -m recbole_pcl.experiment.merge saved/compare-A/compare.json saved/compare-B/compare.json --out=DIR
"""

import argparse
import sys

from recbole_pcl.experiment.compare import merge_comparisons
from recbole_pcl.utils.cli import exit_status


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comparisons", nargs="+", help="compare.json files of the same dataset and folds")
    parser.add_argument("--out", required=True, help="folder for the merged compare.json/.csv/.md/.png")
    args = parser.parse_args(argv)
    return exit_status(lambda: print(merge_comparisons(args.comparisons, args.out)["table"]))


if __name__ == "__main__":
    sys.exit(main())
