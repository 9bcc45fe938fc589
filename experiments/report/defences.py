"""The report's "defences" section: each target's hardening, its clean AUC (the cost) and its
adversarial AUC as % of clean under each surrogate group; whether an ensemble of surrogates closes
the gap to a same-init surrogate; a heatmap with the targets as columns.

Intervals are the findings' paired bootstrap over seeds and test images (`findings.PairDraws`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..design.zoo import MIXED
from .bootstrap import percentile_interval
from .findings import PairDraws
from .plots import _save, _slug, heatmap_figure
from .tables import attack_settings, markdown_table, setting_label

GROUPS = ("white-box", "same data", "other data", "other architecture")


def surrogate_groups(f: pd.DataFrame) -> dict[str, pd.Series]:
    """Row masks of the surrogate groups: the target itself (white-box, through its defence), and
    single surrogates trained apart from the target: same architecture and data, same architecture
    on other data, another architecture."""
    transfer = (f["surrogate_members"] == "") & ~f["whitebox"] & ~f["same_model"]
    return {"white-box": f["whitebox"], "same data": transfer & f["same_arch"] & f["same_data"],
            "other data": transfer & f["same_arch"] & ~f["same_data"],
            "other architecture": transfer & ~f["same_arch"] & (f["surrogate_arch"] != MIXED)}


def _interval(draws: PairDraws, mask: pd.Series) -> tuple[float, np.ndarray]:
    """Mean adversarial AUC % of clean over the masked pairs, and its value on every resample."""
    return draws.effect([(mask, "adv", 1.0)])


def domain_draws(results: pd.DataFrame, predictions: dict, n_resamples: int, seed: int) -> dict[str, PairDraws]:
    """Each domain's resample draws, made once for both tables."""
    return {domain: PairDraws(results[results["domain"] == domain], predictions, n_resamples, seed)
            for domain in results["domain"].unique()}


def defence_table(results: pd.DataFrame, draws_of: dict[str, PairDraws]) -> pd.DataFrame:
    """One row per (domain, attack, eps, target): hardening, clean AUC, its change against the plain
    target of the same architecture, init and data (`cost`), and per surrogate group the mean
    adversarial AUC % of clean with a 95 % interval (`<group>`, `<group>_lo`, `<group>_hi`)."""
    rows = []
    for domain, attack, eps in attack_settings(results):
        frame, draws = results[results["domain"] == domain], draws_of[domain]
        setting = (setting_label(frame) == attack) & np.isclose(frame["eps"], eps)
        groups = surrogate_groups(frame)
        clean = frame[setting].groupby("target", sort=False)["auc_clean"].mean()
        for target in clean.index:
            of = setting & (frame["target"] == target)
            first = frame[of].iloc[0]
            row = {"domain": domain, "attack": attack, "eps": eps, "target": target,
                   "hardening": first["target_hardening"], "auc_clean": clean[target],
                   "cost": clean[target] - _plain_clean(frame[setting], first, clean)}
            for name, mask in groups.items():
                point, resampled = _interval(draws, of & mask) if (of & mask).any() else (np.nan, None)
                lo, hi = percentile_interval(resampled)
                row.update({name: point, f"{name}_lo": lo, f"{name}_hi": hi})
            rows.append(row)
    return pd.DataFrame(rows)


def _plain_clean(frame: pd.DataFrame, target: pd.Series, clean: pd.Series) -> float:
    """Clean AUC of the one plain target with the target's architecture, init and data (NaN if none)."""
    same = frame[(frame["target_hardening"] == "none") & (frame["target_arch"] == target["target_arch"])
                 & (frame["target_init"] == target["target_init"])
                 & (frame["target_dev_set"] == target["target_dev_set"])]["target"].unique()
    return float(clean[same[0]]) if len(same) == 1 else np.nan


def ensemble_table(results: pd.DataFrame, draws_of: dict[str, PairDraws]) -> pd.DataFrame:
    """Per (domain, attack, eps, ensemble surrogate, target that is none of its members): the
    members' mean adversarial AUC % of clean (`single`: one surrogate at a time), the ensemble's
    (`joint`), a same-init
    surrogate's (same architecture, data and non-random init as the target, trained apart) and the
    share of the members-to-same-init gap that the ensemble closes, each with a 95 % interval."""
    rows = []
    for domain, attack, eps in attack_settings(results):
        frame = results[results["domain"] == domain]
        setting = (setting_label(frame) == attack) & np.isclose(frame["eps"], eps)
        ensembles = frame[setting & (frame["surrogate_members"] != "")][["surrogate", "surrogate_members"]]
        if ensembles.empty:
            continue
        draws = draws_of[domain]
        same_init = (surrogate_groups(frame)["same data"] & (frame["surrogate_init"] == frame["target_init"])
                     & (frame["surrogate_init"] != "random") & (frame["surrogate_hardening"] == "none"))
        for name, members in ensembles.drop_duplicates().itertuples(index=False):
            members = members.split(",")
            for target in frame.loc[setting & (frame["surrogate"] == name), "target"].unique():
                if target in members:
                    continue
                of = setting & (frame["target"] == target)
                parts = {"single": of & frame["surrogate"].isin(members), "joint": of & (frame["surrogate"] == name),
                         "same init": of & same_init & ~frame["surrogate"].isin(members)}
                row = {"domain": domain, "attack": attack, "eps": eps, "ensemble": name,
                       "members": ",".join(members), "target": target}
                values = {}
                for part, mask in parts.items():
                    values[part] = _interval(draws, mask) if mask.any() else (np.nan, None)
                    row[part] = values[part][0]
                    row[f"{part}_lo"], row[f"{part}_hi"] = percentile_interval(values[part][1])
                if values["same init"][1] is not None:
                    (m, mr), (e, er), (s, sr) = values["single"], values["joint"], values["same init"]
                    row["gap closed"] = 100 * (m - e) / (m - s)
                    row["gap closed_lo"], row["gap closed_hi"] = percentile_interval(100 * (mr - er) / (mr - sr))
                rows.append(row)
    return pd.DataFrame(rows)


