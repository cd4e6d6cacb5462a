"""Every command the README shows runs, in a tiny configuration, in the order the README gives them.

Command lines are run as written with the TINY settings (smaller data, model and epoch count) in
place of their own sizes; their other settings (an ablation's ``--prompt_length=0``…) are kept. Python
blocks run with TINY merged under their own ``config_dict``; benchmark scripts get the small-size
arguments in BENCHMARK_ARGS. Setup commands (make, pip) are what CI itself runs.
"""

import re
import shlex
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, TINY_MODEL

import recbole_pcl.quick_start as quick_start
import run_experiment
import run_recbole_pcl
from recbole_pcl.experiment import merge

TINY = {
    **TINY_MODEL,
    "user_inter_num_interval": "[20,40]",
    "epochs": 1,
    "train_batch_size": 128,
    "eval_batch_size": 256,
    "runner": "serial",
    "n_folds": 2,  # Ray itself is tested in tests/test_experiments.py
}
TINY_ARGS = [f"--{k}={v}" for k, v in TINY.items() if k not in ("runner", "n_folds")]
BENCHMARK_ARGS = {
    "examples/own_data.py": [a for a in TINY_ARGS if not a.startswith("--user_inter_num_interval")]
    + ["--contextual_prompt=random"],
    "benchmarks/speed.py": TINY_ARGS + ["--contextual_prompt=random", "--n_folds=2"],
    "benchmarks/time_profile.py": TINY_ARGS + ["--contextual_prompt=random", "--t1_epochs=1", "--joint_epochs=1"],
    "benchmarks/scale_tenrec.py": ["--users=150", "--items=120", "--categories=8", "--length=30"] + TINY_ARGS,
    "benchmarks/convert_ml25m_memory.py": [
        "--ratings",
        "20000",
        "--users",
        "300",
        "--movies",
        "500",
        "--chunksize",
        "5000",
    ],
}
SIZES = {"user_inter_num_interval", "MAX_ITEM_LIST_LENGTH", "hidden_size", "inner_size", "n_layers", "epochs"}
SETUP = ("make ", "pip ", "TORCH_SPEC=")  # environment setup: run by CI (.ci/run), not from a test


def readme_blocks():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```(bash|python)\n(.*?)```", text, re.S)


def _commands(block):
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            yield line.strip(), words


TINY_TUNE = {"model": "PCL", "space": {"prompt_length": {"choice": [2, 3]}}, "samples": 2, "grace_epochs": 1}


def _from_repo(arg):
    """``--key=path`` with the README's paths relative to the repository (``properties/...``,
    ``../shared/...``) made absolute: the test runs elsewhere."""
    key, sep, value = arg.partition("=")
    if not sep or key not in ("--config_files", "--raw_data_path", "--definition"):
        return arg
    paths = [str(REPO / v) if (REPO / v).exists() else v for v in value.split()]
    return f"{key}={' '.join(paths)}"


def _run_cli(words, tmp_path):
    cli = run_experiment if words[1] == "run_experiment.py" else run_recbole_pcl
    args = [a for a in words[2:] if a[2:].partition("=")[0] not in SIZES]
    if "--experiment=tune" in args and not any(a.startswith("--definition=") for a in args):
        (tmp_path / "tiny-tune.yaml").write_text(yaml.safe_dump(TINY_TUNE))  # two trials, not the default twelve
        args.append(f"--definition={tmp_path / 'tiny-tune.yaml'}")
    given = {a[2:].partition("=")[0] for a in args if a.startswith("--")}
    args = [_from_repo(a) for a in args]
    for option in [a for a in args if a.startswith("--config_files=")]:
        for name in option.partition("=")[2].split():  # the README's placeholders for the user's own files
            if not (tmp_path / name).exists():
                (tmp_path / name).write_text("{}\n")
    args += [f"--{k}={v}" for k, v in TINY.items() if k not in given]
    return cli.main(args)


def test_every_readme_command_runs(tmp_path, monkeypatch):
    run, load = quick_start.run_recbole_pcl, quick_start.load_continual_run
    monkeypatch.setattr(
        quick_start,
        "run_recbole_pcl",
        lambda *a, config_dict=None, **k: run(*a, config_dict={**TINY, **(config_dict or {})}, **k),
    )
    monkeypatch.setattr(
        quick_start,
        "load_continual_run",
        lambda *a, config_dict=None, **k: load(*a, config_dict={**TINY, **(config_dict or {})}, **k),
    )
    ran = []
    for kind, block in readme_blocks():
        if kind == "python":
            exec(compile(block, "README.md", "exec"), {})
            ran.append(block.splitlines()[0])
            continue
        for line, words in _commands(block):
            if line.startswith(SETUP):
                continue
            if words[:2] in (["python", "run_recbole_pcl.py"], ["python", "run_experiment.py"]):
                assert _run_cli(words, tmp_path) == 0, line
            elif words[:3] == ["python", "-m", "recbole_pcl.experiment.merge"]:  # the README's own result files
                args = [str(REPO / a) if (REPO / a).is_file() else a for a in words[3:] if not a.startswith("--out=")]
                assert merge.main([*args, f"--out={tmp_path / 'merged'}"]) == 0, line
            elif words[0] == "python" and words[1] in BENCHMARK_ARGS:
                result = subprocess.run(
                    [sys.executable, str(REPO / words[1]), *words[2:], *BENCHMARK_ARGS[words[1]]],
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                assert result.returncode == 0, f"{line}\n{result.stderr[-2000:]}"
            else:
                pytest.fail(f"README command not covered by this test: {line}")
            ran.append(line)
    assert any("--model=PCL" in r for r in ran) and any("load_continual_run" in r or "import" in r for r in ran)
