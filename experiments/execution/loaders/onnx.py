"""`onnx`: an onnxruntime session (protobuf; no custom-op library is registered), CPU or CUDA; a
target only (no gradients)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ...design.external import ExternalError
from .common import Loaded, NumpyCore, model_file, one_line

FORMAT = "onnx"


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


def load(name: str, settings: dict, tracking_uri: str | None, cache: Path | None) -> Loaded:
    path, content = model_file(name, settings)
    score, expects = onnx_score(path, settings["device"])
    return Loaded(NumpyCore(score), False, content, expects)
