"""`plan`'s time estimate for the smoke study against a measured run of it (fresh store, output
folder and data cache; `benchmarks/bench_plan.py`): within a factor of 2, as the README says."""
import importlib.util
from pathlib import Path

import pytest

BENCH_PLAN = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_plan.py"


@pytest.mark.slow
def test_plan_estimates_the_smoke_run_within_a_factor_of_2():
    spec = importlib.util.spec_from_file_location("bench_plan", BENCH_PLAN)
    bench_plan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_plan)
    estimate, wall = bench_plan.plan_and_run("smoke")
    assert 0.5 <= estimate / wall <= 2.0, f"plan {estimate:.1f} s, run {wall:.1f} s"
