"""Handed-over model files (issue 31): each hostile or ill-fitting model is the target of a smoke study
through the CLI and gives one line, a non-zero exit, no store, output folder or run, and no payload
runs (its marker file stays absent). `plan` probes external models as `run` does."""
import json
import pickle
import threading
import warnings
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient
from torch import nn

from experiments.cli import main
from experiments.design.config import load_config, preset_path
from experiments.design.external import ExternalError
from experiments.execution.loaders.pt2 import PT2_MEMBERS, check_pt2

REPO = Path(__file__).resolve().parents[2]
SIZE, CHANNELS = 16, 3  # the smoke preset's images


class Payload:
    """Unpickling this creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


class Net(nn.Module):
    """A tiny classifier of `channels` x `size` images; `returns` "tensor", "tuple" or "dict"."""

    def __init__(self, channels: int = CHANNELS, size: int = SIZE, returns: str = "tensor"):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.head = nn.Conv2d(channels, 2, 3, padding=1), nn.Linear(2 * size * size, 1)
        self.returns = returns

    def forward(self, images):
        logits = self.head(self.conv(images).flatten(1))
        return {"tensor": logits, "tuple": (logits, logits), "dict": {"logits": logits}}[self.returns]


def export(path: Path, batch: int | None = None, channels: int = CHANNELS, size: int = SIZE,
           returns: str = "tensor") -> Path:
    """A `.pt2` of `Net`, its batch dynamic (None) or fixed at `batch`."""
    example = torch.rand(batch or 2, channels, size, size)
    dynamic = None if batch else ({0: torch.export.Dim("batch", min=1)},)
    program = torch.export.export(Net(channels, size, returns).eval(), (example,), dynamic_shapes=dynamic)
    torch.export.save(program, path)
    return path


def onnx_file(path: Path, batch) -> Path:
    """An ONNX linear classifier of the study's images, written with onnx.helper; `batch` an int
    (static) or a name (dynamic)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    features = CHANNELS * SIZE * SIZE
    weights = numpy_helper.from_array(np.linspace(-0.01, 0.01, features, dtype=np.float32).reshape(features, 1), "w")
    shape = numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["images", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["y"])],
        "linear", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, CHANNELS, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 1])], [weights, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def forged(source: Path, target: Path, first: dict[str, bytes] = (), extra: dict[str, bytes] = (),
           replace: bool = False) -> Path:
    """A copy of a `.pt2` archive with `first` members written before its own (the same names appear
    twice: zip readers differ on which copy they read; Python's zipfile reads the last, torch's
    reader, by its search of the sorted directory, either) and `extra` after; `replace`: `first`
    replaces the archive's own copies (no name twice)."""
    first, extra = dict(first), dict(extra)
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate names it is asked to write
        root = archive.namelist()[0].split("/", 1)[0]
        for name, data in first.items():
            out.writestr(f"{root}/{name}", data)
        for item in archive.infolist():
            if not (replace and item.filename.split("/", 1)[1] in first):
                out.writestr(item, archive.read(item.filename))
        for name, data in extra.items():
            out.writestr(f"{root}/{name}", data)
    return target


def study(root: Path, external: dict, command: str = "run", store: Path | None = None) -> list[str]:
    """CLI arguments of a smoke study whose one target is `external` (model `x`), attacked from `a`."""
    models = [{"name": "a", "arch": "tiny_cnn", "init": "random", "dev_set": "d1", "instance": 0},
              {"name": "x", "external": external}]
    return [command, "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{store or root / 'mlflow.db'}",
            f"output_dir={root / 'out'}", f"models={json.dumps(models)}", "surrogates=[a]", "targets=[x]",
            "attacks=[{name: fgsm, eps: [0.02]}]", "train.max_epochs=1"]


def refused(root: Path, external: dict, capsys, store: Path | None = None) -> str:
    """The one line `run` gives for a study whose target is `external`: exit 2, no traceback, no
    store (or, given a `store` that holds the model, no experiment in it) and no output folder."""
    code = main(study(root, external, store=store))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("medtransfer: error: models.x.external"), err
    assert "Traceback" not in err[0]
    assert not (root / "out").exists()
    if store is None:
        assert not (root / "mlflow.db").exists()
    else:
        assert MlflowClient(f"sqlite:///{store}").get_experiment_by_name("smoke") is None
    return err[0]


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory) -> Path:
    return export(tmp_path_factory.mktemp("pt2") / "good.pt2")


