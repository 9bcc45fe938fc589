"""Scaling: a study's wall time on the local executor against the ray executor with 1 and 2 workers.

The same grid (N tiny CNNs, every surrogate against every target, one iterative attack) runs on three
sides in turn (`--repeats` rounds), each run in a fresh MLflow store and output folder:
`executor=local` in this process (torch on all C CPUs), then `executor=ray` on a local Ray of C CPUs
with one task at a time (`ray.cpus_per_task=C`) and with two at a time (`ray.cpus_per_task=C/2`).
Each Ray side starts its own Ray first (not timed) so that its worker processes start inside the
timed study, as they do in a real run. The generated data set is made, and a one-model study run to
warm this process up, before any side is timed.
Prints a Markdown table of median wall times and median per-round speed-ups over the local executor,
and the largest difference between the local and the 1-worker table (same thread count: 0).

    python benchmarks/bench_scaling.py --models 6 --patients 800 --epochs 6 --steps 40 --repeats 2
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

from experiments.design.config import load_config
from experiments.execution import read_data
from experiments.execution.evaluation import PAIR_METRICS
from experiments.study import run_study

TIMINGS = {"craft_seconds", "eval_seconds"}


def study_config(args, root: Path, side: str, *extra: str):
    models = ", ".join(f"{{name: m{i}, arch: tiny_cnn, instance: {i}}}" for i in range(args.models))
    return load_config(None, [
        "name=scaling", f"output_dir={root / side}", f"tracking.uri=sqlite:///{root / side / 'mlflow.db'}",
        f"models=[{models}]", "pairs=all", "bootstrap_resamples=0", "data.domain=pathology",
        f"data.image_size={args.size}", f"data.num_patients={args.patients}", "data.images_per_patient=2",
        f"data.cache_dir={root / 'data'}", f"train.max_epochs={args.epochs}", f"train.patience={args.epochs}",
        f"attacks=[{{name: ifgsm, eps: [0.01], params: {{alpha: 0.0025, steps: {args.steps}}}}}]", *extra])


SIDES = [("local", 1), ("ray", 1), ("ray", 2)]


def timed_study(args, root: Path, executor: str, workers: int, run: int):
    """(seconds, table) of the study on one side, in a fresh store; Ray started first, not timed."""
    side = f"{executor}{workers}-{run}"
    if executor == "local":
        cfg = study_config(args, root, side)
    else:
        cfg = study_config(args, root, side, "executor=ray", f"ray.cpus_per_task={args.cpus / workers:g}")
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        start = time.perf_counter()
        table = run_study(cfg).table
        return time.perf_counter() - start, table
    finally:
        if executor == "ray":
            ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cpus", type=int, default=min(2, os.cpu_count() or 1),
                        help="CPUs of each side (C); 2 workers use C/2 each")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the three sides, in turn")
    args = parser.parse_args()
    torch.set_num_threads(args.cpus)

    seconds = {side: [] for side in SIDES}
    difference = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        read_data(study_config(args, root, "data"))  # generated and cached once, before any timing
        # an untimed one-model study first, so this process's one-off costs (imports, first trainer)
        # do not fall on the local side of round 1
        run_study(study_config(argparse.Namespace(**{**vars(args), "models": 1, "epochs": 1, "steps": 1}),
                               root, "warm-up")).table
        for run in range(args.repeats):
            tables = {}
            for side in SIDES:
                wall, tables[side] = timed_study(args, root, *side, run)
                seconds[side].append(wall)
                print(f"round {run + 1}: {side[0]} x{side[1]}: {wall:.1f} s", flush=True)
            columns = [c for c in PAIR_METRICS if c not in TIMINGS]
            local, one = (tables[side][columns].to_numpy(float) for side in SIDES[:2])
            difference = max(difference, float(np.nanmax(np.abs(local - one))))

    print(f"\n{args.models} models, {args.models} sets, {args.models ** 2} pairs; {args.cpus} CPUs per side; "
          f"{args.repeats} round(s), medians\n")
    print("| executor | workers | wall s | speed-up vs local (median of per-round ratios) |")
    print("|----------|--------:|-------:|-----------------------------------------------:|")
    for side in SIDES:
        ratios = [local / wall for local, wall in zip(seconds[SIDES[0]], seconds[side])]
        print(f"| {side[0]} | {side[1]} | {np.median(seconds[side]):.1f} | {np.median(ratios):.2f}x |")
    print(f"\nlargest difference between the local and the ray 1-worker table: {difference:g}")


if __name__ == "__main__":
    main()
