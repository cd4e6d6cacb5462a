"""Command line of recbole-pcl, like RecBole's run_recbole.py (and run_recboles for several models).

python run_recbole_pcl.py --model=PCL --dataset=ml-100k [--config_files="a.yaml b.yaml"] [--key=value ...]
python run_recbole_pcl.py --model=PCL,SASRecPerTask,FineAll --dataset=ml-100k [--n_folds=5]   # k-fold comparison
"""

import argparse
import sys

from recbole_pcl.experiment import run_comparison
from recbole_pcl.quick_start import run_recbole_pcl
from recbole_pcl.utils.cli import exit_status


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        "-m",
        default="PCL",
        help="recbole_pcl or RecBole model name; several, comma-separated: compare them over folds",
    )
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name")
    parser.add_argument("--config_files", default="", help="space-separated yaml files")
    args, unknown = parser.parse_known_args(argv)
    config_files = args.config_files.split() or None
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    if len(models) > 1:
        return exit_status(
            lambda: run_comparison(models, args.dataset, config_file_list=config_files, cmd_args=unknown)
        )
    return exit_status(
        lambda: run_recbole_pcl(args.model, args.dataset, config_file_list=config_files, cmd_args=unknown)
    )


if __name__ == "__main__":
    sys.exit(main())
