"""`craft`: adversarial images for any model that follows the model contract."""
from __future__ import annotations

import contextlib
import io

import torch
from torch import nn

from .adapter import CrossEntropyView, attack_labels, loss_members
from .layout import CenteredSquare, FirstChannel
from .registry import ATTACKS, attack_params, make_attack, threat
from .targets import attack_labels_of, choose_targets


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """Images on the 8-bit grid k / 255, by rounding (what saving an image file does)."""
    return torch.round(images * 255.0) / 255.0


PRECISIONS = ("fp32", "bf16")


def attack_setting(attack_cfg, params: dict) -> dict:
    """`craft`'s attack as one mapping: a name and keyword parameters, or a mapping with `name` (then
    no keywords)."""
    if isinstance(attack_cfg, str):
        return {"name": attack_cfg, **params}
    if params:
        raise ValueError(f"craft: attack parameters {', '.join(sorted(params))} given both as keywords and "
                         "in the attack's settings; give a name with keywords, or one mapping")
    if not hasattr(attack_cfg, "items"):
        raise ValueError(f"craft: attack {attack_cfg!r}: give an attack name or a mapping with `name`")
    return dict(attack_cfg.items())


def surrogate_targets(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, target, task: str,
                      generator: torch.Generator | None = None, label_names: list[str] | None = None) -> torch.Tensor:
    """`attacks.targets.choose_targets` for `images`, from the model's clean logits (in eval mode)."""
    was_training = model.training
    try:
        with torch.no_grad():
            logits = model.eval()(images)
    finally:
        model.train(was_training)
    return choose_targets(target, task, labels, logits, generator, label_names)


def craft(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack_cfg,
          task: str, *, precision: str = "fp32", channels_last: bool = False,
          targets: torch.Tensor | None = None, **params) -> torch.Tensor:
    """Untargeted attack on the cross-entropy of the true labels, or targeted attack descending the
    cross-entropy of the target labels (the setting's `target`, `attacks.targets`); returns images
    in [0, 1].

    `attack_cfg`: an attack name with its parameters as keywords (`craft(net, x, y, "fgsm", task,
    eps=0.03)`), or a dict or DictConfig with `name` and the parameters (see ATTACKS), plus
    `quantize` (round the result to 8 bits), `target` and `norm`; either is checked as the config's
    attacks are. `labels`: class indices for binary and multiclass, a 0/1 matrix for multilabel.
    `targets`: the images' targets of a targeted setting (`choose_targets`; drawn here from the model
    and torch's RNG when None). Gradients are enabled here even under Lightning's inference mode.
    `precision="bf16"` runs the model's forward passes under bf16 autocast (the images and the attack
    steps stay fp32); `channels_last` converts the model (in place) and the images to channels-last
    memory format. Both are speed options for GPUs; results stay fp32 NCHW tensors.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"craft: precision={precision!r} must be one of {', '.join(PRECISIONS)}")
    name, params = attack_params(attack_setting(attack_cfg, params))
    spec, (goal, _) = ATTACKS[name], threat(params)
    if goal != "untargeted" and targets is None:
        targets = surrogate_targets(model, images, labels, goal, task)
    aim = labels if goal == "untargeted" else attack_labels_of(task, labels, targets)
    target, layouts = CrossEntropyView(model, task), []
    channels, height, width = images.shape[1:]
    if spec.square and height != width:
        layouts.append(CenteredSquare(target, height, width))
        target = layouts[-1]
    if spec.three_channels and channels != 3:
        if channels != 1:
            raise ValueError(f"attack {name}: needs 1- or 3-channel images, got {channels} channels")
        layouts.append(FirstChannel(target))
        target = layouts[-1]
    # torchattacks runs the model in eval mode, then puts the wrapper back in the mode it found it
    # in; wrappers are new modules (train mode), so the caller's mode is restored here instead.
    was_training = model.training
    try:
        autocast = torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        with torch.inference_mode(False), torch.enable_grad(), autocast:
            presented = images.clone()
            if channels_last:
                model.to(memory_format=torch.channels_last)
                presented = presented.contiguous(memory_format=torch.channels_last)
            for layout in layouts:
                presented = layout.present(presented)
            attack = make_attack(target, name, params)
            if goal != "untargeted":  # the labels given are the targets; torchattacks prints a line
                with contextlib.redirect_stdout(io.StringIO()):
                    attack.set_mode_targeted_by_function(lambda _, aimed: aimed)
            adversarial = attack(presented, attack_labels(aim, task, loss_members(model)).clone()).detach()
    finally:
        model.train(was_training)
    for layout in reversed(layouts):
        adversarial = layout.restore(adversarial)
    adversarial = adversarial.contiguous()
    return quantize_8bit(adversarial) if params["quantize"] else adversarial
