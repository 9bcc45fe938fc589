"""External zoo entries: a team's own model, trained elsewhere, as a target (or a differentiable surrogate).

An entry `{name, external: {format, path | uri, input, output, ...}}` is never trained. This module
holds its schema and contract checks (pure: nothing is loaded here); `experiments.execution.external`
loads and scores it, `experiments.preflight.externals` probes it before a study starts.

The contract (docs/architecture.md, "External models"): the model takes NCHW float images of
`input.size` and `input.channels`, normalised as `(pixel - mean) / std` from [0, 1] pixels; its
outputs are `output.kind` (logits or probabilities), named by `output.labels` in output order.
"""
from __future__ import annotations

import ipaddress
import math
import re
from urllib.parse import urlsplit

FORMATS = ("export", "onnx", "mlflow", "http")
DIFFERENTIABLE = ("export",)  # an `mlflow` model is when it has a pt2 PyTorch flavour (seen when loaded)
NON_DIFFERENTIABLE = ("onnx", "http")  # formats that can only be targets
OUTPUT_KINDS = ("logits", "probabilities")
DEVICES = ("cpu", "cuda")
# Keys of an entry and their defaults; `fingerprint` is set by the run (the probe's digest), never by hand.
# trust_code: an MLflow model whose loading runs registry code (models-from-code) loads only with trust_code: true
EXTERNAL_DEFAULTS = {"path": "", "uri": "", "device": "cpu", "batch_size": 32, "timeout": 30.0, "retries": 3,
                     "backoff": 0.5, "concurrency": 2, "token_env": "", "max_response_bytes": 16 << 20,
                     "fingerprint": "", "trust_code": False}
# An endpoint's numeric keys: (kind, lowest allowed, whether the lowest is allowed itself)
HTTP_RANGES = {"batch_size": (int, 1, True), "concurrency": (int, 1, True), "retries": (int, 0, True),
               "max_response_bytes": (int, 1, True), "timeout": (float, 0, False), "backoff": (float, 0, True)}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MLFLOW_SCHEMES = ("models:/", "runs:/")


class ContractError(ValueError):
    """An external entry that cannot be used as declared (the message names the entry's key)."""


class ExternalError(RuntimeError):
    """An external model that cannot be loaded or did not answer as its contract says (one line)."""


def external_settings(name: str, external: dict) -> dict:
    """The complete settings of entry `name`'s `external` mapping (defaults filled in), or
    ContractError naming the key."""
    where = f"models.{name}.external"
    known = {"format", "input", "output", *EXTERNAL_DEFAULTS}
    unknown = sorted(set(external) - known)
    if unknown:
        raise ContractError(f"{where}.{unknown[0]}: unknown key; valid: {', '.join(sorted(known))}")
    settings = {**EXTERNAL_DEFAULTS, **external}
    fmt = settings.get("format")
    if fmt not in FORMATS:
        raise ContractError(f"{where}.format: unknown {fmt!r}; valid: {', '.join(FORMATS)}")
    location = "path" if fmt in ("export", "onnx") else "uri"
    if not settings[location]:
        raise ContractError(f"{where}.{location}: required for format {fmt}")
    if fmt == "mlflow" and not str(settings["uri"]).startswith(MLFLOW_SCHEMES):
        raise ContractError(f"{where}.uri: {settings['uri']!r}; an MLflow model URI is models:/<name>/<version>, "
                            "models:/<name>@<alias> or runs:/<run id>/<path>")
    if not isinstance(settings["trust_code"], bool):
        raise ContractError(f"{where}.trust_code: {settings['trust_code']!r}; must be true or false")
    if settings["device"] not in DEVICES:
        raise ContractError(f"{where}.device: unknown {settings['device']!r}; valid: {', '.join(DEVICES)}")
    settings.update({key: _http_number(where, key, settings[key]) for key in HTTP_RANGES})
    if fmt == "http":
        _endpoint(where, str(settings["uri"]), settings["token_env"])
    settings["input"] = _input(where, settings.get("input") or {})
    settings["output"] = _output(where, settings.get("output") or {})
    return settings


