"""Everything a finished study writes next to its runs: the report folder, from the stored results
(the study logs the folder to its parent run and writes the tags the report returns)."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch

from ..design.zoo import hardening, training_twins
from ..store.artifact_formats import Predictions
from .defences import defences_section
from .findings import findings_section
from .plots import epsilon_curves, example_grid, transfer_heatmaps
from .queries import DEFAULT_BUDGETS, check_query_rows, queries_section
from .tables import markdown_table, summary, write_tables

EXAMPLE_IMAGES = 6


def with_factors(table: pd.DataFrame, zoo: dict, domain: str) -> pd.DataFrame:
    """The result table plus each pair's factors (arch, init, dev set and hardening of both models,
    an ensemble surrogate's members; same_* flags; `same_model`: both share one training run)."""
    out = table.copy()
    for role in ("surrogate", "target"):
        for factor in ("arch", "init", "dev_set"):
            out[f"{role}_{factor}"] = [zoo[name][factor] for name in out[role]]
        out[f"{role}_hardening"] = [hardening(zoo[name]) for name in out[role]]
    out["surrogate_members"] = [",".join(zoo[name].get("ensemble") or []) for name in out["surrogate"]]
    for flag, factor in (("same_arch", "arch"), ("same_init", "init"), ("same_data", "dev_set")):
        out[flag] = out[f"surrogate_{factor}"] == out[f"target_{factor}"]
    out["same_model"] = [training_twins(zoo[s], zoo[t]) for s, t in zip(out["surrogate"], out["target"])]
    out["whitebox"] = out["surrogate"] == out["target"]
    out["domain"] = domain
    return out


class Report(NamedTuple):
    """What `write_report` returns: the terminal summary, the findings table (`findings.finding_effects`;
    empty when none was tested) and, by plain pair run id, whether its target is at chance (the
    pair run's `target_at_chance` tag)."""
    summary: str
    findings: pd.DataFrame
    at_chance: dict[str, bool]


def write_report(results: pd.DataFrame, out_dir: Path, examples: dict | None, manifest: pd.DataFrame,
                 predictions: dict[str, Predictions], n_resamples: int, seed: int,
                 queries: pd.DataFrame | None = None, budgets=DEFAULT_BUDGETS) -> Report:
    """A domain study's report under `out_dir`, from what the study read back: result CSV/Markdown,
    paper tables, heatmaps, epsilon curves, an example grid, the split manifest, the findings and
    defences sections (from each pair run's `predictions`, by run id: needed when `results` has rows
    and `n_resamples` >= 1) and, with query rows (`queries`, see `report.queries`), the query attacks'
    tables, curves and finding (success rates at the query settings' `budgets`). Writes files only:
    nothing is logged or tagged."""
    if queries is not None and not queries.empty:  # refused before anything is written
        queries = check_query_rows(queries, None if results.empty else {*results["surrogate"], *results["target"]})
    else:
        queries = None
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob("*.png"), *out_dir.glob("*.csv"), *out_dir.glob("*.md")]:
        stale.unlink()  # a report describes one run of the study, never a mix
    results.to_csv(out_dir / "results.csv", index=False)
    (out_dir / "results.md").write_text(markdown_table(results))
    manifest.to_csv(out_dir / "split_manifest.csv", index=False)
    if not results.empty:
        write_tables(results, out_dir)
        epsilon_curves(results, out_dir)
    if examples is not None:
        n = EXAMPLE_IMAGES
        example_grid(examples["clean"][:n], examples["adv"][:n], examples["control"][:n],
                     out_dir / f"examples_{examples['domain']}.png", title=examples["title"])
    sections, findings, at_chance = ["", ""], pd.DataFrame(), {}  # no findings, no defences
    if not results.empty and n_resamples >= 1:
        text, findings, at_chance = findings_section(results, predictions, out_dir, n_resamples, seed)
        sections = [text, defences_section(results, predictions, out_dir, n_resamples, seed)]
    if not results.empty:  # after the findings, which mark the targets at chance
        transfer_heatmaps(results, out_dir)
    if queries is not None:
        sections.append(queries_section(queries, results, predictions, out_dir, n_resamples, seed, budgets))
    return Report("\n".join([summary(results) if not results.empty else "(no results)", *sections]), findings,
                  at_chance)


def example_images(clean: torch.Tensor, adv: torch.Tensor, control: torch.Tensor, domain: str, title: str) -> dict:
    return {"clean": clean[:EXAMPLE_IMAGES], "adv": adv[:EXAMPLE_IMAGES], "control": control[:EXAMPLE_IMAGES],
            "domain": domain, "title": title}