def _with_interval(table: pd.DataFrame, column: str) -> list[str]:
    return ["–" if pd.isna(v) else f"{v:.1f} [{lo:.1f}, {hi:.1f}]"
            for v, lo, hi in zip(table[column], table[f"{column}_lo"], table[f"{column}_hi"])]


def display(table: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({"domain": table["domain"], "attack": table["attack"], "eps": table["eps"].map("{:g}".format),
                        "target": table["target"], "hardening": table["hardening"],
                        "AUC clean": table["auc_clean"].map("{:.3f}".format),
                        "cost": table["cost"].map(lambda v: "–" if pd.isna(v) else f"{v:+.3f}")})
    for group in GROUPS:
        out[group] = _with_interval(table, group)
    return out


def display_ensembles(table: pd.DataFrame) -> pd.DataFrame:
    out = table[["domain", "attack", "ensemble", "members", "target"]].copy()
    out = out.rename(columns={"ensemble": "surrogate"})
    out.insert(2, "eps", table["eps"].map("{:g}".format))
    for part in ("single", "joint", "same init", "gap closed"):
        name = {"single": "members one by one", "joint": "ensemble", "gap closed": "gap closed %"}.get(part, part)
        out[name] = _with_interval(table, part) if part in table else "–"
    return out


def defence_heatmaps(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Surrogate groups (rows) x targets (columns, hardened ones after the plain) of adversarial AUC
    as % of clean, one figure per (domain, attack, eps): `defences_<domain>_<attack>_eps<eps>.png`."""
    paths = []
    values = table[list(GROUPS)].to_numpy(dtype=float)
    vmin = min(50.0, np.floor(np.nanmin(values) / 10) * 10) if np.isfinite(values).any() else 50.0
    vmax = max(100.0, float(np.nanmax(values))) if np.isfinite(values).any() else 100.0
    for (domain, attack, eps), part in table.groupby(["domain", "attack", "eps"], sort=False):
        part = part.sort_values("hardening", key=lambda h: h != "none", kind="stable")
        matrix = pd.DataFrame({t: [r[g] for g in GROUPS] for t, r in zip(part["target"], part.to_dict("records"))},
                              index=list(GROUPS))
        labels = {t: f"{t}\n{h}" for t, h in zip(part["target"], part["hardening"])}
        fig = heatmap_figure(matrix, f"{domain}: hardened targets, {attack} eps = {eps:g}", vmin, vmax, labels)
        fig.axes[0].set_ylabel("surrogate group")
        paths.append(_save(fig, out_dir / f"defences_{_slug(domain)}_{_slug(attack)}_eps{eps:g}.png"))
    return paths


def defences_section(results: pd.DataFrame, predictions: dict, out_dir: Path, n_resamples: int, seed: int) -> str:
    """The defences table (and the ensemble table when there are ensemble surrogates), written to
    `out_dir/defences.{csv,md}` (`ensembles.csv`) with the heatmaps; "" when the results have no
    hardened target and no ensemble surrogate, or bootstrapping is off. `predictions`: each pair
    run's, by run id (`findings.load_predictions`)."""
    hardened = "target_hardening" in results and (results["target_hardening"] != "none").any()
    ensembles = "surrogate_members" in results and (results["surrogate_members"] != "").any()
    if n_resamples < 1 or results.empty or not (hardened or ensembles):
        return ""
    draws = domain_draws(results, predictions, n_resamples, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    if hardened:
        table = defence_table(results, draws)
        table.to_csv(out_dir / "defences.csv", index=False)
        defence_heatmaps(table, out_dir)
        lines += ["Defences: target hardening, clean AUC (cost: change against the plain target) and adversarial "
                  "AUC % of clean by surrogate group (95 % paired bootstrap over seeds and test images)", "",
                  markdown_table(display(table))]
    if ensembles:
        table = ensemble_table(results, draws)
        if not table.empty:
            table.to_csv(out_dir / "ensembles.csv", index=False)
            lines += ["Ensemble surrogates: adversarial AUC % of clean of the members one at a time, of the "
                      "ensemble and of a same-init surrogate; gap closed = (members - ensemble) / "
                      "(members - same init)", "", markdown_table(display_ensembles(table))]
    text = "\n".join([*lines, ""])
    (out_dir / "defences.md").write_text(text)
    return text
