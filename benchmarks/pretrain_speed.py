"""T1 pretraining speed, side by side in one run: stock RecBole SASRec (one sample per prefix)
vs PCL's causal mode (every position of each user's sequence at once), same data and dimensions.

Both train on RecBole's leave-one-out training split of the same dataset: stock on its prefix
samples, ours on the longest prefix of each user (the rows PCL's causal mode keeps), where every
position is a next-item target.

    python benchmarks/pretrain_speed.py [--dataset=ml-100k] [--epochs=1] [--hidden_size=64] ...

Prints seconds per training epoch of each and their ratio. Extra --key=value options go to both
configs. Timings are wall-clock on this machine; nothing here is asserted by the test suite.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from recbole.data.utils import get_dataloader  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

from recbole_pcl.config import Config  # noqa: E402
from recbole_pcl.data import create_dataset, data_preparation  # noqa: E402
from recbole_pcl.data.continual import ContinualData  # noqa: E402
from recbole_pcl.trainer.continual_trainer import ContinualTrainer  # noqa: E402
from recbole_pcl.utils import get_model, get_trainer  # noqa: E402


def time_epochs(trainer, train_data, epochs):
    trainer.model.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        trainer._train_epoch(train_data, epoch, show_progress=False)
    return (time.perf_counter() - start) / epochs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epochs", type=int, default=1)
    args, extra = parser.parse_known_args()
    common = {"state": "WARNING", "show_progress": False, "use_gpu": torch.cuda.is_available()}

    stock = Config("SASRec", args.dataset, config_dict=common, cmd_args=extra)
    init_seed(stock["seed"], stock["reproducibility"])
    train, _, _ = data_preparation(stock, create_dataset(stock))
    model = get_model("SASRec")(stock, train._dataset).to(stock["device"])
    stock_s = time_epochs(get_trainer(stock["MODEL_TYPE"], "SASRec")(stock, model), train, args.epochs)
    print(f"stock RecBole SASRec : {len(train.dataset):>7} training rows, {stock_s:8.2f} s/epoch")

    ours = Config("PCL", args.dataset, config_dict=dict(common, pretrain_mode="causal", contextual_prompt="none",
                                                         train_batch_size=stock["train_batch_size"]), cmd_args=extra)
    init_seed(ours["seed"], ours["reproducibility"])
    causal = ContinualData._last_prefix_per_user(train._dataset)
    causal_train = get_dataloader(ours, "train")(ours, causal, None, shuffle=True)
    model = get_model("PCL")(ours, causal).to(ours["device"])
    model.begin_task(None)
    ours_s = time_epochs(ContinualTrainer(ours, model), causal_train, args.epochs)
    targets = int(causal.inter_feat["item_length"].sum())
    print(f"PCL causal pretraining: {len(causal):>7} training rows ({targets} next-item targets), {ours_s:8.2f} s/epoch")
    print(f"ratio (stock / ours)  : {stock_s / ours_s:.1f}x less time per epoch "
          f"(hidden_size={ours['hidden_size']}, n_layers={ours['n_layers']}, MAX_ITEM_LIST_LENGTH={ours['MAX_ITEM_LIST_LENGTH']}, "
          f"batch={ours['train_batch_size']}, device={ours['device']})")


if __name__ == "__main__":
    main()
