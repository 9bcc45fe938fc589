"""External models loaded, and fed through their contract, as ordinary Lightning modules.

`load_external(entry, layout)` gives an `ExternalModule` whose forward takes the study's [0, 1]
pixels and returns logits of the study's task layout, so crafting, scoring and evaluation treat it
like any zoo model. Behind it is the model's core, by format (loading never unpickles anything):

- `export`: `torch.export.load` of a `.pt2` archive, after `check_pt2` has refused every archive
  that would make it unpickle (legacy single-file archives, weights or constants stored pickled,
  custom or opaque objects, a `.pt` member that is not weights-only); differentiable.
- `onnx`: an onnxruntime session (protobuf; no custom-op library is registered), CPU or CUDA.
- `mlflow`: the model's files are downloaded; a PyTorch flavour stored as pt2 loads as `export`
  (differentiable); a pickled PyTorch flavour is refused; a models-from-code pyfunc (no
  `python_model` pickle, e.g. what `tracking.register_models` registers) runs its own code file
  through `mlflow.pyfunc.load_model`; any other flavour is refused.
- `http`: a scoring endpoint (`endpoint.Endpoint`, MLflow's /invocations JSON protocol); nothing is loaded.

Non-differentiable cores run under `torch.no_grad` on numpy arrays: they can only be targets.
"""
from __future__ import annotations

import hashlib
import io
import json
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

from lightning_modules import tasks

from ..design.external import ContractError, ExternalError, output_columns
from .endpoint import Endpoint, ScoreCache


# --- export ----------------------------------------------------------------------------------------

def check_pt2(path: Path) -> None:
    """Refuse a `.pt2` file whose loading would unpickle: only the archive format whose weights and
    constants are raw tensor bytes described by JSON is accepted (ExternalError otherwise)."""
    from torch.export.pt2_archive import constants as pt2

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ExternalError(f"{path}: not a torch.export archive ({err})") from None
    with archive:
        names = archive.namelist()
        configs = [n for n in names if n.endswith(("_weights_config.json", "_constants_config.json"))]
        if not any(n.split("/", 1)[-1].startswith("models/") and n.endswith(".json") for n in names) or not configs:
            raise ExternalError(f"{path}: not a torch.export archive of the current format (older archives "
                                "are unpickled when loaded; export the model again with torch.export.save)")
        for name in configs:
            for fqn, payload in json.loads(archive.read(name))["config"].items():
                stored = payload.get("path_name", "")
                if payload.get("use_pickle") or stored.startswith((pt2.CUSTOM_OBJ_FILENAME_PREFIX,
                                                                    pt2.OPAQUE_OBJ_FILENAME_PREFIX)):
                    raise ExternalError(f"{path}: refused: {fqn} is stored pickled ({stored}), which "
                                        "loading would unpickle")
        for name in names:
            if name.endswith((".pt", ".pkl", ".pickle")):
                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception as err:
                    raise ExternalError(f"{path}: refused: {name} is not weights-only "
                                        f"({str(err).strip().splitlines()[0][:120]})") from None


def load_pt2(path: Path) -> nn.Module:
    """The module of a checked `.pt2` archive (its batch dimension must have been exported dynamic)."""
    check_pt2(path)
    return torch.export.load(str(path)).module()


# --- numpy cores (onnx, mlflow pyfunc, http) ---------------------------------------------------------

class NumpyCore(nn.Module):
    """A model that scores numpy arrays, as a module: no gradients, results on the input's device."""

    def __init__(self, score: Callable[[np.ndarray], np.ndarray]):
        super().__init__()
        self.score = score

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            array = images.detach().float().cpu().numpy()
            return torch.as_tensor(np.asarray(self.score(array), dtype=np.float32)).to(images.device)


def onnx_score(path: Path, device: str) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    try:
        session = onnxruntime.InferenceSession(str(path), providers=providers)
    except Exception as err:  # onnxruntime raises its own InvalidProtobuf, Fail, ...
        raise ExternalError(f"{path}: not a readable ONNX model ({str(err).strip().splitlines()[0][:160]})") from None
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise ExternalError(f"{path}: device cuda, but onnxruntime has no CUDA provider here")
    feed, output = session.get_inputs()[0].name, session.get_outputs()[0].name
    return lambda array: session.run([output], {feed: array})[0]


# --- mlflow --------------------------------------------------------------------------------------------

def load_mlflow(uri: str, tracking_uri: str | None) -> tuple[nn.Module, str]:
    """The core of an MLflow model and the sha256 of its files (see the module docstring)."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri,
                                                             registry_uri=tracking_uri))
        except Exception as err:
            raise ExternalError(f"{uri}: MLflow model not found ({str(err).strip().splitlines()[0][:160]})") from None
        if not (local / "MLmodel").is_file():
            raise ExternalError(f"{uri}: not an MLflow model (no MLmodel file)")
        content = tree_digest(local)
        flavors = yaml.safe_load((local / "MLmodel").read_text()).get("flavors", {})
        torch_flavor = flavors.get("pytorch")
        if torch_flavor is not None:
            exported = local / torch_flavor.get("model_data", "data") / "model.pt2"
            if not exported.is_file():
                raise ExternalError(f"{uri}: refused: its PyTorch flavour is pickled (save it with "
                                    "serialization_format='pt2', or as a models-from-code pyfunc)")
            return load_pt2(exported), content
        pyfunc = flavors.get("python_function", {})
        if pyfunc.get("model_code_path") and "python_model" not in pyfunc:
            model = mlflow.pyfunc.load_model(str(local))
            return NumpyCore(lambda array: model.predict(array)), content
        raise ExternalError(f"{uri}: refused: flavours {', '.join(flavors) or 'none'}; loadable are a PyTorch "
                            "flavour stored as pt2 and a models-from-code pyfunc (others unpickle)")


def tree_digest(folder: Path) -> str:
    """sha256 of a folder's files (relative names and contents, in name order)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
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
    `content` the sha256 of its file(s) ('' for an endpoint)."""

    def __init__(self, model: ExternalModel, differentiable: bool, content: str, endpoint: Endpoint | None = None):
        super().__init__()
        self.model, self.task = model, model.task
        self.differentiable, self.content, self.endpoint = differentiable, content, endpoint

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
    fmt, differentiable, content, endpoint = settings["format"], True, "", None
    if fmt in ("export", "onnx"):
        path = Path(str(settings["path"])).expanduser()
        if not path.is_file():
            raise ExternalError(f"models.{name}.external.path: {path}: file not found")
        content = file_digest(path)
        if fmt == "export":
            core = load_pt2(path)
        else:
            core, differentiable = NumpyCore(onnx_score(path, settings["device"])), False
    elif fmt == "mlflow":
        core, content = load_mlflow(str(settings["uri"]), tracking_uri)
        differentiable = not isinstance(core, NumpyCore)
    else:
        endpoint = Endpoint(name, settings, ScoreCache(cache) if cache is not None else None)
        core, differentiable = NumpyCore(endpoint), False
    model = ExternalModel(name, core, settings, layout["task"], list(layout["label_names"]), int(layout["channels"]),
                          int(layout["size"]))
    if endpoint is not None:
        endpoint.width = model.width  # its answers are checked against the contract's width
    return ExternalModule(model, differentiable, content, endpoint).eval()
