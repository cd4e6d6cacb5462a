"""Bad input: one line naming the key, file, column or value, exit status 2, nothing created or trained."""

import copy

import pytest
import yaml
from conftest import ML100K_TASKS, TINY_MODEL

import run_recbole_pcl as cli

TASKS = ML100K_TASKS[:3]
TINY = {**TINY_MODEL, "epochs": 1, "fwt_reference": False, "contextual_prompt": "none"}


def _one_line_error(capsys, *args):
    assert cli.main(list(args)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(dict(TINY, checkpoint_dir=str(tmp_path / "saved"))))
    return f"--config_files={path}"


@pytest.mark.parametrize(
    "option, message",
    [
        ("--epochs=abc", "setting 'epochs' must be an integer >= 1, got 'abc'"),
        ("--hidden_size=abc", "setting 'hidden_size' must be an integer >= 1, got 'abc'"),
        ("--train_batch_size=0", "setting 'train_batch_size' must be an integer >= 1, got 0"),
        ("--epochs=0", "setting 'epochs' must be an integer >= 1, got 0"),
        ("--task_eval_mode=bogus", "setting 'task_eval_mode' must be one of full, uni100, got 'bogus'"),
        ("--contextual_prompt=nome", "must be one of lm, random, none, got 'nome'; did you mean 'none'?"),
        ("--learnin_rate=0.1", "unknown setting 'learnin_rate'; did you mean 'learning_rate'?"),
        ("--label_window=-5", "setting 'label_window' must be an integer >= 1, got -5"),
        ("--context_lambda=-1", "setting 'context_lambda' must be a number >= 0, got -1"),
        ("--prefix_cache_gib=-1", "setting 'prefix_cache_gib' must be a number >= 0, got -1"),
        ("--prefix_cache=on", "setting 'prefix_cache' must be true or false, got 'on'"),
        ("--hidden_dropout_prob=1.5", "setting 'hidden_dropout_prob' must be a number >= 0 and < 1, got 1.5"),
        (
            "--task_split=[0.8,0.2]",
            "setting 'task_split' must be three positive ratios (train, valid, test), got [0.8, 0.2]",
        ),
        ("--n_heads=3", "setting 'n_heads' (3) must divide 'hidden_size' (16)"),
        ("--prompt_length=11", "setting 'prompt_length' (11) must not exceed 'MAX_ITEM_LIST_LENGTH' (10)"),
        ("--fwt_reference=maybe", "setting 'fwt_reference' must be true or false, got 'maybe'"),
        ("--reproducibility=3", "setting 'reproducibility' must be true or false, got 3"),
        ("--epochs", "command-line option '--epochs' is not of the form --key=value"),
    ],
)
def test_bad_settings_are_refused_when_loaded(capsys, tiny_file, tmp_path, option, message):
    assert message in _one_line_error(capsys, "--model=PCL", "--dataset=ml-100k", tiny_file, option)
    assert not (tmp_path / "saved").exists()  # refused before anything was loaded or written


@pytest.mark.parametrize(
    "content, message",
    [
        ("epochs: [1\n", "is not valid YAML (line 2)"),
        ("- epochs: 1\n- hidden_size: 8\n", "must be a mapping of 'key: value' lines, not a list"),
    ],
)
def test_bad_config_files_are_named(capsys, tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    line = _one_line_error(capsys, "--model=PCL", "--dataset=ml-100k", f"--config_files={path}")
    assert f"config file {path} {message}" in line


def test_unknown_dataset_is_named_not_its_tasks(capsys, tiny_file, tmp_path):
    line = _one_line_error(capsys, "--model=PCL", "--dataset=no-such-data", tiny_file, f"--data_path={tmp_path}")
    assert "unknown dataset 'no-such-data': no atomic file" in line


def _dataset(tmp_path, header, rows):
    folder = tmp_path / "data" / "mini"
    folder.mkdir(parents=True)
    (folder / "mini.inter").write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return folder / "mini.inter"


def _rows(n_users=30, per_user=20):
    return [
        (f"u{u}", f"i{(u * 7 + k) % 50}", 1 + (u + k) % 5, 1000 + k) for u in range(n_users) for k in range(per_user)
    ]


FULL_HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]


@pytest.mark.parametrize(
    "header, rows, message",
    [
        (
            FULL_HEADER[:3],
            [r[:3] for r in _rows()],
            "lacks the field 'timestamp' (TIME_FIELD), which the task sequence needs",
        ),
        (FULL_HEADER, [], "has no interactions (a header only)"),
        (
            FULL_HEADER,
            _rows()[:7] + [("u0", "i1", "abc", 99)] + _rows()[8:],
            "column 'rating:float' holds a non-numeric value 'abc' (line 9)",
        ),
        (
            ["user_id:token", "item_id:token", "rating:number", "timestamp:float"],
            _rows(),
            "header column 'rating:number' is not 'name:type'",
        ),
    ],
)
def test_bad_atomic_files_are_named(capsys, tmp_path, header, rows, message):
    inter = _dataset(tmp_path, header, rows)
    config = tmp_path / "mini.yaml"
    config.write_text(
        yaml.safe_dump(
            dict(
                TINY,
                tasks=TASKS,
                data_path=str(tmp_path / "data"),
                checkpoint_dir=str(tmp_path / "saved"),
                load_col={"inter": [h.split(":")[0] for h in header]},
            )
        )
    )
    line = _one_line_error(capsys, "--model=PCL", "--dataset=mini", f"--config_files={config}")
    assert f"{inter}" in line and message in line
    assert not (tmp_path / "saved").exists()


def test_a_split_without_validation_users_is_refused(capsys, tiny_file, tmp_path):
    line = _one_line_error(
        capsys,
        "--model=PCL",
        "--dataset=ml-100k",
        tiny_file,
        "--user_inter_num_interval=[20,40]",
        "--task_split=[0.995,0.001,0.004]",
    )
    assert (
        "task 'next_4star': the user split leaves no valid users" in line and "task_split=[0.995, 0.001, 0.004]" in line
    )
    assert not (tmp_path / "saved").exists()  # nothing trained, no empty folder left


def test_task_yaml_errors_name_the_task(capsys, tmp_path):
    tasks = copy.deepcopy(TASKS)
    tasks[1]["label"]["interval"] = "4 to 5"
    config = tmp_path / "tasks.yaml"
    config.write_text(yaml.safe_dump(dict(TINY, tasks=tasks, checkpoint_dir=str(tmp_path / "saved"))))
    line = _one_line_error(capsys, "--model=PCL", "--dataset=ml-100k", f"--config_files={config}")
    assert "task 'next_4star': interval '4 to 5' is not of the form" in line
