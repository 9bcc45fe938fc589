"""Named settings: a `name` from a registry plus parameters, each filled in from its default,
converted to the default's type and checked by its rule; the one validator of attacks and defences."""
from __future__ import annotations

from typing import Any, Callable

Rule = tuple[Callable[[Any], bool], str]  # (check, requirement shown in the error)


def typed(kind: str, name: str, key: str, value: Any, default: Any) -> Any:
    """`value` as its default's type (bool, int, float or str), or a one-line ValueError."""
    expected = type(default)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = number and value == int(value)
    elif expected is float:
        ok = number
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise ValueError(f"{kind} {name}: {key}={value!r} must be a {expected.__name__}")
    return expected(value)


def named_settings(kind: str, cfg, defaults: dict[str, dict[str, Any]], rules: dict[str, Rule]) -> tuple[str, dict]:
    """Validate `cfg` (`name` plus parameters) of a `kind` ("attack", "defence") against each name's
    `defaults` and the parameters' `rules` -> (name, complete parameters)."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name not in defaults:
        raise ValueError(f"{kind}: unknown name {name!r}; valid: {', '.join(defaults)}")
    unknown = sorted(set(cfg) - set(defaults[name]))
    if unknown:
        raise ValueError(f"{kind} {name}: unknown parameter {unknown[0]!r}; valid: {', '.join(defaults[name])}")
    params = {key: typed(kind, name, key, cfg.get(key, default), default) for key, default in defaults[name].items()}
    for key, value in params.items():
        check, requirement = rules.get(key, (lambda v: True, ""))
        if not check(value):
            raise ValueError(f"{kind} {name}: {key}={value!r} must be {requirement}")
    return name, params
