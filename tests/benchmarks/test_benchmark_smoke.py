"""Every benchmark script runs with tiny arguments and prints its figure, so none rots unseen.
The scripts run in this process (`runpy`, their own `__main__`), which saves a start of torch each."""
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
NUMBER = r"([0-9]+\.[0-9]+(?:e[-+][0-9]+)?)"


def run_script(name: str, *args: str, capsys) -> str:
    """What `python benchmarks/<name> args...` prints; it must not exit with a failure. The process's
    environment is restored after it (a script may set variables for itself, e.g. TQDM_DISABLE, which
    the suite's later subprocesses would otherwise inherit)."""
    argv, path, environment = sys.argv, list(sys.path), dict(os.environ)
    sys.argv, sys.path = [str(BENCHMARKS / name), *args], [str(BENCHMARKS), *sys.path]  # as `python script`
    try:
        runpy.run_path(str(BENCHMARKS / name), run_name="__main__")
    except SystemExit as stop:
        assert stop.code in (None, 0), f"{name} exited {stop.code}"
    finally:
        sys.argv, sys.path[:] = argv, path
        os.environ.clear()
        os.environ.update(environment)
    return capsys.readouterr().out


def figures(pattern: str, text: str) -> list[float]:
    found = [float(value) for value in re.findall(pattern, text)]
    assert found, f"no {pattern!r} in:\n{text}"
    return found


def test_bench_crafting(capsys):
    out = run_script("bench_crafting.py", "--size", "8", "--batch", "4", "--steps", "2", "--repeats", "1",
                     "--device", "cpu", capsys=capsys)
    assert max(figures(r"difference to bare loop\| = " + NUMBER, out)) <= 1e-5
    assert figures(r"crafting overhead ratio[^\n]*?: " + NUMBER, out)[0] > 0


def test_bench_gpu_on_the_cpu(capsys):
    out = run_script("bench_gpu.py", "--device", "cpu", "--archs", "resnet18", "--size", "16", "--batch", "2",
                     "--steps", "1", "--repeats", "1", capsys=capsys)
    rows = re.findall(r"resnet18\s+\S+\s+" + NUMBER + r"\s+" + NUMBER + r"\s+" + NUMBER, out)
    assert len(rows) >= 2 and all(float(v) > 0 for row in rows for v in row), out


def test_bench_study_crafting(capsys):
    out = run_script("bench_study_crafting.py", "--arch", "tiny_cnn", "--size", "16", "--batch", "4",
                     "--batches", "1", "--steps", "1", "--rounds", "1", capsys=capsys)
    assert max(figures(NUMBER + " of the pixels differ", out)) <= 1e-3
    assert all(rate > 0 for rate in figures(r"study\s+" + NUMBER + " images/s", out))


def test_bench_synthetic_speed(capsys):
    out = run_script("bench_synthetic.py", "speed", "--n", "20", "--size", "16", capsys=capsys)
    assert len(re.findall(r"20 images of 16px: " + NUMBER + " s", out)) == 3, out


def test_bench_data_path(capsys):
    out = run_script("bench_data_path.py", "--arch", "tiny_cnn", "--domains", "pathology", "--sizes", "16",
                     "--batch", "4", "--patients", "8", "--steps", "1", capsys=capsys)
    row = re.search(r"pathology\s+16\s+" + NUMBER + r"\s+" + NUMBER + r"\s+" + NUMBER, out)
    assert row and all(float(v) > 0 for v in row.groups()), out


def test_gpu_check_dry_run_lists_its_steps():
    out = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert [line.split(": ", 1)[1].split()[1] for line in out] == [
        "benchmarks/bench_gpu.py", "benchmarks/bench_study_crafting.py", "benchmarks/gpu_study_check.py"]
    assert all((BENCHMARKS.parent / line.split(": ", 1)[1].split()[1]).is_file() for line in out)


def run_process(name: str, *args: str) -> str:
    """What `python benchmarks/<name> args...` prints, run in a process of its own (these scripts run
    whole studies or patch the study's modules); it must exit 0."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True,
                          timeout=900, cwd=BENCHMARKS.parent)
    assert done.returncode == 0, f"{name} exited {done.returncode}: {done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_gpu_study_check_on_the_cpu():
    out = run_process("gpu_study_check.py", "--device", "cpu")
    assert "training, crafting and scoring all ran on cpu" in out


@pytest.mark.slow
def test_pretraining_d1_10():
    out = run_process("pretraining_d1_10.py", "--epochs", "1", "--patients", "60")
    aucs = re.findall(r"\| (\w+) \| 0 \| " + NUMBER + r" \| " + NUMBER + r" \|", out)
    assert [init for init, *_ in aucs] == ["imagenet", "random"], out
    assert all(0.0 <= float(v) <= 1.0 for _, *values in aucs for v in values)


@pytest.mark.slow
def test_bench_grid_reuse():
    out = run_process("bench_grid_reuse.py", "--models", "2", "--size", "16", "--patients", "60", "--steps", "2")
    assert figures(r"speed-up naive / framework: " + NUMBER, out)[0] > 0
    assert "metrics identical for all 4 pairs" in out and out.rstrip().endswith("True"), out


def test_bench_real_data(capsys):
    out = run_script("bench_real_data.py", "--rows", "200", "--png", "16", "--size", "16", "--batch", "4",
                     "--batches", "1", "--rounds", "1", capsys=capsys)
    rates = re.findall(r"\| (real|synthetic) \| ([0-9]+) \| ([0-9]+) \|", out)
    assert [name for name, *_ in rates] == ["real", "synthetic"] and all(int(v) > 0 for _, *r in rates for v in r)
    assert figures(r"synthetic / real: training " + NUMBER, out)[0] > 0


@pytest.mark.slow
def test_bench_scaling():
    out = run_process("bench_scaling.py", "--models", "2", "--patients", "40", "--epochs", "1", "--steps", "1",
                      "--repeats", "1")
    assert re.search(r"\| ray \| 2 \| " + NUMBER, out), out
    assert "largest difference between the local and the ray 1-worker table: 0\n" in out


@pytest.mark.slow
def test_bench_memory():
    out = run_process("bench_memory.py", "--patients", "80", "160", "--size", "16")
    growth = figures(r"peak RSS x" + NUMBER, out)
    assert len(growth) == 2 and all(0.5 < g < 2.0 for g in growth), out
