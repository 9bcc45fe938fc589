"""Query attacks in a study's report: success at each query budget, the queries-to-success curve,
the threat-models table per target and the finding "do transfer starts save queries?".

Input: the query rows (`COLUMNS`; docs/protocol.md, "Query attacks in the report"), one row per
(query setting, target, start, test image). Every rate is over the target's clean-correct images.
Intervals: 95 % percentile bootstrap over those images, `default_rng(seed).integers(0, n, (B, n))`
per (setting, target), the same draws for every start and budget (differences are paired by image).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from ..store.artifact_formats import QUERY_TYPES, Predictions
from .bootstrap import percentile_interval
from .findings import verdict
from .plots import _figure, _save, _slug
from .tables import markdown_table

TRANSFER_ASR = "asr_correct"  # the transfer table's column of attack success over clean-correct images
CLEAN_START = "clean"
DEFAULT_BUDGETS = (10, 100, 1000)
NORMS = ("linf", "l2")
SETTING = ("attack", "norm", "eps", "max_queries")
COLUMNS = QUERY_TYPES
GROUP = ("target", *SETTING)
TRANSFER_BEST, TRANSFER_MEDIAN = "transfer only (best surrogate)", "transfer only (median surrogate)"
QUERY_ONLY, TRANSFER_STARTED, WHITE_BOX = "query only (from clean)", "transfer-started query", "white-box (gradients)"


def check_query_rows(rows: pd.DataFrame, models=None) -> pd.DataFrame:
    """The rows with their contract types; a ValueError naming the column or value for anything else:
    other columns, values out of range, duplicate rows, starts of one (setting, target) on different
    images or disagreeing on an image's label or clean decision, and (given the study's `models`) a
    target or start surrogate that is not one of them."""
    got = [str(c) for c in rows.columns]
    if sorted(got) != sorted(COLUMNS) or len(set(got)) != len(got):
        missing, extra = sorted(set(COLUMNS) - set(got)), sorted(set(got) - set(COLUMNS))
        raise ValueError(f"query rows: columns must be exactly {', '.join(COLUMNS)} "
                         f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'})")
    out = pd.DataFrame({name: _typed(rows[name], name, kind) for name, kind in COLUMNS.items()})
    for column, ok, rule in (
            ("norm", out["norm"].isin(NORMS), f"one of {', '.join(NORMS)}"),
            ("eps", np.isfinite(out["eps"]) & (out["eps"] > 0), "finite and > 0"),
            ("max_queries", out["max_queries"] >= 1, ">= 1"), ("image", out["image"] >= 0, ">= 0"),
            ("label", out["label"] >= 0, ">= 0"),
            ("queries", ~out["clean_correct"] | ((out["queries"] >= 1) & (out["queries"] <= out["max_queries"])),
             "in [1, max_queries] for a clean-correct image"),
            ("queries", ~out["clean_correct"] | out["success"] | (out["queries"] == out["max_queries"]),
             "max_queries where never fooled"),
            ("queries", out["clean_correct"] | ((out["queries"] == 0) & ~out["success"]),
             "0 (and success false) for an image the target gets wrong unattacked")):
        if not ok.all():
            value = out.loc[~ok, column].iloc[0]
            raise ValueError(f"query rows: {column} must be {rule}, got {getattr(value, 'item', lambda: value)()!r} "
                             f"(row {int(np.flatnonzero(~ok.to_numpy())[0])})")
    if models is not None:
        for column, allowed in (("target", set(models)), ("start", {*models, CLEAN_START})):
            unknown = sorted(set(out[column]) - allowed)
            if unknown:
                raise ValueError(f"query rows: {column} {unknown[0]!r} is not a model of the study's transfer table")
    key = [*GROUP, "start", "image"]
    duplicated = out.duplicated(key)
    if duplicated.any():
        raise ValueError(f"query rows: more than one row for {dict(out.loc[duplicated, key].iloc[0])}")
    for group, part in out.groupby(list(GROUP), sort=False):
        per_image = part.groupby("image")[["label", "clean_correct"]].nunique()
        starts = part.groupby("start")["image"].apply(frozenset)
        if starts.nunique() != 1 or (per_image > 1).any(axis=None):
            raise ValueError(f"query rows: the starts of {dict(zip(GROUP, group))} differ in their images, "
                             f"labels or clean decisions (rows must pair by image)")
    return out


def _typed(column: pd.Series, name: str, kind: str) -> pd.Series:
    if kind == "str":
        if not column.map(lambda v: isinstance(v, str) and v != "" and v.isprintable()).all():
            raise ValueError(f"query rows: {name} must be non-empty text on one line")
        return column.astype(str)
    if kind == "bool":
        if not column.map(lambda v: isinstance(v, (bool, np.bool_))).all():
            raise ValueError(f"query rows: {name} must be true/false")
        return column.astype(bool)
    real = column.map(lambda v: isinstance(v, (int, float, np.integer, np.floating))
                      and not isinstance(v, (bool, np.bool_)))
    numbers = column.astype(float) if real.all() else None
    if numbers is None or (kind == "int" and not (np.isfinite(numbers) & (numbers % 1 == 0)
                                                  & (numbers.abs() < 2 ** 53)).all()):
        raise ValueError(f"query rows: {name} must be {'whole numbers' if kind == 'int' else 'numbers'}")
    return numbers.astype(int if kind == "int" else float)


def budgets_for(max_queries: int, budgets=DEFAULT_BUDGETS) -> list[int]:
    """The budgets at which a setting's success is reported: those within `max_queries`, and `max_queries`."""
    return sorted({int(b) for b in budgets if b <= max_queries} | {int(max_queries)})


