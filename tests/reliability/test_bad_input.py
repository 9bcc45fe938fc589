"""Bad input through the CLI: exit 2, one stderr line naming the culprit, no traceback, nothing written."""
import pytest

from experiments.cli import main
from experiments.config import preset_path

CASES = [
    pytest.param(["models=[{name: a, arch: no_such_net, init: random, dev_set: d1, instance: 0}]"], "no_such_net",
                 id="unknown architecture"),
    pytest.param(["zoo.archs=[no_such_zoo_net]"], "no_such_zoo_net", id="unknown architecture in zoo factors"),
    pytest.param(["attacks=[{name: no_such_attack, eps: [0.02]}]"], "no_such_attack", id="unknown attack"),
    pytest.param(["data.domain=no_such_domain"], "no_such_domain", id="unknown domain"),
    pytest.param(["data.source=no_such_source"], "no_such_source", id="unknown source"),
    pytest.param(["attacks=[{name: fgsm, eps: [0.0]}]"], "eps", id="epsilon zero"),
    pytest.param(["attacks=[{name: fgsm, eps: [1.5]}]"], "1.5", id="epsilon above one"),
    pytest.param(["attacks=[{name: ifgsm, eps: [0.02], params: {alpha: 0.005, steps: 0}}]"], "steps",
                 id="steps below one"),
    pytest.param(["train.max_epoch=1"], "max_epoch", id="unknown config key"),
]


@pytest.mark.parametrize("overrides, culprit", CASES)
def test_bad_config_value_is_one_line_before_any_work(overrides, culprit, tmp_path, capsys):
    store = tmp_path / "mlflow.db"
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{store}",
                 f"output_dir={tmp_path / 'out'}", *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and culprit in err[0] and "Traceback" not in err[0]
    assert not store.exists() and not (tmp_path / "out").exists()


def test_malformed_yaml_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert main(["run", "--config", str(bad)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]


def test_missing_data_root_names_the_folder(tmp_path, capsys):
    root = tmp_path / "absent"
    store = tmp_path / "mlflow.db"
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{store}",
                 f"output_dir={tmp_path / 'out'}", "data.source=csv", f"data.root={root}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "absent" in err[0]
    assert not store.exists()


CSV_CASES = [
    pytest.param({"path": ["a.png", "../outside.png"], "label": [0, 1]}, "'../outside.png' resolves outside",
                 id="path outside root"),
    pytest.param({"path": ["a.png"], "label": ["maybe"]}, "line 2: unknown label 'maybe'", id="label outside set"),
    pytest.param({"file": ["a.png"], "label": [1]}, "required column 'path' missing", id="csv missing column"),
    pytest.param({"path": ["a.png", "b.png"], "label": [0, 1]}, "b.png: unreadable image", id="corrupt image"),
]


@pytest.mark.parametrize("rows, culprit", CSV_CASES)
def test_bad_csv_data_is_one_line_before_any_work(rows, culprit, tmp_path, capsys):
    import pandas as pd
    from PIL import Image

    root = tmp_path / "root"
    root.mkdir()
    Image.new("L", (16, 16), 128).save(root / "a.png")
    Image.new("L", (16, 16), 128).save(tmp_path / "outside.png")
    (root / "b.png").write_bytes(b"not an image at all")
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    store = tmp_path / "mlflow.db"
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{store}",
                 f"output_dir={tmp_path / 'out'}", "data.source=csv", "data.domain=radiology", f"data.root={root}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and culprit in err[0] and "Traceback" not in err[0]
    assert not store.exists() and not (tmp_path / "out").exists()
