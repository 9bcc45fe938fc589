"""The paper's findings checked on a study's results: each finding's effect in points of AUC % of
clean, a 95 % paired bootstrap interval over seeds and test images, and a verdict.

A finding contrasts groups of pairs (rows of the result table, one MLflow pair run each). Its effect
is a weighted sum of group means of a per-pair quantity, signed so that the paper's direction is
positive: `adv` = 100 * auc_adv / auc_clean, `control` = 100 * auc_control / auc_clean. Group means
are taken over the group's pairs at one seed, then the effect is averaged over seeds.

Interval: resample b draws S seeds with replacement from the study's S seeds and, for each draw k,
N test images with replacement; every pair at that seed is scored on the same images (paired), the
effect is computed on each draw and averaged over the S draws. Draws: `rng = default_rng(seed)`,
`rng.integers(0, S, (B, S))` (seed positions in sorted order), then `rng.integers(0, N, (B, S, N))`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..store.artifact_formats import Predictions
from .bootstrap import percentile_interval, resampled_macro_auc
from .tables import markdown_table, plain_pairs

BAND = 2.0  # finding (d): control noise keeps the AUC within this many points of clean
CHANCE = 0.5  # a target whose clean-AUC interval reaches this AUC never learned: its pairs are left out
AT_CHANCE_TAG = "target_at_chance"
Terms = list[tuple[pd.Series, str, float]]  # (row mask, quantity, weight)


@dataclass(frozen=True)
class Finding:
    key: str
    claim: str
    terms: Callable[[pd.DataFrame], Terms]
    groups: tuple[str, str] = ("A", "B")  # what the effect's first and second terms are
    constant: float = 0.0
    band: float | None = None  # effect judged against +-band instead of zero


def _transfer(f):
    return ~f["whitebox"]


def _random_d1_target(f):
    return (f["target_init"] == "random") & (f["surrogate_init"] == "random") & (f["target_dev_set"] == "d1")


def _pretraining(f) -> Terms:
    """Random->random against ImageNet->ImageNet transfer pairs on d1, over the architecture pairs
    (surrogate arch, target arch) that have both."""
    d1 = _transfer(f) & (f["target_dev_set"] == "d1") & (f["surrogate_dev_set"] == "d1")
    random = d1 & (f["target_init"] == "random") & (f["surrogate_init"] == "random")
    imagenet = d1 & (f["target_init"] == "imagenet") & (f["surrogate_init"] == "imagenet")
    archs = pd.Series(list(zip(f["surrogate_arch"], f["target_arch"])), index=f.index)
    both = archs.isin(set(archs[random]) & set(archs[imagenet]))
    return [(random & both, "adv", 1.0), (imagenet & both, "adv", -1.0)]


def _matched(first, second, f) -> Terms:
    """`first` minus `second`, over the targets that have pairs in both (a comparison on one target
    at a time, never across targets of different architectures)."""
    both = f["target"].isin(set(f.loc[first, "target"]) & set(f.loc[second, "target"]))
    return [(first & both, "adv", 1.0), (second & both, "adv", -1.0)]


def _dev_data(dev_set: str) -> Callable[[pd.DataFrame], Terms]:
    """A same-architecture surrogate on `dev_set` against a second d1 instance, per target on d1."""
    def terms(f) -> Terms:
        same = _transfer(f) & _random_d1_target(f) & f["same_arch"]
        return _matched(same & (f["surrogate_dev_set"] == dev_set), same & (f["surrogate_dev_set"] == "d1"), f)
    return terms


def _architecture(f) -> Terms:
    """A different-architecture surrogate on d2 against a same-architecture one, per target on d1."""
    d2 = _transfer(f) & _random_d1_target(f) & (f["surrogate_dev_set"] == "d2")
    return _matched(d2 & ~f["same_arch"], d2 & f["same_arch"], f)


def _control(f) -> Terms:
    return [(pd.Series(True, index=f.index), "control", 1.0)]


def _attack(f) -> Terms:
    return [(f["whitebox"] & (f["attack"] == "fgsm"), "adv", 1.0),
            (f["whitebox"] & (f["attack"] == "ifgsm"), "adv", -1.0)]


FINDINGS = (
    Finding("a", "ImageNet->ImageNet pairs transfer more than random->random (d1, same arch pairs)",
            _pretraining, ("random->random", "ImageNet->ImageNet")),
    Finding("b d2", "a surrogate on d2 transfers less than a second d1 instance (same arch, random)",
            _dev_data("d2"), ("d2 surrogate", "second d1 instance")),
    Finding("b d2/2", "a surrogate on d2/2 transfers less than a second d1 instance (same arch, random)",
            _dev_data("d2/2"), ("d2/2 surrogate", "second d1 instance")),
    Finding("c", "a different-architecture surrogate on d2 transfers less than a same-architecture one",
            _architecture, ("other architecture", "same architecture")),
    Finding("d", f"control noise keeps the AUC within +-{BAND:g} points of clean (all pairs)", _control,
            constant=-100.0, band=BAND),
    Finding("e", "iterative FGSM is stronger than FGSM white-box", _attack, ("FGSM", "iterative FGSM")),
)


def finding_effects(results: pd.DataFrame, predictions: dict[str, Predictions], n_resamples: int = 1000,
                    seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (finding, domain) whose groups all have pairs: group means, effect, interval, verdict."""
    rows = []
    at_chance = targets_at_chance(results, predictions, n_resamples, seed, confidence)
    for domain in dict.fromkeys(results["domain"]):
        everything = results[results["domain"] == domain]
        frame = everything[~at_chance[everything.index]]
        draws = PairDraws(frame, predictions, n_resamples, seed) if not frame.empty else None
        for finding in FINDINGS:
            wanted = finding.terms(everything)
            if any(not mask.any() for mask, _, _ in wanted):
                continue
            left_out = int(sum((mask & at_chance[everything.index]).sum() for mask, _, _ in wanted))
            terms = finding.terms(frame) if draws is not None else []
            if not terms or any(not mask.any() for mask, _, _ in terms):
                rows.append({"finding": finding.key, "domain": domain, "claim": finding.claim,
                             "group_a_is": finding.groups[0], "group_b_is": finding.groups[1],
                             "group_a": np.nan, "group_b": np.nan, "effect": np.nan, "lo": np.nan, "hi": np.nan,
                             "verdict": "no verdict", "runs": 0, "left_out": left_out, "seeds": 0})
                continue
            point, resampled = draws.effect(terms)
            point, resampled = point + finding.constant, resampled + finding.constant
            lo, hi = percentile_interval(resampled, confidence)
            groups = [draws.point_mean(mask, quantity) for mask, quantity, _ in terms]
            rows.append({"finding": finding.key, "domain": domain, "claim": finding.claim,
                         "group_a_is": finding.groups[0], "group_b_is": finding.groups[1],
                         "group_a": groups[0], "group_b": groups[1] if len(groups) > 1 else np.nan,
                         "effect": point, "lo": float(lo), "hi": float(hi),
                         "verdict": verdict(float(lo), float(hi), finding.band),
                         "runs": int(sum(mask.sum() for mask, _, _ in terms)), "left_out": left_out,
                         "seeds": len(draws.seeds)})
    return pd.DataFrame(rows)


