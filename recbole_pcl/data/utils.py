"""Dataset and dataloader creation as in RecBole, minus the unpickling of saved datasets/dataloaders."""
import importlib
import os

from recbole.data.utils import create_samplers, get_dataloader
from recbole.sampler import KGSampler
from recbole.utils import ModelType

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


def check_dataset_files(config):
    """Fail with the path at fault when the dataset's interaction file is absent."""
    inter_file = os.path.join(config["data_path"], f"{config['dataset']}.inter")
    if not os.path.isfile(inter_file):
        raise PCLError(
            f"unknown dataset '{config['dataset']}': no atomic file {inter_file} "
            f"(set data_path, or put {config['dataset']}.inter there)"
        )


def create_dataset(config):
    """``<Model>Dataset`` from recbole_pcl.data or RecBole, else RecBole's class for the model type.

    RecBole's own ``create_dataset`` unpickles ``dataset_save_path``; we never load pickles.
    """
    for key in ("dataset_save_path", "dataloaders_save_path"):
        if config[key]:
            raise PCLError(f"config key '{key}' is not supported: it loads pickled objects, which we refuse")
    prepare_dataset(config)
    check_dataset_files(config)
    name = config["model"] + "Dataset"
    for module in ("recbole_pcl.data.dataset", "recbole.data.dataset"):
        mod = importlib.import_module(module)
        if hasattr(mod, name):
            return getattr(mod, name)(config)
    dataset_module = importlib.import_module("recbole.data.dataset")
    return getattr(dataset_module, _TYPE2CLASS[config["MODEL_TYPE"]])(config)


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
