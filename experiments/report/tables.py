"""The paper's tables from a study's results: per-pair supplement and averaged manuscript forms,
aggregated over seeds, written as CSV and Markdown, and a terminal summary."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

METRICS = ("auc_clean", "auc_adv", "auc_control", "auc_pct_clean", "control_pct_clean", "asr_correct", "asr_all",
           "targeted_success", "linf", "l2", "ssim", "psnr")
# The rates with bootstrap intervals: ASR over clean-correct decisions and over all decisions, and the
# targeted success rate (NaN for untargeted sets).
RATES = ("asr_correct", "asr_all", "targeted_success")
CI_COLUMNS = ("auc_adv_lo", "auc_adv_hi", "auc_drop_lo", "auc_drop_hi",
              "auc_pct_clean_lo", "auc_pct_clean_hi", *(f"{rate}_{end}" for rate in RATES for end in ("lo", "hi")))
# The attacker of a result row besides `attack` and `eps` (defaults where a results table lacks them).
THREAT_COLUMNS = {"norm": "linf", "attack_target": "untargeted"}
REQUIRED_COLUMNS = ("surrogate", "target", "attack", "eps", "auc_clean", "auc_adv", "auc_control",
                    "auc_pct_clean", "asr_correct", "asr_all", "linf", "l2", "ssim", "psnr", "surrogate_arch",
                    "surrogate_init",
                    "surrogate_dev_set", "target_arch", "target_init", "target_dev_set", "same_arch",
                    "same_init", "same_data", "whitebox", "domain", "seed")
PAIR_COLUMNS = ("surrogate", "target", "surrogate_arch", "target_arch", "attack")

# Markdown: the metrics shown (CSV has all), their headers and number formats.
SHOWN = ("auc_clean", "auc_adv", "auc_pct_clean", "control_pct_clean", "asr_correct", "asr_all", "ssim", "psnr")
HEADERS = {
    "auc_clean": "AUC clean", "auc_adv": "AUC adv", "auc_control": "AUC ctrl",
    "auc_pct_clean": "adv % clean", "control_pct_clean": "ctrl % clean", "asr_correct": "ASR (correct)",
    "asr_all": "ASR (all)", "targeted_success": "targeted success", "linf": "Linf",
    "l2": "L2", "ssim": "SSIM", "psnr": "PSNR dB", "eps": "eps", "whitebox": "white-box",
    "surrogate_init": "surr. init", "target_init": "target init", "surrogate_dev_set": "surr. data",
    "target_dev_set": "target data", "same_arch": "same arch", "surrogate_arch": "surr. arch",
    "target_arch": "target arch", "surrogate": "surrogate", "target": "target", "attacks": "attacks",
    "n_pairs": "pairs", "n_seeds": "seeds", "auc_adv_ci": "AUC adv 95% CI", "auc_drop_ci": "AUC drop 95% CI",
}
FORMATS = {"auc_clean": "{:.3f}", "auc_adv": "{:.3f}", "auc_control": "{:.3f}", "auc_pct_clean": "{:.1f}",
           "control_pct_clean": "{:.1f}", "asr_correct": "{:.3f}",
           "asr_all": "{:.3f}", "targeted_success": "{:.3f}", "linf": "{:.4f}", "l2": "{:.3f}", "ssim": "{:.4f}",
           "psnr": "{:.1f}", "auc_drop": "{:.3f}", "eps": "{:g}"}


@dataclass(frozen=True)
class PaperTable:
    """A table of the paper: which result rows it uses and the columns its manuscript form keeps.
    The manuscript form averages over everything else (architecture pairs, attacks); the supplement
    lists each surrogate->target pair and attack."""
    name: str
    title: str
    select: Callable[[pd.DataFrame], pd.Series]
    keys: tuple[str, ...]


def _inits(frame, target, surrogate):
    return (frame["target_init"] == target) & (frame["surrogate_init"] == surrogate)


PAPER_TABLES = (
    PaperTable("table2_epsilon", "Table 2: epsilon sweep, FGSM vs PGD, with control noise "
               "(random init, target and surrogate on d1)",
               lambda f: _inits(f, "random", "random") & (f["target_dev_set"] == "d1")
               & (f["surrogate_dev_set"] == "d1"),
               ("whitebox", "attack", "eps")),
    PaperTable("table3_pretraining",
               "Table 3: pre-training, target init x surrogate init x architecture (d1)",
               lambda f: (f["target_dev_set"] == "d1") & (f["surrogate_dev_set"] == "d1"),
               ("target_init", "surrogate_init", "same_arch", "whitebox", "eps")),
    PaperTable("table4_development_data", "Table 4: development data, target on d1, surrogate on d1/d2/d2/2 "
               "(random init)",
               lambda f: _inits(f, "random", "random") & (f["target_dev_set"] == "d1"),
               ("surrogate_dev_set", "same_arch", "whitebox", "eps")),
    PaperTable("table5_small_target_data", "Table 5: pre-training with different data, target on d1/10, "
               "surrogate on d2",
               lambda f: (f["target_dev_set"] == "d1/10") & (f["surrogate_dev_set"] == "d2"),
               ("target_init", "surrogate_init", "same_arch", "eps")),
)


def check_results(results: pd.DataFrame) -> pd.DataFrame:
    """The results with the derived `control_pct_clean` column (and `targeted_success` NaN where a table
    predates it); a clear error for missing columns or non-boolean flags."""
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results table lacks columns: {', '.join(missing)}")
    for column in ("same_arch", "same_init", "same_data", "whitebox"):
        if not pd.api.types.is_bool_dtype(results[column]):
            raise ValueError(f"results column {column} must be boolean, got dtype {results[column].dtype}")
    if "targeted_success" not in results:
        results = results.assign(targeted_success=np.nan)
    return results.assign(control_pct_clean=100.0 * results["auc_control"] / results["auc_clean"])


def setting_label(results: pd.DataFrame) -> pd.Series:
    """Each row's attack as the report names it: the attack's name, then `/l2` for an L2 budget and
    `/<target>` for a targeted attack (`pgd/l2/least_likely`), so no table mixes attackers."""
    label = results["attack"].astype(str)
    for column, default in THREAT_COLUMNS.items():
        if column in results:
            values = results[column].fillna(default).astype(str)
            label = label.where(values == default, label + "/" + values)
    return label


def paper_attacker(results: pd.DataFrame) -> pd.Series:
    """The rows of the paper's attacker: untargeted, L-inf (every row of a table without the columns)."""
    keep = pd.Series(True, index=results.index)
    for column, default in THREAT_COLUMNS.items():
        if column in results:
            keep &= results[column].fillna(default).astype(str) == default
    return keep


