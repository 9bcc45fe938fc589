"""Faults (issue 8): a study stopped by SIGKILL or Ctrl-C at each stage, concurrent shards, determinism.

The stopped, sharded and repeated studies are real `python -m experiments run` processes; results are
checked against an uninterrupted, unsharded run of the same config in the test process. The SIGKILL at
the logging stage is in tests/experiments/test_resume.py.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from attacks import AdversarialSetCache
from attacks.cache import SUFFIX
from experiments import load_config, run_study
from experiments.design.config import preset_path
from experiments.execution.evaluation import PAIR_METRICS
from experiments.store.tracking import setup_experiment

CONFIG = preset_path("smoke")
# the smoke study with training and crafting stages that last about a second each, long enough to hit
SLOW_STAGES = ["train.max_epochs=20", "train.patience=20",
               "attacks=[{name: fgsm, eps: [0.02]},"
               " {name: ifgsm, eps: [0.02], params: {alpha: 0.002, steps: 150}}]"]
TIMINGS = {"craft_seconds", "eval_seconds"}
INTERRUPTED = "medtransfer: interrupted; finished work is kept, run the same command again to resume"
# subprocesses use the test process's thread count, so float results may be compared exactly
ENV = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


def study_args(uri: str, output_dir: Path, *extra: str) -> list[str]:
    return [f"tracking.uri={uri}", f"output_dir={output_dir}", *extra]


def sqlite_uri(directory: Path) -> str:
    return f"sqlite:///{directory / 'mlflow.db'}"


def default_sigint() -> None:
    """Run in the child before it starts: the default SIGINT disposition, which a suite started from a
    background shell (SIGINT ignored, and inherited) would otherwise pass on, so Python installs its
    KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], log: Path, shard: str = "0/1") -> subprocess.Popen:
    """The CLI on a study, stderr to `log`, with the default SIGINT handler. The store is created
    first, so the test's polling never races the subprocess's schema migration."""
    overrides = dict(arg.split("=", 1) for arg in args)
    setup_experiment(overrides["tracking.uri"], overrides.get("tracking.experiment", "smoke"))
    with open(log, "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "experiments", "run", "--config", str(CONFIG),
                                 "--shard", shard, *args], stdout=subprocess.DEVNULL, stderr=stderr, env=ENV,
                                preexec_fn=default_sigint)


def runs(uri: str, kind: str, experiment: str = "smoke") -> list:
    """The experiment's runs of a kind (model, pair, study), deleted ones left out."""
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], f"tags.kind = '{kind}'", max_results=1000)


def training_in_progress(uri: str, output_dir: Path):
    """A training run that has logged an epoch and is still running, or None."""
    running = (run for run in runs(uri, "model") if run.info.status == "RUNNING" and run.data.metrics)
    return next(running, None)


def crafting_in_progress(uri: str, output_dir: Path):
    """A set being written to the adversarial-set cache (its temporary file), or None."""
    return next((output_dir / "adversarial_sets").glob("*.tmp"), None)


STAGES = {"training": training_in_progress, "crafting": crafting_in_progress}


def wait_for(process: subprocess.Popen, stage: str, uri: str, output_dir: Path):
    """Poll until the study is in `stage`; what shows it (a running training run or a temporary file)."""
    deadline = time.monotonic() + 240
    while (found := STAGES[stage](uri, output_dir)) is None:
        assert process.poll() is None, f"the study ended before its {stage} stage was caught"
        assert time.monotonic() < deadline, f"no {stage} stage within 240 s"
        time.sleep(0.02)
    return found


def assert_same_results(table, reference):
    columns = [c for c in PAIR_METRICS if c not in TIMINGS]
    keys = ["seed", "surrogate", "target", "attack", "eps"]
    assert list(table[keys].itertuples(index=False)) == list(reference[keys].itertuples(index=False))
    np.testing.assert_allclose(table[columns].to_numpy(float), reference[columns].to_numpy(float), atol=1e-6)


def assert_same_sets(output_dir: Path, reference_dir: Path):
    """The cache holds the reference's sets, each complete and equal to the reference's byte for
    byte, and no half-written file."""
    ours = AdversarialSetCache(output_dir / "adversarial_sets")
    theirs = AdversarialSetCache(reference_dir / "adversarial_sets")
    assert not list(ours.root.glob("*.tmp"))
    keys = sorted(path.stem for path in ours.root.glob(f"*{SUFFIX}"))
    assert keys == sorted(path.stem for path in theirs.root.glob(f"*{SUFFIX}"))
    for key in keys:
        assert ours.path(key).read_bytes() == theirs.path(key).read_bytes(), key


