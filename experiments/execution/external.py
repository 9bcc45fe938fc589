"""External models loaded, and fed through their contract, as ordinary Lightning modules.

`load_external(entry, layout)` gives an `ExternalModule` whose forward takes the study's [0, 1]
pixels and returns logits of the study's task layout, so crafting, scoring and evaluation treat it
like any zoo model. A handed-over file is opened by allow-list, in this process (see
docs/security.md); behind the module is the model's core, by format:

- `export`: `torch.export.load` of a `.pt2` archive, after `check_pt2` has read it with torch's own
  zip reader and accepted only the members of a weights-only exported program (no duplicate member
  names, weights and constants as raw tensor bytes, sample inputs loadable weights-only; nothing
  pickled, no custom or opaque objects, no AOTInductor or other native code); differentiable.
- `onnx`: an onnxruntime session (protobuf; no custom-op library is registered), CPU or CUDA.
- `mlflow`: the model's files are downloaded and every path its MLmodel names must stay inside
  them; a PyTorch flavour stored as pt2 loads as `export` (differentiable) and an ONNX flavour as
  `onnx`, neither through MLflow's loaders; a pickled PyTorch flavour is refused. A models-from-code
  pyfunc (MLflow's own `loader_module`, no `python_model` pickle; what
  `tracking.register_models` registers) runs its code file and imports its `code` folder: it is
  loaded only with `trust_code: true`, with `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`; any other
  flavour or loader module is refused.
- `http`: a scoring endpoint (`endpoint.Endpoint`, MLflow's /invocations JSON protocol); nothing is loaded.

Non-differentiable cores run under `torch.no_grad` on numpy arrays: they can only be targets.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from datamodules.fingerprint import sha256_file
from lightning_modules import tasks

from ..design.external import ContractError, ExternalError, output_columns
from ..design.locations import default_tracking_uri
from ..store.tracking import global_tracking_uri
from .endpoint import Endpoint, ScoreCache


# --- export ----------------------------------------------------------------------------------------

# The members of a weights-only archive as `torch.export.save` writes it (names inside the archive's
# root folder): anything else (pickled or legacy weights, custom or opaque objects, AOTInductor,
# ExecuTorch or other native code, extra files) is refused.
PT2_MEMBERS = re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                         r"|models/model\.json|data/sample_inputs/model\.pt"
                         r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
                         r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+")
PT2_REQUIRED = ("archive_format", "archive_version", "models/model.json", "data/sample_inputs/model.pt",
                "data/weights/model_weights_config.json", "data/constants/model_constants_config.json")
PT2_PAYLOADS = {"data/weights/model_weights_config.json": "weight_", "data/constants/model_constants_config.json":
                "tensor_"}
PT2_JSON_BYTES = 64 << 20  # a config or program larger than this is refused before it is parsed
NATIVE = (".so", ".dll", ".dylib", ".cubin", ".ptx", ".fatbin", ".hsaco", ".o", ".a", ".pte", ".cpp")


def check_pt2(path: Path) -> None:
    """Refuse a `.pt2` file that is not a weights-only exported program (ExternalError naming the
    member): the archive is read with torch's own zip reader (the one `torch.export.load` uses), a
    member name that appears twice (which zip readers resolve differently) is refused first, every
    member must be of a kind in `PT2_MEMBERS`, every weight and constant raw tensor bytes described
    by JSON, and the sample inputs must load with `torch.load(weights_only=True)`."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        reader = torch._C.PyTorchFileReader(str(path))
        records = reader.get_all_records()
    except (zipfile.BadZipFile, OSError, RuntimeError) as err:
        raise ExternalError(f"{path}: not a torch.export archive ({one_line(err)})") from None
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ExternalError(f"{path}: refused: member {twice[0].split('/', 1)[-1]} appears twice (zip readers "
                            "disagree on which copy is read)")
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise ExternalError(f"{path}: refused: not one root folder ({', '.join(sorted(roots)[:3])}); not a "
                            "torch.export archive")
    if sorted(records) != sorted(name.split("/", 1)[1] for name in names):
        raise ExternalError(f"{path}: refused: torch's zip reader and Python's list different members")
    missing = [name for name in PT2_REQUIRED if name not in records]
    if missing:
        raise ExternalError(f"{path}: not a torch.export archive of the current format (no {missing[0]}; older "
                            "archives are unpickled when loaded: export the model again with torch.export.save)")
    for record in records:
        if not PT2_MEMBERS.fullmatch(record):
            raise ExternalError(f"{path}: refused: member {record} is {member_kind(record)}")
    if reader.get_record("archive_format") != b"pt2" or reader.get_record("archive_version") != b"0":
        raise ExternalError(f"{path}: refused: archive format or version is not pt2 version 0")
    for config, prefix in PT2_PAYLOADS.items():
        folder = config.rsplit("/", 1)[0]
        for fqn, payload in pt2_json(path, reader, config).get("config", {}).items():
            if not isinstance(payload, dict):
                raise ExternalError(f"{path}: refused: {config}: {fqn} is not described by a mapping")
            stored = payload.get("path_name")
            if payload.get("use_pickle") is not False:
                raise ExternalError(f"{path}: refused: {fqn} is stored pickled ({config}: {stored!r}), which "
                                    "loading would unpickle")
            if not isinstance(stored, str) or not re.fullmatch(prefix + r"\d+", stored):
                raise ExternalError(f"{path}: refused: {fqn} is stored as {stored!r} ({config}), not as raw tensor "
                                    f"bytes {prefix}<n> (custom and opaque objects would be unpickled)")
            if not isinstance(payload.get("tensor_meta"), dict):
                raise ExternalError(f"{path}: refused: {fqn} has no tensor_meta ({config})")
            if f"{folder}/{stored}" not in records:
                raise ExternalError(f"{path}: refused: {config} names {folder}/{stored}, which is not in the archive")
    pt2_json(path, reader, "models/model.json")
    try:
        torch.load(io.BytesIO(reader.get_record("data/sample_inputs/model.pt")), weights_only=True)
    except Exception as err:
        raise ExternalError(f"{path}: refused: data/sample_inputs/model.pt is not weights-only "
                            f"({one_line(err)})") from None


