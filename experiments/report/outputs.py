"""Everything a finished study writes next to its runs and logs to its parent MLflow run."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from mlflow.tracking import MlflowClient

from ..design.zoo import hardening, training_twins
from medcommon.write_errors import writing
from .defences import defences_section
from .findings import findings_section, load_predictions
from .plots import epsilon_curves, example_grid, transfer_heatmaps
from .queries import check_query_rows, queries_section
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


def write_report(results: pd.DataFrame, out_dir: Path, examples: dict | None, manifest: pd.DataFrame,
                 tracking_uri: str, n_resamples: int, seed: int, run_id: str,
                 queries: pd.DataFrame | None = None) -> tuple[str, pd.DataFrame]:
    """A domain study's report under `out_dir`, every file of it logged to MLflow run `run_id` (the
    study's parent run) in the store at `tracking_uri`: result CSV/Markdown, paper tables, heatmaps,
    epsilon curves, an example grid, the split manifest, the findings and defences sections (from
    each pair run's predictions, read once) and, with query rows (`queries`, see `report.queries`),
    the query attacks' tables, curves and finding; returns the terminal summary and the findings
    table (`findings.finding_effects`; empty when none was tested)."""
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
    sections, predictions, findings = ["", ""], {}, pd.DataFrame()  # no findings, no defences
    if not results.empty and n_resamples >= 1:
        predictions = load_predictions(results["run_id"], tracking_uri)
        text, findings = findings_section(results, predictions, out_dir, n_resamples, seed, tracking_uri)
        sections = [text, defences_section(results, predictions, out_dir, n_resamples, seed)]
    if not results.empty:  # after the findings, which mark the targets at chance
        transfer_heatmaps(results, out_dir)
    if queries is not None:
        sections.append(queries_section(queries, results, predictions, out_dir, n_resamples, seed))
    client = MlflowClient(tracking_uri)
    with writing(client.get_run(run_id).info.artifact_uri.removeprefix("file://"),
                 "the report's copy in the study run"):
        client.log_artifacts(run_id, str(out_dir))
    return "\n".join([summary(results) if not results.empty else "(no results)", *sections]), findings


def example_images(clean: torch.Tensor, adv: torch.Tensor, control: torch.Tensor, domain: str, title: str) -> dict:
    return {"clean": clean[:EXAMPLE_IMAGES], "adv": adv[:EXAMPLE_IMAGES], "control": control[:EXAMPLE_IMAGES],
            "domain": domain, "title": title}
