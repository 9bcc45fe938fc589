"""Kill anywhere (issue 23): the smoke study's whole process group is SIGKILLed at 14 instants spread
over a run, from its first 100 ms to the report (each a moment the killed run itself shows: its start,
its store being built, a set being written, the report folder, plus a delay), on a fresh store for
some instants and on a store that already holds another finished study for the others. After each kill the same command runs
again, unkilled: it exits 0 and the store holds exactly the pair runs of an uninterrupted run (same
params, metrics equal to 1e-6 apart from timings), no duplicate and no unfinished run, and the
earlier study's runs exactly as they were. Every instant must be a kill: its event shows before
the run ends, the run is still going when the kill lands, it exits -9 and its study run is not
finished in the store; otherwise the test fails.

The processes run a copy of the code outside git, so that edits to the work tree meanwhile do not
change the identities (which hold the code version).
Slow (about 15 minutes on 2 shared cores): `pytest -m slow tests/reliability/test_kill_anywhere.py -s`
prints one line per instant (what the store and folders held when the kill landed)."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from experiments import load_config, run_study
from experiments.design.config import preset_path

from .test_faults import ENV, TIMINGS, sqlite_uri, study_args

REPO = Path(__file__).resolve().parents[2]
CONFIG = preset_path("smoke")
PACKAGES = ("attacks", "datamodules", "experiments", "lightning_modules", "medcommon")
EARLIER = ["seed=1"]  # another study in the same experiment: other models, sets and pairs


def report_folder(root: Path) -> Path | None:
    """The smoke study's report folder under `root` (`out/smoke/<short study key>/report`), once made."""
    return next((root / OUT / "smoke").glob("*/report"), None)


def snapshot_code(folder: Path) -> Path:
    """A copy of the packages outside git: its code version is fixed ("unknown"), so the identities
    stay the same however the work tree changes while the test runs."""
    for package in PACKAGES:
        shutil.copytree(REPO / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def launch(code: Path, uri: str, root: Path, log: Path) -> subprocess.Popen:
    """The CLI (of the code copy) on the smoke study in its own process group, with its own data cache."""
    with open(log, "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "experiments", "run", "--config", str(CONFIG),
                                 *study_args(uri, root / "out")], cwd=code, stdout=subprocess.DEVNULL, stderr=stderr,
                                env={**ENV, "PYTHONPATH": str(code), "MEDTRANSFER_CACHE": str(root / "cache")},
                                start_new_session=True)


OUT = Path("out")
# when a killed run shows each event: a file or folder appears under its root
EVENTS = {
    "start": lambda root: True,
    "store-tmp": lambda root: bool(list(root.glob("mlflow.db.*.tmp"))),  # the store being built
    "store": lambda root: (root / "mlflow.db").is_file(),
    "set-tmp": lambda root: bool(list((root / OUT / "adversarial_sets").glob("*.tmp"))),  # a set being written
    "set": lambda root: bool(list((root / OUT / "adversarial_sets").glob("*.set"))),
    "report": lambda root: report_folder(root) is not None,
    "results": lambda root: bool(list((root / OUT / "smoke").glob("*/report/results.csv"))),
}
# (event, seconds after it, on a store holding the earlier study): from the first 100 ms to the report
INSTANTS = [("start", 0.05, False), ("start", 0.5, True), ("start", 3.0, False), ("store-tmp", 0.0, False),
            ("store-tmp", 0.5, False), ("store", 0.2, False), ("set-tmp", 0.0, True), ("set", 0.0, True),
            ("set", 1.5, False), ("middle", 0.5, True), ("report", 0.0, True), ("report", 0.3, False),
            ("results", 0.1, True), ("results", 1.0, False)]


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "", run_view_type=ViewType.ALL, max_results=10000)


def snapshot(run) -> tuple:
    info = run.info
    return (info.status, info.lifecycle_stage, info.end_time, run.data.params, run.data.metrics, run.data.tags)


def pair_record(run) -> tuple[dict, dict]:
    return run.data.params, {k: v for k, v in run.data.metrics.items() if k not in TIMINGS}


def state(uri: str, root: Path, earlier: dict) -> str:
    """What the study had written when it was killed (the earlier study's runs left out), in words."""
    db = Path(uri.removeprefix("sqlite:///"))
    if not db.is_file():
        return "no store yet" + (" (store being built)" if list(db.parent.glob("*.tmp")) else "")
    runs = [r for r in all_runs(uri) if r.info.run_id not in earlier]
    count = {kind: sum(r.data.tags.get("kind") == kind and r.info.status == "FINISHED" for r in runs)
             for kind in ("model", "pair")}
    running = sorted({r.data.tags.get("kind") for r in runs if r.info.status == "RUNNING"} - {"study"})
    sets = list((root / "out" / "adversarial_sets").glob("*.set"))
    report = report_folder(root)
    return (f"{count['model']} models, {len(sets)} sets, {count['pair']} pairs finished"
            + (f", {'/'.join(running)} run open" if running else "")
            + (f", report {len(list(report.iterdir()))} files" if report is not None else ""))