def member_kind(record: str) -> str:
    """What a member outside the allow-list is, for the refusal."""
    from torch.export.pt2_archive import constants as pt2

    if record.startswith(pt2.AOTINDUCTOR_DIR):
        return "part of an AOTInductor compiled model (native code, which loading would run)"
    if record.startswith((pt2.EXECUTORCH_DIR, pt2.MTIA_DIR, pt2.XL_MODEL_WEIGHTS_DIR)) or record.endswith(NATIVE):
        return "a native or compiled payload, which a weights-only exported program does not have"
    if pt2.CUSTOM_OBJ_FILENAME_PREFIX in record or pt2.OPAQUE_OBJ_FILENAME_PREFIX in record:
        return "a custom or opaque object, which loading would unpickle"
    if record.endswith((".pt", ".pkl", ".pickle")):
        return "pickled (legacy weights or constants), which loading would unpickle"
    return "not part of a weights-only exported program"


def pt2_json(path: Path, reader, record: str) -> dict:
    """A JSON member of a `.pt2` archive, read as torch reads it (capped, parsed as a mapping)."""
    if reader.get_record_size(record) > PT2_JSON_BYTES:
        raise ExternalError(f"{path}: refused: {record} is over {PT2_JSON_BYTES >> 20} MiB")
    try:
        value = json.loads(reader.get_record(record))
    except (ValueError, RecursionError) as err:
        raise ExternalError(f"{path}: refused: {record} is not JSON ({one_line(err)})") from None
    if not isinstance(value, dict):
        raise ExternalError(f"{path}: refused: {record} is not a JSON mapping")
    return value


def load_pt2(path: Path) -> tuple[nn.Module, str]:
    """The module of a checked `.pt2` archive and the input shape its program declares."""
    check_pt2(path)
    try:
        program = torch.export.load(str(path))
        module = program.module()
    except Exception as err:  # a program torch cannot rebuild (unknown operators, a newer schema, ...)
        raise ExternalError(f"{path}: torch.export cannot load it ({one_line(err)})") from None
    return module, exported_input(path, program)


def exported_input(path: Path, program) -> str:
    """The shape of an exported program's one user input, e.g. `(batch 1..inf, 3, 16, 16)`."""
    from torch.export.graph_signature import InputKind

    users = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]
    if len(users) != 1:
        raise ExternalError(f"{path}: refused: the program takes {len(users)} inputs (an image classifier takes "
                            "one batch of images)")
    [node] = [n for n in program.graph.nodes if n.op == "placeholder" and n.name == users[0]]
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor):
        return ""
    dims = []
    for dim in value.shape:
        if isinstance(dim, int):
            dims.append(str(dim))
            continue
        bounds = program.range_constraints.get(dim.node.expr)
        given = f" {bounds.lower}..{bounds.upper}".replace("int_oo", "inf") if bounds is not None else ""
        dims.append(f"{dim}{given}")
    return f"({', '.join(dims)})"


