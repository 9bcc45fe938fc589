"""Real data at scale: index and decode times of a ChestX-ray14-shaped folder, and training and
crafting throughput on it against synthetic chest X-rays of the same size, side by side.

Generates `Data_Entry_2017.csv` with `--rows` rows (the release has 112,120) and one small PNG per
row in the release's `images_NNN/images/` layout, then times:
- first run: index and check the CSV and files, decode every image at `--size` px into the cache;
- later run: a new `DomainData` on the same folder (the index and images read back from the cache);
- images/s of tiny-CNN training steps (loader included) and of FGSM crafting (loader included) on
  the real (cached) images and on synthetic radiology images at the same size.

    python benchmarks/bench_real_data.py --rows 112120 --png 64 --size 64 --batches 40
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from attacks import craft
from datamodules import DomainData
from datamodules.readers.chestxray14 import LABEL_NAMES
from lightning_modules import tasks
from lightning_modules.model import build_classifier


def write_release(root: Path, rows: int, png: int) -> None:
    """The release's layout: 12 image folders, one grey PNG per CSV row. The files are copies of 64
    textured tiles encoded once (content does not matter for speed), so writing costs file creation
    only."""
    rng = np.random.default_rng(0)
    tiles = []
    for pixels in rng.integers(0, 256, (64, png, png), dtype=np.uint8):
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, format="PNG", compress_level=1)
        tiles.append(encoded.getvalue())
    names, findings, patients = [], [], []
    per_folder = -(-rows // 12)
    for i in tqdm(range(rows), desc="writing PNGs", unit="file", disable=None):
        patient, visit = i // 4, i % 4
        name = f"{patient:08d}_{visit:03d}.png"
        folder = root / f"images_{i // per_folder + 1:03d}" / "images"
        if i % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(tiles[i % 64])
        names.append(name)
        findings.append(LABEL_NAMES[i % len(LABEL_NAMES)])
        patients.append(str(patient))
    pd.DataFrame({"Image Index": names, "Finding Labels": findings, "Patient ID": patients}).to_csv(
        root / "Data_Entry_2017.csv", index=False)


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def rate(count: int, start: float | None) -> float:
    """Images per second since `start`, the end of the warm-up batch (there must be a batch after it)."""
    if start is None:
        raise SystemExit("bench_real_data: a split holds one batch only (the warm-up); use more --rows or a "
                         "smaller --batch")
    return count / (time.perf_counter() - start)


def training_rate(data: DomainData, batches: int) -> float:
    module = data.datamodule("d1")
    loader = module.train_dataloader()
    model = build_classifier("tiny_cnn", "random", data.task, module.num_outputs, data.channels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    count, start = 0, None
    for step, (images, labels) in enumerate(loader):
        if step == 1:
            start, count = time.perf_counter(), 0  # the first batch warms up
        optimizer.zero_grad(set_to_none=True)
        tasks.loss(data.task, model(images), labels).backward()
        optimizer.step()
        count += len(images)
        if step == batches:
            break
    return rate(count, start)


def crafting_rate(data: DomainData, batches: int) -> float:
    module = data.datamodule("d1")
    model = build_classifier("tiny_cnn", "random", data.task, module.num_outputs, data.channels).eval()
    count, start = 0, None
    for step, (images, labels) in enumerate(module.test_dataloader()):
        if step == 1:
            start, count = time.perf_counter(), 0
        craft(model, images, labels, {"name": "fgsm", "eps": 0.02}, data.task)
        count += len(images)
        if step == batches:
            break
    return rate(count, start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30000, help="CSV rows and PNG files (release: 112120)")
    parser.add_argument("--png", type=int, default=64, help="side of the generated PNGs")
    parser.add_argument("--size", type=int, default=64, help="the study's image size")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30, help="timed batches of training and of crafting")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (best of them counts)")
    parser.add_argument("--workers", type=int, default=0, help="data.num_workers (also used to decode)")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "nih", Path(tmp) / "cache"
        written, _ = timed(lambda: write_release(root, args.rows, args.png))
        common = dict(image_size=args.size, seed=0, batch_size=args.batch, cache_dir=str(cache),
                      num_workers=args.workers, test_fraction=0.1, val_fraction=0.1)
        real = dict(domain="radiology", source="chestxray14", root=str(root), **common)
        first, data = timed(lambda: DomainData(real).prepare())
        later, data = timed(lambda: DomainData(real).prepare())  # a new DataCache: as in a new process
        synthetic = DomainData(dict(domain="radiology", source="synthetic", num_patients=args.rows // 4,
                                    images_per_patient=4, **common)).prepare()
        rates = {"real": (0.0, 0.0), "synthetic": (0.0, 0.0)}
        for _ in range(args.rounds):  # side by side, alternating; the best round of each counts
            for name, d in (("real", data), ("synthetic", synthetic)):
                train, attack = training_rate(d, args.batches), crafting_rate(d, args.batches)
                rates[name] = (max(rates[name][0], train), max(rates[name][1], attack))
    print(f"ChestX-ray14-shaped folder: {args.rows} rows, {args.png} px PNGs, study at {args.size} px, "
          f"batch {args.batch}, {torch.get_num_threads()} threads, {args.workers} loader workers")
    print(f"writing the folder (not part of any run): {written:.1f} s")
    print(f"first run (index, check, decode once): {first:.1f} s ({args.rows / first:.0f} images/s)")
    print(f"later run (index and images from the cache): {later:.2f} s")
    print("| path | training images/s | crafting (FGSM) images/s |")
    print("| --- | ---: | ---: |")
    for name, (train, attack) in rates.items():
        print(f"| {name} | {train:.0f} | {attack:.0f} |")
    r, s = rates["real"], rates["synthetic"]
    print(f"synthetic / real: training {s[0] / r[0]:.2f}x, crafting {s[1] / r[1]:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
