"""Findings: effects, paired bootstrap over seeds and images, verdicts; against sklearn and a plain loop."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from experiments import load_config, run_study
from experiments.design.config import domain_config, preset_path
from experiments.design.scheduler import Scheduler
from experiments.report.findings import FINDINGS, finding_effects, verdict
from experiments.store.artifact_formats import Predictions, read_predictions
from experiments.report.outputs import with_factors
from experiments.preflight.facts import study_facts

N, SEEDS, RESAMPLES = 60, (0, 1, 2), 100


def pct(labels, clean, other):
    return 100 * roc_auc_score(labels, other) / roc_auc_score(labels, clean)


def pretraining_study(random_damage: float, imagenet_damage: float, rng):
    """Finding (a)'s design, 2 random->random and 2 ImageNet->ImageNet transfer pairs per seed, and a
    random->random pair of an architecture pair without ImageNet counterpart (not part of (a)); an
    attack of strength `damage` mixes that much label-independent noise into the target's scores."""
    rows, predictions = [], {}
    labels = (np.arange(N) % 2).astype(float)
    for seed in SEEDS:
        clean = labels + rng.normal(0, 0.8, N)
        for init, damage in (("random", random_damage), ("imagenet", imagenet_damage)):
            for k in range(2 if init == "imagenet" else 3):
                run_id = f"{init}-{seed}-{k}"
                noise = rng.normal(0, 1, N)
                adv, control = (1 - damage) * clean + damage * 3 * noise, clean + 0.01 * rng.normal(0, 1, N)
                predictions[run_id] = Predictions(labels[:, None].astype(bool), clean[:, None], adv[:, None],
                                                  control[:, None])
                rows.append({"domain": "pathology", "seed": seed, "run_id": run_id, "attack": "ifgsm",
                             "surrogate": f"s-{init}-{k}", "target": f"t-{init}", "whitebox": False,
                             "same_arch": k == 0, "target_init": init, "surrogate_init": init,
                             "target_dev_set": "d1", "surrogate_dev_set": "d1",
                             "surrogate_arch": "cnn" if k < 2 else "tiny", "target_arch": "cnn" if k == 0 else "net"})
    return pd.DataFrame(rows), predictions


