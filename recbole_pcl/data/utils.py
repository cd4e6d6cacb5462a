"""Dataset and dataloader creation as in RecBole, minus the unpickling of saved datasets/dataloaders."""

import importlib
import os

from recbole.data.utils import create_samplers, get_dataloader
from recbole.sampler import KGSampler
from recbole.utils import FeatureType, ModelType

from recbole_pcl.compat import dataset_class as compat_dataset
from recbole_pcl.data.builders import prepare_dataset
from recbole_pcl.utils.errors import PCLError

_TYPE2CLASS = {
    ModelType.GENERAL: "Dataset",
    ModelType.SEQUENTIAL: "SequentialDataset",
    ModelType.CONTEXT: "Dataset",
    ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
    ModelType.TRADITIONAL: "Dataset",
    ModelType.DECISIONTREE: "Dataset",
}


def atomic_file(config, suffix):
    return os.path.join(config["data_path"], f"{config['dataset']}.{suffix}")


def check_dataset_files(config, inter_fields=()):
    """Fail naming the file and field at fault when the interaction file is absent, has no rows, a
    malformed header, or lacks one of ``inter_fields`` (by their config keys, e.g. ``TIME_FIELD``)."""
    inter_file = atomic_file(config, "inter")
    if not os.path.isfile(inter_file):
        raise PCLError(
            f"unknown dataset '{config['dataset']}': no atomic file {inter_file} "
            f"(set data_path, or put {config['dataset']}.inter there)"
        )
    with open(inter_file, encoding=config["encoding"] or "utf-8") as f:
        header, first_row = f.readline().rstrip("\r\n"), f.readline().strip()
    columns = header.split(config["field_separator"])
    for column in columns:
        name, _, ftype = column.partition(":")
        if not name or ftype not in {t.value for t in FeatureType}:
            raise PCLError(
                f"{inter_file}: header column '{column}' is not 'name:type' with a RecBole type "
                f"({', '.join(t.value for t in FeatureType)})"
            )
    if not first_row:
        raise PCLError(f"{inter_file} has no interactions (a header only)")
    present = {c.partition(":")[0] for c in columns}
    for key in inter_fields:
        field = config[key] if key.isupper() else key
        if field not in present:
            what = f"the field '{field}' ({key})" if key.isupper() else f"the field '{field}'"
            raise PCLError(f"{inter_file} lacks {what}, which the task sequence needs")


def diagnose_values(config):
    """Find the first value of a float column that is not a number, in any atomic file of the dataset;
    raise naming the file, column, line and value (RecBole's own error names none of them)."""
    import pandas as pd

    sep = config["field_separator"]
    for suffix in ("inter", "user", "item"):
        path = atomic_file(config, suffix)
        if not os.path.isfile(path):
            continue
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, engine="python")
        for column in frame.columns:
            if column.endswith(":float"):
                cells = frame[column].str.strip()
                bad = cells.ne("") & pd.to_numeric(cells, errors="coerce").isna()
                if bad.any():
                    row = int(bad.to_numpy().argmax())
                    raise PCLError(
                        f"{path}: column '{column}' holds a non-numeric value {cells.iloc[row]!r} (line {row + 2})"
                    )


def create_dataset(config):
    """``<Model>Dataset`` from recbole_pcl.data or RecBole, else RecBole's class for the model type,
    built from raw input first where the dataset's yaml says so (:mod:`.builders`).

    RecBole's own ``create_dataset`` unpickles ``dataset_save_path``; we never load pickles.
    """
    prepare_dataset(config)
    check_dataset_files(config)
    return load_dataset(config)


def load_dataset(config):
    """Load the dataset's atomic files (already built and checked) into the model's dataset class."""
    for key in ("dataset_save_path", "dataloaders_save_path"):
        if config[key]:
            raise PCLError(f"config key '{key}' is not supported: it loads pickled objects, which we refuse")
    name = config["model"] + "Dataset"
    for module in ("recbole_pcl.data.dataset", "recbole.data.dataset"):
        mod = importlib.import_module(module)
        if hasattr(mod, name):
            dataset_class = getattr(mod, name)
            break
    else:
        dataset_class = getattr(importlib.import_module("recbole.data.dataset"), _TYPE2CLASS[config["MODEL_TYPE"]])
    try:
        return compat_dataset(dataset_class)(config)
    except (ValueError, TypeError):
        diagnose_values(config)
        raise


def build_dataloaders(config, dataset, built_datasets):
    """Train/valid/test dataloaders over already split datasets, with RecBole's samplers."""
    train_dataset, valid_dataset, test_dataset = built_datasets
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built_datasets)
    train_args = (config, train_dataset, train_sampler)
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        dist = config["train_neg_sample_args"]
        train_args += (KGSampler(dataset, dist["distribution"], dist["alpha"]),)
    train_data = get_dataloader(config, "train")(*train_args, shuffle=config["shuffle"])
    valid_data = get_dataloader(config, "valid")(config, valid_dataset, valid_sampler, shuffle=False)
    test_data = get_dataloader(config, "test")(config, test_dataset, test_sampler, shuffle=False)
    return train_data, valid_data, test_data


def data_preparation(config, dataset):
    """RecBole's ``data_preparation`` without loading or saving pickled dataloaders."""
    if config["save_dataloaders"]:
        raise PCLError("config key 'save_dataloaders' is not supported: it writes pickles that load unsafely")
    return build_dataloaders(config, dataset, dataset.build())
