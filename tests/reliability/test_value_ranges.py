"""Every numeric config key is checked when the config is read, as are folders that cannot be made,
and a Ctrl-C or SIGTERM during start-up is one line (issue 23)."""
import dataclasses
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.design.config import ITEM_SCHEMAS, StudyConfig, preset_path
from experiments.design.value_ranges import RANGES

from .test_faults import ENV, INTERRUPTED, default_sigint

REPO = Path(__file__).resolve().parents[2]
CASES = [
    pytest.param(["data.image_size=0"], "data.image_size: 0; must be at least 1", id="image size zero"),
    pytest.param(["data.image_size=-5"], "data.image_size: -5", id="image size negative"),
    pytest.param(["train.max_epochs=0"], "train.max_epochs: 0; must be at least 1", id="no epochs"),
    pytest.param(["bootstrap_resamples=-1"], "bootstrap_resamples: -1; must be at least 0", id="negative resamples"),
    pytest.param(["data.test_fraction=1.0"], "data.test_fraction: 1.0; must be above 0 and below 1",
                 id="test fraction one"),
    pytest.param(["train.lr=0"], "train.lr: 0.0; must be above 0", id="learning rate zero"),
    pytest.param(["train.lr=nan"], "train.lr: nan", id="learning rate nan"),
    pytest.param(["seed=-1"], "seed: -1; must be a whole number from 0 to 4294967295", id="negative seed"),
    pytest.param(["seeds=[0,4294967296]"], "seeds[1]: 4294967296", id="seed too large"),
    pytest.param(["models=[{name: a}, {name: b, instance: -2}]"], "models[1].instance: -2", id="negative instance"),
    pytest.param(["data.batch_size=0"], "data.batch_size: 0", id="batch size zero"),
    pytest.param(["trainer.devices=0"], "trainer.devices: 0", id="no devices"),
    pytest.param(["data.npz_size=100"], "data.npz_size: 100; must be one of 0, 28, 64, 128, 224", id="npz size"),
    pytest.param(["domains={radiology: {image_size: 0}}"], "domains.radiology: data.image_size: 0",
                 id="domain override"),
]


def run(tmp_path, *overrides, store=None, output=None):
    store = store or tmp_path / "mlflow.db"
    return main(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{store}",
                 f"output_dir={output or tmp_path / 'out'}", *overrides])


@pytest.mark.parametrize("overrides, culprit", CASES)
def test_a_value_out_of_range_is_one_line_before_any_work(overrides, culprit, tmp_path, capsys):
    assert run(tmp_path, *overrides) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and culprit in err[0], err
    assert list(tmp_path.iterdir()) == []  # no store, no output folder


@pytest.mark.parametrize("key", ["tracking.uri", "output_dir"])
def test_a_folder_under_a_file_is_one_line_before_any_work(key, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    folder = blocker / "below"
    kwargs = {"store": folder / "mlflow.db"} if key == "tracking.uri" else {"output": folder}
    assert run(tmp_path, **kwargs) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"medtransfer: error: {key}: {blocker} is a file"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def numeric_keys(schema, prefix="") -> set[str]:
    """Every int or float key of the config schema (list items as `key[]`, list entries' fields as `key[].f`)."""
    keys, hints = set(), typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        hint, name = hints[field.name], prefix + field.name
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        item = ITEM_SCHEMAS.get(name, item)  # list items typed when the config is checked
        if hint in (int, float):
            keys.add(name)
        elif item in (int, float):
            keys.add(name + "[]")
        elif dataclasses.is_dataclass(item):
            keys |= numeric_keys(item, name + "[].")
        elif dataclasses.is_dataclass(hint):
            keys |= numeric_keys(hint, name + ".")
    return keys


def test_every_numeric_key_has_a_range():
    """Ray's task resources and attack epsilons have their own checks (`config._validate_ray`,
    `attacks.attack_params`)."""
    own_checks = {"ray.cpus_per_task", "ray.gpus_per_task", "attacks[].eps[]"}
    assert numeric_keys(StudyConfig) - own_checks == set(RANGES)


def sigterm_caught(pid: int) -> bool:
    """Whether process `pid` has a handler for SIGTERM now (bit 15 of SigCgt in /proc/<pid>/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (signal.SIGTERM - 1) & 1)


def start_smoke_run(tmp_path, stderr):
    return subprocess.Popen([sys.executable, "-m", "experiments", "run", "--config", str(preset_path("smoke")),
                             f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"output_dir={tmp_path / 'out'}"],
                            cwd=REPO, env={**ENV, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=stderr, preexec_fn=default_sigint)


@pytest.mark.parametrize("name, delay", [("SIGINT", 0.3), ("SIGINT", 1.0), ("SIGINT", 2.0), ("SIGINT", 3.5)])
def test_a_ctrl_c_during_start_up_is_one_line(name, delay, tmp_path):
    """The signal lands while the CLI imports its modules, reads the config or checks the study; the
    only other outcome allowed is the signal arriving before Python runs any code (no output)."""
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = start_smoke_run(tmp_path, stderr)
    time.sleep(delay)
    process.send_signal(getattr(signal, name))
    code = process.wait(timeout=120)
    err = (tmp_path / "stderr.txt").read_text().strip().splitlines()
    assert (code, err) in [(130, [INTERRUPTED]), (-signal.SIGINT, [])], err


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from /proc")
@pytest.mark.parametrize("delay", [0.0, 0.5, 1.5, 3.0])
def test_a_sigterm_at_every_start_up_stage_is_exit_143_and_one_line(delay, tmp_path):
    """From the moment the command catches SIGTERM (seen in /proc, so the instant the interpreter
    starts is left out), a SIGTERM while it imports, reads the config, checks the study or hands over
    to the study's own handler gives exit 143 and the one line, nothing else."""
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = start_smoke_run(tmp_path, stderr)
    deadline = time.monotonic() + 60
    while not sigterm_caught(process.pid):
        assert process.poll() is None and time.monotonic() < deadline, "the command never caught SIGTERM"
        time.sleep(0.005)
    time.sleep(delay)
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=120)
    err = (tmp_path / "stderr.txt").read_text().strip().splitlines()
    assert (code, err) == (143, [INTERRUPTED.replace("interrupted", "stopped by SIGTERM")]), err
