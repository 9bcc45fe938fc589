"""Full disks and read-only folders (issue 23), on real tmpfs mounts: too little space or a read-only
output folder is one line of the up-front checks; space running out while a set is written is one
line naming the folder and the set, leaves no FINISHED run without its artifacts, and the rerun
completes once there is room. Skipped where this machine cannot mount a tmpfs (needs root)."""
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiments.cli import main
from experiments.design.config import preset_path

from .test_faults import runs

# a first set (150-step iterative FGSM) that takes about a second to craft, long enough to fill the disk meanwhile
SLOW_FIRST_SET = ["attacks=[{name: ifgsm, eps: [0.02], params: {alpha: 0.002, steps: 150}}, {name: fgsm, eps: [0.02]}]"]


@contextmanager
def tmpfs(folder: Path, size: str, *options: str):
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs",
                              str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def run(tmp_path, *overrides):
    return main(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                 f"output_dir={tmp_path / 'out'}", *overrides])


def test_too_little_space_is_one_line_before_any_work(tmp_path, capsys):
    with tmpfs(tmp_path / "out", "512k") as out:
        assert run(tmp_path) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"free on the file system of {out}, the study needs" in err[0], err
        assert "adversarial sets" in err[0] and "report" in err[0]
        assert list(out.iterdir()) == [] and not (tmp_path / "mlflow.db").exists()


def test_a_read_only_output_folder_is_one_line_before_any_work(tmp_path, capsys):
    with tmpfs(tmp_path / "out", "64m", "ro") as out:
        assert run(tmp_path) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err and all("cannot be written (read-only or not permitted)" in line for line in err), err
        assert any(f"{out / 'adversarial_sets'}" in line for line in err)
        assert not (tmp_path / "mlflow.db").exists()


def fill_when_writing(folder: Path, stop: threading.Event):
    """Once a set's temporary file appears in `folder`, fill its file system to the last byte."""
    while not stop.is_set() and not list(folder.glob("*.tmp")):
        time.sleep(0.002)
    with open(folder / "ballast", "wb") as ballast:
        try:
            while True:
                ballast.write(b"\0" * 65536)
                ballast.flush()
        except OSError:
            pass


@pytest.mark.slow
def test_space_running_out_while_crafting_is_one_line_and_the_rerun_completes(tmp_path, capsys):
    sets = tmp_path / "out" / "adversarial_sets"
    with tmpfs(sets, "8m"):
        stop = threading.Event()
        filler = threading.Thread(target=fill_when_writing, args=(sets, stop))
        filler.start()
        try:
            code = run(tmp_path, *SLOW_FIRST_SET)
        finally:
            stop.set()
            filler.join()
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("medtransfer")]
        assert code == 1 and len(err) == 1, err  # (beside the progress bars of training and crafting)
        assert err[0].startswith(f"medtransfer: error: {sets}: no space left on the device while writing "
                                 "adversarial set "), err
        assert not list(sets.glob("*.tmp")) and not list(sets.glob("*.set"))
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        client = MlflowClient(uri)
        assert [r.info.status for r in runs(uri, "study")] == ["FAILED"]
        for run_ in runs(uri, "model") + runs(uri, "pair"):  # finished runs hold their artifacts
            if run_.info.status == "FINISHED":
                names = {a.path for a in client.list_artifacts(run_.info.run_id)}
                assert names & {"checkpoint", "predictions.csv"}, run_.info.run_name

        (sets / "ballast").unlink()
        assert run(tmp_path, *SLOW_FIRST_SET) == 0
        pairs = runs(uri, "pair")
        assert len(pairs) == 8 and all(r.info.status == "FINISHED" for r in pairs)
        assert len(list(sets.glob("*.set"))) == 4
