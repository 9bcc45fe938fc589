"""Untrusted files never run code, data paths never leave their root, credentials are never logged."""
import hashlib
import io
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from attacks import AdversarialSetCache
from attacks.cache import HEADER_BYTES, MAGIC, SUFFIX, VERSION
from datamodules.readers.csv_folder import read_csv_folder
from datamodules.synthetic.cache import cached_generate
from experiments.cli import main
from experiments.design.config import preset_path

FAST = ["train.max_epochs=1", "bootstrap_resamples=0", "attacks=[{name: fgsm, eps: [0.02]}]"]


def pickled_code(payload) -> bytes:
    """A torch.save file whose unpickling would run `payload`'s code."""
    buffer = io.BytesIO()
    torch.save({"adversarial": payload, "control": torch.zeros(1)}, buffer)
    return buffer.getvalue()


def checksummed(record: bytes) -> bytes:
    """A set file's record: its length, its blake2b checksum, its bytes."""
    return len(record).to_bytes(8, "little") + hashlib.blake2b(record, digest_size=16).digest() + record


def every_logged_text(client: MlflowClient, experiment_id: str, download_to: Path) -> str:
    """Params, tags, metric names and artifact bytes of every run of an experiment, as one text."""
    parts = []
    for run in client.search_runs([experiment_id], max_results=1000):
        parts += [f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items()]
        parts += list(run.data.metrics)
        local = Path(client.download_artifacts(run.info.run_id, "", str(download_to / run.info.run_id)))
        parts += [p.read_bytes().decode("utf-8", "replace") for p in local.rglob("*") if p.is_file()]
    return "\n".join(parts)


@pytest.mark.slow  # a password-protected MLflow server (about 12 s to start) and a study on it
def test_credentials_in_the_uri_are_refused_without_echoing_them(mlflow_auth_server, tmp_path, capsys):
    url, user, password = mlflow_auth_server
    uri = url.replace("http://", f"http://{user}:{password}@")
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri={uri}", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "MLFLOW_TRACKING_PASSWORD" in err[0] and "***@127.0.0.1" in err[0]
    assert password not in err[0] and not any(tmp_path.iterdir())


@pytest.mark.slow  # a password-protected MLflow server (about 12 s to start) and a study on it
def test_credentials_from_the_environment_are_used_and_never_logged(mlflow_auth_server, tmp_path, monkeypatch,
                                                                      capsys):
    url, user, password = mlflow_auth_server
    with pytest.raises(urllib.error.HTTPError, match="401"):  # the server refuses anonymous requests
        urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    out = tmp_path / "out"
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri={url}", f"output_dir={out}",
                 "tracking.experiment=credentials", *FAST])
    printed = capsys.readouterr()
    assert code == 0
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("credentials")
    logged = every_logged_text(client, experiment.experiment_id, tmp_path / "downloads")
    assert "auc_adv" in logged and "tracking" in logged  # metrics and the logged config.yaml were read back
    files = "\n".join(p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file())
    for text in (logged, files, printed.out, printed.err):
        assert password not in text