def image_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(B, n) how often each of n images occurs in each bootstrap draw (`default_rng(seed)`)."""
    if n == 0 or n_resamples < 1:
        return np.zeros((0, n))
    draws = np.random.default_rng(seed).integers(0, n, (n_resamples, n))
    counts = np.bincount((draws + n * np.arange(n_resamples)[:, None]).ravel(), minlength=n_resamples * n)
    return counts.reshape(n_resamples, n).astype(float)


class TargetDraws:
    """One (target, query setting)'s clean-correct images, each start's rows aligned by image, and the
    bootstrap draws over those images."""

    def __init__(self, part: pd.DataFrame, n_resamples: int, seed: int, confidence: float):
        correct = part[part["clean_correct"]].sort_values("image", kind="stable")
        self.starts = {s: correct[correct["start"] == s] for s in dict.fromkeys(part["start"])}
        self.images = int(correct["image"].nunique())
        self.max_queries = int(part["max_queries"].iloc[0])
        self.counts, self.confidence = image_counts(self.images, n_resamples, seed), confidence

    def mean(self, values: np.ndarray) -> tuple[float, float, float]:
        """(mean over the images, interval lower and upper end over the draws)."""
        if self.images == 0:
            return math.nan, math.nan, math.nan
        resampled = self.counts @ values / self.images if len(self.counts) else None
        return (float(np.mean(values)), *percentile_interval(resampled, self.confidence))

    def hits(self, start: str, budget: int) -> np.ndarray:
        rows = self.starts[start]
        return (rows["success"] & (rows["queries"] <= budget)).to_numpy(dtype=float)

    def queries(self, start: str) -> np.ndarray:
        """Queries per image, never-fooled images at the budget (`max_queries`)."""
        return self.starts[start]["queries"].to_numpy(dtype=float)


def _targets(rows: pd.DataFrame, n_resamples: int, seed: int, confidence: float):
    """(group values by GROUP, TargetDraws) per (target, setting) in order of appearance."""
    for group, part in rows.groupby(list(GROUP), sort=False):
        yield dict(zip(GROUP, group)), TargetDraws(part, n_resamples, seed, confidence)


def success_table(rows: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                  budgets=DEFAULT_BUDGETS) -> pd.DataFrame:
    """One row per (target, setting, start, budget): `images` (clean-correct), `success` =
    mean(success & queries <= budget | clean_correct), its interval `lo`, `hi`."""
    out = []
    for group, draws in _targets(check_query_rows(rows), n_resamples, seed, confidence):
        for start in draws.starts:
            for budget in budgets_for(draws.max_queries, budgets):
                rate, lo, hi = draws.mean(draws.hits(start, budget))
                out.append({**group, "start": start, "budget": budget, "images": draws.images,
                            "success": rate, "lo": lo, "hi": hi})
    return pd.DataFrame(out, columns=[*GROUP, "start", "budget", "images", "success", "lo", "hi"])


def success_curve(rows: pd.DataFrame, max_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """One start's (queries, success rate over clean-correct images within that many queries): a step
    at every query count where an image is first fooled, from 1 to `max_queries`."""
    correct = rows[rows["clean_correct"]]
    fooled = correct.loc[correct["success"], "queries"].to_numpy()
    x = np.unique(np.r_[1, fooled, max_queries]).astype(int)
    y = np.array([(fooled <= q).sum() for q in x], dtype=float) / max(1, len(correct))
    return x, y


def queries_figure(rows: pd.DataFrame, setting: dict) -> Figure:
    """Success rate against target queries (log x), one panel per target, one line per start."""
    rows = rows[np.logical_and.reduce([rows[k] == v for k, v in setting.items()])]
    targets = list(dict.fromkeys(rows["target"]))
    starts = list(dict.fromkeys(rows["start"]))
    colours = dict(zip(starts, colormaps["tab10"].colors))
    fig = _figure(4.2 * len(targets), 4.2)
    axes = fig.subplots(1, len(targets), sharey=True, squeeze=False)[0]
    for ax, target in zip(axes, targets):
        part = rows[rows["target"] == target]
        for start, group in part.groupby("start", sort=False):
            x, y = success_curve(group, setting["max_queries"])
            ax.step(x, y, where="post", color=colours[start], lw=1.8,
                    label="from clean image" if start == CLEAN_START else f"from {start}'s transfer set")
        ax.set_xscale("log")
        ax.set_xlim(1, setting["max_queries"])
        ax.set_ylim(0, 1.02)
        ax.set_title(f"target {target}, n = {int(part.loc[part['clean_correct'], 'image'].nunique())} "
                     f"clean-correct images", fontsize=10)
        ax.set_xlabel("target queries (log scale)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("success rate (clean-correct images)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(4, len(names)), fontsize=9, frameon=False)
    fig.suptitle(f"{setting['attack']} ({setting['norm']}, eps = {setting['eps']:g}): queries to success",
                 fontsize=11)
    return fig


def query_curves(rows: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """`queries_<attack>_<norm>_eps<eps>_q<max_queries>.png` per query setting."""
    rows = check_query_rows(rows)
    paths = []
    for values in rows[list(SETTING)].drop_duplicates().itertuples(index=False, name=None):
        setting = dict(zip(SETTING, values))
        name = f"queries_{_slug(setting['attack'])}_{setting['norm']}_eps{setting['eps']:g}_q{setting['max_queries']}"
        paths.append(_save(queries_figure(rows, setting), Path(out_dir) / f"{name}.png"))
    return paths


def start_savings(rows: pd.DataFrame, n_resamples: int = 1000, seed: int = 0,
                  confidence: float = 0.95) -> pd.DataFrame:
    """The finding per (target, setting, start surrogate) that has a clean start too: mean queries per
    clean-correct image from the clean image and from the transfer start (never fooled: `max_queries`),
    the paired difference (clean minus start: queries saved) with its interval, and the verdict."""
    out = []
    for group, draws in _targets(check_query_rows(rows), n_resamples, seed, confidence):
        if CLEAN_START not in draws.starts:
            continue
        clean = draws.queries(CLEAN_START)
        for start in [s for s in draws.starts if s != CLEAN_START]:
            effect, lo, hi = draws.mean(clean - draws.queries(start))
            budget = draws.max_queries
            out.append({**group, "start": start, "images": draws.images,
                        "claim": f"a transfer start from {start} needs fewer {group['attack']} queries than the "
                                 f"clean image",
                        "clean_queries": float(np.mean(clean)) if draws.images else math.nan,
                        "start_queries": float(np.mean(draws.queries(start))) if draws.images else math.nan,
                        "clean_success": draws.mean(draws.hits(CLEAN_START, budget))[0],
                        "start_success": draws.mean(draws.hits(start, budget))[0],
                        "effect": effect, "lo": lo, "hi": hi,
                        "verdict": "no verdict" if draws.images == 0 else verdict(lo, hi)})
    return pd.DataFrame(out, columns=[*GROUP, "start", "images", "claim", "clean_queries", "start_queries",
                                      "clean_success", "start_success", "effect", "lo", "hi", "verdict"])


def saving_lines(table: pd.DataFrame) -> list[str]:
    """One sentence per row of `start_savings`, in the findings' words."""
    lines = []
    for row in table.itertuples(index=False):
        where = f"(queries) {row.target}, {row.attack} {row.norm} eps={row.eps:g}, {row.max_queries} queries"
        if row.verdict == "no verdict":
            lines.append(f"{where}: {row.claim}: no verdict, no clean-correct images")
            continue
        lines.append(f"{where}: {row.claim}: {row.clean_queries:.1f} from clean vs {row.start_queries:.1f} from "
                     f"{row.start} mean queries per clean-correct image (never fooled: {row.max_queries}), "
                     f"saved {row.effect:+.1f} [{row.lo:+.1f}, {row.hi:+.1f}] over {row.images} images: "
                     f"{row.verdict}")
    return lines