def one_line(err: BaseException) -> str:
    """The first line of an error's message (its type when it has none), at most 200 characters."""
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:200]


# --- numpy cores (onnx, mlflow pyfunc, http) ---------------------------------------------------------

class NumpyCore(nn.Module):
    """A model that scores numpy arrays, as a module: no gradients, results on the input's device."""

    def __init__(self, score: Callable[[np.ndarray], np.ndarray]):
        super().__init__()
        self.score = score

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            array = images.detach().float().cpu().numpy()
            answer = self.score(array)
            try:
                scores = np.asarray(answer, dtype=np.float32)
            except (TypeError, ValueError):
                raise ExternalError(f"the model answers a {type(answer).__name__}, not an array of scores") from None
            return torch.as_tensor(scores).to(images.device)


def onnx_score(path: Path, device: str) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """An onnxruntime session's scoring function (its first output) and the input shape it declares."""
    import onnxruntime

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    try:
        session = onnxruntime.InferenceSession(str(path), providers=providers)
    except Exception as err:  # onnxruntime raises its own InvalidProtobuf, Fail, ...
        raise ExternalError(f"{path}: not a readable ONNX model ({one_line(err)})") from None
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise ExternalError(f"{path}: device cuda, but onnxruntime has no CUDA provider here")
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ExternalError(f"{path}: refused: the model takes {len(inputs)} inputs (an image classifier takes one "
                            "batch of images)")
    feed, output = inputs[0].name, session.get_outputs()[0].name
    shape = f"({', '.join(str(d) if d is not None else '?' for d in inputs[0].shape)})"
    return (lambda array: session.run([output], {feed: array})[0]), shape


# --- mlflow --------------------------------------------------------------------------------------------

# MLflow's own pyfunc loaders (models-from-code is logged with the second, a thin wrapper of the first)
PYFUNC_LOADERS = ("mlflow.pyfunc.model", "mlflow.pyfunc.loaders.code_model")
# Keys of an MLmodel flavour that name files or folders of the model
MLMODEL_PATHS = ("code", "data", "model_data", "model_path", "model_code_path", "pickled_model", "python_model",
                 "artifacts", "model_file", "env", "conda", "virtualenv", "python_env", "requirements")


def load_mlflow(uri: str, tracking_uri: str | None, trust_code: bool = False) -> tuple[nn.Module, str, str]:
    """The core of an MLflow model, the sha256 of its files and the input shape it declares (see the
    module docstring); `trust_code`: a flavour whose loading runs the registry's code is allowed."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:  # MLflow resolves a models:/ URI's registry through its process-wide URI, set for this call only
            with global_tracking_uri(tracking_uri or default_tracking_uri()):
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp,
                                                                 tracking_uri=tracking_uri, registry_uri=tracking_uri))
        except Exception as err:
            raise ExternalError(f"{uri}: MLflow model not found ({one_line(err)})") from None
        if not (local / "MLmodel").is_file():
            raise ExternalError(f"{uri}: not an MLflow model (no MLmodel file)")
        contained(uri, local)
        try:
            flavors = yaml.safe_load((local / "MLmodel").read_text()).get("flavors")
        except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as err:
            raise ExternalError(f"{uri}: MLmodel is not a YAML mapping ({one_line(err)})") from None
        if not isinstance(flavors, dict) or not all(isinstance(f, dict) for f in flavors.values()):
            raise ExternalError(f"{uri}: MLmodel has no mapping of flavours")
        for flavor, settings in flavors.items():
            for key in MLMODEL_PATHS:
                for named in mlmodel_paths(settings.get(key), key == "artifacts"):
                    # MLflow records where the code file came from and loads the file of that name here
                    named = Path(named).name if key == "model_code_path" else named
                    inside(uri, local, f"flavors.{flavor}.{key}", named)
        content = tree_digest(local)
        torch_flavor, onnx_flavor = flavors.get("pytorch"), flavors.get("onnx")
        if torch_flavor is not None:
            exported = local / str(torch_flavor.get("model_data", "data")) / "model.pt2"
            if not exported.is_file():
                raise ExternalError(f"{uri}: refused: its PyTorch flavour is pickled, which loading would unpickle "
                                    "(save it with serialization_format='pt2')")
            module, shape = load_pt2(exported)
            return module, content, shape
        if onnx_flavor is not None and onnx_flavor.get("data"):
            score, shape = onnx_score(local / str(onnx_flavor["data"]), "cpu")
            return NumpyCore(score), content, shape
        pyfunc = flavors.get("python_function")
        if pyfunc is not None:
            return load_pyfunc(uri, local, pyfunc, trust_code), content, ""
        raise ExternalError(f"{uri}: refused: flavours {', '.join(flavors) or 'none'}; loadable are a PyTorch "
                            "flavour stored as pt2, ONNX, and (with trust_code: true) a models-from-code pyfunc")


def load_pyfunc(uri: str, local: Path, pyfunc: dict, trust_code: bool) -> nn.Module:
    """A pyfunc model loaded by MLflow's own pyfunc loader, only when trusted, never unpickling."""
    import mlflow

    loader = pyfunc.get("loader_module")
    if loader not in PYFUNC_LOADERS:
        raise ExternalError(f"{uri}: refused: its pyfunc loader_module is {loader!r}, which would import that module "
                            f"and load its files (unpickling them); only models-from-code with MLflow's own "
                            f"loader ({' or '.join(PYFUNC_LOADERS)}) are loaded")
    if not pyfunc.get("model_code_path") or pyfunc.get("python_model"):
        raise ExternalError(f"{uri}: refused: a pyfunc with a pickled python_model, which loading would unpickle "
                            "(log it as models-from-code)")
    if not trust_code:
        code = [str(c) for c in mlmodel_paths(pyfunc.get("code"))]
        imports = f" and imports {', '.join(code)}" if code else ""
        raise ExternalError(f"{uri}: refused: this models-from-code pyfunc runs {Path(pyfunc['model_code_path']).name}"
                            f"{imports} "
                            "from the registry with your rights; set trust_code: true on the entry if you trust "
                            "this registry")
    previous = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    try:
        model = mlflow.pyfunc.load_model(str(local))
    except Exception as err:
        raise ExternalError(f"{uri}: MLflow cannot load its pyfunc ({one_line(err)})") from None
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
        else:
            os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = previous
    return NumpyCore(lambda array: model.predict(array))


