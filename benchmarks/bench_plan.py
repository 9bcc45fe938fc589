"""`plan`'s time estimate against the wall time of the run it predicts, preset by preset.

For each preset: a fresh store, output folder and data cache under a temporary folder; `plan` in a
process of its own (its estimate includes that process's start, as a run pays it), then
`medtransfer run` with the same arguments, timed from its start to its exit. Prints the estimate,
the wall time and their ratio (goal: between 0.5 and 2).

    python benchmarks/bench_plan.py                      # smoke, demo, defences
    python benchmarks/bench_plan.py smoke demo
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.design.config import preset_path

PLAN = "from experiments import plan_study; from experiments.design.config import load_config; import sys; " \
       "print(plan_study(load_config(sys.argv[1], sys.argv[2:])).seconds)"


def plan_and_run(preset: str) -> tuple[float, float]:
    """(`plan`'s estimate, the measured wall time of `medtransfer run`) in seconds for a preset, each
    in a process of its own, on a fresh store, output folder and data cache."""
    with tempfile.TemporaryDirectory(prefix=f"bench_plan.{preset}.") as root:
        folder = Path(root)
        overrides = [f"tracking.uri=sqlite:///{folder / 'mlflow.db'}", f"output_dir={folder / 'out'}",
                     f"data.cache_dir={folder / 'cache'}"]
        config = str(preset_path(preset))
        planned = subprocess.run([sys.executable, "-c", PLAN, config, *overrides], capture_output=True,
                                 text=True, check=True)
        estimate = float(planned.stdout.strip().splitlines()[-1])
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "experiments", "run", "--config", config, *overrides],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return estimate, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", default=["smoke", "demo", "defences"])
    args = parser.parse_args()
    rows = []
    for preset in args.presets:
        estimate, wall = plan_and_run(preset)
        rows.append((preset, estimate, wall))
        print(f"{preset:>10}: plan {estimate:8.1f} s, run {wall:8.1f} s, plan / run {estimate / wall:5.2f}",
              flush=True)
    worst = max(max(e / w, w / e) for _, e, w in rows)
    print(f"largest factor between plan and run: {worst:.2f} (goal <= 2)")


if __name__ == "__main__":
    main()
