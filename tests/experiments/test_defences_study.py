"""Defended targets, ensemble surrogates and adversarial training in a real study (smoke data, real
MLflow store): what is trained, crafted and logged once, and the one-line errors of bad entries."""
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from experiments import run_study
from experiments.cli import main
from experiments.design.config import ConfigError, preset_path
from experiments.execution import read_data
from experiments.execution.evaluation import load_test_set
from lightning_modules import build_classifier
from lightning_modules.pretrained import load_state_dict_file
from lightning_modules.tasks import scores

MODELS = ("models=[{name: a, dev_set: d1}, {name: b, dev_set: d2}, {name: c, dev_set: d1, instance: 1}, "
          "{name: a_jpeg, dev_set: d1, defence: {name: jpeg, quality: 50}}, "
          "{name: ens, ensemble: [b, c], mode: loss}]")


@pytest.fixture(scope="module")
def study(tmp_path_factory, smoke_config):
    root = tmp_path_factory.mktemp("defences")
    cfg = smoke_config(root, MODELS, "targets=[a, a_jpeg]", "surrogates=[ens, b]",
                       "attacks=[{name: fgsm, eps: [0.02]}]", "train.max_epochs=1")
    result = run_study(cfg)
    return cfg, result.reports["pathology"], result


def runs(cfg, kind):
    client = MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.name)
    return client.search_runs([experiment.experiment_id], f"tags.kind = '{kind}'")


def test_ensemble_crafts_one_set_reused_for_every_target(study):
    cfg, _, _ = study
    root = Path(cfg.output_dir)
    pairs = {(r.data.params["surrogate.name"], r.data.params["target.name"]): r for r in runs(cfg, "pair")}
    assert set(pairs) == {(s, t) for s in ("ens", "b") for t in ("a", "a_jpeg")}
    ens = {pairs["ens", t].data.tags["set_key"] for t in ("a", "a_jpeg")}
    assert len(ens) == 1 and ens != {pairs["b", "a"].data.tags["set_key"]}
    assert sorted(p.stem for p in (root / "adversarial_sets").glob("*.set")) == sorted(
        {pairs[s, "a"].data.tags["set_key"] for s in ("ens", "b")})
    params = pairs["ens", "a"].data.params
    assert params["surrogate.ensemble"] == "b,c" and params["surrogate.mode"] == "loss"


def test_defended_target_reuses_its_twins_training_run(study):
    cfg, _, _ = study
    models = runs(cfg, "model")
    assert sorted(r.info.run_name for r in models) == ["a", "b", "c"]  # a_jpeg and ens train nothing
    pairs = {(r.data.params["surrogate.name"], r.data.params["target.name"]): r for r in runs(cfg, "pair")}
    defended, plain = pairs["b", "a_jpeg"], pairs["b", "a"]
    assert defended.data.params["target.defence.name"] == "jpeg"
    assert defended.data.params["target.defence.quality"] == "50"
    assert defended.data.tags["defended"] == "true" and plain.data.tags["defended"] == "false"
    assert defended.data.tags["config_hash"] != plain.data.tags["config_hash"]

    # the defended target's clean scores: a's stored weights on PIL-JPEG-compressed test images
    client, run = MlflowClient(cfg.tracking.uri), next(r for r in models if r.info.run_name == "a")
    model = build_classifier("tiny_cnn", "random", "binary", 1, 3)
    model.load_state_dict(load_state_dict_file(client.download_artifacts(run.info.run_id, "checkpoint/model.pt")))
    images = torch.cat(list(load_test_set(read_data(cfg).datamodule("d1")).batches()))
    compressed = []
    for image in (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=50)
        compressed.append(np.asarray(Image.open(buffer), dtype=np.float32) / 255)
    with torch.no_grad():
        expected = scores("binary", model.eval()(torch.from_numpy(np.stack(compressed)).permute(0, 3, 1, 2)))
        undefended = scores("binary", model(images))
    logged = {key: pd.read_csv(client.download_artifacts(pairs["b", key].info.run_id, "predictions.csv"))["clean"]
              for key in ("a", "a_jpeg")}
    np.testing.assert_allclose(logged["a"], undefended.numpy(), atol=1e-5)
    assert np.abs(logged["a_jpeg"] - expected.numpy()).mean() < 0.2 * np.abs(expected - undefended).mean().item()