def finished_study(uri: str, earlier: dict) -> bool:
    """Whether the store holds a finished study run besides the earlier study's."""
    if not Path(uri.removeprefix("sqlite:///")).is_file():
        return False
    return any(r.data.tags.get("kind") == "study" and r.info.status == "FINISHED"
               for r in all_runs(uri) if r.info.run_id not in earlier)


def timeline(process: subprocess.Popen, uri: str, root: Path) -> dict[str, float]:
    """Seconds from the start until the store, the report folder and the end of an uninterrupted run."""
    start, seen = time.monotonic(), {}
    db = Path(uri.removeprefix("sqlite:///"))
    while process.poll() is None:
        for name, present in (("store", db.exists), ("report", lambda: report_folder(root) is not None)):
            if name not in seen and present():
                seen[name] = time.monotonic() - start
        time.sleep(0.01)
    seen["end"] = time.monotonic() - start
    return seen


@pytest.mark.slow
def test_sigkill_at_any_instant_then_rerun_gives_the_uninterrupted_pairs(tmp_path, capsys):
    reference_root = tmp_path / "reference"
    reference_uri = sqlite_uri(reference_root)
    code = snapshot_code(tmp_path / "code")
    process = launch(code, reference_uri, reference_root, tmp_path / "reference.txt")
    times = timeline(process, reference_uri, reference_root)
    assert process.returncode == 0, (tmp_path / "reference.txt").read_text()[-3000:]
    expected = {r.data.tags["config_hash"]: pair_record(r) for r in all_runs(reference_uri)
                if r.data.tags.get("kind") == "pair"}
    assert len(expected) == 8

    prepared = tmp_path / "prepared"  # a store holding another finished study
    run_study(load_config(CONFIG, [*study_args(sqlite_uri(prepared), prepared / "out"), *EARLIER]))
    earlier = {r.info.run_id: snapshot(r) for r in all_runs(sqlite_uri(prepared))}

    end, report = times["end"], times.get("report", times["end"] - 1.0)
    with capsys.disabled():
        print(f"\nuninterrupted run: store at {times.get('store', float('nan')):.2f} s, report at {report:.2f} s, "
              f"end at {end:.2f} s", flush=True)
    for i, (event, delay, existing) in enumerate(INSTANTS):
        root = tmp_path / f"kill{i}"
        root.mkdir()
        if existing:
            shutil.copy(prepared / "mlflow.db", root / "mlflow.db")
        uri = sqlite_uri(root)
        killed = launch(code, uri, root, root / "killed.txt")
        started = time.monotonic()
        if event == "middle":  # half the uninterrupted run's time
            event, delay = "start", end * delay
        while not EVENTS[event](root):
            assert killed.poll() is None, f"{event}: never showed before the run ended (exit {killed.returncode})"
            time.sleep(0.005)
        time.sleep(delay)
        assert killed.poll() is None, f"{event} + {delay} s: the run ended (exit {killed.returncode}) before the kill"
        os.killpg(killed.pid, signal.SIGKILL)
        instant = time.monotonic() - started
        status = killed.wait()
        at_kill = state(uri, root, earlier if existing else {})
        assert status == -signal.SIGKILL, f"{event} + {delay} s: exit {status}, not a kill"
        assert not finished_study(uri, earlier if existing else {}), f"{event} + {delay} s: {at_kill}, study finished"

        rerun = launch(code, uri, root, root / "rerun.txt")
        assert rerun.wait(timeout=600) == 0, f"{event} + {delay} s: " + (root / "rerun.txt").read_text()[-3000:]
        runs = all_runs(uri)
        active = [r for r in runs if r.info.lifecycle_stage == "active"]
        ours = [r for r in active if r.info.run_id not in earlier]
        assert all(r.info.status == "FINISHED" for r in ours), [(r.info.run_name, r.info.status) for r in ours]
        pairs = [r for r in ours if r.data.tags["kind"] == "pair"]
        assert sorted(r.data.tags["config_hash"] for r in pairs) == sorted(expected)  # each once, no other
        for run in pairs:
            params, metrics = pair_record(run)
            want_params, want_metrics = expected[run.data.tags["config_hash"]]
            assert params == want_params
            assert metrics.keys() == want_metrics.keys()
            np.testing.assert_allclose([metrics[k] for k in sorted(metrics)],
                                       [want_metrics[k] for k in sorted(metrics)], atol=1e-6)
        models = [r for r in ours if r.data.tags["kind"] == "model"]
        assert sorted(r.info.run_name for r in models) == ["a", "b"]
        assert [r.data.tags["kind"] for r in ours if r.data.tags["kind"] == "study"] == ["study"]
        if existing:
            assert {r.info.run_id: snapshot(r) for r in runs if r.info.run_id in earlier} == earlier
        assert not list((root / "out" / "adversarial_sets").glob("*.tmp"))
        assert len(list((root / OUT / "smoke").glob("*/report/results.csv"))) == 1
        with capsys.disabled():
            print(f"{event:>9} + {delay:4.2f} s = {instant:6.2f} s  {'existing' if existing else 'fresh':8}  "
                  f"exit {status:4}  "
                  f"at kill: {at_kill}  ->  rerun exit 0, 8 pairs as uninterrupted", flush=True)