def assert_one_finished_run_each(uri: str, reference: tuple, experiment: str = "smoke"):
    """One FINISHED training run per model, one FINISHED pair run per table row, one FINISHED study run."""
    table = reference[0]
    models, pairs = runs(uri, "model", experiment), runs(uri, "pair", experiment)
    assert sorted(r.info.status for r in models) == ["FINISHED", "FINISHED"]
    assert sorted(r.info.run_name for r in models) == ["a", "b"]
    assert len({r.data.tags["config_hash"] for r in models}) == 2
    assert len(pairs) == len(table) and all(r.info.status == "FINISHED" for r in pairs)
    assert len({r.data.tags["config_hash"] for r in pairs}) == len(pairs)
    assert [r.info.status for r in runs(uri, "study", experiment)] == ["FINISHED"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(table, output dir) of the uninterrupted, unsharded SLOW_STAGES study, run in this process."""
    directory = tmp_path_factory.mktemp("reference")
    table = run_study(load_config(CONFIG, study_args(sqlite_uri(directory), directory, *SLOW_STAGES))).table
    return table, directory


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["training", "crafting"])
def test_sigkill_then_rerun_gives_the_reference_and_no_partial_runs(stage, tmp_path, reference):
    """SIGKILL mid-stage; the rerun gives the reference table, one finished run per piece of work and
    the reference's sets; a training run the kill left RUNNING is deleted."""
    uri, output_dir = sqlite_uri(tmp_path), tmp_path / "out"
    args = study_args(uri, output_dir, *SLOW_STAGES)
    process = start(args, tmp_path / "stderr.txt")
    caught = wait_for(process, stage, uri, output_dir)
    process.kill()
    assert process.wait() == -signal.SIGKILL
    if stage == "training":
        assert MlflowClient(uri).get_run(caught.info.run_id).info.status == "RUNNING"  # left behind

    assert_same_results(run_study(load_config(CONFIG, args)).table, reference[0])
    assert_one_finished_run_each(uri, reference)
    if stage == "training":  # the killed process's run was deleted, not left beside the new one
        assert MlflowClient(uri).get_run(caught.info.run_id).info.lifecycle_stage == "deleted"
    assert_same_sets(output_dir, reference[1])


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["training", "crafting"])
def test_ctrl_c_stops_cleanly_with_runs_killed_and_the_cache_intact(stage, tmp_path, reference):
    """SIGINT mid-stage: exit 130 with one line and no traceback, the study run (and the training run
    in progress) KILLED, no temporary file in the cache; the rerun then gives the reference."""
    uri, output_dir = sqlite_uri(tmp_path), tmp_path / "out"
    args = study_args(uri, output_dir, *SLOW_STAGES)
    process = start(args, tmp_path / "stderr.txt")
    caught = wait_for(process, stage, uri, output_dir)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == INTERRUPTED

    assert [r.info.status for r in runs(uri, "study")] == ["KILLED"]
    if stage == "training":
        assert MlflowClient(uri).get_run(caught.info.run_id).info.status == "KILLED"
    assert not list((output_dir / "adversarial_sets").glob("*.tmp"))

    assert_same_results(run_study(load_config(CONFIG, args)).table, reference[0])
    assert_one_finished_run_each(uri, reference)
    assert_same_sets(output_dir, reference[1])  # the rerun keeps the sets stored before the Ctrl-C


@pytest.mark.slow
def test_concurrent_shards_on_one_server_do_each_piece_of_work_once(tmp_path, mlflow_server, reference):
    """Shards 0/2 and 1/2 at once on one tracking server and output dir (both need model a first):
    each model trained once, each pair logged once, the reference's sets; an unsharded run assembles
    the reference table without adding runs."""
    experiment = f"faults-shards-{tmp_path.name}"
    output_dir = tmp_path / "out"
    args = study_args(mlflow_server, output_dir, f"tracking.experiment={experiment}", *SLOW_STAGES)
    shards = [start(args, tmp_path / f"stderr{i}.txt", shard=f"{i}/2") for i in range(2)]
    for i, shard in enumerate(shards):
        assert shard.wait(timeout=300) == 0, (tmp_path / f"stderr{i}.txt").read_text()[-3000:]
    assert_one_finished_run_each(mlflow_server, reference, experiment)  # each model trained once
    assert_same_sets(output_dir, reference[1])

    assembled = run_study(load_config(CONFIG, args)).table  # nothing left to do: reads the pairs back
    assert_same_results(assembled, reference[0])
    assert_one_finished_run_each(mlflow_server, reference, experiment)


def logged_metrics(uri: str, kind: str) -> dict:
    """{config hash: metrics} of an experiment's runs of a kind, timings left out."""
    return {r.data.tags["config_hash"]: {k: v for k, v in r.data.metrics.items() if k not in TIMINGS}
            for r in runs(uri, kind)}


@pytest.mark.slow
def test_same_seed_gives_identical_metrics_in_two_processes(tmp_path):
    """The plain smoke study twice, side by side in two processes with separate stores and outputs."""
    directories = [tmp_path / "first", tmp_path / "second"]
    processes = [start(study_args(sqlite_uri(d), d), tmp_path / f"{d.name}.txt") for d in directories]
    for process, directory in zip(processes, directories):
        assert process.wait(timeout=300) == 0, (tmp_path / f"{directory.name}.txt").read_text()[-3000:]
    first, second = (sqlite_uri(d) for d in directories)
    for kind, count in (("model", 2), ("pair", 8)):
        assert len(logged_metrics(first, kind)) == count
        assert logged_metrics(first, kind) == logged_metrics(second, kind)
    assert_same_sets(*directories)