def targets_at_chance(results: pd.DataFrame, predictions: dict[str, Predictions], n_resamples: int = 1000,
                      seed: int = 0, confidence: float = 0.95) -> pd.Series:
    """Per result row: True where the pair's target is not clearly above chance at some seed (the
    bootstrap interval of its clean AUC over test images reaches `CHANCE`); such a pair is left out
    of every finding at all seeds, so each seed keeps the same pairs."""
    lower = clean_auc_lower(results, predictions, n_resamples, seed, confidence)
    low = pd.Series([lower[s, t] <= CHANCE for s, t in zip(results["seed"], results["target"])], index=results.index)
    columns = [c for c in ("domain", "surrogate", "target", "attack", "eps") if c in results]
    pair = list(results[columns].itertuples(index=False, name=None))
    bad = {key for key, flag in zip(pair, low) if flag}
    return pd.Series([key in bad for key in pair], index=results.index, dtype=bool)


def clean_auc_lower(results: pd.DataFrame, predictions: dict[str, Predictions], n_resamples: int, seed: int,
                    confidence: float) -> dict[tuple, float]:
    """(seed, target) -> lower end of the percentile interval of the target's clean AUC, resampling
    the test images (`default_rng(seed).integers(0, N, (B, N))`, in blocks)."""
    lower = {}
    for key, run_id in results.groupby(["seed", "target"])["run_id"].first().items():
        p = predictions[run_id]
        n, rng, aucs = len(p.labels), np.random.default_rng(seed), []
        for start in range(0, max(1, n_resamples), 100):
            draws = rng.integers(0, n, (min(100, n_resamples - start), n))
            counts = np.zeros(draws.shape, dtype=np.float32)
            np.add.at(counts, (np.arange(len(draws))[:, None], draws), 1.0)
            aucs.append(resampled_macro_auc(counts, p.labels, p.clean))
        lower[key] = float(np.nanpercentile(np.concatenate(aucs), 100 * (1 - confidence) / 2))
    return lower