def mlmodel_paths(value, artifacts: bool = False) -> list[str]:
    """The file names an MLmodel value holds: a name, a list or mapping of them; `artifacts`: a
    pyfunc's {name: {path, uri}} (its `uri` says where the artifact came from and is never read)."""
    if artifacts and isinstance(value, dict):
        return [str(item.get("path")) if isinstance(item, dict) else str(item) for item in value.values()]
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, (list, tuple)):
        return [name for item in value for name in mlmodel_paths(item)]
    if isinstance(value, dict):
        return [name for item in value.values() for name in mlmodel_paths(item)]
    return [str(value)]


def inside(uri: str, local: Path, key: str, named: str) -> None:
    """Refuse a path an MLmodel names that leaves the model folder (absolute, `..`, a link out)."""
    if not named or Path(named).is_absolute() or ".." in Path(named).parts or "://" in named:
        raise ExternalError(f"{uri}: refused: MLmodel {key} names {named!r}, outside the model folder")
    if not (local / named).resolve().is_relative_to(local.resolve()):
        raise ExternalError(f"{uri}: refused: MLmodel {key} names {named!r}, which leads outside the model folder")


def contained(uri: str, local: Path) -> None:
    """Refuse a model folder holding a symbolic link (which could lead out of it)."""
    for item in sorted(local.rglob("*")):
        if item.is_symlink():
            raise ExternalError(f"{uri}: refused: {item.relative_to(local)} is a symbolic link")