def pairwise_auc(labels, scores):
    """AUC as the share of (positive, negative) pairs ranked right, ties one half (repeats count)."""
    pos, neg = scores[labels], scores[~labels]
    return ((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def looped_interval(results, predictions, mask_a, mask_b, n_resamples, seed):
    """The documented draws, one resample at a time, with pairwise-comparison AUCs."""
    seeds = sorted(results["seed"].unique())
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, len(seeds), (n_resamples, len(seeds)))
    image_draws = rng.integers(0, N, (n_resamples, len(seeds), N))
    effects = []
    for b in range(n_resamples):
        per_draw = []
        for k in range(len(seeds)):
            idx, at_seed = image_draws[b, k], results["seed"] == seeds[seed_draws[b, k]]
            means = []
            for mask in (mask_a, mask_b):
                values = []
                for run_id in results[mask & at_seed]["run_id"]:
                    p = predictions[run_id]
                    y = p.labels[idx, 0]
                    values.append(100 * pairwise_auc(y, p.adv[idx, 0]) / pairwise_auc(y, p.clean[idx, 0]))
                means.append(np.mean(values))
            per_draw.append(means[0] - means[1])
        effects.append(np.mean(per_draw))
    return np.percentile(effects, [2.5, 97.5])


@pytest.mark.parametrize("random_damage, imagenet_damage, expected", [
    (0.1, 0.6, "reproduced"), (0.6, 0.1, "not reproduced"), (0.3, 0.3, None)])
def test_pretraining_effect_interval_and_verdict_match_an_independent_computation(
        random_damage, imagenet_damage, expected):
    results, predictions = pretraining_study(random_damage, imagenet_damage, np.random.default_rng(1))
    table = finding_effects(results, predictions, n_resamples=RESAMPLES, seed=7)
    assert list(table["finding"]) == ["a", "d"]  # control noise (d) concerns every pair
    row = table.iloc[0]
    random = (results["target_init"] == "random") & (results["surrogate_arch"] != "tiny")
    imagenet = results["target_init"] == "imagenet"

    def group_mean(mask):
        return np.mean([np.mean([pct(p.labels[:, 0], p.clean[:, 0], p.adv[:, 0])
                                 for p in (predictions[r] for r in results[mask & (results.seed == s)]["run_id"])])
                        for s in SEEDS])

    assert row["group_a"] == pytest.approx(group_mean(random), rel=1e-9)
    assert row["group_b"] == pytest.approx(group_mean(imagenet), rel=1e-9)
    assert row["effect"] == pytest.approx(group_mean(random) - group_mean(imagenet), rel=1e-9)
    lo, hi = looped_interval(results, predictions, random, imagenet, RESAMPLES, 7)
    assert (row["lo"], row["hi"]) == (pytest.approx(lo, abs=1e-6), pytest.approx(hi, abs=1e-6))
    assert row["seeds"] == 3 and row["runs"] == 12
    if expected is not None:
        assert row["verdict"] == expected


def test_identical_groups_are_inconclusive():
    results, predictions = pretraining_study(0.3, 0.3, np.random.default_rng(2))
    for run_id in results[results.target_init == "imagenet"]["run_id"]:  # B := matched A, pair by pair
        predictions[run_id] = predictions[run_id.replace("imagenet", "random")]
    row = finding_effects(results, predictions, n_resamples=RESAMPLES).set_index("finding").loc["a"]
    assert (row["effect"], row["lo"], row["hi"]) == (0.0, 0.0, 0.0)
    assert row["verdict"] == "inconclusive"


@pytest.mark.parametrize("lo, hi, band, expected", [
    (0.5, 3.0, None, "reproduced"), (-3.0, -0.5, None, "not reproduced"), (-0.5, 3.0, None, "inconclusive"),
    (-1.5, 1.9, 2.0, "reproduced"), (2.1, 4.0, 2.0, "not reproduced"), (-6.0, -2.5, 2.0, "not reproduced"),
    (1.0, 2.5, 2.0, "inconclusive")])
def test_verdicts(lo, hi, band, expected):
    assert verdict(lo, hi, band) == expected


def test_read_predictions_takes_every_label_column():
    frame = pd.DataFrame({"sample": [3, 4], "label_a": [1, 0], "label_b": [0, 1], "clean_a": [.9, .1],
                          "clean_b": [.2, .7], "adv_a": [.5, .5], "adv_b": [.4, .6], "control_a": [.8, .2],
                          "control_b": [.3, .6]})
    p = read_predictions(frame)
    assert p.labels.tolist() == [[True, False], [False, True]]
    assert p.adv.tolist() == [[.5, .4], [.5, .6]]
    with pytest.raises(ValueError, match="control"):
        read_predictions(frame.drop(columns=["control_a", "control_b"]))


@pytest.fixture(scope="module")
def tiny_findings_study(tmp_path_factory):
    """Development data (b), control noise (d) and white-box attacks (e) on tiny CNNs, two seeds."""
    root = tmp_path_factory.mktemp("findings")
    models = "[" + ", ".join(f"{{name: {n}, dev_set: {d}, instance: {i}}}" for n, d, i in
                             (("t", "d1", 0), ("v2", "d1", 1), ("o", "d2", 0), ("h", "d2/2", 0))) + "]"
    cfg = load_config(preset_path("smoke"), [f"tracking.uri=sqlite:///{root / 'mlflow.db'}", f"output_dir={root}",
                                             f"models={models}", "targets=[t]", "seeds=[0,1]",
                                             "bootstrap_resamples=100"])
    result = run_study(cfg)
    return cfg, result.table, result


def test_study_findings_agree_with_its_result_table(tiny_findings_study):
    cfg, table, result = tiny_findings_study
    findings = pd.read_csv(result.reports["pathology"] / "findings.csv")
    assert set(findings["finding"]) == {"b d2", "b d2/2", "d", "e"}
    assert table["run_id"].nunique() == len(table)
    # point effects from the logged predictions equal those from the table's own AUC % of clean
    by_seed = table.groupby(["surrogate", "attack", "seed"])["auc_pct_clean"].first()

    def mean(surrogate, attack=None):
        rows = by_seed.loc[surrogate] if attack is None else by_seed.loc[surrogate, attack]
        return rows.groupby(level="seed").mean().mean() if attack is None else rows.mean()

    expected = {"b d2": mean("o") - mean("v2"), "b d2/2": mean("h") - mean("v2"),
                "e": mean("t", "fgsm") - mean("t", "ifgsm")}
    control = (100 * table.auc_control / table.auc_clean).groupby(table.seed).mean().mean() - 100
    for key, value in {**expected, "d": control}.items():
        row = findings[findings.finding == key].iloc[0]
        assert row["effect"] == pytest.approx(value, abs=1e-4)  # scores pass through a CSV
        assert row["lo"] <= row["effect"] <= row["hi"]
        assert row["verdict"] == verdict(row["lo"], row["hi"], 2.0 if key == "d" else None)
    assert "Findings of the paper" in result.summary


def test_read_back_study_gives_the_same_findings(tiny_findings_study):
    cfg, table, result = tiny_findings_study
    first = pd.read_csv(result.reports["pathology"] / "findings.csv")
    again = run_study(cfg)
    assert list(again.table["run_id"]) == list(table["run_id"]) and again.reports == result.reports
    pd.testing.assert_frame_equal(pd.read_csv(again.reports["pathology"] / "findings.csv"), first)
    pd.testing.assert_frame_equal(again.findings, result.findings)


@pytest.mark.parametrize("preset, expected", [("findings", {"a", "b d2", "b d2/2", "c", "d", "e"}),
                                              ("demo", {"a", "b d2", "b d2/2", "d"})])
def test_presets_have_the_pairs_of_their_findings(preset, expected):
    cfg = load_config(preset_path(preset))
    for domain in cfg.domains or [cfg.data.domain]:
        sub = domain_config(cfg, domain) if cfg.domains else cfg
        plan = Scheduler(sub, study_facts(sub))
        rows = pd.DataFrame([{"surrogate": p.set.surrogate.name, "target": p.target.name, "seed": p.set.seed,
                              "attack": p.set.setting["name"], "eps": p.set.setting["eps"]} for p in plan.pair_jobs()])
        frame = with_factors(rows, plan.zoo, domain)
        assert {f.key for f in FINDINGS if all(mask.any() for mask, _, _ in f.terms(frame))} == expected


def test_development_data_and_architecture_compare_pairs_on_the_same_target():
    """A target without a d2 surrogate (here an EfficientNet with only its second d1 instance) must
    not enter (b): averaging it into the d1 group alone would compare across targets."""
    pairs = [("v2", "cnn", "cnn", "d1"), ("o", "cnn", "cnn", "d2"), ("n2", "net", "net", "d1"),
             ("x", "net", "cnn", "d2"), ("y", "cnn", "net", "d2")]
    frame = pd.DataFrame([{"surrogate": s, "target": f"t-{t}", "surrogate_arch": sa, "target_arch": t,
                           "surrogate_dev_set": d, "target_dev_set": "d1", "surrogate_init": "random",
                           "target_init": "random", "whitebox": False, "same_arch": sa == t}
                          for s, sa, t, d in pairs])
    findings = {f.key: f for f in FINDINGS}
    selected = [[frame.surrogate[mask].tolist() for mask, _, _ in findings[key].terms(frame)]
                for key in ("b d2", "c")]
    assert selected == [[["o"], ["v2"]],   # only t-cnn has both a d1 and a d2 surrogate
                        [["x"], ["o"]]]    # only t-cnn has both an other- and a same-arch d2 surrogate
