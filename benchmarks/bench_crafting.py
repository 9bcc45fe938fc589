"""Crafting throughput: attacks.craft against a bare PyTorch loop and torchattacks called directly.

All three run iterative FGSM with the same parameters on the same model and batch, interleaved
over repeats so that machine load affects them alike; the median and best images/s of each, their
ratios to the bare loop and the median of the per-round ratios are printed. The three results are
also checked to agree.

    python benchmarks/bench_crafting.py --arch tiny_cnn --size 32 --batch 64 --steps 10 --repeats 21
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import torchattacks

from attacks import craft
from attacks.adapter import CrossEntropyView, attack_labels
from lightning_modules.model import build_classifier


def bare_ifgsm(model, images, labels, task, eps, alpha, steps):
    """The paper's iterative FGSM in plain PyTorch, on the task's own loss."""
    x = images.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        logits = model(x)
        if task == "multiclass":
            loss = F.cross_entropy(logits, labels)
        else:
            loss = F.binary_cross_entropy_with_logits(logits.reshape(labels.shape), labels.float())
        grad, = torch.autograd.grad(loss, x)
        x = x.detach() + alpha * grad.sign()
        x = torch.min(torch.max(x, images - eps), images + eps).clamp(0.0, 1.0)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny_cnn")
    parser.add_argument("--task", default="multiclass", choices=["binary", "multiclass", "multilabel"])
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    outputs = 1 if args.task == "binary" else 4
    model = build_classifier(args.arch, "random", args.task, outputs, args.channels).to(args.device).eval()
    images = torch.rand(args.batch, args.channels, args.size, args.size, device=args.device)
    if args.task == "multilabel":
        labels = torch.randint(0, 2, (args.batch, outputs), device=args.device)
    else:
        labels = torch.randint(0, max(outputs, 2), (args.batch,), device=args.device)
    cfg = {"name": "ifgsm", "eps": 2 / 255, "alpha": 0.5 / 255, "steps": args.steps}
    # torchattacks needs softmax logits: binary/multilabel models go through the framework's view.
    direct_model = model if args.task == "multiclass" else CrossEntropyView(model, args.task)
    eps, alpha, steps = cfg["eps"], cfg["alpha"], cfg["steps"]
    bim = torchattacks.BIM(direct_model, eps=eps, alpha=alpha, steps=steps)
    methods = {
        "bare loop": lambda: bare_ifgsm(model, images, labels, args.task, eps, alpha, steps),
        "torchattacks.BIM": lambda: bim(images, attack_labels(labels, args.task)),
        "attacks.craft": lambda: craft(model, images, labels, cfg, args.task),
    }
    results = {name: run() for name, run in methods.items()}  # warm-up, and the agreement check
    for name, result in results.items():
        agree = float((result - results["bare loop"]).abs().max())
        print(f"{name:>17}: max |difference to bare loop| = {agree:.2e}")

    seconds = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, run in methods.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)

    print(f"\n{args.arch} {args.task} {args.channels}x{args.size}x{args.size} batch {args.batch} "
          f"steps {args.steps} on {args.device}, {args.repeats} interleaved repeats")
    for label, pick in (("median", statistics.median), ("best", min)):
        rate = {name: args.batch / pick(times) for name, times in seconds.items()}
        for name in methods:
            print(f"{label:>6} {name:>17}: {rate[name]:9.1f} images/s   "
                  f"ratio to bare loop {rate[name] / rate['bare loop']:.3f}")
    # each round times both back to back: the median of the per-round ratios cancels slow drifts in load
    paired = statistics.median(bare / ours for bare, ours in zip(seconds["bare loop"], seconds["attacks.craft"]))
    print(f"\ncrafting overhead ratio (attacks.craft / bare loop images/s, median of {args.repeats} paired "
          f"rounds): {paired:.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