def error_lines(capsys) -> list[str]:
    """The CLI's error lines on stderr (progress bars aside), none of them a traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("medtransfer: error:")]


def test_tampered_cache_and_checkpoints_are_refused_never_run(tracking_uri, tmp_path, capsys, code_payload):
    out, marker = tmp_path / "out", code_payload.marker
    args = ["run", "--config", str(preset_path("smoke")), f"tracking.uri={tracking_uri}", f"output_dir={out}", *FAST]
    assert main(args) == 0
    capsys.readouterr()

    sets = sorted((out / "adversarial_sets").glob(f"*{SUFFIX}"))
    assert sets
    for path in sets:  # the header kept and the record's checksum right, so that the record itself is read
        path.write_bytes(path.read_bytes()[:HEADER_BYTES] + checksummed(pickled_code(code_payload)))
    assert main(args) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and "adversarial_sets" in err[0] and "batch 0: not a record of tensors" in err[0]
    assert not marker.exists()

    for path in sets:  # crafted again from the stored models, whose checkpoints are now tampered with
        path.unlink()
    checkpoints = sorted(Path(tracking_uri.removeprefix("sqlite:///")).parent.rglob("checkpoint/model.pt"))
    assert len(checkpoints) == 2
    for path in checkpoints:
        path.write_bytes(pickled_code(code_payload))
    assert main(args) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and err[0].startswith("medtransfer: error: MLflow run ")
    assert "(model a): checkpoint/model.pt: not a weights-only checkpoint (refused to load io.open)" in err[0]
    assert not marker.exists()


def test_cache_refuses_a_pickled_record_by_file_name(tmp_path, code_payload):
    cache, marker = AdversarialSetCache(tmp_path / "sets"), code_payload.marker
    header = MAGIC + VERSION.to_bytes(2, "little") + bytes(8)  # valid, so that the record itself is read
    cache.path("k").write_bytes(header + hashlib.blake2b(header, digest_size=16).digest()
                                + checksummed(pickled_code(code_payload)))
    with pytest.raises(ValueError, match=r"sets/k\.set: batch 0: not a record of tensors \(UnpicklingError\)$"):
        cache.load("k", [torch.zeros(1, 1, 2, 2)])
    assert not marker.exists()


def test_tampered_synthetic_cache_entry_is_regenerated_not_run(tmp_path, code_payload):
    marker = code_payload.marker

    def generate(n, empty=torch.empty):
        images = empty(n, 1, 4, 4, dtype=torch.uint8)
        images[0:n] = torch.full((n, 1, 4, 4), 7, dtype=torch.uint8)
        return images, torch.arange(n) % 2, torch.arange(n)

    params = {"domain": "pathology", "n": 6}
    reference = cached_generate(generate, params, tmp_path)
    entry, = tmp_path.glob("pathology-*.pt")
    entry.write_bytes(pickled_code(code_payload))
    again = cached_generate(generate, params, tmp_path)
    assert not marker.exists()
    assert again[0].read(0, 6).eq(7).all()
    for got, expected in zip(again[1:], reference[1:]):
        torch.testing.assert_close(got, expected)
    torch.testing.assert_close(torch.load(entry, weights_only=True)["labels"], reference[1])  # rewritten


def escapes(root: Path, outside: Path) -> dict[str, str]:
    """Rows whose image path leaves `root`: absolute, through a file symlink, through a folder symlink."""
    (root / "link.png").symlink_to(outside / "secret.png")
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    return {"absolute": str(outside / "secret.png"), "file symlink": "link.png",
            "folder symlink": "linked_dir/secret.png"}


@pytest.mark.parametrize("kind", ["absolute", "file symlink", "folder symlink"])
def test_image_paths_never_escape_the_data_root(kind, tmp_path):
    from PIL import Image

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    Image.new("L", (8, 8), 1).save(root / "a.png")
    Image.new("L", (8, 8), 2).save(outside / "secret.png")
    relative = escapes(root, outside)[kind]
    (root / "labels.csv").write_text(f"path,label\na.png,0\n{relative},1\n")
    with pytest.raises(ValueError, match=r"labels\.csv, line 3: image path .* resolves outside the data root"):
        read_csv_folder(root, 8, "labels.csv", 1, "binary", [])


def test_native_readers_ignore_symlinks_that_lead_outside(tmp_path):
    from PIL import Image

    from datamodules.readers.chestxray14 import read_chestxray14

    root, outside = tmp_path / "nih", tmp_path / "outside"
    (root / "images").mkdir(parents=True)
    outside.mkdir()
    Image.new("L", (8, 8), 1).save(root / "images" / "a.png")
    Image.new("L", (8, 8), 2).save(outside / "b.png")
    (root / "images" / "b.png").symlink_to(outside / "b.png")
    (root / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels,Patient ID\na.png,No Finding,1\n"
                                             "b.png,Mass,2\n")
    with pytest.raises(FileNotFoundError, match=r"Data_Entry_2017\.csv, line 3: image 'b.png' not found"):
        read_chestxray14(root, 8)