def test_report_has_the_defences_table(study):
    cfg, report, result = study
    table = result.table
    text = (report / "defences.md").read_text()
    assert "jpeg(quality=50)" in text and "Ensemble surrogates" in text
    defences = pd.read_csv(report / "defences.csv")
    row = defences.set_index("target").loc["a_jpeg"]
    pct = table[(table["surrogate"] == "b") & (table["target"] == "a_jpeg")]["auc_pct_clean"].item()
    assert row["other data"] == pytest.approx(pct, abs=1e-4)  # b is a's architecture on other data
    assert row["other data_lo"] <= pct <= row["other data_hi"]
    assert "defences" not in result.summary.split("Findings")[0]  # paper tables: plain pairs only


def test_every_report_file_is_an_artifact_of_the_study_run_byte_for_byte(study, tmp_path):
    cfg, report, _ = study
    files = {path.name for path in report.iterdir()}
    assert {"defences.md", "defences.csv", "ensembles.csv", "results.csv", "examples_pathology.png"} <= files
    assert any(name.startswith("defences_") and name.endswith(".png") for name in files)
    [parent] = runs(cfg, "study")
    client = MlflowClient(cfg.tracking.uri)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id) if not a.is_dir}
    assert logged == files | {"config.yaml"}
    local = Path(client.download_artifacts(parent.info.run_id, "", str(tmp_path)))
    for name in files:
        assert (local / name).read_bytes() == (report / name).read_bytes(), name


def test_adversarial_training_loses_less_auc_under_transferred_fgsm(tmp_path, smoke_config):
    cfg = smoke_config(tmp_path, "models=[{name: t, dev_set: d1}, {name: s, dev_set: d1, instance: 1}, "
                       "{name: t_at, dev_set: d1, "
                       "adversarial_training: {name: pgd, eps: 0.03, alpha: 0.01, steps: 3}}]",
                       "targets=[t, t_at]", "surrogates=[s]", "attacks=[{name: fgsm, eps: [0.03]}]",
                       "train.max_epochs=3", "bootstrap_resamples=0")
    table = run_study(cfg).table.set_index("target")
    assert table.loc["t_at", "auc_pct_clean"] > table.loc["t", "auc_pct_clean"]
    client = MlflowClient(cfg.tracking.uri)
    trained = {r.info.run_name: r for r in runs(cfg, "model")}
    assert trained["t_at"].data.params["adversarial_training.steps"] == "3"
    assert len(client.get_metric_history(trained["t_at"].info.run_id, "val_adv_auc")) == 3  # one per epoch
    assert "adversarial_training.eps" not in trained["t"].data.params


@pytest.mark.parametrize("entry,message", [
    ("{name: x, defence: {name: blur}}",
     "models.x.defence: defence: unknown name 'blur'; valid: jpeg, bit_depth, median, gaussian, resize"),
    ("{name: x, defence: {name: jpeg, quality: 101}}", "models.x.defence: defence jpeg: quality=101 must be in 1..100"),
    ("{name: x, defence: {name: median, size: 3}}",
     "models.x.defence: defence median: unknown parameter 'size'; valid: kernel"),
    ("{name: x, adversarial_training: {name: pgd, eps: 0}}",
     "models.x.adversarial_training: attack pgd: eps=0.0 must be in (0, 1] (pixel scale)"),
    ("{name: x, ensemble: [a, nope]}", "models.x.ensemble: unknown member 'nope'; valid: a, x"),
    ("{name: x, ensemble: [a], mode: vote}", "models.x.mode: unknown ensemble mode 'vote'; valid: logits, loss"),
])
def test_bad_entries_fail_with_one_line(tmp_path, smoke_config, entry, message):
    with pytest.raises(ConfigError) as err:
        smoke_config(tmp_path, f"models=[{{name: a}}, {entry}]")
    assert str(err.value) == message


def test_ensemble_target_stops_the_cli_with_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri={uri}", f"output_dir={tmp_path}",
                 "models=[{name: a}, {name: e, ensemble: [a]}]", "targets=[e]"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].endswith("targets: 'e' is an ensemble, which can only be a surrogate")
    assert not (tmp_path / "mlflow.db").exists()
