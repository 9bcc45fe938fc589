"""A smoke study on one device, checking that the device did the training, the crafting and the scoring.

Runs `medtransfer run` on the smoke preset in this process (fresh store and output folder under a
temporary directory, `crafting.device=auto`, `trainer.accelerator` for the device) and records the
device of every training batch, every crafted batch and every scored batch; exits 1 naming any stage
that ran elsewhere or not at all.

    python benchmarks/gpu_study_check.py                 # CUDA (trainer.accelerator=gpu)
    python benchmarks/gpu_study_check.py --device cpu    # the same check on the CPU
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

import attacks.prediction
from experiments.cli import main as medtransfer
from experiments.design.config import preset_path
from lightning_modules.classifier import ClassifierModule

SEEN: dict[str, set[str]] = defaultdict(set)


def recorded(stage: str, function, images_at):
    """`function`, recording the device type of the images it is given under `stage`."""
    def wrapper(*args, **kwargs):
        SEEN[stage].add(images_at(*args).device.type)
        return function(*args, **kwargs)
    return wrapper


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_study_check: no CUDA device visible (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    ClassifierModule.training_step = recorded("training", ClassifierModule.training_step,
                                              lambda module, batch, *_: batch[0])
    ClassifierModule.predict_step = recorded("scoring", ClassifierModule.predict_step,
                                             lambda module, batch, *_: batch[0])
    attacks.prediction.craft = recorded("crafting", attacks.prediction.craft, lambda model, images, *_: images)
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    with tempfile.TemporaryDirectory(prefix="gpu_study_check.") as root:
        code = medtransfer(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{root}/mlflow.db",
                            f"output_dir={Path(root) / 'out'}", f"trainer.accelerator={accelerator}",
                            "trainer.devices=1", "crafting.device=auto"])
    if code != 0:
        print(f"gpu_study_check: the smoke study exited {code}", file=sys.stderr)
        return 1
    wrong = [f"{stage} ran on {', '.join(sorted(SEEN[stage])) or 'nothing'}"
             for stage in ("training", "crafting", "scoring") if SEEN[stage] != {args.device}]
    if wrong:
        print(f"gpu_study_check: expected every stage on {args.device}: {'; '.join(wrong)}", file=sys.stderr)
        return 1
    print(f"gpu_study_check: training, crafting and scoring all ran on {args.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
