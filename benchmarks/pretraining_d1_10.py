"""ImageNet vs random initialisation of EfficientNet-Lite0 on synthetic pathology, development set d1/10.

    .venv/bin/python benchmarks/pretraining_d1_10.py [--epochs 20] [--patience 5] [--seeds 0 1 2]

Trains both initialisations with the zoo's Trainer settings (best-validation-AUC weights kept, early
stopping on val_auc) and prints the validation AUC and the AUC on the shared test set (scikit-learn).
"""
from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from datamodules import build_datamodule
from experiments.execution.training import fit
from lightning_modules import ClassifierModule

DATA = {"domain": "pathology", "source": "synthetic", "image_size": 32, "num_patients": 700,
        "images_per_patient": 4, "seed": 0, "dev_set": "d1/10", "batch_size": 32, "num_workers": 0}


def test_auc(module: ClassifierModule, data) -> float:
    images, labels = zip(*data.test_dataloader())
    with torch.no_grad():
        probs = torch.sigmoid(module.model.eval()(torch.cat(images))[:, 0])
    return roc_auc_score(torch.cat(labels).numpy(), probs.numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--patients", type=int, default=DATA["num_patients"], help="fewer for a smoke run")
    args = parser.parse_args()
    torch.set_num_threads(2)
    settings = {**DATA, "num_patients": args.patients}
    data = build_datamodule(settings)
    sizes = {stage: len(data.dataset(stage)) for stage in ("train", "val", "test")}
    print(f"data: {settings} -> {sizes} images")
    cfg = OmegaConf.create({"train": {"max_epochs": args.epochs, "patience": args.patience},
                            "trainer": {"accelerator": args.accelerator, "devices": 1, "strategy": "auto",
                                        "precision": "32-true"}})
    print("| init | seed | val AUC (best epoch) | test AUC |\n|---|---|---|---|")
    for init in ("imagenet", "random"):
        for seed in args.seeds:
            pl.seed_everything(seed, workers=True, verbose=False)
            module = ClassifierModule("efficientnet_lite0", init, data.task, data.num_outputs, data.channels,
                                      lr=args.lr, weight_decay=1e-4)
            val_auc = fit(module, data, cfg, progress=False)
            print(f"| {init} | {seed} | {val_auc:.4f} | {test_auc(module, data):.4f} |", flush=True)


if __name__ == "__main__":
    main()
