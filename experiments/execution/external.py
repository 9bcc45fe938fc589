"""External models loaded, and fed through their contract, as ordinary Lightning modules.

`load_external(entry, layout)` gives an `ExternalModule` (`execution.contract`) whose forward takes
the study's [0, 1] pixels and returns logits of the study's task layout, so crafting, scoring and
evaluation treat it like any zoo model. A handed-over file is opened by allow-list, in this process
(see docs/security.md). Behind the module is the model's core, loaded by its format's loader:
`LOADERS`, one module each in `execution.loaders` (`pt2` for `export`, `onnx`, `mlflow_model`,
`http`), found by the `FORMAT` it names, so a new format is one module there.

Non-differentiable cores run under `torch.no_grad` on numpy arrays: they can only be targets.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from . import loaders
from .contract import ExternalModel, ExternalModule


def format_loaders() -> dict:
    """Each loader module's `load`, by the format it names."""
    found = {}
    for info in pkgutil.iter_modules(loaders.__path__):
        module = importlib.import_module(f"{loaders.__name__}.{info.name}")
        if hasattr(module, "FORMAT"):
            found[module.FORMAT] = module.load
    return found


LOADERS = format_loaders()


def load_external(entry, layout: dict, tracking_uri: str | None = None, cache: Path | None = None) -> ExternalModule:
    """The external zoo entry's model for a study `layout` {task, label_names, channels, size};
    `cache`: the folder of an endpoint's score cache (None: no cache)."""
    name, settings = entry["name"], entry["external"]
    loaded = LOADERS[settings["format"]](name, settings, tracking_uri, cache)
    model = ExternalModel(name, loaded.core, settings, layout["task"], list(layout["label_names"]),
                          int(layout["channels"]), int(layout["size"]))
    if loaded.endpoint is not None:
        loaded.endpoint.width = model.width  # its answers are checked against the contract's width
    return ExternalModule(model, loaded.differentiable, loaded.content, loaded.endpoint, loaded.expects).eval()
