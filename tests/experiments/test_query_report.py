"""The query attacks' report: success at each budget, intervals, curves, threat models and the
transfer-start finding, checked against direct numpy computations on hand-made contract rows."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.report.bootstrap import percentile_interval
from experiments.store.artifact_formats import Predictions
from experiments.report.queries import (CLEAN_START, TRANSFER_ASR, QUERY_ONLY, TRANSFER_BEST, TRANSFER_MEDIAN,
                                        TRANSFER_STARTED, WHITE_BOX, budgets_for, check_query_rows, queries_figure,
                                        query_curves, start_savings, success_table, threat_models)

SETTING = {"attack": "square", "norm": "linf", "eps": 0.03, "max_queries": 1000}


def simulate(targets=("a", "b"), starts=("clean", "a", "b"), n=60, seed=0, fooled_at_start=0.3, start_median=60.0,
             max_queries=1000, clean_median=300.0):
    """Contract rows of a made-up query attack: from the clean image an image needs about
    `clean_median` queries; a transfer start fools `fooled_at_start` of them at once (queries = 1) and
    the rest need about `start_median`; more than `max_queries`: never fooled."""
    rng, rows = np.random.default_rng(seed), []
    for target in targets:
        labels, correct = rng.integers(0, 2, n), rng.random(n) < 0.8
        for start in starts:
            median = clean_median if start == CLEAN_START else start_median
            needed = np.ceil(rng.lognormal(np.log(median), 1.0, n)).astype(int).clip(1)
            if start != CLEAN_START:
                needed[rng.random(n) < fooled_at_start] = 1
            for i in range(n):
                success = bool(correct[i] and needed[i] <= max_queries)  # images wrong unattacked: not attacked
                rows.append({"target": target, "start": start, **SETTING, "max_queries": max_queries, "image": i,
                             "label": int(labels[i]), "clean_correct": bool(correct[i]),
                             "queries": 0 if not correct[i] else int(needed[i]) if success else max_queries,
                             "success": success})
    return pd.DataFrame(rows)


def direct_rate(rows, target, start, budget):
    part = rows[(rows.target == target) & (rows.start == start) & rows.clean_correct]
    return np.count_nonzero(part.success.to_numpy() & (part.queries.to_numpy() <= budget)) / len(part)


def test_success_at_each_budget_counts_clean_correct_images_directly():
    rows = simulate()
    table = success_table(rows, n_resamples=200, seed=1)
    assert sorted(table.budget.unique()) == [10, 100, 1000]
    assert len(table) == 2 * 3 * 3
    for row in table.itertuples():
        assert row.success == pytest.approx(direct_rate(rows, row.target, row.start, row.budget))
        part = rows[(rows.target == row.target) & (rows.start == row.start)]
        assert row.images == part.clean_correct.sum()
        assert row.lo <= row.success <= row.hi


def test_budgets_stop_at_the_settings_query_budget():
    assert budgets_for(1000) == [10, 100, 1000]
    assert budgets_for(50) == [10, 50]
    assert budgets_for(5000, (10, 100)) == [10, 100, 5000]
    table = success_table(simulate(max_queries=50), n_resamples=20)
    assert sorted(table.budget.unique()) == [10, 50]


def test_interval_is_the_percentile_of_an_independent_bootstrap_over_images():
    rows = simulate(targets=("a",), starts=("clean",), n=50)
    row = success_table(rows, n_resamples=300, seed=7).query("budget == 1000").iloc[0]
    part = rows[rows.clean_correct].sort_values("image")
    hits = (part.success & (part.queries <= 1000)).to_numpy(dtype=float)
    draws = np.random.default_rng(7).integers(0, len(hits), (300, len(hits)))
    resampled = np.array([hits[d].mean() for d in draws])
    assert (row.lo, row.hi) == pytest.approx(percentile_interval(resampled))


def test_intervals_shrink_with_more_images():
    def width(n):
        row = success_table(simulate(targets=("a",), starts=("clean",), n=n), n_resamples=400).query(
            "budget == 1000").iloc[0]
        return row.hi - row.lo
    assert width(1000) < 0.5 * width(40)


def fixed_pair(start_queries, clean_queries=(1000, 50, 200, 10)):
    """Four clean-correct images and one the target gets wrong (its values must not count)."""
    rows = []
    for start, queries in (("clean", [*clean_queries, 0]), ("s", [*start_queries, 0])):
        for i, q in enumerate(queries):
            rows.append({"target": "t", "start": start, **SETTING, "image": i, "label": i % 2,
                         "clean_correct": i < 4, "queries": q, "success": 0 < q < 1000})
    return pd.DataFrame(rows)


def test_paired_difference_by_hand():
    rows = fixed_pair([1, 20, 1000, 10])
    row = start_savings(rows, n_resamples=500, seed=0).iloc[0]
    # per image, clean minus start: 999, 30, -800, 0 (never fooled counts at the budget, 1000)
    assert row.effect == pytest.approx((999 + 30 - 800 + 0) / 4)
    assert row.clean_queries == pytest.approx((1000 + 50 + 200 + 10) / 4)
    assert row.start_queries == pytest.approx((1 + 20 + 1000 + 10) / 4)
    assert row.clean_success == pytest.approx(3 / 4) and row.start_success == pytest.approx(3 / 4)
    assert row.images == 4 and row.start == "s"
    draws = np.random.default_rng(0).integers(0, 4, (500, 4))
    diff = np.array([999, 30, -800, 0], dtype=float)
    assert (row.lo, row.hi) == pytest.approx(percentile_interval(diff[draws].mean(axis=1)))
    assert row.verdict == "inconclusive"


@pytest.mark.parametrize("fooled, median, expected", [(0.5, 20.0, "reproduced"), (0.0, 3000.0, "not reproduced")])
def test_finding_verdict_follows_the_data(fooled, median, expected):
    rows = simulate(starts=("clean", "a"), n=80, fooled_at_start=fooled, start_median=median)
    table = start_savings(rows, n_resamples=300)
    assert list(table.verdict) == [expected, expected]
    for row in table.itertuples():
        part = rows[(rows.target == row.target) & rows.clean_correct]
        saved = (part[part.start == "clean"].sort_values("image").queries.to_numpy()
                 - part[part.start == "a"].sort_values("image").queries.to_numpy())
        assert row.effect == pytest.approx(saved.mean())
        assert (row.lo > 0) == (expected == "reproduced") and (row.hi < 0) == (expected == "not reproduced")


def test_identical_starts_save_nothing():
    rows = simulate(targets=("a",), starts=("clean",), n=30)
    rows = pd.concat([rows, rows.assign(start="b")], ignore_index=True)
    row = start_savings(rows, n_resamples=100).iloc[0]
    assert (row.effect, row.lo, row.hi) == (0.0, 0.0, 0.0) and row.verdict == "inconclusive"


def test_a_target_without_clean_correct_images_has_no_rates_and_no_verdict():
    rows = simulate(targets=("a",), starts=("clean", "b"), n=10).assign(clean_correct=False, queries=0,
                                                                        success=False)
    table = success_table(rows, n_resamples=50)
    assert len(table) == 2 * 3 and (table.images == 0).all() and table.success.isna().all()
    assert list(start_savings(rows, n_resamples=50).verdict) == ["no verdict"]


def test_no_finding_without_a_clean_start():
    assert start_savings(simulate(starts=("a", "b")), n_resamples=50).empty


def test_curves_draw_one_line_per_start_with_the_counted_rates(tmp_path):
    rows = simulate(starts=("clean", "a", "b"), n=40)
    fig = queries_figure(check_query_rows(rows), SETTING)
    axes = [ax for ax in fig.axes if ax.get_lines()]
    assert [ax.get_title().split(",")[0] for ax in axes] == ["target a", "target b"]
    for ax, target in zip(axes, ("a", "b")):
        assert ax.get_xscale() == "log"
        lines = ax.get_lines()
        assert len(lines) == 3
        for line, start in zip(lines, ("clean", "a", "b")):
            assert start in line.get_label()
            x, y = line.get_xdata(), line.get_ydata()
            assert x[0] == 1 and x[-1] == 1000 and np.all(np.diff(y) >= 0)
            for q, rate in zip(x, y):
                assert rate == pytest.approx(direct_rate(rows, target, start, q))
    paths = query_curves(rows, tmp_path)
    assert [p.name for p in paths] == ["queries_square_linf_eps0.03_q1000.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def transfer_results(asr_by_pair, seeds=(0, 1), n=40):
    """A transfer table (rows per surrogate -> target pair of the first attack at eps 0.03, then an
    ifgsm row that must not count) and each run's predictions, built so that the predictions' clean-
    correct flips give each pair's `asr`."""
    rng, rows, predictions = np.random.default_rng(3), [], {}
    for (surrogate, target), rate in asr_by_pair.items():
        for seed in seeds:
            for attack in ("fgsm", "ifgsm"):
                labels = rng.integers(0, 2, n)
                right = rng.random(n) < 0.8
                clean = np.where(right == labels.astype(bool), 0.9, 0.1)
                flip = right & (rng.random(n) < rate)
                adv = np.where(flip, 1.0 - clean, clean)
                run_id = f"{surrogate}-{target}-{attack}-{seed}"
                predictions[run_id] = Predictions(labels[:, None].astype(bool), clean[:, None], adv[:, None],
                                                  clean[:, None])
                rows.append({"surrogate": surrogate, "target": target, "attack": attack, "eps": 0.03,
                             "seed": seed, TRANSFER_ASR: flip.sum() / right.sum(), "run_id": run_id,
                             "whitebox": surrogate == target, "domain": "pathology"})
    return pd.DataFrame(rows), predictions