# --- .pt2 archives ---------------------------------------------------------------------------------

def test_a_duplicate_weights_config_with_a_pickled_weight_first_is_refused_unrun(good_pt2, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    with zipfile.ZipFile(good_pt2) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
        config = json.loads(archive.read(f"{root}/data/weights/model_weights_config.json"))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    payload = tmp_path / "payload.pt"
    torch.save(Payload(marker), payload)
    copies = {"data/weights/model_weights_config.json": json.dumps(config).encode(),
              f"data/weights/{first['path_name']}": payload.read_bytes()}
    hostile = forged(good_pt2, tmp_path / "hostile.pt2", first=copies)
    line = refused(tmp_path, {"format": "export", "path": str(hostile)}, capsys)
    assert "member data/weights/model_weights_config.json appears twice" in line
    assert not marker.exists()
    # the first copies are hostile: where torch's reader picks them, its own loader runs the payload
    try:
        torch.export.load(str(forged(good_pt2, tmp_path / "first-copies.pt2", first=copies, replace=True)))
    except Exception:
        pass
    assert marker.exists()


def test_a_duplicate_constants_config_with_an_opaque_object_is_refused_unrun(good_pt2, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    config = {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False,
                               "tensor_meta": None}}}
    hostile = forged(good_pt2, tmp_path / "hostile.pt2", first={
        "data/constants/model_constants_config.json": json.dumps(config).encode(),
        "data/constants/opaque_obj_0": pickle.dumps(Payload(marker))})
    line = refused(tmp_path, {"format": "export", "path": str(hostile)}, capsys)
    assert "member data/constants/model_constants_config.json appears twice" in line
    assert not marker.exists()


def test_an_aotinductor_library_is_refused_before_it_is_opened(good_pt2, tmp_path, capsys):
    hostile = forged(good_pt2, tmp_path / "aoti.pt2", extra={"data/aotinductor/model/model.wrapper.so": b"\x7fELF"})
    line = refused(tmp_path, {"format": "export", "path": str(hostile)}, capsys)
    assert line.endswith("member data/aotinductor/model/model.wrapper.so is part of an AOTInductor compiled "
                         "model (native code, which loading would run)")


