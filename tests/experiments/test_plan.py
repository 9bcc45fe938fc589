"""`medtransfer plan` / `plan_study` and the up-front checks of `run`."""
import hashlib
import os

import pytest
import torch
from mlflow.tracking import MlflowClient

from datamodules import build_datamodule
from experiments import load_config, plan_study, run_study
from experiments.cli import main
from experiments.design.config import preset_path
from experiments.preflight.outline import outline

IMAGENET_MODEL = "models=[{name: r, arch: resnet18, init: imagenet, dev_set: d1, instance: 0}]"


def files_under(path):
    return sorted(p for p in path.rglob("*"))


@pytest.fixture
def broken(tmp_path, monkeypatch, unused_port):
    """Overrides with three problems: a missing ImageNet file, a missing data root (radiology, from
    csv) and a tracking server that does not answer; pathology stays synthetic (would be generated)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path / "cache"))
    return [f"tracking.uri=http://127.0.0.1:{unused_port}", f"output_dir={tmp_path / 'out'}", IMAGENET_MODEL,
            f"domains={{pathology: {{}}, radiology: {{source: csv, root: {tmp_path / 'absent'}}}}}"]


def problem_lines(text):
    return {
        "weights": [line for line in text if "ImageNet weights for resnet18 not found: put resnet18-" in line],
        "root": [line for line in text if "absent: data root not found (data.root, radiology)" in line],
        "server": [line for line in text if "tracking server http://127.0.0.1:" in line and "unreachable" in line],
    }


def test_plan_reports_every_problem_together_and_writes_nothing(broken, tmp_path, capsys):
    before = files_under(tmp_path)
    assert main(["plan", "--config", str(preset_path("smoke")), *broken]) == 2
    out = capsys.readouterr().out.splitlines()
    found = problem_lines(out)
    assert all(len(lines) == 1 for lines in found.values()), found
    assert "Problems (3):" in out
    assert "  models to train          1  (? in the store)" in out  # the store could not be read
    assert files_under(tmp_path) == before


def test_run_reports_every_problem_before_any_generation(broken, tmp_path, capsys):
    assert main(["run", "--config", str(preset_path("smoke")), *broken]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("medtransfer: error: ") for line in err)
    assert all(len(lines) == 1 for lines in problem_lines(err).values())
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_devices_and_disk_space_are_checked_before_any_work(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("checks a machine without a CUDA GPU")
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{tmp_path / 'db'}",
                 f"output_dir={tmp_path / 'out'}", f"data.cache_dir={tmp_path / 'cache'}",
                 "trainer.accelerator=gpu", "data.image_size=200000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 2, err
    assert "trainer.accelerator: gpu, but this machine has no CUDA GPU" in err[0]
    # 240 images of 3 x 200000^2 bytes: far more than any disk here
    assert err[1].startswith("medtransfer: error: disk: ") and f"free on the file system of {tmp_path}," in err[1]
    size = 240 * 3 * 200000**2 / 2**40
    assert f": generated pathology set {size:.1f} TiB in {tmp_path / 'cache'}; 4 pathology adversarial sets " in err[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_outline_split_sizes_are_the_datamodules(tmp_path):
    cfg = load_config(preset_path("smoke"), [f"data.cache_dir={tmp_path}"])
    domain, = outline(cfg)
    for dev_set in ("d1", "d2", "d2/2", "d1/10"):
        data = build_datamodule({**cfg.data, "dev_set": dev_set})
        assert domain.data.split_sizes[f"{dev_set}/train"] == len(data.indices["train"])
        assert domain.data.split_sizes[f"{dev_set}/val"] == len(data.indices["val"])
    assert domain.data.split_sizes["test"] == len(data.indices["test"])
    assert domain.data.cache_file.is_file()  # where the data module stored the generated set


def test_plan_counts_the_work_a_run_left_in_the_store(tmp_path):
    overrides = [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"output_dir={tmp_path / 'out'}",
                 "train.max_epochs=1", "bootstrap_resamples=0"]
    cfg = load_config(preset_path("smoke"), overrides)
    before = plan_study(cfg)
    left = before.domains["pathology"]
    assert (left.models, left.sets, left.pairs) == (2, 4, 8)
    assert (left.models_left, left.sets_left, left.pairs_left) == (2, 4, 8)
    test = outline(cfg)[0].data.split_sizes["test"]
    # fgsm: 1 pass per image; ifgsm: 5 steps; 2 surrogates
    assert left.passes["craft"] == 2 * test * (1 + 5)
    assert left.passes["evaluate"] == 8 * 2 * test + 2 * test  # adversarial + control per pair, clean per target
    assert before.seconds > 0 and not (tmp_path / "mlflow.db").exists() and not (tmp_path / "out").exists()

    table = run_study(cfg).table
    assert len(table) == left.pairs
    digest = hashlib.sha256((tmp_path / "mlflow.db").read_bytes()).hexdigest()
    stamp = os.stat(tmp_path / "mlflow.db").st_mtime_ns
    after = plan_study(cfg)
    done = after.domains["pathology"]
    assert (done.models_left, done.sets_left, done.pairs_left) == (0, 0, 0)
    assert after.seconds == 0 and "Problems: none" in after.text
    assert hashlib.sha256((tmp_path / "mlflow.db").read_bytes()).hexdigest() == digest
    assert os.stat(tmp_path / "mlflow.db").st_mtime_ns == stamp
    # one pair left (its run deleted): never "0 s" for work still to do
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke").experiment_id
    client.delete_run(client.search_runs([experiment], "tags.kind = 'pair'")[0].info.run_id)
    one = plan_study(cfg)
    assert one.domains["pathology"].pairs_left == 1 and one.domains["pathology"].seconds > 0
    assert "about 0 s" not in one.text and one.seconds > 0
