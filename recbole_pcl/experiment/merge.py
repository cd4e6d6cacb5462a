"""One comparison from comparisons run apart (on other machines, or in sessions that did not share
their runs), and its command line::

    python -m recbole_pcl.experiment.merge saved/compare-A/compare.json saved/compare-B/compare.json --out=DIR
"""

import argparse
import os
import sys

from recbole_pcl.experiment.compare import summary
from recbole_pcl.experiment.output import OUTPUTS, write_comparison
from recbole_pcl.experiment.statistics import check_means
from recbole_pcl.experiment.tables import columns_of_rows
from recbole_pcl.utils.checkpoint import read_json
from recbole_pcl.utils.cli import exit_status
from recbole_pcl.utils.errors import PCLError


def merge_comparisons(paths, out):
    """One comparison from ``compare.json`` files of comparisons run apart (on other machines, or in
    sessions that did not share their runs), written to ``out`` like any comparison.

    They must cover the same dataset, folds and tasks. Every mean and interval is recomputed from the
    fold values, and a file whose stored mean disagrees with its folds is refused. A method found in
    several files must agree in every value of every fold (and in its runs' identities, where the
    files record them): the method shared by both, usually PCL, checks that the two comparisons were
    made on the same data and settings; files that share no method merge only when their data, tasks
    and T1 pretraining agree (``shared``). ``out`` is never an input's folder, nor a folder or file
    holding anything but an earlier merge. Paired differences are recomputed against the reference
    method (PCL)."""
    out = _merge_target(paths, out)
    first, columns, methods, runs, failed, seconds, tuned = None, None, {}, {}, {}, 0.0, {}
    source = {}  # where each method and each run was first found
    for path in paths:
        comparison = _read_comparison(path)
        first = first or (path, comparison)
        for key in ("dataset", "n_folds", "fold_indices"):
            if comparison[key] != first[1][key]:
                raise PCLError(
                    f"{path} has {key} {comparison[key]!r} but {first[0]} has {first[1][key]!r}: only comparisons of the same folds merge"
                )
        labels = {row["method"] for row in comparison["methods"]}
        if methods and not labels & set(methods):
            _check_shared(path, comparison, first)
        for key, run in comparison.get("runs", {}).items():
            if _identity(runs.setdefault(key, run)) != _identity(run):
                raise PCLError(f"{path}: run {key} has another identity than in {source[key]} (other settings or data)")
            source.setdefault(key, path)
        for row in comparison["methods"]:
            label = row["method"]
            check_means(path, row)
            columns = columns or list(row["tasks"])
            if list(row["tasks"]) != columns:
                raise PCLError(
                    f"{path}: method '{label}' has tasks {list(row['tasks'])}, not {columns} as the first method"
                )
            if label in methods:
                _merge_method(row, methods[label], f"{path}: method '{label}' differs from {source[label]}")
            else:
                methods[label], source[label] = row, path
        failed.update(comparison.get("failures", {}))
        seconds += comparison.get("seconds", 0.0)
        budget = (comparison.get("tuning") or {}).get("trials", 0)
        if budget != (first[1].get("tuning") or {}).get("trials", 0):
            raise PCLError(
                f"{path} tuned with {budget} trials per method, {first[0]} with another budget: they do not merge"
            )
        tuned.update((comparison.get("tuning") or {}).get("methods", {}))
    failed = {
        k: e for k, e in failed.items() if k.rsplit("/", 1)[0] not in methods
    }  # a run failed in one, done in another
    rows = list(methods.values())
    if not rows:
        raise PCLError(f"no method in {', '.join(paths)}")
    specs = columns_of_rows(rows)
    labels = [r["method"] for r in rows]
    reference = first[1].get("reference")
    merged = summary(rows, specs, reference if reference in labels else labels[0])
    data = first[1]
    merged.update(
        dataset=data["dataset"],
        folds=len(data["fold_indices"]),
        n_folds=data["n_folds"],
        fold_indices=data["fold_indices"],
        seconds=round(seconds, 1),
        directory=out,
        failures=failed,
        runs=runs,
        tuning={
            "trials": (data.get("tuning") or {}).get("trials", 0),
            "methods": {k: v for k, v in tuned.items() if k in methods},
        },
        shared=data.get("shared"),
        merged_from=list(paths),
    )
    write_comparison(out, merged, specs)
    return merged


def _identity(run):
    """A run's identity digest in compare.json (older files keep the digest alone)."""
    return run["identity"] if isinstance(run, dict) else run


def _merge_target(paths, out):
    """``out`` as a folder a merge may write: not an input's folder, not a file, and holding no
    comparison files but those of an earlier merge (which it replaces)."""
    target = os.path.abspath(out)
    for path in paths:
        if os.path.dirname(os.path.abspath(path)) == target:
            raise PCLError(f"--out {out} is the folder of the input {path}: a merge never writes over its inputs")
    if os.path.exists(target) and not os.path.isdir(target):
        raise PCLError(f"--out {out} is a file: give a folder for the merged comparison")
    existing = [n for n in OUTPUTS if os.path.exists(os.path.join(target, n))]
    if existing:
        written = os.path.join(target, "compare.json")
        earlier = _read_comparison(written) if os.path.isfile(written) else {}
        if "merged_from" not in earlier:
            raise PCLError(
                f"--out {out} holds {', '.join(existing)} of another comparison: a merge only replaces an earlier merge"
            )
    return out


def _check_shared(path, comparison, first):
    """Comparisons with no method in common must show that they ran on the same data, tasks and T1
    pretraining."""
    mine, theirs = comparison.get("shared"), first[1].get("shared")
    if not mine or not theirs or not mine.get("pretraining") or mine != theirs:
        raise PCLError(
            f"{path} shares no method with {first[0]}, and nothing shows they were made on the same data, "
            f"tasks and T1 pretraining ('shared' {'differs' if mine and theirs else 'is not recorded'}): "
            f"they do not merge"
        )


def _read_comparison(path):
    comparison = read_json(path, "comparison")
    if not isinstance(comparison, dict) or not {"methods", "dataset", "n_folds", "fold_indices"} <= set(comparison):
        raise PCLError(f"{path} is not a compare.json written by a comparison")
    return comparison


def _merge_method(row, seen, where):
    """Check that ``row`` is the method ``seen`` again, and add the metrics only ``row`` has (FWT is
    reported only where the run was asked for it, which does not change its identity)."""
    for key in ("settings", "B", "F", "trainable_params"):
        if row[key] != seen[key]:
            raise PCLError(f"{where} in {key}: {row[key]} vs {seen[key]}")
    for task, metrics in row["tasks"].items():
        for metric, stat in metrics.items():
            known = seen["tasks"][task].setdefault(metric, stat)
            if known["folds"] != stat["folds"]:
                message = f"{where} in {task} {metric}: folds {stat['folds']} vs {known['folds']}"
                if row.get("environments") != seen.get("environments"):  # float rounding differs between them
                    message += f" (computed on {row.get('environments') or 'unrecorded'} vs {seen.get('environments') or 'unrecorded'})"
                raise PCLError(message)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comparisons", nargs="+", help="compare.json files of the same dataset and folds")
    parser.add_argument("--out", required=True, help="folder for the merged compare.json/.csv/.md/.png")
    args = parser.parse_args(argv)
    return exit_status(lambda: print(merge_comparisons(args.comparisons, args.out)["table"]))


if __name__ == "__main__":
    sys.exit(main())
