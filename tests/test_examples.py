"""The examples run as a reader would run them."""

import subprocess
import sys

from conftest import REPO

TINY = [
    "--epochs=1",
    "--hidden_size=16",
    "--inner_size=32",
    "--n_layers=1",
    "--n_heads=1",
    "--context_heads=1",
    "--MAX_ITEM_LIST_LENGTH=10",
    "--contextual_prompt=random",
]


def test_own_data_example_writes_runs_and_serves(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "own_data.py"), f"--out={tmp_path}", *TINY],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for suffix, header in (
        ("inter", "user_id:token\titem_id:token\tevent:float\ttimestamp:float"),
        ("item", "item_id:token\tcategory:token"),
        ("user", "user_id:token\tage:float"),
    ):
        assert (tmp_path / "shop" / f"shop.{suffix}").read_text().splitlines()[0] == header
    lines = result.stdout.splitlines()
    table = [line for line in lines if line.startswith("| next_") or line.startswith("| age_group")]
    assert [row.split("|")[1].strip() for row in table] == ["next_view", "next_purchase", "next_category", "age_group"]
    purchases = next(line for line in lines if line.startswith("top-5 next purchases:"))
    assert purchases.count("'i") == 15  # five item tokens for each of three users
    categories = next(line for line in lines if line.startswith("next category:"))
    assert categories.count("'c") == 3  # a category token for each of three users
