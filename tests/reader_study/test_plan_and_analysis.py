"""The reader study's plan, answer store and statistics, against independent computations."""
import math

import numpy as np
import pandas as pd
import pytest

from experiments.reader_study.analysis import Z95, by_reader, by_setting, chance_budgets, verdict, wilson
from experiments.reader_study.answers import COLUMNS, AnswerStore
from experiments.reader_study.images import png_bytes
from experiments.reader_study.plan import ReaderPlan, StoredSet

SETS = [StoredSet(f"set{i}", attack, eps, "s", 0) for i, (attack, eps) in
        enumerate([("fgsm", 0.004), ("fgsm", 0.03), ("pgd", 0.03)])]
SECRET, OTHER_SECRET = bytes(range(32)), bytes(range(1, 33))


def test_each_reader_sees_the_same_images_in_their_own_order_with_repeats_after_the_first_showing():
    plan = ReaderPlan(SETS, test_size=50, seed=3, trials_per_set=10, repeats=4)
    readers = {name: plan.trials(name, SECRET) for name in ("ann", "ben")}
    for trials in readers.values():
        assert len(trials) == plan.length == 34
        firsts = [(t.set.key, t.sample) for t in trials if t.repeat_of is None]
        assert sorted(firsts) == sorted((s.key, p) for s, p in plan.base) and len(set(firsts)) == 30
        for t in trials:
            if t.repeat_of is not None:
                earlier = trials[t.repeat_of]
                assert t.repeat_of < t.index and earlier.repeat_of is None
                assert (earlier.set, earlier.sample) == (t.set, t.sample)
        assert sum(t.repeat_of is not None for t in trials) == 4
    assert [t.sample for t in readers["ann"]] != [t.sample for t in readers["ben"]]
    assert readers["ann"] == ReaderPlan(SETS, 50, 3, 10, 4).trials("ann", SECRET)  # after a restart: the same
    assert ReaderPlan(SETS, 50, 4, 10, 4).trials("ann", SECRET) != readers["ann"]


def test_the_sides_come_from_the_secret_not_from_the_public_settings():
    """Whoever knows the config (seed, sets) and a pseudonym knows which images a reader sees, in
    which order, but not on which side: another secret flips about half of the sides."""
    plan = ReaderPlan(SETS, test_size=50, seed=3, trials_per_set=10, repeats=4)
    mine, other = plan.trials("ann", SECRET), plan.trials("ann", OTHER_SECRET)
    assert [(t.set, t.sample, t.repeat_of) for t in mine] == [(t.set, t.sample, t.repeat_of) for t in other]
    flipped = sum(a.attacked != b.attacked for a, b in zip(mine, other))
    assert abs(flipped - 17) < 3 * math.sqrt(34 * 0.25)
    with pytest.raises(ValueError, match="secret"):
        plan.trials("ann", b"short")


def test_the_attacked_side_is_a_fair_coin():
    plan = ReaderPlan(SETS, test_size=400, seed=0, trials_per_set=400, repeats=0)
    left = sum(t.attacked == "left" for t in plan.trials("x", SECRET))
    assert abs(left - 600) < 3 * math.sqrt(1200 * 0.25)  # 1200 trials, within 3 standard deviations


def test_bad_plan_settings_name_the_option():
    with pytest.raises(ValueError, match="--trials-per-set"):
        ReaderPlan(SETS, 50, 0, 0, 0)
    with pytest.raises(ValueError, match="--repeats"):
        ReaderPlan(SETS, 50, 0, 2, 7)


@pytest.mark.parametrize("detected,trials", [(0, 10), (3, 10), (10, 10), (31, 60), (117, 200)])
def test_wilson_bounds_are_where_the_score_test_is_exactly_at_its_critical_value(detected, trials):
    lo, hi = wilson(detected, trials)
    p_hat = detected / trials
    for p in (lo, hi):
        if 0 < p < 1:  # the bound solves |p_hat - p| = z sqrt(p (1 - p) / n)
            assert abs(p_hat - p) == pytest.approx(Z95 * math.sqrt(p * (1 - p) / trials), rel=1e-9)
    if detected == 0:  # closed form at the edges: [0, z^2 / (n + z^2)], [n / (n + z^2), 1]
        assert (lo, hi) == (0.0, pytest.approx(Z95 ** 2 / (trials + Z95 ** 2)))
    if detected == trials:
        assert (lo, hi) == (pytest.approx(trials / (trials + Z95 ** 2)), 1.0)
    assert lo <= p_hat <= hi


