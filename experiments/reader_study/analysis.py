"""What a reader study found: detection rates with binomial 95 % intervals and a verdict against
chance (50 %) per reader and per attack setting, each reader's consistency on repeated trials, and
the largest epsilon of each attack that readers could not tell from chance.

Rates count each base trial's first presentation (repeats measure consistency only). A "no idea"
answer counts as the plan's coin flip (`picked`), as a forced choice would, so under chance the count
of detections stays binomial with p = 0.5."""
from __future__ import annotations

import math

import pandas as pd

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
CHANCE = 0.5
VERDICTS = ("detected", "at chance", "below chance")


def wilson(detected: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (the p whose score test does not reject)."""
    if trials == 0:
        return 0.0, 1.0
    p, n = detected / trials, trials
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if detected == 0 else lo), (1.0 if detected == trials else hi)  # exact at the edges


def verdict(lo: float, hi: float) -> str:
    """"detected" when the whole interval lies above chance, "below chance" when below it."""
    return VERDICTS[0] if lo > CHANCE else VERDICTS[2] if hi < CHANCE else VERDICTS[1]


def _rates(first: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    rows = []
    for keys, group in first.groupby(by, sort=True):
        trials, detected = len(group), int(group["correct"].sum())
        lo, hi = wilson(detected, trials)
        rows.append({**dict(zip(by, keys)), "trials": trials, "detected": detected, "rate": detected / trials,
                     "lo": lo, "hi": hi, "verdict": verdict(lo, hi), "no_idea": int((group["choice"] == "none").sum())})
    return pd.DataFrame(rows, columns=[*by, "trials", "detected", "rate", "lo", "hi", "verdict", "no_idea"])


def first_presentations(answers: pd.DataFrame) -> pd.DataFrame:
    return answers[answers["repeat_of"].isna()]


def by_setting(answers: pd.DataFrame) -> pd.DataFrame:
    """One row per (attack, eps), all readers, surrogates and seeds pooled."""
    return _rates(first_presentations(answers), ["attack", "eps"])


def by_reader(answers: pd.DataFrame) -> pd.DataFrame:
    """One row per reader, with `consistency`: the share of repeated trials on which the reader
    picked the same image (attacked or clean) as the first time (NaN without repeats)."""
    table = _rates(first_presentations(answers), ["reader"])
    repeats = answers[answers["repeat_of"].notna()]
    earlier = answers.set_index(["reader", "trial"])["correct"]
    same = pd.Series([earlier[reader, int(of)] == correct for reader, of, correct in
                      zip(repeats["reader"], repeats["repeat_of"], repeats["correct"])], index=repeats.index,
                     dtype=bool)
    consistency = same.groupby(repeats["reader"]).agg(["size", "mean"])
    table["repeats"] = table["reader"].map(consistency["size"]).fillna(0).astype(int)
    table["consistency"] = table["reader"].map(consistency["mean"])
    return table


def chance_budgets(settings: pd.DataFrame) -> dict[str, float | None]:
    """Per attack, the largest eps such that it and every smaller eps are at chance (None when the
    smallest is not): the attack's budget readers could not see. Below chance counts as seen (the
    readers told the images apart, if the wrong way round)."""
    budgets = {}
    for attack, rows in settings.sort_values("eps").groupby("attack", sort=True):
        budget = None
        for eps, found in zip(rows["eps"], rows["verdict"]):
            if found != "at chance":
                break
            budget = float(eps)
        budgets[attack] = budget
    return budgets