def tree_digest(folder: Path) -> str:
    """sha256 of a folder's files (relative names and contents, in name order)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


# --- the contract --------------------------------------------------------------------------------------

class ExternalModel(nn.Module):
    """A core behind its contract: the study's [0, 1] NCHW images (`channels` channels) are brought to
    the model's channels (grey replicated to 3, 3 averaged to grey) and size (bilinear), normalised,
    scored, and the outputs turned into logits of the study's task layout (`columns`: which output
    each score is; binary with two outputs: the positive's log-odds against the negative)."""

    def __init__(self, name: str, core: nn.Module, settings: dict, task: str, label_names: list[str], channels: int,
                 size: int):
        super().__init__()
        contract = settings["input"]
        self.name, self.core, self.task = name, core, task
        self.kind = settings["output"]["kind"]
        self.channels, self.model_channels = channels, contract["channels"] or channels
        self.size = contract["size"] or size
        if self.model_channels != channels and (channels, self.model_channels) not in ((1, 3), (3, 1)):
            raise ContractError(f"models.{name}.external.input.channels: {self.model_channels}, but the study's "
                                f"images have {channels} (grey and RGB convert into each other, nothing else)")
        self.columns = output_columns(name, settings["output"], task, label_names)
        labels = settings["output"]["labels"]
        self.width = len(labels) if labels else (1 if task == "binary" else len(label_names))
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(contract["mean"], dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(contract["std"], dtype=torch.float32).view(shape))

    def train(self, mode: bool = True):
        self.training = mode  # the core keeps the mode it was exported or saved in
        return self

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """The study's images as the model takes them."""
        if self.model_channels != self.channels:
            images = images.expand(-1, 3, -1, -1) if self.channels == 1 else images.mean(dim=1, keepdim=True)
        if images.shape[-2:] != (self.size, self.size):
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (images - self.mean) / self.std

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """The model's raw outputs on the study's images, (N, width), checked against the contract."""
        raw = self.core(self.model_input(images))
        if not isinstance(raw, torch.Tensor):
            raise ContractError(f"models.{self.name}.external.output: the model returns a {type(raw).__name__}, "
                                "not one tensor of scores")
        if raw.ndim == 0 or len(raw) != len(images):
            raise ContractError(f"models.{self.name}.external.output: the model gives outputs of shape "
                                f"{tuple(raw.shape)} for {len(images)} images")
        raw = raw.reshape(len(images), -1)
        if raw.shape[1] != self.width:
            raise ContractError(f"models.{self.name}.external.output: the model gives {raw.shape[1]} outputs, "
                                f"the contract {self.width}")
        return raw

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raw = self.outputs(images).double()
        if self.kind == "probabilities":
            raw = raw.clamp(1e-12, 1 - 1e-12)
            if self.task == "multiclass":
                return raw[:, self.columns].log().float()
            logits = torch.logit(raw)
            if self.task == "binary" and len(self.columns) == 2:
                return logits[:, self.columns[:1]].float()
            return logits[:, self.columns].float()
        if self.task == "binary" and len(self.columns) == 2:
            return (raw[:, self.columns[0]] - raw[:, self.columns[1]]).unsqueeze(1).float()
        return raw[:, self.columns].float()


class ExternalModule(pl.LightningModule):
    """An external model as the study's modules are: logits from `forward`, scores from `predict_step`;
    `endpoint` is its `Endpoint` (http) or None, `differentiable` whether it can be a surrogate,
    `content` the sha256 of its file(s) ('' for an endpoint), `expects` the input shape its file
    declares ('' where unknown)."""

    def __init__(self, model: ExternalModel, differentiable: bool, content: str, endpoint: Endpoint | None = None,
                 expects: str = ""):
        super().__init__()
        self.model, self.task = model, model.task
        self.differentiable, self.content, self.endpoint, self.expects = differentiable, content, endpoint, expects

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return tasks.scores(self.task, self(images))


def study_layout(cfg, data) -> dict:
    """What an external model is fed and must answer: the domain's task, label names, channels and
    image size."""
    return {"task": data.task, "label_names": list(data.label_names), "channels": int(data.channels),
            "size": int(cfg.data.image_size)}


def load_external(entry, layout: dict, tracking_uri: str | None = None, cache: Path | None = None) -> ExternalModule:
    """The external zoo entry's model for a study `layout` {task, label_names, channels, size};
    `cache`: the folder of an endpoint's score cache (None: no cache)."""
    name, settings = entry["name"], entry["external"]
    fmt, differentiable, content, endpoint, expects = settings["format"], True, "", None, ""
    if fmt in ("export", "onnx"):
        path = Path(str(settings["path"])).expanduser()
        if not path.is_file():
            raise ExternalError(f"models.{name}.external.path: {path}: file not found")
        content = sha256_file(path)
        if fmt == "export":
            core, expects = load_pt2(path)
        else:
            score, expects = onnx_score(path, settings["device"])
            core, differentiable = NumpyCore(score), False
    elif fmt == "mlflow":
        core, content, expects = load_mlflow(str(settings["uri"]), tracking_uri, bool(settings["trust_code"]))
        differentiable = not isinstance(core, NumpyCore)
    else:
        endpoint = Endpoint(name, settings, ScoreCache(cache) if cache is not None else None)
        core, differentiable = NumpyCore(endpoint), False
    model = ExternalModel(name, core, settings, layout["task"], list(layout["label_names"]), int(layout["channels"]),
                          int(layout["size"]))
    if endpoint is not None:
        endpoint.width = model.width  # its answers are checked against the contract's width
    return ExternalModule(model, differentiable, content, endpoint, expects).eval()
