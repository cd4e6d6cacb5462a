"""Datasets whose atomic files are built from raw files the user supplies (nothing is downloaded).

A dataset yaml names its builder and raw input:

    dataset_builder: movielens          # ratings.csv + movies.csv (MovieLens-25M format)
    raw_data_path: dataset/raw/ml-25m   # folder (movielens) or CSV file (tenrec)

``tenrec`` converts the raw ``QB-video.csv``/``QK-video.csv`` when it is at ``raw_data_path``; when it
is not, it generates and converts a SYNTHETIC file with Tenrec's schema instead, and says so.
Raw inputs must live outside the dataset folder, which is replaced atomically on (re)conversion.
"""

import os
from logging import getLogger

from recbole_pcl.data.converters import convert_movielens, convert_tenrec, generate_synthetic_tenrec
from recbole_pcl.utils.errors import PCLError


def _tenrec(config, out_dir):
    raw = config["raw_data_path"]
    logger = getLogger()
    if os.path.isfile(raw):
        logger.info(f"{config['dataset']}: converting the real Tenrec file {raw}")
        return convert_tenrec(raw, out_dir, config["dataset"])
    synthetic = os.path.join(os.path.dirname(os.path.abspath(out_dir)), "raw", f"{config['dataset']}-SYNTHETIC.csv")
    logger.warning(
        f"{config['dataset']}: real Tenrec file not found at {raw}; using a SYNTHETIC sample with Tenrec's "
        f"schema ({synthetic}). Put QB-video.csv/QK-video.csv at raw_data_path for real results."
    )
    if not os.path.isfile(synthetic):
        os.makedirs(os.path.dirname(synthetic), exist_ok=True)
        generate_synthetic_tenrec(synthetic, seed=config["seed"], **(config["synthetic_tenrec"] or {}))
    return convert_tenrec(synthetic, out_dir, config["dataset"])


def _movielens(config, out_dir):
    raw = config["raw_data_path"]
    if not raw or not os.path.isdir(raw):
        raise PCLError(
            f"{config['dataset']}: MovieLens folder with ratings.csv and movies.csv not found at raw_data_path={raw}"
        )
    return convert_movielens(raw, out_dir, config["dataset"])


BUILDERS = {"movielens": _movielens, "tenrec": _tenrec}


def prepare_dataset(config):
    """Build the dataset's atomic files from its raw input if its yaml names a builder."""
    name = config["dataset_builder"]
    if not name:
        return
    if name not in BUILDERS:
        raise PCLError(f"unknown dataset_builder '{name}' (valid: {', '.join(BUILDERS)})")
    BUILDERS[name](config, config["data_path"])
