import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from experiments.report import plots
from experiments.report.plots import (DPI, HEATMAP_CMAP, epsilon_curves, epsilon_figure, example_grid,
                                      example_grid_figure, heatmap_figure, transfer_heatmaps)

# The suite imports tests with --import-mode=importlib, so the results-frame builder of
# test_reports.py is loaded by path.
_spec = importlib.util.spec_from_file_location("report_frames", Path(__file__).with_name("test_reports.py"))
_frames = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_frames)
results_frame = _frames.results_frame


def png_size(path):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.format, image.size, np.asarray(image.convert("RGB"))


def test_heatmap_cells_are_coloured_and_annotated_like_the_values(tmp_path):
    values = np.array([[20.0, 95.0, 60.0], [45.0, np.nan, 80.0]])
    matrix = pd.DataFrame(values, index=["a", "b"], columns=["a", "x", "y"])
    fig = heatmap_figure(matrix, "test", vmin=10.0, vmax=100.0)
    path = tmp_path / "heat.png"
    fig.savefig(path, dpi=DPI)
    fmt, size, pixels = png_size(path)
    width, height = fig.get_size_inches() * DPI
    assert fmt == "PNG" and size == (round(width), round(height))

    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["20.0", "95.0", "60.0", "45.0", "–", "80.0"])
    cmap = colormaps[HEATMAP_CMAP]
    luminance = {}
    for i in range(2):
        for j in range(3):
            if np.isnan(values[i, j]):
                continue
            x, y = ax.transData.transform((j - 0.3, i + 0.3))  # inside the cell, away from the text
            pixel = pixels[int(round(size[1] - y)), int(round(x))].astype(float)
            expected = np.array(cmap((values[i, j] - 10.0) / 90.0)[:3]) * 255
            assert np.abs(pixel - expected).max() < 6, (i, j, pixel, expected)
            luminance[values[i, j]] = pixel @ [0.299, 0.587, 0.114]
    ordered = [luminance[v] for v in sorted(luminance)]
    assert ordered == sorted(ordered)  # brighter cell = higher % of clean = weaker attack


def test_transfer_heatmaps_one_file_per_setting_on_one_scale(tmp_path, monkeypatch):
    df = results_frame(["cnn", "res"], ["cnn", "res", "res_in"], eps=(0.01, 0.02))
    scales = []

    def recording(matrix, title, vmin, vmax, labels, at_chance):  # the real figure, its colour scale noted
        scales.append((vmin, vmax, np.nanmin(matrix.to_numpy(float)), np.nanmax(matrix.to_numpy(float))))
        return heatmap_figure(matrix, title, vmin, vmax, labels, at_chance)

    monkeypatch.setattr(plots, "heatmap_figure", recording)
    paths = transfer_heatmaps(df, tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"transfer_pathology_{a}_eps{e}.png"
                                                   for a in ("fgsm", "ifgsm") for e in ("0.01", "0.02"))
    assert all(png_size(path)[0] == "PNG" for path in paths)
    assert len({(vmin, vmax) for vmin, vmax, _, _ in scales}) == 1  # one scale for every file
    lows, highs = [low for _, _, low, _ in scales], [high for _, _, _, high in scales]
    assert max(lows) > min(lows) + 1  # the settings' values differ, yet share the scale ...
    vmin, vmax = scales[0][:2]
    assert vmin <= min(lows) and max(highs) <= vmax  # ... which holds every value


