"""The `ray` executor (issue 15) on a real local Ray with 2 CPUs, one session for the module.

Results are checked against the local executor on the same config: the reference runs in this
process with one torch thread, as each Ray task here does (`ray.cpus_per_task=1` gives a worker
OMP_NUM_THREADS=1), so the float results may be compared exactly.
"""
import _thread
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from experiments import load_config, run_study
from experiments.design.config import ConfigError, preset_path
from experiments.design.identity import study_key
from experiments.execution.evaluation import PAIR_METRICS
from experiments.store.tracking import setup_experiment
from experiments.preflight.facts import study_facts

ray = pytest.importorskip("ray")

CONFIG = preset_path("smoke")
# training long enough (about a second per model) for a worker to be caught mid-training
SLOW_TRAINING = ["train.max_epochs=12", "train.patience=12"]
TIMINGS = {"craft_seconds", "eval_seconds"}
ON_RAY = ["executor=ray", "ray.cpus_per_task=1"]


def study_args(root: Path, *extra: str) -> list[str]:
    return [f"tracking.uri=sqlite:///{root / 'mlflow.db'}", f"output_dir={root / 'out'}", *SLOW_TRAINING,
            *extra]


def runs(root: Path, kind: str) -> list:
    """The smoke experiment's runs of a kind (model, pair, study), deleted ones left out."""
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke").experiment_id
    return client.search_runs([experiment], f"tags.kind = '{kind}'", max_results=1000)


def worker_pid(run) -> int:
    host, _, pid = run.data.tags["worker"].rpartition(":")
    assert host == socket.gethostname()
    return int(pid)


def assert_same_results(table, reference):
    columns = [c for c in PAIR_METRICS if c not in TIMINGS]
    keys = ["seed", "surrogate", "target", "attack", "eps"]
    assert list(table[keys].itertuples(index=False)) == list(reference[keys].itertuples(index=False))
    np.testing.assert_array_equal(table[columns].to_numpy(float), reference[columns].to_numpy(float))


def assert_one_finished_run_each(root: Path, table):
    """One FINISHED training run per model, one FINISHED pair run per table row, with distinct identities."""
    models, pairs = runs(root, "model"), runs(root, "pair")
    assert sorted((r.info.run_name, r.info.status) for r in models) == [("a", "FINISHED"), ("b", "FINISHED")]
    assert len({r.data.tags["config_hash"] for r in models}) == 2
    assert len(pairs) == len(table) and all(r.info.status == "FINISHED" for r in pairs)
    assert sorted(r.info.run_id for r in pairs) == sorted(table["run_id"])


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(table, store folder) of the study on the local executor, with one torch thread."""
    root = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_study(load_config(CONFIG, study_args(root))).table, root
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def on_ray(ray_session, tmp_path_factory):
    """(table, store folder) of the same study on the ray executor."""
    root = tmp_path_factory.mktemp("ray")
    return run_study(load_config(CONFIG, study_args(root, *ON_RAY))).table, root


@pytest.mark.slow  # Ray's start-up and a study on each executor: about 40 s here
def test_ray_gives_the_local_table_with_the_work_done_in_ray_workers(reference, on_ray):
    table, root = on_ray
    assert_same_results(table, reference[0])
    assert_one_finished_run_each(root, table)
    work = runs(root, "model") + runs(root, "pair")
    pids = {worker_pid(run) for run in work}
    assert os.getpid() not in pids
    for pid in pids:  # Ray keeps its workers for the session: each is a live `ray::` process
        assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::")
    local_work = runs(reference[1], "model") + runs(reference[1], "pair")
    assert {worker_pid(run) for run in local_work} == {os.getpid()}


@pytest.mark.slow  # Ray's start-up and a study on each executor: about 40 s here
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_either_executor_reads_back_what_the_other_logged(executor, reference, on_ray):
    """Same identities: each executor, rerun on the other's store, finds every run and adds none."""
    table, root = on_ray if executor == "local" else reference
    before = {kind: sorted(r.info.run_id for r in runs(root, kind)) for kind in ("model", "pair", "study")}
    again = run_study(load_config(CONFIG, study_args(root, f"executor={executor}", "ray.cpus_per_task=1"))).table
    assert list(again["run_id"]) == list(table["run_id"])
    assert {kind: sorted(r.info.run_id for r in runs(root, kind)) for kind in before} == before


def training_worker(root: Path):
    """A Ray worker's training run that has logged an epoch and is still running, or None."""
    running = (run for run in runs(root, "model") if run.info.status == "RUNNING" and run.data.metrics)
    return next((run for run in running if worker_pid(run) != os.getpid()), None)