def transfer_success(runs: pd.DataFrame, predictions: dict[str, Predictions], n_resamples: int, seed: int,
                     confidence: float) -> tuple[float, float, float, float]:
    """(success, clean-correct decisions, lo, hi) of one pair over its seeds' result rows: the mean of
    `TRANSFER_ASR`, and an interval from each seed run's predictions (decision threshold 0.5, over
    resampled test images; NaN without predictions)."""
    point, resampled, images = float(runs[TRANSFER_ASR].mean()), [], 0.0
    for run_id in runs["run_id"]:
        p = predictions.get(run_id)
        if p is None or p.labels.shape != p.clean.shape:
            return point, math.nan, math.nan, math.nan
        right = (p.clean >= 0.5) == p.labels
        correct = right.sum(axis=1).astype(float)
        flipped = (right & ((p.adv >= 0.5) != p.labels)).sum(axis=1).astype(float)
        images += correct.sum()
        counts = image_counts(len(correct), n_resamples, seed)
        if len(counts):
            with np.errstate(invalid="ignore", divide="ignore"):
                resampled.append(counts @ flipped / (counts @ correct))
    lo, hi = percentile_interval(np.mean(resampled, axis=0) if resampled else None, confidence)
    return point, images, lo, hi


def _transfer_rows(results: pd.DataFrame, target: str, eps: float, norm: str) -> pd.DataFrame:
    """The result rows of `target` crafted at this eps and norm with the study's first attack there."""
    if results.empty or TRANSFER_ASR not in results:
        return pd.DataFrame(columns=["surrogate", "target", "attack", TRANSFER_ASR, "run_id"])
    norms = results["norm"] if "norm" in results else pd.Series("linf", index=results.index)
    rows = results[(results["target"] == target) & np.isclose(results["eps"], eps) & (norms == norm)]
    return rows[rows["attack"] == rows["attack"].iloc[0]] if not rows.empty else rows