def test_threat_models_table_per_target():
    rows = simulate(targets=("t",), starts=("clean", "s1", "s3"), n=50)
    results, predictions = transfer_results({("s1", "t"): 0.2, ("s2", "t"): 0.6, ("s3", "t"): 0.4,
                                             ("t", "t"): 0.9, ("s1", "u"): 0.5})
    table = threat_models(rows, results, predictions, n_resamples=200, seed=0)
    assert list(table.threat_model) == [TRANSFER_BEST, TRANSFER_MEDIAN, *[QUERY_ONLY] * 3,
                                        *[TRANSFER_STARTED] * 6, WHITE_BOX]
    fgsm = results[(results.attack == "fgsm") & (results.target == "t")]
    mean = fgsm.groupby("surrogate")[TRANSFER_ASR].mean()
    best, median, white = table.iloc[0], table.iloc[1], table.iloc[-1]
    assert best.model == mean.drop("t").idxmax() and best.success == pytest.approx(mean.drop("t").max())
    assert median.model == mean.drop("t").sort_values().index[1]
    assert white.model == "t" and white.success == pytest.approx(mean["t"]) and np.isnan(white.queries)
    assert best.queries == 0 and best.transfer_attack == "fgsm"
    for row in (best, median, white):
        assert row.lo <= row.success <= row.hi and row.hi - row.lo > 0
    started = table[table.threat_model == TRANSFER_STARTED]
    assert list(started.model) == ["s1"] * 3 + ["s3"] * 3
    for row in table[table.threat_model.isin([QUERY_ONLY, TRANSFER_STARTED])].itertuples():
        assert row.success == pytest.approx(direct_rate(rows, "t", row.model, row.queries))
    # without predictions the point stays, the interval is unknown; without the white-box pair, no row
    bare = threat_models(rows, results[results.surrogate != "t"], {}, n_resamples=50)
    assert WHITE_BOX not in set(bare.threat_model) and bare.iloc[0].success == pytest.approx(best.success)
    assert np.isnan(bare.iloc[0].lo)
    # a target the transfer table lacks: the query rows only
    only = threat_models(rows, results.iloc[0:0], {}, n_resamples=50)
    assert set(only.threat_model) == {QUERY_ONLY, TRANSFER_STARTED}