def verdict(lo: float, hi: float, band: float | None = None) -> str:
    """"reproduced" when the interval excludes zero on the paper's (positive) side, "not reproduced"
    on the other side, else "inconclusive"; with a band: inside +-band, wholly outside it, or neither."""
    if band is None:
        return "reproduced" if lo > 0 else "not reproduced" if hi < 0 else "inconclusive"
    if -band <= lo and hi <= band:
        return "reproduced"
    return "not reproduced" if hi < -band or lo > band else "inconclusive"


class PairDraws:
    """Per-pair quantities of one domain's rows on the full test set and on every resample draw."""

    def __init__(self, frame: pd.DataFrame, predictions: dict[str, Predictions], n_resamples: int, seed: int):
        self.frame, self.predictions = frame, predictions
        self.seeds = sorted(int(s) for s in frame["seed"].unique())
        sizes = {len(predictions[r].labels) for r in frame["run_id"]}
        if len(sizes) != 1:
            raise ValueError(f"findings: pairs of domain {frame['domain'].iloc[0]} have different test sets")
        n = sizes.pop()
        rng = np.random.default_rng(seed)
        self.seed_draws = rng.integers(0, len(self.seeds), (n_resamples, len(self.seeds)))
        self.image_draws = rng.integers(0, n, (n_resamples, len(self.seeds), n))
        self.cache: dict[tuple[str, str], tuple[float, np.ndarray]] = {}
        self.cached_counts: dict[int, np.ndarray] = {}

    def counts(self, seed_index: int) -> np.ndarray:
        """How often each test image occurs in each draw at this seed (draws in row-major order)."""
        if seed_index not in self.cached_counts:
            images = self.image_draws[self.seed_draws == seed_index]
            counts = np.zeros((len(images), images.shape[1]), dtype=np.float32)
            np.add.at(counts, (np.arange(len(images))[:, None], images), 1.0)
            self.cached_counts[seed_index] = counts
        return self.cached_counts[seed_index]

    def quantity(self, run_id: str, seed_index: int, quantity: str) -> tuple[float, np.ndarray]:
        """(value on all test images, value on each draw at this seed (NaN on other draws))."""
        if (run_id, quantity) not in self.cache:
            p, counts = self.predictions[run_id], self.counts(seed_index)
            n, at_seed = len(p.labels), self.seed_draws == seed_index
            scores = getattr(p, quantity)
            ones = np.ones((1, n), dtype=np.float32)
            full = 100 * resampled_macro_auc(ones, p.labels, scores) / resampled_macro_auc(ones, p.labels, p.clean)
            drawn = np.full(self.seed_draws.shape, np.nan)
            drawn[at_seed] = 100 * (resampled_macro_auc(counts, p.labels, scores)
                                    / resampled_macro_auc(counts, p.labels, p.clean))
            self.cache[run_id, quantity] = float(full[0]), drawn
        return self.cache[run_id, quantity]

    def group(self, mask: pd.Series, quantity: str) -> tuple[np.ndarray, np.ndarray]:
        """Group mean per seed (S,) on all images and per draw (B, S) at the draw's seed."""
        rows = self.frame[mask]
        full, drawn = np.full(len(self.seeds), np.nan), np.zeros(self.seed_draws.shape)
        for j, s in enumerate(self.seeds):
            at = rows[rows["seed"] == s]
            if at.empty:
                raise ValueError(f"findings: seed {s} lacks pairs that other seeds have")
            values = [self.quantity(r, j, quantity) for r in at["run_id"]]
            full[j] = np.mean([v for v, _ in values])
            drawn = np.where(self.seed_draws == j, np.mean([d for _, d in values], axis=0), drawn)
        return full, drawn

    def effect(self, terms: Terms) -> tuple[float, np.ndarray]:
        """Effect on all images averaged over seeds, and per resample (B,) averaged over its draws."""
        full, drawn = 0.0, 0.0
        for mask, quantity, weight in terms:
            f, d = self.group(mask, quantity)
            full, drawn = full + weight * f, drawn + weight * d
        return float(np.mean(full)), np.nanmean(drawn, axis=1)

    def point_mean(self, mask: pd.Series, quantity: str) -> float:
        return float(np.mean(self.group(mask, quantity)[0]))


