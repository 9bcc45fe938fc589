"""Crafting throughput on a GPU: iterative FGSM on ResNet-50 and DenseNet-121 with fp32, bf16 autocast
and channels-last, against the model's bare forward+backward throughput in the same mode.

An attack of S steps costs S forward+backward passes per image, so `fraction` = crafting images/s x S
/ bare forward+backward images/s: 1.0 means crafting adds nothing to the passes it must make.

    python benchmarks/bench_gpu.py                                      # CUDA: 224 px, batch 64
    python benchmarks/bench_gpu.py --device cpu --size 64 --batch 8 --steps 2 --repeats 2
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from attacks import craft
from lightning_modules.model import build_classifier

MODES = {"fp32": {}, "bf16": {"precision": "bf16"}, "channels_last": {"channels_last": True},
         "bf16+channels_last": {"precision": "bf16", "channels_last": True}}


def timed(fns: list, device: torch.device, repeats: int) -> list[float]:
    """Best wall time of each function over `repeats` interleaved rounds (so that machine load hits
    them alike), after one warm-up call each."""
    best = [float("inf")] * len(fns)
    for round in range(repeats + 1):
        for i, fn in enumerate(fns):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round:
                best[i] = min(best[i], time.perf_counter() - start)
    return best


def bare_pass(model, images, labels, options):
    """One forward and backward pass to the input, as an attack step makes it."""
    x = images.clone()
    if options.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=options.get("precision") == "bf16"):
        loss = F.cross_entropy(model(x), labels)
    torch.autograd.grad(loss, x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet50", "densenet121"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    threads = f"CPU, {torch.get_num_threads()} threads"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else threads
    print(f"{name}; {args.size}px, batch {args.batch}, ifgsm {args.steps} steps, best of {args.repeats}")
    print(f"{'arch':12s} {'mode':20s} {'craft img/s':>12s} {'fwd+bwd img/s':>14s} {'fraction':>9s}")
    setting = {"name": "ifgsm", "eps": 0.01, "alpha": 0.0025, "steps": args.steps}
    for arch in args.archs:
        torch.manual_seed(0)
        images = torch.rand(args.batch, 3, args.size, args.size, device=device)
        labels = torch.randint(0, 2, (args.batch,), device=device)
        for mode in args.modes:
            options = MODES[mode]
            model = build_classifier(arch, "random", "multiclass", 2, 3).to(device).eval()
            if options.get("channels_last"):
                model.to(memory_format=torch.channels_last)
            crafting, bare = timed([lambda: craft(model, images, labels, setting, "multiclass", **options),
                                    lambda: bare_pass(model, images, labels, options)], device, args.repeats)
            craft_rate, bare_rate = args.batch / crafting, args.batch / bare
            print(f"{arch:12s} {mode:20s} {craft_rate:12.1f} {bare_rate:14.1f} "
                  f"{craft_rate * args.steps / bare_rate:9.3f}")


if __name__ == "__main__":
    main()