def test_a_pickled_constant_without_duplicates_is_refused(good_pt2, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    with zipfile.ZipFile(good_pt2) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
        names = [n for n in archive.namelist() if not n.endswith("model_constants_config.json")]
        rebuilt = tmp_path / "pickled.pt2"
        with zipfile.ZipFile(rebuilt, "w") as out:
            for name in names:
                out.writestr(archive.getinfo(name), archive.read(name))
            config = {"config": {"c": {"path_name": "tensor_0", "is_param": False, "use_pickle": True,
                                       "tensor_meta": None}}}
            out.writestr(f"{root}/data/constants/model_constants_config.json", json.dumps(config))
            out.writestr(f"{root}/data/constants/tensor_0", pickle.dumps(Payload(marker)))
    line = refused(tmp_path, {"format": "export", "path": str(rebuilt)}, capsys)
    assert "refused: c is stored pickled (data/constants/model_constants_config.json" in line
    assert not marker.exists()


NAMES = st.tuples(st.sampled_from(["data/weights/", "data/constants/", "data/aotinductor/model/", "extra/", "models/",
                                    "data/sample_inputs/", "data/executorch/", ""]),
                  st.from_regex(r"[a-z0-9_.]{1,12}(/[a-z0-9_.]{1,12})?", fullmatch=True)).map("".join)


@given(name=NAMES)
def test_any_member_outside_the_allow_list_is_refused_by_name(good_pt2, tmp_path_factory, name):
    target = tmp_path_factory.mktemp("fuzz") / "extra.pt2"
    forged(good_pt2, target, extra={name: b"\x80\x04payload"})
    try:
        check_pt2(target)
    except ExternalError as err:
        assert len(str(err).splitlines()) == 1
        assert name in str(err) or "list different members" in str(err), str(err)
        return
    assert PT2_MEMBERS.fullmatch(name), name  # accepted: an unreferenced weight or constant, never read


# --- models that do not fit their contract -----------------------------------------------------------

@pytest.mark.parametrize("kind, wants", [
    ("pt2 batch 4", "declares input (4, 3, 16, 16)"), ("pt2 batch 8", "declares input (8, 3, 16, 16)"),
    ("pt2 1 channel", ", 1, 16, 16)"), ("pt2 4 channels", ", 4, 16, 16)"), ("pt2 32 px", ", 3, 32, 32)"),
    ("onnx batch 1", "declares input (1, 3, 16, 16)"), ("onnx batch 8", "declares input (8, 3, 16, 16)")])
def test_a_model_refusing_the_study_s_batches_is_one_line_before_any_work(kind, wants, tmp_path, capsys):
    fmt, shape = kind.split(" ", 1)
    number = int(shape.split()[-1] if shape.startswith("batch") else shape.split()[0])
    if fmt == "onnx":
        path = onnx_file(tmp_path / "m.onnx", number)
    elif shape.startswith("batch"):
        path = export(tmp_path / "m.pt2", batch=number)
    else:
        path = export(tmp_path / "m.pt2", **({"size": number} if "px" in shape else {"channels": number}))
    line = refused(tmp_path, {"format": "export" if fmt == "pt2" else "onnx", "path": str(path)}, capsys)
    assert "the model refuses input of shape (" in line and wants in line, line


@pytest.mark.parametrize("returns", ["tuple", "dict"])
def test_a_model_returning_several_outputs_is_one_line(returns, tmp_path, capsys):
    path = export(tmp_path / "m.pt2", returns=returns)
    line = refused(tmp_path, {"format": "export", "path": str(path)}, capsys)
    assert line.endswith(f"models.x.external.output: the model returns a {returns}, not one tensor of scores")


def test_a_scalar_mean_is_one_value_for_every_channel_and_text_is_one_line(good_pt2, tmp_path, capsys):
    from experiments.design.zoo import expand_zoo

    def contract(mean) -> dict:
        external = {"format": "export", "path": str(good_pt2), "input": {"mean": mean, "std": 0.5}}
        cfg = load_config(preset_path("smoke"), study(tmp_path, external)[3:])
        return next(m["external"]["input"] for m in expand_zoo(cfg) if m["name"] == "x")

    assert contract(0.5) == contract([0.5]) == {"size": 0, "channels": 0, "mean": [0.5], "std": [0.5]}
    code = main(study(tmp_path, {"format": "export", "path": str(good_pt2), "input": {"mean": "half"}}))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["medtransfer: error: models.x.external.input.mean: 'half'; must be a number or a "
                                  "list of numbers, one per channel"]
    assert not (tmp_path / "mlflow.db").exists()


# --- MLflow model folders ------------------------------------------------------------------------------

MLMODELS = {
    "sklearn": ("flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n    model_code_path: model.py\n"
                "    model_path: model.pkl\n  sklearn:\n    pickled_model: model.pkl\n"
                "    serialization_format: pickle\n", True),
    "code_folder": ("flavors:\n  python_function:\n    loader_module: evil_loader\n    code: code\n"
                    "    data: model.pkl\n", True),
    "from_code": ("flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"
                  "    model_code_path: model.py\n    code: code\n", False),
    "dotdot": ("flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"
               "    model_code_path: model.py\n    code: ../../code\n", True),
    "absolute": ("flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"
                 "    model_code_path: model.py\n    artifacts:\n      weights: {{path: {outside}, uri: x}}\n", True),
    "pickled_torch": ("flavors:\n  pytorch:\n    model_data: data\n    pytorch_version: 2.14.1\n"
                      "  python_function:\n    loader_module: mlflow.pytorch\n    data: data\n", True),
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A store holding one run with each hostile MLflow model folder of `MLMODELS` (its code and
    pickles write `marker` when they run); yields (store file, run id, marker)."""
    root = tmp_path_factory.mktemp("registry")
    marker, store = root / "code-ran", root / "mlflow.db"
    code = f"open({str(marker)!r}, 'w').close()\n"
    outside = root / "outside.py"
    outside.write_text(code)
    folders = root / "folders"
    for name, (mlmodel, _) in MLMODELS.items():
        folder = folders / name
        (folder / "code").mkdir(parents=True)
        (folder / "data").mkdir()
        (folder / "MLmodel").write_text(mlmodel.format(outside=outside))
        (folder / "model.py").write_text(code)
        (folder / "code" / "evil_loader.py").write_text(code)
        (folder / "model.pkl").write_bytes(pickle.dumps(Payload(marker)))
        (folder / "data" / "model.pth").write_bytes(pickle.dumps(Payload(marker)))
    import mlflow.pytorch  # a correct model: PyTorch flavour stored as pt2 (dynamic batch, as MLflow exports it)

    example = np.random.default_rng(0).random((2, CHANNELS, SIZE, SIZE), dtype=np.float32)
    mlflow.pytorch.save_model(Net().eval(), str(folders / "pt2"), serialization_format="pt2", input_example=example)
    client = MlflowClient(f"sqlite:///{store}")
    run = client.create_run(client.create_experiment("handed-over", (root / "artifacts").as_uri()))
    client.log_artifacts(run.info.run_id, str(folders))
    client.set_terminated(run.info.run_id)
    return store, run.info.run_id, marker


@pytest.mark.parametrize("name, culprit", [
    ("sklearn", "its pyfunc loader_module is 'mlflow.sklearn', which would import that module"),
    ("code_folder", "its pyfunc loader_module is 'evil_loader'"),
    ("from_code", "this models-from-code pyfunc runs model.py and imports code from the registry with your rights; "
                  "set trust_code: true on the entry if you trust this registry"),
    ("dotdot", "MLmodel flavors.python_function.code names '../../code', outside the model folder"),
    ("absolute", "MLmodel flavors.python_function.artifacts names '/"),
    ("pickled_torch", "its PyTorch flavour is pickled, which loading would unpickle")])
def test_an_mlflow_model_that_would_run_code_is_one_line_unrun(registry, name, culprit, tmp_path, capsys):
    store, run_id, marker = registry
    external = {"format": "mlflow", "uri": f"runs:/{run_id}/{name}", "trust_code": MLMODELS[name][1],
                "output": {"kind": "probabilities"}}
    line = refused(tmp_path, external, capsys, store=store)
    assert f"runs:/{run_id}/{name}: refused: " in line and culprit in line, line
    assert not marker.exists()


def test_an_mlflow_pt2_model_loads_without_trust_and_gives_its_gradients(registry, tmp_path, capsys):
    store, run_id, marker = registry
    args = study(tmp_path, {"format": "mlflow", "uri": f"runs:/{run_id}/pt2"}, command="plan", store=store)
    code = main([*args, "surrogates=[x]", "targets=[a]"])  # a surrogate: only a differentiable core can be one
    out = capsys.readouterr().out
    assert code == 0 and "Problems: none" in out, out
    assert not (tmp_path / "out").exists() and not marker.exists()


# --- plan ----------------------------------------------------------------------------------------------

class Scores(BaseHTTPRequestHandler):
    """A scoring endpoint answering 0.5 for every image (MLflow's /invocations JSON protocol)."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        images = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["inputs"]
        body = json.dumps({"predictions": [0.5] * len(images)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_plan_of_the_own_model_example_probes_every_external_model(tmp_path, monkeypatch, capsys):
    (tmp_path / "models").mkdir()
    export(tmp_path / "models" / "deployed.pt2")
    onnx_file(tmp_path / "models" / "deployed.onnx", "batch")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scores)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    example = (REPO / "examples" / "own_model.yaml").read_text()
    config = tmp_path / "own_model.yaml"
    config.write_text(example.replace("base: ../experiments", f"base: {REPO}/experiments")
                      .replace("http://127.0.0.1:5001", f"http://127.0.0.1:{server.server_address[1]}"))
    monkeypatch.chdir(tmp_path)  # the example's paths are relative
    try:
        code = main(["plan", "--config", str(config), f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                     f"output_dir={tmp_path / 'out'}"])
    finally:
        server.shutdown()
    out = capsys.readouterr().out
    assert code == 0 and "Problems: none" in out, out
    assert "pairs to evaluate       12  (0 done)" in out  # 2 surrogates x 3 external targets x 2 attacks
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "out").exists()


def test_plan_reports_the_problem_run_stops_with(tmp_path, capsys):
    path = export(tmp_path / "fixed.pt2", batch=8)
    external = {"format": "export", "path": str(path)}
    assert main(study(tmp_path, external, command="plan")) == 2
    planned = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("models.x")]
    line = refused(tmp_path, external, capsys)
    assert planned == [line.removeprefix("medtransfer: error: ")]
    missing = {"format": "export", "path": str(tmp_path / "absent.pt2")}
    assert main(study(tmp_path, missing, command="plan")) == 2
    assert f"models.x.external.path: {tmp_path / 'absent.pt2'}: file not found" in capsys.readouterr().out
