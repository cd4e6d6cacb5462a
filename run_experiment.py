"""Experiments of recbole-pcl on Ray: the research questions of the PCL paper and tuning.

    python run_experiment.py --experiment=rq1 --dataset=ml-100k    # contextual prompts (PCL, w/o P_T, w/o PLM)
    python run_experiment.py --experiment=rq2 --dataset=ml-100k    # every order of the downstream tasks
    python run_experiment.py --experiment=rq3 --dataset=ml-100k    # 50 % cold-start items
    python run_experiment.py --experiment=rq4 --dataset=ml-100k    # universal user vectors (MLP on T4)
    python run_experiment.py --experiment=tune --dataset=ml-100k   # Ray Tune of PCL's settings (ASHA)

Options: --definition=FILE (the experiment's yaml, default properties/experiment/<experiment>.yaml),
--config_files="a.yaml b.yaml", --ray_address=... and any --key=value setting.
"""

import argparse
import sys

from recbole_pcl.experiment import EXPERIMENTS, run_experiment
from recbole_pcl.utils.cli import exit_status


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", "-e", required=True, choices=sorted(EXPERIMENTS))
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--config_files", default="", help="space-separated yaml files")
    parser.add_argument(
        "--definition", default=None, help="the experiment's yaml (default: properties/experiment/<experiment>.yaml)"
    )
    args, unknown = parser.parse_known_args(argv)
    files = args.config_files.split() or None
    return exit_status(
        lambda: run_experiment(args.experiment, args.dataset, files, cmd_args=unknown, definition=args.definition)
    )


if __name__ == "__main__":
    sys.exit(main())
