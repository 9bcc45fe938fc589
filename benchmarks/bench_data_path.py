"""Data path: training-loader throughput against the model's training throughput, per domain and size.

For each synthetic domain at each size: images/s of iterating the training DataLoader (workers and
pinned memory as given) and images/s of training steps (forward, loss, backward, optimizer step) of
`--arch` on batches already in memory. The ratio loader / training must stay >= 3, so the loader is
never the bottleneck.

    python benchmarks/bench_data_path.py --arch densenet121 --sizes 64 224 --batch 16 --workers 0
"""
from __future__ import annotations

import argparse
import time

import torch

from datamodules import build_datamodule
from lightning_modules import ClassifierModule, tasks

DOMAINS = ("pathology", "radiology", "ophthalmology")


def loader_rate(loader, passes: int) -> float:
    count, start = 0, time.perf_counter()
    for _ in range(passes):
        for images, _ in loader:
            count += len(images)
    return count / (time.perf_counter() - start)


def training_rate(module: ClassifierModule, images, labels, steps: int) -> float:
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    module.train()
    for step in range(steps + 1):  # the first step warms up and is not timed
        if step == 1:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = tasks.loss(module.task, module(images), labels)
        loss.backward()
        optimizer.step()
    return steps * len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="densenet121")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--pin-memory", action="store_true")
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(f"{args.arch}, batch {args.batch}, {args.workers} loader workers, pin_memory {args.pin_memory}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'domain':14s} {'size':>5s} {'loader img/s':>13s} {'train img/s':>12s} {'ratio':>8s}")
    for domain in args.domains:
        for size in args.sizes:
            data = build_datamodule({"domain": domain, "source": "synthetic", "image_size": size,
                                     "num_patients": args.patients, "images_per_patient": 2,
                                     "cache_dir": "none",
                                     "batch_size": args.batch, "num_workers": args.workers,
                                     "pin_memory": args.pin_memory, "dev_set": "d1"})
            loader = data.train_dataloader()
            rate = loader_rate(loader, passes=2)
            images, labels = next(iter(loader))
            module = ClassifierModule(args.arch, "random", data.task, data.num_outputs, data.channels)
            train = training_rate(module, images, labels, args.steps)
            print(f"{domain:14s} {size:5d} {rate:13.1f} {train:12.1f} {rate / train:8.1f}")


if __name__ == "__main__":
    main()
