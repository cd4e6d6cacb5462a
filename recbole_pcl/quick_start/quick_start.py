"""``run_recbole_pcl``: RecBole's ``run_recbole`` for recbole_pcl and RecBole models alike."""

import sys
from logging import getLogger

from recbole.data.transform import construct_transform
from recbole.utils import get_environment, get_flops, init_logger, init_seed, set_color

from recbole_pcl.compat import scipy_dok_update
from recbole_pcl.config import Config
from recbole_pcl.data import create_dataset, data_preparation
from recbole_pcl.model.abstract_recommender import TaskRecommender
from recbole_pcl.pipeline import TaskPipeline
from recbole_pcl.utils import get_model, get_trainer


def run_recbole_pcl(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, cmd_args=None):
    """Train and test ``model`` on ``dataset``; returns RecBole's result dict, or for a continual
    model (PCL) the continual run's result (per-task metrics, BWT/FWT, run directory).

    Args:
        model (str): a recbole_pcl model (``PCL``) or any RecBole model (``SASRec``, ``GRU4Rec``...).
        dataset (str): dataset name; ``ml-100k`` is the copy shipped inside RecBole.
        config_file_list (list of str): user yaml files.
        config_dict (dict): parameters that override the files.
        saved (bool): keep the best checkpoint and test it (else test the last epoch's weights).
        cmd_args (list of str): ``--key=value`` options that override everything else.
    """
    config = Config(model, dataset, config_file_list, config_dict, cmd_args)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    model_class = get_model(config["model"])
    if issubclass(model_class, TaskRecommender):  # a method on the task sequence: the task pipeline
        return TaskPipeline(config, model_class).run()

    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    with scipy_dok_update():  # graph models build their adjacency matrix here (see recbole_pcl.compat)
        model = model_class(config, train_data._dataset).to(config["device"])
    logger.info(model)
    flops = get_flops(model, dataset, config["device"], logger, construct_transform(config))
    logger.info(set_color("FLOPs", "blue") + f": {flops}")

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])

    logger.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "checkpoint": trainer.saved_model_file if saved else None,
    }
