"""The statistics of a comparison over folds: a mean with its 95 % t-interval, and paired
differences to a reference method fold by fold (the same folds, the same users)."""

import numpy as np
from scipy import stats

from recbole_pcl.utils.errors import PCLError


def interval(values):
    """``(mean, half-width of the 95 % t-interval)`` of ``values`` (half-width 0 for one value)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), 0.0
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def paired_differences(methods, reference):
    """Add to every metric of every method but ``reference`` its difference to the reference, fold
    by fold: ``minus_reference`` = mean and interval of the paired differences, and the differences."""
    ref = next(m for m in methods if m["method"] == reference)
    for m in methods:
        for name, task in m["tasks"].items():
            for metric, stat in task.items():
                stat.pop("minus_reference", None)
                base = ref["tasks"][name].get(metric)
                if m is not ref and base is not None:
                    paired = np.asarray(stat["folds"]) - np.asarray(base["folds"])
                    diff = interval(paired)
                    stat["minus_reference"] = {"mean": diff[0], "ci95": diff[1], "folds": paired.tolist()}
    return methods


def check_means(where, row):
    """Every stored mean and interval of the method ``row`` must be those of its fold values."""
    for task, metrics in row["tasks"].items():
        for metric, stat in metrics.items():
            mean, half = interval(stat["folds"])
            if not (
                np.isclose(stat["mean"], mean, rtol=0, atol=1e-9) and np.isclose(stat["ci95"], half, rtol=0, atol=1e-9)
            ):
                raise PCLError(
                    f"{where}: method '{row['method']}' {task} {metric}: the stored mean ± interval "
                    f"{stat['mean']} ± {stat['ci95']} is not that of its folds ({mean} ± {half})"
                )