def test_transfer_interval_matches_an_independent_bootstrap_of_the_predictions():
    rows = simulate(targets=("t",), starts=("clean",), n=20)
    results, predictions = transfer_results({("s", "t"): 0.5}, seeds=(0,))
    row = threat_models(rows, results, predictions, n_resamples=300, seed=4).iloc[0]
    p = predictions[results.run_id.iloc[0]]
    right = ((p.clean >= 0.5) == p.labels)[:, 0]
    flipped = right & ((p.adv >= 0.5) != p.labels)[:, 0]
    draws = np.random.default_rng(4).integers(0, len(right), (300, len(right)))
    resampled = np.array([flipped[d].sum() / right[d].sum() for d in draws])
    assert (row.lo, row.hi) == pytest.approx(percentile_interval(resampled))
    assert row.images == right.sum()


# Through write_report on a real smoke study (its MLflow store, pair runs and predictions).

@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory, smoke_config):
    from experiments import run_study
    cfg = smoke_config(tmp_path_factory.mktemp("study"))
    table = run_study(cfg).table
    return cfg, table.drop(columns="target_at_chance", errors="ignore")  # as write_report received it


def report(cfg, table, out_dir: Path, **queries) -> tuple[str, str]:
    """`write_report` of the study's table (its predictions read through the store) into `out_dir`,
    logged to a fresh run of the study's store as the study logs its report."""
    from experiments.report import write_report
    from experiments.store.run_store import RunStore
    manifest = pd.read_csv(study_report(cfg) / "split_manifest.csv")
    store = RunStore.existing(cfg.tracking.uri, cfg.name)
    run_id = store.create(out_dir.name, {})
    predictions = store.predictions(table["run_id"])
    text, _, _ = write_report(table.copy(), out_dir, None, manifest, predictions, cfg.bootstrap_resamples,
                              cfg.seed, **queries)
    store.log_folder(run_id, out_dir)
    store.end(run_id)
    return text, run_id


