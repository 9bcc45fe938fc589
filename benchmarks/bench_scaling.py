"""Scaling: a study's wall time on the local executor against the ray executor with 1 and 2 workers.

The same grid (N tiny CNNs, every surrogate against every target, one iterative attack) runs three
times side by side, each in a fresh MLflow store and output folder: `executor=local` in this process
(torch on all C CPUs), then `executor=ray` on a local Ray of C CPUs with one task at a time
(`ray.cpus_per_task=C`) and with two at a time (`ray.cpus_per_task=C/2`). Each Ray side starts its own
Ray first (not timed; printed) so that its worker processes start inside the timed study, as they do
in a real run. The generated data set is made once before any side is timed. Prints a Markdown table
of wall times and speed-ups over the local executor, and the largest difference between the local
and the 1-worker table (same thread count: 0).

    python benchmarks/bench_scaling.py --models 4 --patients 400 --epochs 3 --steps 20
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

from experiments.config import load_config
from experiments.evaluation import PAIR_METRICS
from experiments.study import read_data, run_study

TIMINGS = {"craft_seconds", "eval_seconds"}


def study_config(args, root: Path, side: str, *extra: str):
    models = ", ".join(f"{{name: m{i}, arch: tiny_cnn, instance: {i}}}" for i in range(args.models))
    return load_config(None, [
        "name=scaling", f"output_dir={root / side}", f"tracking.uri=sqlite:///{root / side / 'mlflow.db'}",
        f"models=[{models}]", "pairs=all", "bootstrap_resamples=0", "data.domain=pathology",
        f"data.image_size={args.size}", f"data.num_patients={args.patients}", "data.images_per_patient=2",
        f"data.cache_dir={root / 'data'}", f"train.max_epochs={args.epochs}", f"train.patience={args.epochs}",
        f"attacks=[{{name: ifgsm, eps: [0.01], params: {{alpha: 0.0025, steps: {args.steps}}}}}]", *extra])


def timed_study(cfg) -> tuple[float, object]:
    start = time.perf_counter()
    table = run_study(cfg)
    return time.perf_counter() - start, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cpus", type=int, default=min(2, os.cpu_count() or 1),
                        help="CPUs of each side (C); 2 workers use C/2 each")
    args = parser.parse_args()
    torch.set_num_threads(args.cpus)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        read_data(study_config(args, root, "data"))  # generated and cached once, before any timing
        rows = []
        seconds, local = timed_study(study_config(args, root, "local"))
        rows.append(("local", 1, seconds))
        for workers in (1, 2):
            start = time.perf_counter()
            ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING",
                     log_to_driver=False)
            print(f"Ray start ({args.cpus} CPUs, not timed): {time.perf_counter() - start:.1f} s")
            try:
                seconds, table = timed_study(study_config(args, root, f"ray{workers}", "executor=ray",
                                                          f"ray.cpus_per_task={args.cpus / workers:g}"))
            finally:
                ray.shutdown()
            rows.append(("ray", workers, seconds))
            if workers == 1:
                columns = [c for c in PAIR_METRICS if c not in TIMINGS]
                difference = np.nanmax(np.abs(table[columns].to_numpy(float)
                                              - local[columns].to_numpy(float)))

    pairs = args.models ** 2
    print(f"\n{args.models} models, {args.models} sets, {pairs} pairs; {args.cpus} CPUs per side\n")
    print("| executor | workers | wall s | speed-up vs local |")
    print("|----------|--------:|-------:|------------------:|")
    for executor, workers, seconds in rows:
        print(f"| {executor} | {workers} | {seconds:.1f} | {rows[0][2] / seconds:.2f}x |")
    print(f"\nlargest difference between the local and the ray 1-worker table: {difference:g}")


if __name__ == "__main__":
    main()