def test_heatmap_cells_of_targets_at_chance_are_marked(tmp_path, monkeypatch):
    df = results_frame(["cnn", "res"], ["cnn", "res", "res_in"], eps=(0.01,), seeds=(0, 1))
    df = df[df["attack"] == "fgsm"].copy()
    # target res_in at chance in one seed only (from one surrogate), cnn at chance in no seed
    df["target_at_chance"] = (df["target"] == "res_in") & (df["seed"] == 1) & (df["surrogate"] == "res")
    figures = []

    def recording(*args):
        figures.append(heatmap_figure(*args))
        return figures[-1]

    monkeypatch.setattr(plots, "heatmap_figure", recording)
    transfer_heatmaps(df, tmp_path)
    ax = figures[0].axes[0]
    marked = [t.get_position() for t in ax.texts if t.get_text() == "target at chance"]
    assert len(marked) == 1  # the (res, res_in) cell: row 1, column 2
    assert np.allclose(marked[0], (2, 1.3))
    assert sum(p.get_hatch() == "///" for p in ax.patches) == 1
    assert "hatched = target at chance" in ax.get_title()
    unmarked = heatmap_figure(pd.DataFrame([[50.0]], index=["a"], columns=["b"]), "t", 10.0, 100.0)
    assert "hatched" not in unmarked.axes[0].get_title()


def test_epsilon_curves_plot_the_mean_over_pairs(tmp_path):
    df = results_frame(["cnn", "cnn_v2", "res"], ["cnn", "res"], eps=(0.005, 0.01, 0.02), seeds=(0, 1))
    fig = epsilon_figure(df, "pathology")
    transfer, whitebox = fig.axes[0], fig.axes[1]
    lines = {line.get_label(): line for line in transfer.get_lines()}
    for attack in ("fgsm", "ifgsm"):
        for eps_index, eps in enumerate((0.005, 0.01, 0.02)):
            pick = (~df.whitebox.values) & (df.attack.values == attack) & (df.eps.values == eps)
            adv = df.auc_pct_clean.values[pick].mean()
            ctrl = (100 * df.auc_control.values[pick] / df.auc_clean.values[pick]).mean()
            assert lines[f"{attack} adversarial"].get_ydata()[eps_index] == pytest.approx(adv)
            assert lines[f"{attack} control"].get_ydata()[eps_index] == pytest.approx(ctrl)
            assert lines[f"{attack} control"].get_linestyle() == "--"
    pick = df.whitebox.values & (df.attack.values == "fgsm") & (df.eps.values == 0.02)
    wb = {line.get_label(): line for line in whitebox.get_lines()}
    assert wb["fgsm adversarial"].get_ydata()[2] == pytest.approx(df.auc_pct_clean.values[pick].mean())

    assert epsilon_curves(df[df.eps == 0.01], tmp_path) == []  # one eps: no curve
    (path,) = epsilon_curves(df, tmp_path)
    assert path.name == "epsilon_pathology.png" and png_size(path)[0] == "PNG"


@pytest.mark.parametrize("channels", [1, 3])
def test_example_grid_shows_clean_adversarial_amplified_perturbation_and_control(tmp_path, channels):
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(2, channels, 16, 16, generator=g) * 0.8 + 0.1
    delta = 0.01 * torch.sign(torch.randn(clean.shape, generator=g))
    shuffled = delta.flatten()[torch.randperm(delta.numel(), generator=g)].view_as(delta)
    adv, control = clean + delta, clean + shuffled
    fig = example_grid_figure(clean, adv, control, "t", ["first", "second"])
    shown = [ax.images[0].get_array() for ax in fig.axes]
    c, a, k = clean.numpy(), adv.numpy(), control.numpy()
    expected_perturbation = 0.5 + (a - c) * 0.5 / np.abs(a - c).max()
    for i in range(2):
        for j, images in enumerate((c, a, expected_perturbation, k)):
            picture = np.transpose(images[i], (1, 2, 0)).squeeze(-1 if channels == 1 else ())
            np.testing.assert_allclose(np.asarray(shown[4 * i + j]), picture, atol=1e-6)
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles == ["clean", "adversarial", "perturbation ×50", "control noise"]

    path = example_grid(clean, adv, control, tmp_path / "grid.png", "t")
    assert png_size(path)[0] == "PNG"


def test_example_grid_rejects_mismatched_images():
    with pytest.raises(ValueError, match="example grid needs equal NCHW images"):
        example_grid_figure(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), torch.zeros(1, 3, 8, 8))