class Watcher(threading.Thread):
    """Waits for a Ray worker's training run, notes it in `caught` and calls `action(run)`; `join`
    (after the study) ends the wait if no training run was seen."""

    def __init__(self, root: Path, action, caught: list):
        super().__init__(daemon=True)
        self.root, self.action, self.caught, self.done = root, action, caught, threading.Event()

    def run(self):
        while (run := training_worker(self.root)) is None and not self.done.is_set():
            time.sleep(0.02)
        if run is not None:
            self.caught.append(run)
            self.action(run)

    def join(self, timeout=None):
        self.done.set()
        super().join(timeout)


def when_training(root: Path, action, caught: list) -> Watcher:
    """A started `Watcher` (the store made first, so that it can be polled)."""
    setup_experiment(f"sqlite:///{root / 'mlflow.db'}", "smoke")
    watcher = Watcher(root, action, caught)
    watcher.start()
    return watcher


@pytest.mark.slow
def test_a_killed_worker_task_is_retried_without_duplicates(ray_session, reference, tmp_path):
    """SIGKILL to the worker training a model: Ray retries the task, the retry deletes the dead
    attempt's RUNNING run, and the study ends with the reference table and one run per piece of work."""
    caught = []
    watcher = when_training(tmp_path, lambda run: os.kill(worker_pid(run), signal.SIGKILL), caught)
    table = run_study(load_config(CONFIG, study_args(tmp_path, *ON_RAY))).table
    watcher.join()
    assert caught, "no training run was caught in a Ray worker"
    killed = caught[0]
    assert_same_results(table, reference[0])
    assert_one_finished_run_each(tmp_path, table)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(killed.info.run_id).info.lifecycle_stage == "deleted"
    redone = next(r for r in runs(tmp_path, "model") if r.info.run_name == killed.info.run_name)
    assert worker_pid(redone) != worker_pid(killed)


@pytest.mark.slow
def test_ctrl_c_cancels_the_tasks_and_ends_the_study_killed(ray_session, tmp_path):
    """A Ctrl-C in the driver while a worker trains: KeyboardInterrupt, the study run KILLED, the
    training run in progress KILLED by its cancelled task, no run FINISHED after it. (A run the
    interrupt caught before its training began may stay RUNNING; a rerun deletes it as stale.)"""
    caught = []
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # also when SIGINT is ignored
    try:
        watcher = when_training(tmp_path, lambda run: _thread.interrupt_main(), caught)
        with pytest.raises(KeyboardInterrupt):
            run_study(load_config(CONFIG, study_args(tmp_path, *ON_RAY, "train.max_epochs=100",
                                                     "train.patience=100"))).table
    finally:
        signal.signal(signal.SIGINT, handler)
    watcher.join()
    assert [r.info.status for r in runs(tmp_path, "study")] == ["KILLED"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(caught[0].info.run_id).info.status == "KILLED"
    assert "FINISHED" not in {r.info.status for r in runs(tmp_path, "model")} and not runs(tmp_path, "pair")


def test_executor_and_ray_keys_are_checked_and_never_part_of_the_study_identity():
    base = load_config(CONFIG)
    moved = load_config(CONFIG, ["executor=ray", "ray.address=auto", "ray.gpus_per_task=0.5",
                                 "ray.cpus_per_task=4"])
    assert study_key(moved, study_facts(moved)) == study_key(base, study_facts(base))
    for bad, key in (("executor=dask", "executor"), ("ray.cpus_per_task=0", "ray.cpus_per_task"),
                     ("ray.gpus_per_task=1.5", "ray.gpus_per_task")):
        with pytest.raises(ConfigError, match=f"^{key}: "):
            load_config(CONFIG, [bad])
    with pytest.raises(ConfigError, match="^trainer.devices: 2; executor: ray"):
        load_config(CONFIG, ["executor=ray", "trainer.devices=2"])
    load_config(CONFIG, ["trainer.devices=2"])  # the local executor may use several


@pytest.mark.slow  # a CLI process and Ray's connection timeout
def test_unreachable_ray_address_is_one_line_before_any_work(tmp_path, unused_port):
    """The CLI in a fresh process (no Ray session): exit 2, one line naming ray.address, nothing written."""
    address = f"127.0.0.1:{unused_port}"
    result = subprocess.run([sys.executable, "-m", "experiments", "run", "--config", str(CONFIG),
                             *study_args(tmp_path, "executor=ray", f"ray.address={address}")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"medtransfer: error: ray.address: {address}: no Ray cluster reachable")
    assert list(tmp_path.iterdir()) == []
