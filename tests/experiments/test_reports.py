import numpy as np
import pandas as pd
import pytest

from experiments.report.tables import (PAPER_TABLES, aggregate_seeds, manuscript_table, markdown_table,
                                       summary, supplement_table, transfer_matrix, write_tables)

TABLES = {t.name: t for t in PAPER_TABLES}

# name -> (arch, init, dev_set, instance)
ZOO = {
    "cnn": ("cnn", "random", "d1", 0),
    "cnn_v2": ("cnn", "random", "d1", 1),
    "res": ("res", "random", "d1", 0),
    "res_in": ("res", "imagenet", "d1", 0),
    "cnn_d2": ("cnn", "random", "d2", 0),
    "res_d2_2": ("res", "random", "d2/2", 0),
}


def results_frame(surrogates, targets, attacks=("fgsm", "ifgsm"), eps=(0.01,), seeds=(0,), domain="pathology",
                  seed=0):
    """A results table of the shape the study produces, with random metric values."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in seeds:
        for sur in surrogates:
            for tgt in targets:
                for attack in attacks:
                    for e in eps:
                        sa, si, sd, _ = ZOO[sur]
                        ta, ti, td, _ = ZOO[tgt]
                        clean = rng.uniform(0.8, 0.95)
                        adv, ctrl = clean * rng.uniform(0.3, 0.9), clean * rng.uniform(0.95, 1.0)
                        rows.append({
                            "surrogate": sur, "target": tgt, "attack": attack, "eps": e,
                            "auc_clean": clean, "auc_adv": adv, "auc_control": ctrl,
                            "auc_pct_clean": 100 * adv / clean, "asr_correct": rng.uniform(),
                            "asr_all": rng.uniform(), "linf": e,
                            "l2": rng.uniform(), "ssim": rng.uniform(0.9, 1), "psnr": rng.uniform(30, 40),
                            "craft_seconds": 1.0, "eval_seconds": 1.0,
                            "surrogate_arch": sa, "surrogate_init": si, "surrogate_dev_set": sd,
                            "target_arch": ta, "target_init": ti, "target_dev_set": td,
                            "same_arch": sa == ta, "same_init": si == ti, "same_data": sd == td,
                            "whitebox": sur == tgt, "domain": domain, "seed": s})
    return pd.DataFrame(rows)


def test_manuscript_table2_averages_pairs_within_seed_then_over_seeds():
    df = results_frame(["cnn", "cnn_v2", "res"], ["cnn", "res"], eps=(0.01, 0.02), seeds=(0, 1, 2))
    table = manuscript_table(df, TABLES["table2_epsilon"])
    # hand computation with numpy: transfer rows, ifgsm, eps 0.02
    mask = (~df.whitebox.values) & (df.attack.values == "ifgsm") & (df.eps.values == 0.02)
    per_seed = [df.auc_pct_clean.values[mask & (df.seed.values == s)].mean() for s in (0, 1, 2)]
    row = table[(~table.whitebox) & (table.attack == "ifgsm") & (table.eps == 0.02)].iloc[0]
    assert row.auc_pct_clean == pytest.approx(np.mean(per_seed))
    assert row.auc_pct_clean_std == pytest.approx(np.std(per_seed, ddof=1))
    assert row.n_seeds == 3 and row.n_pairs == 4  # cnn->res, cnn_v2->cnn, cnn_v2->res, res->cnn
    ratio = 100 * (df.auc_control / df.auc_clean).values
    control = [ratio[mask & (df.seed.values == s)].mean() for s in (0, 1, 2)]
    assert row.control_pct_clean == pytest.approx(np.mean(control))
    assert len(table) == 2 * 2 * 2  # whitebox x attack x eps


def test_manuscript_table3_averages_over_attacks_and_architecture_pairs():
    df = results_frame(["cnn_v2", "res", "res_in"], ["cnn", "res_in"])
    table = manuscript_table(df, TABLES["table3_pretraining"])
    key = (df.target_init == "imagenet") & (df.surrogate_init == "random") & (~df.same_arch)
    expected = df.auc_adv[key].to_numpy()  # cnn_v2 -> res_in, both attacks
    row = table[(table.target_init == "imagenet") & (table.surrogate_init == "random") & (~table.same_arch)]
    assert len(row) == 1 and len(expected) == 2
    assert row.auc_adv.iloc[0] == pytest.approx(expected.sum() / 2)
    assert row.attacks.iloc[0] == "fgsm+ifgsm"
    assert np.isnan(row.auc_adv_std.iloc[0])  # one seed


def test_tables_select_the_papers_rows():
    df = results_frame(["cnn_v2", "cnn_d2", "res_d2_2", "res_in"], ["cnn"])
    t4 = manuscript_table(df, TABLES["table4_development_data"])
    assert sorted(t4.surrogate_dev_set) == ["d1", "d2", "d2/2"]  # res_in (imagenet) is not in Table 4
    assert manuscript_table(df, TABLES["table5_small_target_data"]).empty
    t2 = manuscript_table(df, TABLES["table2_epsilon"])
    assert (t2.n_pairs == 1).all()  # only cnn_v2 -> cnn is random init on d1


def test_supplement_lists_each_pair_with_seed_mean_and_keeps_ci_for_one_seed():
    df = results_frame(["cnn", "res"], ["cnn", "res"], seeds=(0, 1))
    sup = supplement_table(df, TABLES["table2_epsilon"])
    assert len(sup) == 2 * 2 * 2  # pairs x attacks
    row = sup[(sup.surrogate == "res") & (sup.target == "cnn") & (sup.attack == "fgsm")].iloc[0]
    values = df[(df.surrogate == "res") & (df.target == "cnn") & (df.attack == "fgsm")].psnr.to_numpy()
    assert row.psnr == pytest.approx(values.mean()) and row.psnr_std == pytest.approx(values.std(ddof=1))
    assert "auc_adv_lo" not in sup

    one = df[df.seed == 0].assign(auc_adv_lo=0.1, auc_adv_hi=0.2)
    assert (supplement_table(one, TABLES["table2_epsilon"]).auc_adv_lo == 0.1).all()


def test_aggregate_seeds_matches_pandas_free_computation():
    per_seed = pd.DataFrame({"domain": ["a"] * 3 + ["b"] * 2, "seed": [0, 1, 2, 0, 1],
                             "auc_adv": [0.5, 0.7, 0.6, 0.9, 0.8]})
    out = aggregate_seeds(per_seed, ["domain"])
    assert out.auc_adv.tolist() == pytest.approx([0.6, 0.85])
    assert out.auc_adv_std.tolist() == pytest.approx([0.1, np.sqrt(0.005)])
    assert out.n_seeds.tolist() == [3, 2]


def test_transfer_matrix_layout_and_missing_pairs():
    df = results_frame(["cnn", "res"], ["cnn", "res_in"], seeds=(0, 1))
    df = df[~((df.surrogate == "res") & (df.target == "res_in"))]
    m = transfer_matrix(df, "pathology", "fgsm", 0.01)
    assert list(m.index) == ["cnn", "res"] and list(m.columns) == ["cnn", "res_in"]
    pick = df[(df.surrogate == "cnn") & (df.target == "res_in") & (df.attack == "fgsm")].auc_pct_clean
    assert m.loc["cnn", "res_in"] == pytest.approx(pick.mean())
    assert np.isnan(m.loc["res", "res_in"])
    with pytest.raises(ValueError, match="no results for domain=pathology attack=pgd"):
        transfer_matrix(df, "pathology", "pgd", 0.01)


def test_markdown_table_format():
    frame = pd.DataFrame({"name": ["a", "bb"], "auc_adv": [0.51234, np.nan], "ok": [True, False],
                          "n": [3, 12]})
    assert markdown_table(frame) == (
        "| name | auc_adv | ok  |   n |\n"
        "|------|--------:|-----|----:|\n"
        "| a    |   0.512 | yes |   3 |\n"
        "| bb   |       – | no  |  12 |\n")


def test_write_tables_and_summary(tmp_path):
    df = results_frame(["cnn", "cnn_v2", "res_in"], ["cnn"], seeds=(0, 1))
    paths = write_tables(df, tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{t}_{f}.{x}" for t in ("table2_epsilon", "table3_pretraining",
                                                     "table4_development_data")
                           for f in ("supplement", "manuscript") for x in ("csv", "md"))
    back = pd.read_csv(tmp_path / "table3_pretraining_manuscript.csv")
    expected = manuscript_table(df, TABLES["table3_pretraining"])
    assert np.allclose(back.auc_adv, expected.auc_adv)
    md = (tmp_path / "table2_epsilon_manuscript.md").read_text()
    row = manuscript_table(df, TABLES["table2_epsilon"]).iloc[0]
    assert f"{row.auc_pct_clean:.1f} ± {row.auc_pct_clean_std:.1f}" in md
    text = summary(df)
    assert "pathology fgsm eps=0.01" in text and "Table 3" in text
    cell = transfer_matrix(df, "pathology", "ifgsm", 0.01).loc["res_in", "cnn"]
    assert f"{cell:.1f}" in text


def test_missing_columns_is_one_clear_error():
    df = results_frame(["cnn"], ["cnn"]).drop(columns=["seed", "domain"])
    with pytest.raises(ValueError, match="results table lacks columns: domain, seed"):
        manuscript_table(df, TABLES["table2_epsilon"])
    flags_as_text = results_frame(["cnn"], ["cnn"]).astype({"whitebox": str})
    with pytest.raises(ValueError, match="results column whitebox must be boolean"):
        summary(flags_as_text)