def aggregate_seeds(per_seed: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and std (`<metric>_std`, ddof 1; NaN for one seed) over seeds of each metric, `n_seeds`.
    `per_seed` holds one row per (keys, seed); other non-metric columns keep their first value."""
    metrics = [m for m in METRICS if m in per_seed.columns]
    groups = per_seed.groupby(keys, sort=False, dropna=False)
    table = groups[metrics].mean()
    std = groups[metrics].std(ddof=1).add_suffix("_std")
    extra = [c for c in per_seed.columns if c not in (*keys, *metrics, "seed")]
    parts = [table, std, groups[extra].first()] if extra else [table, std]
    table = pd.concat([*parts, groups["seed"].nunique().rename("n_seeds")], axis=1)
    return table.reset_index()


def supplement_table(results: pd.DataFrame, table: PaperTable) -> pd.DataFrame:
    """One row per surrogate->target pair, attack and eps of the table, metrics averaged over seeds.
    Bootstrap CI columns are kept when the results hold a single seed."""
    rows = check_results(results)
    rows = rows[table.select(rows)]
    keys = _unique(["domain", *table.keys, *PAIR_COLUMNS, "eps"])
    ci = [c for c in CI_COLUMNS if c in rows.columns] if rows["seed"].nunique() <= 1 else []
    out = aggregate_seeds(rows[[*keys, "seed", *METRICS, *ci]], keys)
    return _sorted(out, keys)


def manuscript_table(results: pd.DataFrame, table: PaperTable) -> pd.DataFrame:
    """Metrics averaged over architecture pairs and attacks within each seed, then mean and std over
    seeds; `n_pairs` counts the averaged result rows per seed, `attacks` names the attacks averaged
    (when the table does not keep the attack)."""
    rows = check_results(results)
    rows = rows[table.select(rows)]
    keys = ["domain", *table.keys]
    extra = {} if "attack" in keys else {"attacks": ("attack", lambda a: "+".join(sorted(set(a))))}
    per_seed = rows.groupby([*keys, "seed"], sort=False, dropna=False).agg(
        **{m: (m, "mean") for m in METRICS}, n_pairs=("target", "size"), **extra).reset_index()
    out = aggregate_seeds(per_seed, keys)
    return _sorted(out, keys)


def plain_pairs(results: pd.DataFrame) -> pd.DataFrame:
    """The rows whose surrogate and target are plain trained models (no defence, no adversarial
    training, no ensemble) under the paper's attacker (untargeted, L-inf): the paper's tables and
    findings are about these."""
    results = results[paper_attacker(results)]
    if "target_hardening" not in results:
        return results
    return results[(results["target_hardening"] == "none") & (results["surrogate_hardening"] == "none")
                   & (results["surrogate_members"] == "")]


def paper_tables(results: pd.DataFrame) -> dict[str, tuple[PaperTable, pd.DataFrame, pd.DataFrame]]:
    """name -> (table, supplement, manuscript) for each paper table the plain pairs have rows for."""
    results = plain_pairs(results)
    out = {}
    for table in PAPER_TABLES:
        manuscript = manuscript_table(results, table)
        if not manuscript.empty:
            out[table.name] = (table, supplement_table(results, table), manuscript)
    return out


def write_tables(results: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """<table>_supplement.{csv,md} and <table>_manuscript.{csv,md} for each paper table with rows."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (table, supplement, manuscript) in paper_tables(results).items():
        for form, frame in (("supplement", supplement), ("manuscript", manuscript)):
            csv, md = out_dir / f"{name}_{form}.csv", out_dir / f"{name}_{form}.md"
            frame.to_csv(csv, index=False)
            md.write_text(f"## {table.title} ({form})\n\n{markdown_table(display_frame(frame))}")
            paths += [csv, md]
    return paths


def transfer_matrix(results: pd.DataFrame, domain: str, attack: str, eps: float,
                    metric: str = "auc_pct_clean") -> pd.DataFrame:
    """Surrogates (rows) x targets (columns) of one attack setting (`attack` as `setting_label` names
    it), `metric` averaged over seeds; models in order of first appearance, NaN where a pair was not run."""
    rows = check_results(results)
    rows = rows[(rows["domain"] == domain) & (setting_label(rows) == attack) & np.isclose(rows["eps"], eps)]
    if rows.empty:
        raise ValueError(f"no results for domain={domain} attack={attack} eps={eps}")
    matrix = rows.pivot_table(index="surrogate", columns="target", values=metric, aggfunc="mean", sort=False)
    return matrix.reindex(index=rows["surrogate"].unique(), columns=rows["target"].unique())


def attack_settings(results: pd.DataFrame) -> list[tuple[str, str, float]]:
    """The (domain, attack, eps) settings in the results, sorted (attacks as `setting_label` names them)."""
    settings = results[["domain", "attack", "eps"]].assign(attack=setting_label(results)).drop_duplicates()
    settings = settings.sort_values(["domain", "attack", "eps"])
    return [(d, a, float(e)) for d, a, e in settings.itertuples(index=False)]


def summary(results: pd.DataFrame) -> str:
    """A terminal summary: each transfer matrix (adversarial AUC as % of clean) and the manuscript tables."""
    rows = check_results(results)
    seeds = rows["seed"].nunique()
    lines = [f"Study results: {len(rows)} rows, {rows['surrogate'].nunique()} surrogates x "
             f"{rows['target'].nunique()} targets, {len(attack_settings(rows))} attack settings, "
             f"{seeds} seed{'' if seeds == 1 else 's'}. Lower % of clean = stronger attack.", ""]
    for domain, attack, eps in attack_settings(rows):
        matrix = transfer_matrix(rows, domain, attack, eps)
        shown = pd.DataFrame({t: ["–" if pd.isna(v) else f"{v:.1f}" + ("*" if s == t else "")
                                  for s, v in matrix[t].items()] for t in matrix.columns})
        shown.insert(0, "surrogate \\ target", matrix.index)
        lines += [f"{domain} {attack} eps={eps:g}: AUC adv % of clean (* white-box)", "",
                  markdown_table(shown)]
    for _, (table, _, manuscript) in paper_tables(rows).items():
        lines += [table.title, "", markdown_table(display_frame(manuscript))]
    return "\n".join(lines)


def display_frame(table: pd.DataFrame) -> pd.DataFrame:
    """A table for reading: shown metrics as formatted strings ("mean ± std" over several seeds),
    CI bounds as "[lo, hi]", readable headers."""
    keys = [c for c in table.columns if c not in METRICS and not c.endswith(("_std", "_lo", "_hi"))
            and c not in ("n_pairs", "n_seeds", "attacks")]
    out = table[keys].copy()
    if "attacks" in table:
        out["attacks"] = table["attacks"]
    for metric in SHOWN:
        spec = FORMATS[metric]
        std = table.get(f"{metric}_std", pd.Series(np.nan, index=table.index))
        out[metric] = [_number(spec, m) + ("" if pd.isna(s) else f" ± {spec.format(s)}")
                       for m, s in zip(table[metric], std)]
        if metric == "auc_adv":
            for ci in ("auc_adv", "auc_drop"):
                if f"{ci}_lo" in table:
                    out[f"{ci}_ci"] = [f"[{_number('{:.3f}', lo)}, {_number('{:.3f}', hi)}]"
                                       for lo, hi in zip(table[f"{ci}_lo"], table[f"{ci}_hi"])]
    for count in ("n_pairs", "n_seeds"):
        if count in table:
            out[count] = table[count]
    return out.rename(columns=HEADERS)


def markdown_table(frame: pd.DataFrame) -> str:
    """A padded Markdown table; numbers right-aligned, floats in the column's format, booleans yes/no,
    missing values as an en dash."""
    if frame.empty:
        return "(no rows)\n"
    columns = [str(c) for c in frame.columns]
    cells = [[_cell(col, value) for col, value in zip(columns, row)] for row in frame.itertuples(index=False)]
    right = [all(_looks_numeric(row[j]) for row in cells) for j in range(len(columns))]
    widths = [max(len(columns[j]), *(len(row[j]) for row in cells), 3) for j in range(len(columns))]

    def line(values):
        padded = (v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if r else "-" * (w + 2) for w, r in zip(widths, right)) + "|"
    return "\n".join([line(columns), rule, *(line(row) for row in cells)]) + "\n"


def _cell(column: str, value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (float, np.floating)):
        return FORMATS.get(column, "{:.4g}").format(value)
    return str(value)


def _number(spec: str, value) -> str:
    return "–" if pd.isna(value) else spec.format(value)


def _looks_numeric(text: str) -> bool:
    return text == "–" or text[:1].isdigit() or text[:1] in "-+[."


def _unique(items):
    return list(dict.fromkeys(items))


def _sorted(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return table.sort_values(keys, kind="stable").reset_index(drop=True)