def threat_models(rows: pd.DataFrame, results: pd.DataFrame, predictions: dict[str, Predictions],
                  n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                  budgets=DEFAULT_BUDGETS) -> pd.DataFrame:
    """Per (target, query setting): success of each threat model over clean-correct images, with its
    interval: transfer only (best and median surrogate, no target queries), query only (from the clean
    image), transfer-started query (per start surrogate) at each budget, and white-box (the pair whose
    surrogate is the target, with gradients) when the study has it. `model`: the surrogate or start;
    `transfer_attack`: the transfer table's attack used; `queries`: target queries (NaN: white-box)."""
    success = success_table(rows, n_resamples, seed, confidence, budgets)
    order = (TRANSFER_BEST, TRANSFER_MEDIAN, QUERY_ONLY, TRANSFER_STARTED, WHITE_BOX)
    out = []
    for values, part in success.groupby(list(GROUP), sort=False):
        group, block = dict(zip(GROUP, values)), []
        transfer = _transfer_rows(results, group["target"], group["eps"], group["norm"])
        attack = transfer["attack"].iloc[0] if not transfer.empty else "–"

        def pair(model, name, runs, queries):
            rate, images, lo, hi = transfer_success(runs, predictions, n_resamples, seed, confidence)
            block.append({**group, "threat_model": name, "model": model, "transfer_attack": attack,
                          "queries": queries, "images": images, "success": rate, "lo": lo, "hi": hi})

        others = transfer[transfer["surrogate"] != transfer["target"]]
        if not others.empty:
            means = others.groupby("surrogate", sort=False)[TRANSFER_ASR].mean().sort_values(kind="stable")
            median = means.index[(len(means) - 1) // 2]  # the lower median: one surrogate's own value
            for name, surrogate in ((TRANSFER_BEST, means.index[-1]), (TRANSFER_MEDIAN, median)):
                pair(surrogate, name, others[others["surrogate"] == surrogate], 0)
        for row in part.itertuples(index=False):
            clean = row.start == CLEAN_START
            block.append({**group, "threat_model": QUERY_ONLY if clean else TRANSFER_STARTED, "model": row.start,
                          "transfer_attack": "–" if clean else attack, "queries": row.budget, "images": row.images,
                          "success": row.success, "lo": row.lo, "hi": row.hi})
        whitebox = transfer[transfer["surrogate"] == transfer["target"]]
        if not whitebox.empty:
            pair(group["target"], WHITE_BOX, whitebox, math.nan)
        out += sorted(block, key=lambda r: order.index(r["threat_model"]))
    return pd.DataFrame(out, columns=[*GROUP, "threat_model", "model", "transfer_attack", "queries", "images",
                                      "success", "lo", "hi"])


def _rate(value) -> str:
    return "–" if pd.isna(value) else f"{value:.3f}"


def _interval(lo, hi) -> str:
    return "–" if pd.isna(lo) else f"[{lo:.3f}, {hi:.3f}]"


def _title(group: dict) -> str:
    return (f"target {group['target']}, {group['attack']} {group['norm']} eps={group['eps']:g}, "
            f"up to {group['max_queries']} queries")


def threat_model_text(table: pd.DataFrame) -> str:
    """One Markdown table per (target, query setting) of `threat_models`."""
    parts = []
    for values, part in table.groupby(list(GROUP), sort=False):
        shown = pd.DataFrame({
            "threat model": part["threat_model"], "model": part["model"], "transfer attack": part["transfer_attack"],
            "target queries": part["queries"].map(lambda q: "–" if pd.isna(q) else f"{int(q)}"),
            "images": part["images"].map(lambda n: "–" if pd.isna(n) else f"{int(n)}"),
            "success": part["success"].map(_rate), "95% CI": list(map(_interval, part["lo"], part["hi"]))})
        parts.append(f"## Threat models: {_title(dict(zip(GROUP, values)))}\n\n{markdown_table(shown)}")
    return "\n".join(parts)


def success_text(table: pd.DataFrame) -> str:
    shown = table[[*GROUP, "start", "budget", "images"]].assign(
        success=table["success"].map(_rate), **{"95% CI": list(map(_interval, table["lo"], table["hi"]))})
    return ("## Query attacks: success at each budget (clean-correct images, 95 % bootstrap over images)\n\n"
            + markdown_table(shown))


def saving_text(table: pd.DataFrame) -> str:
    """The finding's table and sentences."""
    shown = pd.DataFrame({
        "target": table["target"], "setting": [f"{a} {n} eps={e:g}" for a, n, e in
                                               zip(table["attack"], table["norm"], table["eps"])],
        "max queries": table["max_queries"], "start": table["start"], "images": table["images"],
        "queries from clean": table["clean_queries"].map(lambda v: "–" if pd.isna(v) else f"{v:.1f}"),
        "queries from start": table["start_queries"].map(lambda v: "–" if pd.isna(v) else f"{v:.1f}"),
        "saved": table["effect"].map(lambda v: "–" if pd.isna(v) else f"{v:+.1f}"),
        "95% CI": ["–" if pd.isna(lo) else f"[{lo:+.1f}, {hi:+.1f}]" for lo, hi in zip(table["lo"], table["hi"])],
        "verdict": table["verdict"]})
    return "\n".join(["Do transfer starts save queries? (mean target queries per clean-correct image, never "
                      "fooled counted at the budget; saved = clean minus start, positive = fewer queries; "
                      "95 % paired bootstrap over images)", "", markdown_table(shown), *saving_lines(table), ""])


def queries_section(rows: pd.DataFrame, results: pd.DataFrame, predictions: dict[str, Predictions],
                    out_dir: Path, n_resamples: int, seed: int, budgets=DEFAULT_BUDGETS) -> str:
    """The query attacks' part of a report under `out_dir`: `queries_success.{csv,md}`,
    `queries_threat_models.{csv,md}` (success at the study's `budgets`), `queries_finding.{csv,md}`
    (the finding also appended to `findings.md`), one `queries_*.png` curve per setting; returns the
    text for the terminal summary."""
    rows = check_query_rows(rows)
    success = success_table(rows, n_resamples, seed, budgets=budgets)
    threats = threat_models(rows, results, predictions, n_resamples, seed, budgets=budgets)
    savings = start_savings(rows, n_resamples, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    query_curves(rows, out_dir)
    texts = {"success": success_text(success), "threat_models": threat_model_text(threats),
             "finding": saving_text(savings) if not savings.empty else ""}
    for name, table in (("success", success), ("threat_models", threats), ("finding", savings)):
        if not table.empty:
            table.to_csv(out_dir / f"queries_{name}.csv", index=False)
            (out_dir / f"queries_{name}.md").write_text(texts[name])
    if texts["finding"]:
        findings = out_dir / "findings.md"
        before = findings.read_text() + "\n" if findings.exists() else ""
        findings.write_text(before + texts["finding"])
    return "\n".join([texts["threat_models"], texts["finding"]])
