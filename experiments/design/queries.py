"""Score-only query attacks (`queries:`): their settings, checks, start sets and per-endpoint budgets.

A query setting attacks every target of the study through its scores alone, from the clean image or
from a surrogate's stored transfer set (the set of the study's first `attacks` entry at the same eps
and norm). Pure functions of the config: nothing is loaded here (`experiments.execution.queries`
runs them).
"""
from __future__ import annotations

from omegaconf import DictConfig

from .identity import attack_grid
from .model_kinds import kind_of

QUERY_ATTACKS = ("square",)  # torchattacks.Square: random search on the target's scores
NORMS = ("linf", "l2")
CLEAN = "clean"  # `start_from` value: the search starts from the clean image


def attack_norm(attack) -> str:
    """The norm of an `attacks` entry (linf unless the entry names one)."""
    return str(attack.get("norm", "linf")) if hasattr(attack, "get") else "linf"


def query_settings(cfg: DictConfig) -> list[dict]:
    """Each (query setting, eps) of `queries` as a complete setting: name, norm, eps, max_queries,
    budgets (sorted), starts."""
    return [{"name": str(q.name), "norm": str(q.norm), "eps": float(eps), "max_queries": int(q.max_queries),
             "budgets": sorted({int(b) for b in q.budgets}), "starts": list(dict.fromkeys(map(str, q.start_from)))}
            for q in cfg.queries for eps in q.eps]


def start_setting(cfg: DictConfig, eps: float) -> dict:
    """The complete attack setting of the transfer sets that start a query attack at `eps`: the
    study's first `attacks` entry at that eps, as `identity.attack_grid` names it (so it is that
    set, whenever a pair reads it too)."""
    return next(s for s in attack_grid(cfg)[:len(cfg.attacks[0].eps)] if s["eps"] == float(eps))


def query_problem(cfg: DictConfig, zoo: list[dict]) -> str | None:
    """The first invalid `queries` entry as one line naming its key, or None."""
    entries = {m["name"]: m for m in zoo}
    for i, query in enumerate(cfg.queries):
        where = f"queries[{i}]"
        if query.name not in QUERY_ATTACKS:
            return f"{where}.name: unknown query attack {query.name!r}; valid: {', '.join(QUERY_ATTACKS)}"
        if query.norm not in NORMS:
            return f"{where}.norm: unknown {query.norm!r}; valid: {', '.join(NORMS)}"
        if not query.eps:
            return f"{where}.eps: empty; give at least one budget of the perturbation"
        if query.norm == "linf" and max(query.eps) > 1:
            return f"{where}.eps: {max(query.eps)} above 1, the whole pixel range in linf"
        if not query.budgets:
            return f"{where}.budgets: empty; give at least one query count to report success at"
        above = [b for b in query.budgets if b > query.max_queries]
        if above:
            return f"{where}.budgets: {above[0]} above max_queries {query.max_queries}"
        if not query.start_from:
            return f"{where}.start_from: empty; give clean and/or surrogate names"
        for start in query.start_from:
            problem = _start_problem(cfg, entries, query, str(start))
            if problem:
                return f"{where}.start_from: {problem}"
    return None


def _start_problem(cfg: DictConfig, entries: dict, query, start: str) -> str | None:
    if start == CLEAN:
        return None
    if start not in entries:
        return f"unknown surrogate {start!r}; valid: {CLEAN}, {', '.join(entries)}"
    kind = kind_of(entries[start])
    if not kind.gradients:
        return f"{start!r} is {kind.label}, which gives no gradients (no transfer set)"
    if not cfg.attacks:
        return f"{start!r}: the study has no `attacks` entry whose transfer set could start the search"
    first = cfg.attacks[0]
    if attack_norm(first) != query.norm:
        return (f"{start!r}: the study's first attack ({first.name}) is {attack_norm(first)}, "
                f"the query attack {query.norm}")
    missing = [float(e) for e in query.eps if float(e) not in {float(a) for a in first.eps}]
    if missing:
        return (f"{start!r}: the study's first attack ({first.name}) has no set at eps {missing[0]:g} "
                f"(its eps: {', '.join(f'{float(a):g}' for a in first.eps)})")
    return None


def query_bound(settings: list[dict], images: int) -> int:
    """The most target queries the query settings send per target: images x max_queries per
    (setting, start)."""
    return sum(images * s["max_queries"] * len(s["starts"]) for s in settings)