def study_report(cfg) -> Path:
    """The report folder `run_study` wrote for the study (its one variant)."""
    (folder,) = (Path(cfg.output_dir) / cfg.name).glob("*/report")
    return folder


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_without_query_rows_the_report_stays_byte_for_byte_the_same(smoke_study, tmp_path):
    cfg, table = smoke_study
    absent, _ = report(cfg, table, tmp_path / "absent")
    empty, _ = report(cfg, table, tmp_path / "empty", queries=pd.DataFrame())
    columns, _ = report(cfg, table, tmp_path / "columns", queries=simulate().iloc[0:0])
    assert absent == empty == columns
    before = files(tmp_path / "absent")
    assert before == files(tmp_path / "empty") == files(tmp_path / "columns")
    assert not [name for name in before if "queries" in name]
    # the study's own report (written by run_study, no query rows), less the example grid this test leaves out
    study = files(study_report(cfg))
    assert {n: b for n, b in study.items() if not n.startswith("examples_")} == before


def smoke_query_rows(cfg, table):
    """Contract rows for the study's targets: an image its transfer start (the first attack's set)
    already fools costs 1 query; the others a deterministic number of queries, never fooled past 1000;
    images the target gets wrong unattacked: 0 queries, no success."""
    from experiments.store.run_store import RunStore
    first = table[table.attack == table.attack.iloc[0]]
    predictions = RunStore.existing(cfg.tracking.uri, cfg.name).predictions(first.run_id)
    rows = []
    for target in ("a", "b"):
        own = predictions[first[(first.surrogate == target) & (first.target == target)].run_id.iloc[0]]
        labels = own.labels[:, 0].astype(int)
        correct = (own.clean[:, 0] >= 0.5).astype(int) == labels
        for start in ("clean", "a", "b"):
            if start == "clean":
                fooled = np.zeros(len(labels), bool)
            else:
                p = predictions[first[(first.surrogate == start) & (first.target == target)].run_id.iloc[0]]
                fooled = (p.adv[:, 0] >= 0.5).astype(int) != labels
            for i in range(len(labels)):
                needed = 1 if fooled[i] else (37 * i) % 1500 + (1 if start == "clean" else 0) + 2
                attacked = bool(correct[i])  # an image the target gets wrong unattacked is not attacked
                rows.append({"target": target, "start": start, "attack": "square", "norm": "linf", "eps": 0.02,
                             "max_queries": 1000, "image": i, "label": int(labels[i]), "clean_correct": attacked,
                             "queries": min(needed, 1000) if attacked else 0, "success": attacked and needed <= 1000})
    return pd.DataFrame(rows), predictions, first


