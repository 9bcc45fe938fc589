"""Overrides of a study config as the command line and Python give them: `key=value` strings (one, or
a list) or a nested mapping. Each override is applied on its own, so a problem names the override."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


@dataclass(frozen=True)
class Override:
    """One override: its key path (`attacks.1.eps`), its value and how an error names it."""

    blame: str
    key: str
    value: Any


def parse_overrides(overrides: str | Mapping | list[str] | tuple[str, ...] | None) -> list[Override]:
    """The overrides in order: a string is one `key=value` override, a list holds several, a mapping's
    items are `key: value` (nested or dotted keys). ValueError: one line naming the override."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping) or OmegaConf.is_dict(overrides):
        items = OmegaConf.to_container(overrides) if OmegaConf.is_config(overrides) else dict(overrides)
        blames = {key: f"override {{{key!r}: {value!r}}}" for key, value in items.items()}
        return [Override(blames[key], _key(key, blames[key]), value) for key, value in items.items()]
    if isinstance(overrides, str):
        overrides = [overrides]
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) for o in overrides):
        raise ValueError(f"overrides: {overrides!r}; give a 'key=value' string, a list of them or a mapping")
    return [_dotlist_item(text) for text in overrides]


def _dotlist_item(text: str) -> Override:
    """A `key=value` string, its value read as YAML."""
    blame = f"override {text!r}"
    key, sep, raw = text.partition("=")
    if not sep:
        raise ValueError(f"{blame}: expected key=value (key=null for no value)")
    try:
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={raw}"]))["value"]  # as OmegaConf reads it
    except OmegaConfBaseException as err:  # e.g. an interpolation that does not parse
        raise ValueError(f"{blame}: {str(err).splitlines()[0]}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at character {mark.column + 1} of the value" if mark is not None else ""
        raise ValueError(f"{blame}: not valid YAML ({getattr(err, 'problem', None) or 'syntax error'}{where}); "
                         "write a space after each ':' of a mapping, e.g. {name: fgsm, eps: [0.02]}") from None
    glued = _glued_key(value)
    if glued is not None:
        raise ValueError(f"{blame}: {glued!r} reads as one key without a value; write a space after its ':', "
                         "e.g. {name: fgsm}")
    return Override(blame, _key(key, blame), value)


def _glued_key(value: Any) -> str | None:
    """A mapping key like `name:fgsm` with no value: YAML's reading of a colon without a space."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(key, str) and ":" in key and inner is None:
                return key
            found = _glued_key(inner)
            if found is not None:
                return found
    if isinstance(value, list):
        return next((found for found in map(_glued_key, value) if found is not None), None)
    return None


def _key(key: Any, blame: str) -> str:
    """The key path with list indices as dots (`attacks[1].eps` -> `attacks.1.eps`)."""
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][\w-]*(\.\w[\w-]*|\[\d+\])*", key.strip()):
        raise ValueError(f"{blame}: {key!r} is not a config key (e.g. train.max_epochs or attacks.0.eps)")
    return re.sub(r"\[(\d+)\]", r".\1", key.strip())


def apply_override(cfg: DictConfig, override: Override) -> None:
    """Set (a mapping: merge) the override's value at its key; list items are addressed by an index
    that exists (`attacks.1.eps`). ValueError or OmegaConf's errors name the key."""
    parts, node = override.key.split("."), cfg
    for depth, part in enumerate(parts):
        if isinstance(node, ListConfig):
            where = ".".join(parts[:depth])
            if not part.isdigit() or int(part) >= len(node):
                raise ValueError(f"{where}: a list of {len(node)} items, {where}.0 to {where}.{len(node) - 1}; "
                                 f"no item {part!r}" if len(node) else
                                 f"{where}: an empty list; give the whole list, e.g. {where}=[...]")
            node = node[int(part)]
        elif isinstance(node, DictConfig) and part in node and depth < len(parts) - 1:
            node = node[part]
        else:
            break  # an unknown key: OmegaConf names it (and a close one)
    OmegaConf.update(cfg, override.key, override.value, merge=True)
