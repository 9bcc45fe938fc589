"""External models probed before any work: each is loaded and scored on a fixed batch and on the
batch sizes the study will feed it.

The probe finds a contract that does not match the model (output width or type, NaN scores, scores
outside [0, 1] where probabilities were declared, a surrogate that gives no gradients, a batch size,
channel count or image size the model refuses: 1, 3, `data.batch_size` and a surrogate's
`crafting.batch_size` are tried, endpoints only on the fixed batch) and names each model by what it
is: its file's sha256 (or its MLflow model files' and registry version's), and the digest of its
scores on the fixed batch. That name is pinned into the config as `external.fingerprint`, so every
identity built from it (`identity.external_key`) changes when the model behind a path, URI or
endpoint does. Every failure, whatever raised it, is one line naming the entry.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..design.external import ContractError, ExternalError
from ..design.facts import StudyFacts
from ..design.identity import digest
from ..design.model_kinds import kind_of
from ..design.scheduler import Scheduler
from ..execution.contract import study_layout
from ..execution.external import load_external
from ..execution.loaders.common import one_line
from ..execution.loaders.mlflow_model import registry_version
from .checks import StudyProblems

PROBE_SEED, PROBE_IMAGES = 0, 8


def probe_batch(channels: int, size: int) -> torch.Tensor:
    """The fixed probe batch: uniform [0, 1] pixels from a seeded generator, in the study's layout."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    return torch.rand(PROBE_IMAGES, channels, size, size, generator=generator)


@dataclass
class Probed:
    """What probing an external entry found: its fingerprint and the seconds per image of a forward
    pass on the fixed batch, or the problem (one line naming the entry)."""

    fingerprint: str = ""
    seconds: float = 0.0
    problem: str = ""


def fingerprint(entry, layout: dict, tracking_uri: str | None, surrogate: bool, batch_sizes=()) -> Probed:
    """The entry probed (also at `batch_sizes`, except an endpoint); ContractError or ExternalError
    naming the entry."""
    module = load_external(entry, layout, tracking_uri)
    name, settings = entry["name"], entry["external"]
    if surrogate and not module.differentiable:
        raise ContractError(f"models.{name}: a surrogate, but its {settings['format']} model gives no gradients "
                            "(only an export archive or a PyTorch-flavoured MLflow model can be a surrogate)")
    batch = probe_batch(layout["channels"], layout["size"])
    started = time.perf_counter()
    raw = probe(module, name, batch)
    seconds = (time.perf_counter() - started) / len(batch)
    if not np.isfinite(raw).all():
        raise ContractError(f"models.{name}.external: the model gives NaN or infinite outputs on the probe batch")
    if settings["output"]["kind"] == "probabilities" and (raw.min() < 0 or raw.max() > 1):
        raise ContractError(f"models.{name}.external.output.kind: probabilities, but the model gives values in "
                            f"[{raw.min():.3g}, {raw.max():.3g}] on the probe batch (logits?)")
    if settings["format"] != "http":  # an endpoint's requests are its own batch_size; its answers are checked
        sizes = sorted({int(n) for n in batch_sizes if int(n) > 0} - {PROBE_IMAGES})
        generator = torch.Generator().manual_seed(PROBE_SEED + 1)
        for size in sizes:
            probe(module, name, torch.rand(size, layout["channels"], layout["size"], layout["size"],
                                           generator=generator))
    version = registry_version(str(settings["uri"]), tracking_uri) if settings["format"] == "mlflow" else {}
    # rounded: the same model on another device or thread count gives the same digest
    return Probed(digest({"content": module.content, "version": version, "probe": np.round(raw, 4).tolist()}),
                  seconds)


def probe(module, name: str, images: torch.Tensor) -> np.ndarray:
    """The model's raw outputs on `images`; whatever fails is one line naming the entry, with the
    input shape the model's file declares."""
    try:
        with torch.no_grad():
            return module.model.outputs(images).double().numpy()
    except (ContractError, ExternalError) as err:
        message = str(err)
        if message.startswith(f"models.{name}"):
            raise
        raise ExternalError(f"models.{name}.external: {message}") from None
    except Exception as err:  # the model's own code refusing the input: a guard, onnxruntime, ...
        given = tuple(module.model.model_input(images).shape)
        wants = f"; the model declares input {module.expects}" if module.expects else ""
        raise ExternalError(f"models.{name}.external: the model refuses input of shape {given} (a batch of "
                            f"{len(images)} as the contract gives it{wants}): {one_line(err)}") from None


def batch_sizes(cfg: DictConfig, surrogate: bool) -> list[int]:
    """The batch sizes a study feeds a model: 1, an odd one, `data.batch_size` and, for a surrogate,
    `crafting.batch_size` (0: the data's)."""
    return [1, 3, int(cfg.data.batch_size)] + ([int(cfg.crafting.batch_size)] if surrogate else [])


def probe_externals(cfg: DictConfig, layout: dict, facts: StudyFacts) -> dict[str, Probed]:
    """Every external entry of a domain config probed on its layout, by name."""
    scheduler = Scheduler(cfg, facts)
    surrogates = {job.surrogate.name for job in scheduler.set_jobs()}
    found = {}
    for name in [model.name for model in cfg.models if kind_of(model).probed]:
        try:
            found[name] = fingerprint(scheduler.zoo[name], layout, cfg.tracking.uri, name in surrogates,
                                      batch_sizes(cfg, name in surrogates))
        except (ContractError, ExternalError) as err:
            found[name] = Probed(problem=refusal(name, str(err).strip().replace("\n", " ")))
        except Exception as err:  # noqa: BLE001 - every failure of a handed-over model is one line
            found[name] = Probed(problem=refusal(name, f"cannot be used ({type(err).__name__}: {one_line(err)})"))
    return found


def refusal(name: str, message: str) -> str:
    """A probe's problem as one line that names the entry's `external` key (unless it names a key)."""
    where = f"models.{name}"
    if message.startswith(where):
        return message
    return f"{where}.external: {message}"


def pin_externals(cfg: DictConfig, data, facts: StudyFacts) -> DictConfig:
    """The domain config with each external entry's `fingerprint` set (probing it on the domain's
    layout), or StudyProblems with one line per model that does not match its contract."""
    if not any(kind_of(model).probed for model in cfg.models):
        return cfg
    found = probe_externals(cfg, study_layout(cfg, data), facts)
    problems = [probed.problem for probed in found.values() if probed.problem]
    if problems:
        raise StudyProblems(problems)
    pinned = OmegaConf.to_container(cfg, resolve=True)
    for model in pinned["models"]:
        if model["name"] in found:
            model["external"]["fingerprint"] = found[model["name"]].fingerprint
    return OmegaConf.merge(cfg, pinned)