def _http_number(where: str, key: str, value):
    """An endpoint key's value as its kind, or ContractError naming it when it is not a finite number
    in its range."""
    kind, low, inclusive = HTTP_RANGES[key]
    try:
        number = kind(value) if not isinstance(value, bool) and (kind is float or float(value).is_integer()) else None
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or not math.isfinite(number) or number < low or (number == low and not inclusive):
        what = f"{'whole' if kind is int else 'finite'} number {'at least' if inclusive else 'above'} {low}"
        raise ContractError(f"{where}.{key}: {value!r}; must be a {what}")
    return number


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine: localhost, 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _endpoint(where: str, uri: str, token_env: str) -> None:
    """Refuse a scoring endpoint's URI that is not plain http(s)://host[:port][/path], or that would
    send a bearer token in the clear: with `token_env` set, https is required except to loopback."""
    try:
        parts = urlsplit(uri)
        parts.port  # raises on a port that is not a number in range
    except ValueError as err:
        raise ContractError(f"{where}.uri: {uri!r}; not a URL ({err})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ContractError(f"{where}.uri: {uri!r}; a scoring endpoint is http(s)://host:port")
    if parts.username is not None or parts.password is not None:
        raise ContractError(f"{where}.uri: credentials in the URI are refused (give a bearer token by token_env)")
    if parts.query or parts.fragment:
        raise ContractError(f"{where}.uri: {uri!r}; a scoring endpoint takes no query or fragment")
    if not isinstance(token_env, str) or (token_env and not ENV_NAME.fullmatch(token_env)):
        raise ContractError(f"{where}.token_env: {token_env!r}; must be an environment variable's name")
    if token_env and parts.scheme != "https" and not is_loopback(parts.hostname):
        raise ContractError(f"{where}.uri: {uri!r}; a bearer token (token_env {token_env}) is sent over https "
                            "only (plain http only to a loopback address)")


def _input(where: str, given: dict) -> dict:
    unknown = sorted(set(given) - {"size", "channels", "mean", "std"})
    if unknown:
        raise ContractError(f"{where}.input.{unknown[0]}: unknown key; valid: channels, mean, size, std")
    size, channels = (_number(f"{where}.input.{key}", given.get(key, 0), int) for key in ("size", "channels"))
    if size < 0 or channels < 0:
        raise ContractError(f"{where}.input: size and channels must be positive (0 = the study's)")
    mean, std = (_values(f"{where}.input.{key}", given.get(key, default)) for key, default in (("mean", 0.0),
                                                                                                ("std", 1.0)))
    for key, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels or len(values)):
            raise ContractError(f"{where}.input.{key}: {len(values)} values for {channels} channels")
    if any(s <= 0 for s in std):
        raise ContractError(f"{where}.input.std: {std}; every value must be above 0")
    return {"size": size, "channels": channels, "mean": mean, "std": std}


def _number(key: str, value, kind: type):
    """`value` as an int or a finite float (a bool, text or NaN is refused, naming the key)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or (kind is int and value != int(value))):
        raise ContractError(f"{key}: {value!r}; must be {'an integer' if kind is int else 'a number'}")
    return kind(value)


def _values(key: str, value) -> list[float]:
    """A per-channel list of numbers; a single number is one value for every channel."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    if not isinstance(value, (list, tuple)) or not value:
        raise ContractError(f"{key}: {value!r}; must be a number or a list of numbers, one per channel")
    return [_number(key, v, float) for v in value]


def _output(where: str, given: dict) -> dict:
    unknown = sorted(set(given) - {"kind", "labels"})
    if unknown:
        raise ContractError(f"{where}.output.{unknown[0]}: unknown key; valid: kind, labels")
    kind = given.get("kind", "logits")
    if kind not in OUTPUT_KINDS:
        raise ContractError(f"{where}.output.kind: unknown {kind!r}; valid: {', '.join(OUTPUT_KINDS)}")
    labels = [str(label) for label in given.get("labels", [])]
    if len(set(labels)) != len(labels):
        raise ContractError(f"{where}.output.labels: {labels} names a label twice")
    return {"kind": kind, "labels": labels}


def output_columns(name: str, output: dict, task: str, label_names: list[str]) -> list[int]:
    """Which model output is each score of the study's task layout, in the study's label order
    (binary: [positive] or [positive, negative]); ContractError naming the entry when the declared
    labels cannot give the task's scores."""
    where = f"models.{name}.external.output.labels"
    labels = output["labels"]
    if task == "binary":
        positive = label_names[0]
        if len(labels) <= 1:
            if labels and labels != [positive]:
                raise ContractError(f"{where}: {labels}; the study's positive label is {positive!r}")
            return [0]
        if len(labels) != 2 or positive not in labels:
            raise ContractError(f"{where}: {labels}; a binary model has one output, or two outputs of "
                                f"which one is the study's positive label {positive!r}")
        return [labels.index(positive), 1 - labels.index(positive)]
    if not labels:
        return list(range(len(label_names)))
    missing = [label for label in label_names if label not in labels]
    if missing:
        raise ContractError(f"{where}: no output for the study's label {missing[0]!r}")
    if task == "multiclass" and len(labels) != len(label_names):
        raise ContractError(f"{where}: {len(labels)} outputs for the study's {len(label_names)} classes "
                            "(a softmax over other classes is not the study's)")
    return [labels.index(label) for label in label_names]


def external_source(settings: dict) -> dict:
    """The declared part of an external model's identity: format, location and contract (what the
    probe finds is added as `fingerprint`)."""
    return {"format": settings["format"], "location": settings["path"] or settings["uri"],
            "input": settings["input"], "output": settings["output"]}
