"""`mlflow`: an MLflow model's files are downloaded and every path its MLmodel names must stay inside
them; a PyTorch flavour stored as pt2 loads as `export` (differentiable) and an ONNX flavour as
`onnx`, neither through MLflow's loaders; a pickled PyTorch flavour is refused. A models-from-code
pyfunc (MLflow's own `loader_module`, no `python_model` pickle; what `tracking.register_models`
registers) runs its code file and imports its `code` folder: it is loaded only with
`trust_code: true`, with `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`; any other flavour or loader
module is refused. The one module outside `experiments.store` that imports mlflow (for models).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import yaml
from torch import nn

from ...design.external import ExternalError
from ...design.locations import default_tracking_uri
from ...store.tracking import global_tracking_uri
from .common import Loaded, NumpyCore, one_line
from .onnx import onnx_score
from .pt2 import load_pt2

FORMAT = "mlflow"

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


def load(name: str, settings: dict, tracking_uri: str | None, cache: Path | None) -> Loaded:
    core, content, expects = load_mlflow(str(settings["uri"]), tracking_uri, bool(settings["trust_code"]))
    return Loaded(core, not isinstance(core, NumpyCore), content, expects)


def registry_version(uri: str, tracking_uri: str | None) -> dict:
    """A `models:/<name>/<version>` or `models:/<name>@<alias>` URI's registry version: name, version,
    source and run; {} for other URIs (a logged model's id or a run's path are fixed by the URI)."""
    from mlflow.tracking import MlflowClient

    reference = uri.removeprefix("models:/")
    if not uri.startswith("models:/") or reference.startswith("m-"):
        return {}
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    if "@" in reference:
        name, alias = reference.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    else:
        name, number = reference.rsplit("/", 1)
        version = client.get_model_version(name, number)
    return {"name": version.name, "version": version.version, "source": version.source, "run_id": version.run_id}