def test_verdicts_and_the_largest_epsilon_at_chance():
    assert [verdict(0.55, 0.9), verdict(0.3, 0.7), verdict(0.1, 0.45)] == ["detected", "at chance", "below chance"]
    settings = pd.DataFrame({"attack": ["fgsm"] * 4 + ["pgd"] * 2 + ["cw"] * 2,
                             "eps": [0.01, 0.002, 0.004, 0.008, 0.004, 0.002, 0.002, 0.004],
                             "verdict": ["detected", "at chance", "at chance", "at chance",
                                         "at chance", "detected", "below chance", "at chance"]})
    assert chance_budgets(settings) == {"fgsm": 0.008, "pgd": None, "cw": None}


def answers_frame(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["reader", "trial", "attack", "eps", "correct", "choice", "repeat_of"])
    return frame.assign(repeat_of=frame["repeat_of"].astype("float"))


def test_rates_count_first_showings_and_consistency_compares_the_repeat_with_its_first_showing():
    rng = np.random.default_rng(0)
    rows = [("r1", i, "fgsm", 0.01 if i % 2 else 0.03, bool(rng.integers(2)), "left", None) for i in range(20)]
    rows += [("r1", 20, "fgsm", 0.01, rows[3][4], "left", 3), ("r1", 21, "fgsm", 0.03, not rows[4][4], "none", 4)]
    rows += [("r2", i, "fgsm", 0.03, True, "right", None) for i in range(5)]
    frame = answers_frame(rows)
    readers = by_reader(frame).set_index("reader")
    r1 = [r for r in rows if r[0] == "r1" and r[6] is None]
    assert readers.loc["r1", "trials"] == 20 and readers.loc["r1", "detected"] == sum(r[4] for r in r1)
    assert readers.loc["r1", "repeats"] == 2 and readers.loc["r1", "consistency"] == 0.5
    assert readers.loc["r2", "rate"] == 1.0 and np.isnan(readers.loc["r2", "consistency"])
    settings = by_setting(frame).set_index("eps")
    firsts_03 = [r for r in rows if r[6] is None and r[3] == 0.03]
    assert settings.loc[0.03, "trials"] == len(firsts_03) == 15
    assert settings.loc[0.03, "detected"] == sum(r[4] for r in firsts_03)


def record(reader: str, trial: int) -> dict:
    return {c: None for c in COLUMNS} | {"reader": reader, "trial": trial, "choice": "left"}


def test_the_store_keeps_every_answer_drops_a_torn_last_line_and_refuses_out_of_order_ones(tmp_path):
    path = tmp_path / "answers.jsonl"
    store = AnswerStore(path)
    for trial in range(3):
        store.append(record("ann", trial))
    store.append(record("ben", 0))
    with pytest.raises(ValueError, match="not the next"):
        store.append(record("ann", 5))
    with open(path, "ab") as file:  # a crash in the middle of writing an answer
        file.write(b'{"reader": "ann", "trial": 3, "cho')
    reopened = AnswerStore(path)
    assert (reopened.answered("ann"), reopened.answered("ben"), reopened.answered("cyd")) == (3, 1, 0)
    reopened.append(record("ann", 3))
    assert list(AnswerStore(path).frame()["trial"]) == [0, 1, 2, 0, 3]


def test_clean_and_noisy_images_have_the_same_byte_size():
    rng = np.random.default_rng(1)
    flat = np.full((32, 32, 3), 128, dtype=np.uint8)
    noisy = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    assert len(png_bytes(flat)) == len(png_bytes(noisy))
