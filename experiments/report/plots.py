"""Figures of a study as PNG (matplotlib's Agg backend): transfer-matrix heatmaps, epsilon curves
and example grids."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .findings import AT_CHANCE_TAG
from .tables import attack_settings, check_results, setting_label, transfer_matrix

DPI = 100
HEATMAP_CMAP = "magma"  # dark = low AUC = strong attack; luminance rises with the value


def heatmap_figure(matrix: pd.DataFrame, title: str, vmin: float, vmax: float,
                   labels: dict[str, str] | None = None, at_chance: pd.DataFrame | None = None) -> Figure:
    """Surrogates x targets of adversarial AUC as % of clean, one annotated cell per pair; cells whose
    surrogate is the target (white-box) are outlined; pairs not run are grey; cells whose target sits
    at chance on the clean images (`at_chance`, same shape, True where it does) are hatched and say so,
    since their % of clean measures no attack."""
    labels = labels or {}
    chance = np.zeros(matrix.shape, bool) if at_chance is None else at_chance.to_numpy(dtype=bool)
    values = matrix.to_numpy(dtype=float)
    rows, cols = values.shape
    fig = _figure(3.2 + 1.25 * cols, 1.9 + 0.65 * rows)
    ax = fig.add_subplot()
    cmap = colormaps[HEATMAP_CMAP].with_extremes(bad="#d9d9d9")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    for i in range(rows):
        for j in range(cols):
            value = values[i, j]
            if np.isnan(value):
                ax.text(j, i, "–", ha="center", va="center", color="#555555", fontsize=11)
                continue
            light = (value - vmin) / (vmax - vmin) > 0.55
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=11, fontweight="bold",
                    color="black" if light else "white")
            if chance[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=0, hatch="///",
                                       edgecolor="#9e9e9e"))
                ax.text(j, i + 0.3, "target at chance", ha="center", va="center", fontsize=7,
                        color="black" if light else "white")
            if matrix.index[i] == matrix.columns[j]:
                ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, lw=2, ls="--",
                                       edgecolor="#2ca25f"))
    ax.set_xticks(range(cols), [labels.get(t, t) for t in matrix.columns], rotation=30, ha="right",
                  rotation_mode="anchor")  # two-line model labels are wider than a cell
    ax.set_yticks(range(rows), [labels.get(s, s) for s in matrix.index])
    ax.set_xlabel("target (attacked model)")
    ax.set_ylabel("surrogate (crafts the attack)")
    ax.tick_params(length=0)
    ax.set_xticks(np.arange(cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    legend = "lower = stronger attack; dashed box = white-box" + ("; hatched = target at chance" if chance.any() else "")
    ax.set_title(f"{title}\n{legend}", fontsize=10)
    fig.colorbar(image, ax=ax, label="adversarial AUC, % of clean AUC", shrink=0.9)
    return fig


def transfer_heatmaps(results: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """One heatmap per (domain, attack, eps), all on one colour scale,
    `transfer_<domain>_<attack>_eps<eps>.png`; a cell is marked at chance when the results' column
    `target_at_chance` (set by the findings) holds for any of its seeds."""
    rows = check_results(results)
    settings = attack_settings(rows)
    matrices = [transfer_matrix(rows, *setting) for setting in settings]
    low = min(np.nanmin(m.to_numpy(dtype=float)) for m in matrices)
    vmin, vmax = min(50.0, np.floor(low / 10.0) * 10.0), max(100.0, float(rows["auc_pct_clean"].max()))
    labels = _model_labels(rows)
    paths = []
    for (domain, attack, eps), matrix in zip(settings, matrices):
        title = f"{domain}: {attack}, eps = {eps:g} ({eps * 255:.3g}/255)"
        chance = None
        if AT_CHANCE_TAG in rows:
            flags = rows.assign(**{AT_CHANCE_TAG: rows[AT_CHANCE_TAG].astype(float)})
            chance = transfer_matrix(flags, domain, attack, eps, AT_CHANCE_TAG).reindex_like(matrix).fillna(0) > 0
        fig = heatmap_figure(matrix, title, vmin, vmax, labels, chance)
        paths.append(_save(fig, Path(out_dir) / f"transfer_{_slug(domain)}_{_slug(attack)}_eps{eps:g}.png"))
    return paths


def epsilon_figure(results: pd.DataFrame, domain: str) -> Figure:
    """Adversarial AUC as % of clean against eps per attack as `setting_label` names it (solid), control
    noise of the same perturbations (dashed); mean over pairs and seeds with a +-1 sd band. One panel for transfer
    pairs and, when present, one for white-box pairs."""
    rows = check_results(results)
    rows = rows[rows["domain"] == domain]
    rows = rows.assign(attack=setting_label(rows))  # one curve per attacker (an L2 one has its own eps)
    if rows.empty:
        raise ValueError(f"no results for domain={domain}")
    panels = [(name, rows[rows["whitebox"] == wb]) for name, wb in (("transfer (surrogate ≠ target)", False),
                                                                   ("white-box (surrogate = target)", True))]
    panels = [(name, part) for name, part in panels if not part.empty]
    fig = _figure(5.2 * len(panels), 4.6)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)
    colours = dict(zip(sorted(rows["attack"].unique()), colormaps["tab10"].colors))
    for ax, (name, part) in zip(axes[0], panels):
        for attack, colour in colours.items():
            curve = part[part["attack"] == attack].groupby("eps")[["auc_pct_clean", "control_pct_clean"]]
            mean, std = curve.mean(), curve.std(ddof=1).fillna(0.0)
            if mean.empty:
                continue
            eps = mean.index.to_numpy()
            for metric, style, kind in (("auc_pct_clean", "-", "adversarial"),
                                        ("control_pct_clean", "--", "control")):
                ax.plot(eps, mean[metric], style, color=colour, marker="o" if style == "-" else "s", ms=5,
                        label=f"{attack} {kind}")
                ax.fill_between(eps, mean[metric] - std[metric], mean[metric] + std[metric], color=colour,
                                alpha=0.15 if style == "-" else 0.07, lw=0)
        ax.axhline(100.0, color="grey", lw=1, ls=":")
        pairs = len(part[["surrogate", "target"]].drop_duplicates())
        ax.set_title(f"{name}, n = {pairs} pairs", fontsize=10)
        ax.set_xlabel("eps (pixel scale [0, 1])")
        grey_levels = ax.secondary_xaxis("top", functions=(lambda x: x * 255, lambda x: x / 255))
        grey_levels.set_xlabel("eps × 255 (grey levels)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("target AUC, % of clean AUC")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(4, len(names)), fontsize=9, frameon=False)
    fig.suptitle(f"{domain}: attack strength against eps (lower = stronger); dashed = control noise",
                 fontsize=11)
    return fig


def epsilon_curves(results: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """One epsilon-curve figure per domain with at least two eps values, `epsilon_<domain>.png`."""
    rows = check_results(results)
    domains = [d for d, eps in rows.groupby("domain")["eps"].nunique().items() if eps >= 2]
    return [_save(epsilon_figure(rows, domain), Path(out_dir) / f"epsilon_{_slug(domain)}.png")
            for domain in domains]


def amplified_perturbation(clean: torch.Tensor, adv: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(adv - clean) scaled to fill [0, 1] around mid-grey 0.5, and the scale factor used."""
    delta = adv - clean
    peak = float(delta.abs().max())
    factor = 0.5 / peak if peak > 0 else 1.0
    return 0.5 + factor * delta, factor


