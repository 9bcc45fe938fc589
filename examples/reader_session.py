"""A scripted reader-study session, for the README's screenshot and plot (not a study of people).

Runs a small study with an epsilon sweep, serves its reader study, takes a screenshot of the page
with headless Chromium, and lets three scripted readers answer every trial over HTTP, as a browser
would. Each reader decodes both PNGs and picks the one with more pixel-to-pixel variation (attacks
add high-frequency noise), saying "no idea" when the difference is below its own threshold. Then it
writes the report and logs the `kind=readers` run, and copies the page and plot to docs/img/.

    python examples/reader_session.py [OUT_DIR]
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from experiments import load_config, run_study
from experiments.design.config import preset_path
from experiments.reader_study.readers import ReaderStudy
from experiments.reader_study.server import ReaderServer

DOCS = Path(__file__).resolve().parents[1] / "docs" / "img"
READERS = {"reader-a": 0.0001, "reader-b": 0.0003, "reader-c": 0.0006}  # "no idea" below this variation gap


def post(url: str, payload: dict, token: str = "") -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json",
                                                                          "X-Reader-Token": token})
    with urllib.request.urlopen(request) as reply:
        return json.load(reply)


def variation(url: str) -> float:
    with urllib.request.urlopen(url) as reply:
        pixels = np.asarray(Image.open(io.BytesIO(reply.read())).convert("RGB"), dtype=float) / 255
    return float(np.abs(np.diff(pixels, axis=0)).mean() + np.abs(np.diff(pixels, axis=1)).mean())


def play(base: str, reader: str, threshold: float) -> None:
    state = post(base + "api/start", {"reader": reader})
    token = state["token"]
    while state["trial"] is not None:
        trial = state["trial"]
        gap = variation(base + trial["left"][1:]) - variation(base + trial["right"][1:])
        choice = "none" if abs(gap) < threshold else "left" if gap > 0 else "right"
        state = post(base + "api/answer", {"reader": reader, "trial": trial["id"], "choice": choice}, token)


def main(out: Path) -> None:
    cfg = load_config(preset_path("smoke"), [
        f"tracking.uri=sqlite:///{out / 'mlflow.db'}", f"output_dir={out}", "data.image_size=32",
        "train.max_epochs=1", "surrogates=[a]", "targets=[a]",
        "attacks=[{name: fgsm, eps: [0.001, 0.002, 0.004, 0.008, 0.016]}, "
        "{name: ifgsm, eps: [0.002, 0.004, 0.008], params: {alpha: 0.002, steps: 5}}]"])
    run_study(cfg)
    study = ReaderStudy(cfg, trials_per_set=20, zoom=10)
    server = ReaderServer(study.sessions, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))))
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1000,560", "--virtual-time-budget=5000", f"--screenshot={DOCS / 'readers-page.png'}",
                    f"{server.url}?reader=screenshot"], check=True, capture_output=True, timeout=120)
    for reader, threshold in READERS.items():
        play(server.url, reader, threshold)
    server.shutdown()
    text, link = study.finish()
    shutil.copy(study.folder / "detection_vs_eps.png", DOCS / "readers-plot.png")
    print(text, f"\nMLflow run: {link}", sep="\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/reader_session").resolve())
