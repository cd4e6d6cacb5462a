"""Command line of recbole-pcl, like RecBole's run_recbole.py.

    python run_recbole_pcl.py --model=PCL --dataset=ml-100k [--config_files="a.yaml b.yaml"] [--key=value ...]
"""
import argparse
import sys
import warnings

from recbole_pcl.quick_start import run_recbole_pcl
from recbole_pcl.utils import PCLError


def main(argv=None):
    # RecBole 1.2.1's own code warns about today's pandas/numpy/torch on every run; those warnings say
    # nothing about the user's input and would bury a one-line error, so they are not shown.
    warnings.filterwarnings("ignore", module=r"recbole(\.|$)")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default="PCL", help="recbole_pcl or RecBole model name")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name")
    parser.add_argument("--config_files", default="", help="space-separated yaml files")
    args, unknown = parser.parse_known_args(argv)
    config_files = args.config_files.split() or None
    try:
        run_recbole_pcl(args.model, args.dataset, config_file_list=config_files, cmd_args=unknown)
    except PCLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
