"""Converters from raw public datasets to RecBole atomic files (see :mod:`.atomic` for the shared
atomic-output, column-checking and streaming-writing machinery)."""

from recbole_pcl.data.converters.movielens import convert_movielens
from recbole_pcl.data.converters.tenrec import convert_tenrec, generate_synthetic_tenrec

__all__ = ["convert_movielens", "convert_tenrec", "generate_synthetic_tenrec"]