@pytest.mark.slow
def test_write_report_with_query_rows_of_the_study_targets(smoke_study, tmp_path):
    from mlflow.tracking import MlflowClient
    cfg, table = smoke_study
    rows, predictions, first = smoke_query_rows(cfg, table)
    plain, _ = report(cfg, table, tmp_path / "plain")
    text, run_id = report(cfg, table, tmp_path / "queried", queries=rows)
    before, after = files(tmp_path / "plain"), files(tmp_path / "queried")
    added = {"queries_success.csv", "queries_success.md", "queries_threat_models.csv", "queries_threat_models.md",
             "queries_finding.csv", "queries_finding.md", "queries_square_linf_eps0.02_q1000.png"}
    assert set(after) == set(before) | added | {"findings.md"}
    for name in set(before) - {"findings.md"}:
        assert after[name] == before[name]
    assert after["findings.md"].startswith(before.get("findings.md", b""))
    assert b"Do transfer starts save queries?" in after["findings.md"]
    assert text.startswith(plain) and "Threat models: target a" in text and "(queries) b" in text
    logged = {a.path for a in MlflowClient(cfg.tracking.uri).list_artifacts(run_id)}
    assert added <= logged
    threats = pd.read_csv(tmp_path / "queried" / "queries_threat_models.csv", keep_default_na=False,
                          na_values=[""])
    for target, other in (("a", "b"), ("b", "a")):
        part = threats[threats.target == target].set_index("threat_model")
        for name, surrogate in ((TRANSFER_BEST, other), (TRANSFER_MEDIAN, other), (WHITE_BOX, target)):
            run = first[(first.surrogate == surrogate) & (first.target == target)]
            p = predictions[run.run_id.iloc[0]]
            right = ((p.clean >= 0.5) == p.labels)[:, 0]
            flipped = right & ((p.adv >= 0.5) != p.labels)[:, 0]
            assert part.loc[name, "model"] == surrogate and part.loc[name, "transfer_attack"] == "fgsm"
            assert part.loc[name, "success"] == pytest.approx(flipped.sum() / right.sum())  # = the table's asr
            assert part.loc[name, "lo"] <= part.loc[name, "success"] <= part.loc[name, "hi"]
        started = threats[(threats.target == target) & (threats.threat_model != TRANSFER_BEST)
                          & (threats.threat_model != TRANSFER_MEDIAN) & (threats.threat_model != WHITE_BOX)]
        for row in started.itertuples():
            assert row.success == pytest.approx(direct_rate(rows, target, row.model, row.queries))
    finding = pd.read_csv(tmp_path / "queried" / "queries_finding.csv")
    assert set(zip(finding.target, finding.start)) == {("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")}