def findings_section(results: pd.DataFrame, predictions: dict[str, Predictions], out_dir: Path,
                     n_resamples: int, seed: int) -> tuple[str, pd.DataFrame, dict[str, bool]]:
    """The findings table (`finding_effects`) and one line per finding, written to
    `out_dir/findings.{csv,md}`; returns (that text, the table, whether each plain pair run's target
    is at chance, by run id: its `target_at_chance` tag); ("", empty table, {}) when no finding's
    pairs are in the results (pairs with a hardened model or an ensemble left out).
    `predictions`: each pair run's, by run id (`RunStore.predictions`)."""
    everything, results = results, plain_pairs(results)
    if n_resamples < 1 or results.empty:
        return "", pd.DataFrame(), {}
    at_chance = mark_at_chance(everything, results, predictions, n_resamples, seed)
    table = finding_effects(results, predictions, n_resamples, seed)
    if table.empty:
        return "", table, at_chance
    text = "\n".join(["Findings of the paper (effect in points of AUC % of clean, paper's direction "
                      "positive; 95 % paired bootstrap over seeds and test images)", "",
                      markdown_table(display(table)), *finding_lines(table), ""])
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "findings.csv", index=False)
    (out_dir / "findings.md").write_text(text)
    return text, table, at_chance


def mark_at_chance(everything: pd.DataFrame, plain: pd.DataFrame, predictions: dict[str, Predictions],
                   n_resamples: int, seed: int) -> dict[str, bool]:
    """Column `target_at_chance` on the result rows (in place; hardened and ensemble pairs: False);
    returns the same flag for each plain pair run, by run id."""
    flags = targets_at_chance(plain, predictions, n_resamples, seed)
    by_run = {run_id: bool(flag) for run_id, flag in zip(plain["run_id"], flags)}
    everything[AT_CHANCE_TAG] = [by_run.get(r, False) for r in everything["run_id"]]
    return by_run


def display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "finding": table["finding"], "domain": table["domain"],
        "A % clean": table["group_a"].map(lambda v: "–" if pd.isna(v) else f"{v:.1f}"),
        "B % clean": table["group_b"].map(lambda v: "–" if pd.isna(v) else f"{v:.1f}"),
        "effect": table["effect"].map(lambda v: "–" if pd.isna(v) else f"{v:+.1f}"),
        "95% CI": ["–" if pd.isna(lo) else f"[{lo:+.1f}, {hi:+.1f}]" for lo, hi in zip(table["lo"], table["hi"])],
        "verdict": table["verdict"], "pair runs": table["runs"],
        "left out (target at chance)": table["left_out"], "seeds": table["seeds"]})


def finding_lines(table: pd.DataFrame) -> list[str]:
    """One sentence per finding row, saying what the table shows."""
    lines = []
    for row in table.itertuples(index=False):
        if row.verdict == "no verdict":
            lines.append(f"({row.finding}) {row.domain}: {row.claim}: no verdict, all {row.left_out} pair runs "
                         f"left out (their targets' clean AUC intervals include {CHANCE})")
            continue
        if row.finding == "d":
            shows = f"control noise leaves {row.group_a:.1f} % of clean AUC"
        else:
            shows = f"{row.group_a_is} {row.group_a:.1f} vs {row.group_b_is} {row.group_b:.1f} % of clean AUC"
        lines.append(f"({row.finding}) {row.domain}: {row.claim}: {shows}, effect {row.effect:+.1f} points "
                     f"[{row.lo:+.1f}, {row.hi:+.1f}]: {row.verdict}"
                     + (f" ({row.left_out} pair runs left out: target at chance)" if row.left_out else ""))
    return lines
