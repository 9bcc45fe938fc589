"""External models fed through their contract, as ordinary Lightning modules (docs/architecture.md,
"External models"): the study's [0, 1] NCHW images brought to the model's channels, size and
normalisation, its outputs turned into logits of the study's task layout."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules import tasks

from ..design.external import ContractError, output_columns
from .endpoint import Endpoint


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
