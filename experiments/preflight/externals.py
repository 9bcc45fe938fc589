"""External models probed before any work: each is loaded and scored once on a fixed batch.

The probe finds a contract that does not match the model (output width, NaN scores, scores outside
[0, 1] where probabilities were declared, a surrogate that gives no gradients) and names each model
by what it is: its file's sha256 (or its MLflow model files' and registry version's), and the
digest of its scores on the probe batch. That name is pinned into the config as
`external.fingerprint`, so every identity built from it (`identity.external_key`) changes when
the model behind a path, URI or endpoint does.
"""
from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..design.external import ContractError, is_external
from ..design.identity import digest
from ..design.scheduler import Scheduler
from ..execution.external import ExternalError, load_external, study_layout
from .checks import StudyProblems

PROBE_SEED, PROBE_IMAGES = 0, 8


def probe_batch(channels: int, size: int) -> torch.Tensor:
    """The fixed probe batch: uniform [0, 1] pixels from a seeded generator, in the study's layout."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    return torch.rand(PROBE_IMAGES, channels, size, size, generator=generator)


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


def fingerprint(entry, layout: dict, tracking_uri: str | None, surrogate: bool) -> str:
    """The entry's fingerprint after probing it; ContractError or ExternalError naming the entry."""
    module = load_external(entry, layout, tracking_uri)
    name, settings = entry["name"], entry["external"]
    if surrogate and not module.differentiable:
        raise ContractError(f"models.{name}: a surrogate, but its {settings['format']} model gives no gradients "
                            "(only an export archive or a PyTorch-flavoured MLflow model can be a surrogate)")
    with torch.no_grad():
        raw = module.model.outputs(probe_batch(layout["channels"], layout["size"])).double().numpy()
    if not np.isfinite(raw).all():
        raise ContractError(f"models.{name}.external: the model gives NaN or infinite outputs on the probe batch")
    if settings["output"]["kind"] == "probabilities" and (raw.min() < 0 or raw.max() > 1):
        raise ContractError(f"models.{name}.external.output.kind: probabilities, but the model gives values in "
                            f"[{raw.min():.3g}, {raw.max():.3g}] on the probe batch (logits?)")
    version = registry_version(str(settings["uri"]), tracking_uri) if settings["format"] == "mlflow" else {}
    # rounded: the same model on another device or thread count gives the same digest
    return digest({"content": module.content, "version": version, "probe": np.round(raw, 4).tolist()})


def pin_externals(cfg: DictConfig, data) -> DictConfig:
    """The domain config with each external entry's `fingerprint` set (probing it on the domain's
    layout), or StudyProblems with one line per model that does not match its contract."""
    externals = [i for i, model in enumerate(cfg.models) if is_external(model)]
    if not externals:
        return cfg
    layout, uri = study_layout(cfg, data), cfg.tracking.uri
    scheduler = Scheduler(cfg)
    surrogates = {job.surrogate.name for job in scheduler.set_jobs()}
    pinned, problems = OmegaConf.to_container(cfg, resolve=True), []
    zoo = scheduler.zoo
    for index in externals:
        name = cfg.models[index].name
        try:
            pinned["models"][index]["external"]["fingerprint"] = fingerprint(zoo[name], layout, uri, name in surrogates)
        except (ContractError, ExternalError) as err:
            message = str(err)
            problems.append(message if message.startswith(f"models.{name}") else f"models.{name}.external: {message}")
    if problems:
        raise StudyProblems(problems)
    return OmegaConf.merge(cfg, pinned)
