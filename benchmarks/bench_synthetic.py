"""Synthetic domains: generation speed, and difficulty for a tiny CNN / EfficientNet-Lite0.

    python benchmarks/bench_synthetic.py speed [--n 10000 --size 64]
    python benchmarks/bench_synthetic.py difficulty [--epochs 6 --patients 700 --size 32]
    python benchmarks/bench_synthetic.py pretraining [--domain pathology --epochs 6]

`difficulty` trains tiny_cnn (random init) on d1 of each domain and prints the clean test AUC
(sklearn, macro over labels); `pretraining` trains EfficientNet-Lite0 from ImageNet and random
init on d1/10 and prints both test AUCs. Generation is not cached here (cache_dir none).
"""
from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
from sklearn.metrics import roc_auc_score

from datamodules import build_datamodule
from datamodules.synthetic import GENERATORS
from lightning_modules import ClassifierModule


def speed(args) -> None:
    for domain, (generate, _, _) in GENERATORS.items():
        start = time.perf_counter()
        images, _, _ = generate(num_patients=args.n // 4, images_per_patient=4, size=args.size, seed=0)
        print(f"{domain:14s} {len(images)} images of {args.size}px: {time.perf_counter() - start:.2f} s")


def test_auc(module: ClassifierModule, data) -> float:
    module.eval()
    scores, labels = [], []
    with torch.no_grad():
        for x, y in data.test_dataloader():
            scores.append(torch.sigmoid(module(x)) if data.task != "multiclass" else module(x).softmax(1))
            labels.append(y)
    scores, labels = torch.cat(scores).squeeze(1).numpy(), torch.cat(labels).numpy()
    return float(roc_auc_score(labels, scores, average="macro"))


def train(domain: str, arch: str, init: str, dev_set: str, args) -> float:
    pl.seed_everything(args.seed, workers=True, verbose=False)
    data = build_datamodule(dict(domain=domain, source="synthetic", image_size=args.size,
                                 num_patients=args.patients, images_per_patient=4, seed=args.seed,
                                 dev_set=dev_set, batch_size=64, cache_dir="none", signal=args.signal))
    module = ClassifierModule(arch, init, data.task, data.num_outputs, data.channels, lr=args.lr)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False, deterministic=True)
    trainer.fit(module, datamodule=data)
    return test_auc(module, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["speed", "difficulty", "pretraining"])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--patients", type=int, default=700)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--signal", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--domain", default="all")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    domains = list(GENERATORS) if args.domain == "all" else [args.domain]
    if args.what == "speed":
        args.size = args.size or 64
        speed(args)
    elif args.what == "difficulty":
        args.size = args.size or 32
        for domain in domains:
            start = time.perf_counter()
            auc = train(domain, "tiny_cnn", "random", "d1", args)
            print(f"{domain:14s} tiny_cnn random d1: test AUC {auc:.3f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    else:
        args.size = args.size or 32
        for domain in domains:
            for init in ("imagenet", "random"):
                auc = train(domain, "efficientnet_lite0", init, "d1/10", args)
                print(f"{domain:14s} efficientnet_lite0 {init:8s} d1/10: test AUC {auc:.3f}", flush=True)


if __name__ == "__main__":
    main()
