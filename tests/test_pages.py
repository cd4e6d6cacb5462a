"""Results pages are written from the result files: every committed comparison page is exactly what
its committed compare.json renders to, so no sentence or number on it can drift from the files."""

import json

import pytest
from conftest import REPO

from recbole_pcl.experiment import pages
from recbole_pcl.experiment.tables import comparison_markdown, headline, verdicts

COMMITTED = sorted(p.parent for p in (REPO / "docs" / "results").rglob("compare.json"))
EXPERIMENTS = sorted(
    p for name in pages.experiment_pages() for p in (REPO / "docs" / "results").rglob(f"{name}/{name}.json")
)


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_committed_page_is_what_its_files_render_to(folder):
    comparison = json.loads((folder / "compare.json").read_text())
    assert (folder / "compare.md").read_text() == comparison_markdown(comparison)
    assert (folder / "compare.png").stat().st_size > 0


@pytest.mark.parametrize("result", EXPERIMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_committed_experiment_page_is_what_its_result_renders_to(result):
    markdown, figure = pages.experiment_pages()[result.stem](json.loads(result.read_text()))
    assert result.with_suffix(".md").read_text() == markdown
    assert result.with_suffix(".png").stat().st_size > 0


def test_every_experiment_has_a_committed_page():
    assert sorted({p.stem for p in EXPERIMENTS}) == ["rq2", "rq3", "rq4", "tune"]


def _comparison(diffs):
    """A comparison of PCL and methods whose paired differences (method − PCL) per fold are ``diffs``."""
    methods = [{"method": "PCL", "tasks": {"t": {"hit@10": {"mean": 0.5, "ci95": 0.0, "folds": [0.5] * 3}}}}]
    for name, folds in diffs.items():
        mean = sum(folds) / len(folds)
        # a narrow interval: 0.01 around the mean
        paired = {"mean": mean, "ci95": 0.01, "folds": folds}
        methods.append(
            {
                "method": name,
                "tasks": {
                    "t": {"hit@10": {"mean": 0.5 + mean, "ci95": 0.0, "folds": [0.5] * 3, "minus_reference": paired}}
                },
            }
        )
    return {"dataset": "d", "folds": 3, "n_folds": 3, "fold_indices": [0, 1, 2], "reference": "PCL", "methods": methods}


def test_sentences_follow_the_paired_intervals():
    comparison = _comparison({"Worse": [-0.1] * 3, "Level": [0.005] * 3, "Better": [0.2] * 3})
    assert headline(comparison) == (
        "On d (3 folds, paired 95 % intervals of each task's main metric), PCL beats Worse; ties with Level; "
        "loses to Better (t HR@10 -0.2000 ± 0.0100)."
    )
    assert verdicts(comparison) == [
        "- PCL vs Worse: better on t HR@10 +0.1000 ± 0.0100.",
        "- PCL vs Level: level on t HR@10 -0.0050 ± 0.0100.",
        "- PCL vs Better: worse on t HR@10 -0.2000 ± 0.0100.",
    ]


def test_pages_command_rewrites_a_page_from_its_file(tmp_path, capsys):
    folder = tmp_path / "cmp"
    folder.mkdir()
    source = COMMITTED[0]
    (folder / "compare.json").write_text((source / "compare.json").read_text())
    (folder / "compare.md").write_text("typed by hand")
    assert pages.main([str(folder)]) == 0
    assert (folder / "compare.md").read_text() == (source / "compare.md").read_text()
    assert pages.main([str(tmp_path)]) == 2 and "holds no compare.json, rq2.json" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["rq3", "tune"])
def test_pages_command_rewrites_an_experiment_page_from_its_file(tmp_path, name):
    """An experiment folder's page and figure come back from its result file alone; a tune.json without
    the trials' curves (written before they were recorded) leaves the figure as it is."""
    source = next(p for p in EXPERIMENTS if p.stem == name)
    (tmp_path / f"{name}.json").write_text(source.read_text())
    (tmp_path / f"{name}.md").write_text("typed by hand")
    assert pages.main([str(tmp_path)]) == 0
    assert (tmp_path / f"{name}.md").read_text() == source.with_suffix(".md").read_text()
    assert (tmp_path / f"{name}.png").exists() == (name != "tune")


def test_the_readme_headline_is_what_its_comparison_renders_to():
    """The README's sentence on which methods PCL beats, ties or loses to is its comparison's headline."""
    comparison = json.loads((REPO / "docs" / "results" / "ml-100k" / "compare.json").read_text())
    assert headline(comparison) in (REPO / "README.md").read_text()
