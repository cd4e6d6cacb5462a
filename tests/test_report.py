"""The report of a continual run: BWT and FWT as TERACON §5 defines them, on numbers worked by hand."""

from types import SimpleNamespace

import pytest

from recbole_pcl.pipeline.report import report_rows


def _task(name, kind, index):
    return SimpleNamespace(spec=SimpleNamespace(name=name, kind=kind), index=index)


def test_bwt_and_fwt_signs_and_values():
    tasks = [_task("t1", "link", 0), _task("liked", "link", 1), _task("genre", "class", 2)]
    records = [
        {"test": {"hit@10": 0.60}, "trainable_params": 10, "seconds": 1.0},
        {"test": {"hit@10": 0.50}, "trainable_params": 2, "seconds": 1.0},  # right after its stage
        {"test": {"accuracy": 0.20}, "trainable_params": 2, "seconds": 1.0},
    ]
    final = {"t1": {"hit@10": 0.60}, "liked": {"hit@10": 0.40}, "genre": {"accuracy": 0.25}}  # after the last
    references = {"liked": {"hit@10": 0.40}, "genre": {"accuracy": 0.25}}  # each task learned alone
    rows = report_rows(tasks, records, final, references, {"report_metric": "Hit@10"})
    liked, genre = rows[1], rows[2]
    assert liked["BWT%"] == pytest.approx(-20.0)  # forgot: 0.50 -> 0.40
    assert genre["BWT%"] == pytest.approx(25.0)  # improved later: 0.20 -> 0.25
    assert liked["FWT%"] == pytest.approx(25.0)  # 0.50 against 0.40 alone
    assert genre["FWT%"] == pytest.approx(-20.0)  # 0.20 against 0.25 alone
    assert rows[0]["BWT%"] is None  # T1 has no stage before the end to compare with
    joint = report_rows(tasks, records, final, {}, {"report_metric": "Hit@10"}, sequential=False)
    assert all(r["BWT%"] is None and r["FWT%"] is None for r in joint)
