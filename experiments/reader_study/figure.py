"""The reader study's figure: detection rate against epsilon, one line per attack with its 95 %
intervals, the chance line, and each attack's largest epsilon still at chance."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .analysis import CHANCE


def detection_figure(settings: pd.DataFrame, budgets: dict[str, float | None]) -> Figure:
    """`settings` as `analysis.by_setting` makes it; `budgets` as `analysis.chance_budgets`."""
    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = colormaps["tab10"]
    for i, (attack, rows) in enumerate(settings.sort_values("eps").groupby("attack", sort=True)):
        colour = colours(i % 10)
        ax.errorbar(rows["eps"], rows["rate"], yerr=[rows["rate"] - rows["lo"], rows["hi"] - rows["rate"]],
                    marker="o", capsize=3, color=colour, label=attack)
        if budgets.get(attack) is not None:
            ax.axvline(budgets[attack], color=colour, linestyle=":", linewidth=1.2,
                       label=f"{attack}: at chance up to eps {budgets[attack]:g}")
    ax.axhline(CHANCE, color="#555555", linestyle="--", linewidth=1, label="chance (50 %)")
    eps = settings["eps"]
    if len(eps) and eps.min() > 0 and eps.max() / eps.min() >= 10:
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("epsilon (L-inf, [0, 1] pixel scale)")
    ax.set_ylabel("detection rate (95 % interval)")
    ax.set_title("Readers picking the attacked image")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def save_detection_figure(settings: pd.DataFrame, budgets: dict[str, float | None], path: Path) -> Path:
    detection_figure(settings, budgets).savefig(path)
    return path