def example_grid_figure(clean: torch.Tensor, adv: torch.Tensor, control: torch.Tensor, title: str = "",
                        row_labels: list[str] | None = None) -> Figure:
    """Rows of images (NCHW in [0, 1], 1 or 3 channels): clean, adversarial, amplified perturbation,
    control noise."""
    if not clean.shape == adv.shape == control.shape or clean.ndim != 4 or clean.shape[1] not in (1, 3):
        raise ValueError(f"example grid needs equal NCHW images with 1 or 3 channels, got clean "
                         f"{tuple(clean.shape)}, adversarial {tuple(adv.shape)}, "
                         f"control {tuple(control.shape)}")
    if row_labels is not None and len(row_labels) != len(clean):
        raise ValueError(f"example grid: {len(row_labels)} row labels for {len(clean)} images")
    perturbation, factor = amplified_perturbation(clean, adv)
    columns = (("clean", clean), ("adversarial", adv), (f"perturbation ×{factor:.0f}", perturbation),
               ("control noise", control))
    n = len(clean)
    fig = _figure(8.0, 2.0 * n + 0.6)
    axes = fig.subplots(n, 4, squeeze=False)
    for i in range(n):
        for j, (name, images) in enumerate(columns):
            ax = axes[i, j]
            picture = images[i].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            if picture.shape[2] == 1:
                ax.imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=10)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=9)
    linf = float((adv - clean).abs().amax())
    fig.suptitle(f"{title}  (max |perturbation| = {linf:.4f} = {linf * 255:.3g}/255)".strip(), fontsize=11)
    return fig


def example_grid(clean: torch.Tensor, adv: torch.Tensor, control: torch.Tensor, path: str | Path,
                 title: str = "", row_labels: list[str] | None = None) -> Path:
    """`example_grid_figure` saved as a PNG at `path`."""
    return _save(example_grid_figure(clean, adv, control, title, row_labels), Path(path))


def _model_labels(rows: pd.DataFrame) -> dict[str, str]:
    """name -> "name\\narch, init, dev set" for tick labels."""
    labels = {}
    for role in ("surrogate", "target"):
        columns = [role, f"{role}_arch", f"{role}_init", f"{role}_dev_set"]
        for name, arch, init, data in rows[columns].itertuples(index=False):
            labels[name] = f"{name}\n{arch}, {init}, {data}"
    return labels


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-")


def _figure(width: float, height: float) -> Figure:
    """A figure drawn by the Agg backend, without pyplot's global state."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
