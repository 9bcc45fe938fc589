"""Devices: `crafting.device` checked before a study starts, a study on two CPU processes (gloo DDP)
through the real command line, and crafting shared by two processes equal to one process's."""
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
import torch
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from attacks import AdversarialSetCache
from experiments.cli import main
from experiments.design.config import ConfigError, load_config, preset_path
from experiments.execution import read_data
from experiments.execution.training import fit, initial_module
from experiments.preflight.checks import crafting_device_problems, device_problems
from lightning_modules.model import build_classifier

STUDY_TIMEOUT = 300  # a hang in a collective operation fails the test instead of the suite


def medtransfer(*args, cwd):
    return subprocess.run([sys.executable, "-m", "experiments", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=STUDY_TIMEOUT)


def test_a_crafting_device_this_machine_lacks_stops_before_anything_is_written(tmp_path, capsys):
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code = main(["run", "--config", str(preset_path("smoke")), "crafting.device=cuda:7",
                 f"tracking.uri=sqlite:///{tmp_path / 'store' / 'mlflow.db'}", f"output_dir={tmp_path / 'out'}",
                 f"data.cache_dir={tmp_path / 'cache'}"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "crafting.device" in lines[0] and "cuda:7" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("device, message", [("gpu", "unknown 'gpu'; valid: auto, cpu, cuda, cuda:N, mps"),
                                             ("cuda:x", "unknown 'cuda:x'")])
def test_a_crafting_device_must_be_one_of_the_known_kinds(device, message):
    with pytest.raises(ConfigError, match=f"crafting.device: {message}"):
        load_config(preset_path("smoke"), [f"crafting.device={device}"])


def test_a_spawning_strategy_cannot_share_a_studys_devices():
    with pytest.raises(ConfigError, match="trainer.strategy: 'ddp_spawn' cannot share a study's devices; use "
                                          "auto or ddp"):
        load_config(preset_path("smoke"), ["trainer.accelerator=cpu", "trainer.devices=2",
                                           "trainer.strategy=ddp_spawn"])


@pytest.mark.slow
def test_a_two_process_study_through_the_command_line_logs_each_piece_of_work_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = medtransfer("run", "--config", str(preset_path("smoke")), "trainer.accelerator=cpu",
                         "trainer.devices=2", "trainer.strategy=ddp", f"tracking.uri={uri}",
                         f"output_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()],
                                         run_view_type=ViewType.ALL)
    states = Counter((run.data.tags.get("kind"), run.info.status, run.info.lifecycle_stage) for run in runs)
    # smoke: 2 models, 2 surrogates x 2 targets x 2 attack settings, one study run
    assert states == {("model", "FINISHED", "active"): 2, ("pair", "FINISHED", "active"): 8,
                      ("study", "FINISHED", "active"): 1}
    keys = Counter(run.data.tags["config_hash"] for run in runs if run.data.tags.get("kind") != "study")
    assert len(keys) == 10 and set(keys.values()) == {1}
    models = [run for run in runs if run.data.tags.get("kind") == "model"]
    assert {run.data.params["trainer.devices"] for run in models} == {"2"}
    for run in models:  # the best score of the main process's checkpoint callback, as logged per epoch
        history = MlflowClient(uri).get_metric_history(run.info.run_id, "val_auc")
        assert len(history) == 2 and run.data.metrics["best_val_auc"] == max(m.value for m in history)
    assert len(list((tmp_path / "out" / "adversarial_sets").glob("*.set"))) == 4


SHARED_CRAFTING = """
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from attacks import AdversarialSetCache
from experiments.design.config import load_config, preset_path
from experiments.execution import DeviceGroup, read_data
from experiments.execution.predict_batches import SetBatches, TestBatches
from experiments.execution.predicting import Predictor
from experiments.execution.training import initial_module

out = Path(sys.argv[1])
SETTINGS = {"pgd": {"name": "pgd", "eps": 0.03, "alpha": 0.01, "steps": 3},  # random start
            "ifgsm": {"name": "ifgsm", "eps": 0.03, "alpha": 0.01, "steps": 3}}
for devices in (2, 1):
    cfg = load_config(preset_path("smoke"), ["trainer.accelerator=cpu", f"trainer.devices={devices}",
                                             "data.batch_size=7"])  # 60 test images: 9 batches
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data = read_data(cfg)
    module = initial_module(cfg, cfg.models[0], data).eval()
    cache = AdversarialSetCache(out / f"sets-{devices}")
    with DeviceGroup(cfg) as group:
        assert group.world == devices
        predictor, batches = Predictor(cfg, group), TestBatches(data_cfg).on(group)
        for name, setting in SETTINGS.items():
            cache.ensure(name, 3, lambda write: predictor.adversarial_set(module, batches, setting, 3, data.task,
                                                                          write, name))
        scores = {"clean": predictor.scores(module, batches),
                  "sets": predictor.set_scores(module, SetBatches(cache.root, "pgd", batches))}
    torch.save(scores, out / f"scores-{devices}.pt")
    clean = TestBatches(data_cfg, data.datamodule("d1").dataset("test"))
    torch.save([clean[i][0] for i in range(len(clean))], out / "clean.pt")
    torch.save(module.model.state_dict(), out / "model.pt")
"""


@pytest.mark.slow
def test_two_processes_craft_and_score_the_same_sets_byte_for_byte_as_one(tmp_path, smoke_config):
    script = tmp_path / "shared_crafting.py"
    script.write_text(textwrap.dedent(SHARED_CRAFTING))
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                            timeout=STUDY_TIMEOUT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("pgd", "ifgsm"):
        assert (tmp_path / "sets-2" / f"{name}.set").read_bytes() == (tmp_path / "sets-1" / f"{name}.set").read_bytes()
    two, one = (torch.load(tmp_path / f"scores-{n}.pt") for n in (2, 1))
    assert torch.equal(two["clean"], one["clean"])
    assert all(torch.equal(a, b) for a, b in zip(two["sets"], one["sets"], strict=True))
    chunks = list(AdversarialSetCache(tmp_path / "sets-2").chunks("pgd", torch.load(tmp_path / "clean.pt")))
    assert [len(adv) for adv, _ in chunks] == [7] * 8 + [4]
    # independent of the predict path: the model's own forward pass on the stored adversarial images
    model = build_classifier("tiny_cnn", "random", "binary", 1, 3)
    model.load_state_dict(torch.load(tmp_path / "model.pt"))
    with torch.no_grad():
        direct = torch.sigmoid(model.eval()(torch.cat([adv for adv, _ in chunks])))[:, 0]
    torch.testing.assert_close(two["sets"][0], direct, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_the_best_validation_score_survives_a_spawning_strategy(tmp_path, smoke_config):
    cfg = smoke_config(tmp_path, "trainer.accelerator=cpu")
    cfg.trainer.devices, cfg.trainer.strategy = 2, "ddp_spawn"  # usable from Python, refused by a study
    data = read_data(cfg)
    module, datamodule = initial_module(cfg, cfg.models[0], data), data.datamodule("d1")
    best = fit(module, datamodule, cfg, progress=False)
    datamodule.setup()
    images, labels = map(torch.cat, zip(*datamodule.val_dataloader()))
    with torch.no_grad():
        scores = torch.sigmoid(module.model.eval()(images)[:, 0])
    assert len(labels) % 2 == 0  # no padding by the distributed sampler: the score covers the split once
    assert best == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-6)


def test_a_crafting_device_is_looked_for_when_the_study_starts_not_when_the_config_is_read():
    gpus = torch.cuda.device_count()
    cfg = load_config(preset_path("smoke"), [f"crafting.device=cuda:{gpus}"])  # a known kind: read
    problems = device_problems(cfg)
    assert len(problems) == 1 and problems[0].startswith(f"crafting.device: cuda:{gpus}, but this machine has ")
    assert device_problems(load_config(preset_path("smoke"), ["crafting.device=cpu"])) == []
    assert bool(crafting_device_problems("mps")) != torch.backends.mps.is_available()
