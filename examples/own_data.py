"""Your own data, end to end: write a small dataset as RecBole atomic files, declare its task
sequence in a yaml, run PCL on it and serve every task from the one model.

    python examples/own_data.py [--out=DIR] [--key=value ...]     # --key=value: any recbole-pcl setting

The data is a made-up shop (seeded, so every run is the same): users view and buy items of a few
categories and prefer some categories; the tasks are the next view (T1), the next purchase, the
category of the next item and the user's age group. Replace the writing part with your own files:
the yaml and the calls below stay the same. docs/datasets.md explains each line.
"""

import argparse
import os
import sys

import numpy as np
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from recbole_pcl.quick_start import load_continual_run, run_recbole_pcl  # noqa: E402

DATASET = "shop"

# The task sequence: T1 first (unfiltered next item), then the downstream tasks in the order learned.
TASKS = [
    {
        "name": "next_view",
        "kind": "link",
        "label": {"source": "next_item"},
        "description": {
            "task": "predict the next item the user views",
            "input": "the user's last viewed items",
            "output": "one item out of all items",
            "metric": "hit ratio at 10",
        },
    },
    {
        "name": "next_purchase",
        "kind": "link",
        "label": {"source": "next_item", "field": "event", "interval": "[2,2]"},  # event 2 = purchase
        "description": {
            "task": "predict the next item the user buys",
            "input": "the user's last viewed items",
            "output": "one item out of all items",
            "metric": "hit ratio at 10",
        },
    },
    {
        "name": "next_category",
        "kind": "class",
        "label": {"source": "next_item_field", "field": "category"},
        "description": {
            "task": "classify the category of the next item the user views",
            "input": "the user's last viewed items",
            "output": "one of 6 categories",
            "metric": "accuracy",
        },
    },
    {
        "name": "age_group",
        "kind": "class",
        "label": {"source": "user_field", "field": "age", "bins": [25, 40, 60]},
        "description": {
            "task": "classify the user's age group",
            "input": "the user's last viewed items",
            "output": "one of 4 age groups",
            "metric": "accuracy",
        },
    },
]


def write_dataset(folder, users=300, items=200, categories=6, seed=0):
    """``<folder>/shop/shop.{inter,item,user}``: tab-separated, a header of ``name:type`` columns."""
    rng = np.random.default_rng(seed)
    category = rng.integers(0, categories, items)
    age = rng.integers(18, 70, users)
    os.makedirs(os.path.join(folder, DATASET), exist_ok=True)
    with open(os.path.join(folder, DATASET, f"{DATASET}.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\tevent:float\ttimestamp:float\n")
        for u in range(users):
            # each user prefers two categories, more so with age (so that age is learnable too)
            liked = rng.choice(categories, 2, replace=False)
            weight = np.where(np.isin(category, liked), 6.0 + age[u] / 20, 1.0)
            sequence = rng.choice(items, int(rng.integers(20, 40)), p=weight / weight.sum())
            for t, item in enumerate(sequence):
                event = 2 if category[item] in liked and rng.random() < 0.3 else 1
                f.write(f"u{u}\ti{item}\t{event}\t{1000 + t}\n")
    with open(os.path.join(folder, DATASET, f"{DATASET}.item"), "w") as f:
        f.write("item_id:token\tcategory:token\n" + "".join(f"i{i}\tc{category[i]}\n" for i in range(items)))
    with open(os.path.join(folder, DATASET, f"{DATASET}.user"), "w") as f:
        f.write("user_id:token\tage:float\n" + "".join(f"u{u}\t{age[u]}\n" for u in range(users)))


def write_yaml(folder):
    """The dataset's property file: where its files are, how link tasks are ranked, its tasks."""
    path = os.path.join(folder, f"{DATASET}.yaml")
    settings = {"data_path": folder, "task_eval_mode": "full", "tasks": TASKS}
    with open(path, "w") as f:
        yaml.safe_dump(settings, f, sort_keys=False)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="saved/example", help="folder for the data, the yaml and the run")
    args, settings = parser.parse_known_args(argv)
    out = os.path.abspath(args.out)
    write_dataset(out)
    config_file = write_yaml(out)
    small = {
        "MAX_ITEM_LIST_LENGTH": 20,
        "hidden_size": 32,
        "inner_size": 64,
        "epochs": 20,
        "show_progress": False,
        "checkpoint_dir": os.path.join(out, "saved"),
        "fwt_reference": False,
    }
    options = [a for a in settings if a.startswith("--")]
    result = run_recbole_pcl("PCL", DATASET, config_file_list=[config_file], config_dict=small, cmd_args=options)
    print(result["table"])

    # serving: the same configuration finds the finished run
    predictor = load_continual_run(
        "PCL",
        DATASET,
        config_file_list=[config_file],
        config_dict=dict(small, **{a[2:].split("=")[0]: yaml.safe_load(a.split("=", 1)[1]) for a in options}),
    )
    users = predictor.users[:3]
    print("top-5 next purchases:", predictor.recommend("next_purchase", users, k=5))
    probabilities = predictor.predict("next_category", users)  # classes named as in the .item file
    classes = predictor.tasks["next_category"].classes
    print("next category:", [classes[int(i)] for i in probabilities.argmax(1)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
