"""Memory: peak RSS of a study at two test-set sizes (adversarial sets are streamed to disk).

Each size runs in a fresh subprocess that reports its own peak RSS (`ru_maxrss`). The config is
shaped like the paper preset (several models, fgsm and ifgsm, reports) but small: tiny CNNs on
synthetic pathology images. Also printed: what holding the test set, one adversarial set and its
control noise in RAM as float32 would take, the growth streaming avoids. The synthetic data are
generated (into a cache folder) by a separate subprocess first, so generation's own peak is not counted.

    python benchmarks/bench_memory.py --patients 200 800 --size 96
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

MODELS = "[{name: a, instance: 0}, {name: b, instance: 1}, {name: c, dev_set: d2}]"


def child(patients: int, size: int, root: str, prepare: bool) -> None:
    from experiments.config import load_config
    from experiments.evaluation import load_test_set
    from experiments.study import run_study
    from experiments.training import domain_data

    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = load_config(None, [
        "name=memory", f"output_dir={root}/out", f"tracking.uri=sqlite:///{root}/mlflow.db",
        f"models={MODELS}", "data.domain=pathology", f"data.image_size={size}",
        f"data.num_patients={patients}",
        "data.images_per_patient=2", "data.test_fraction=0.5", f"data.cache_dir={root}/data",
        "bootstrap_resamples=100", "train.max_epochs=1",
        "attacks=[{name: fgsm, eps: [0.01]}, {name: ifgsm, eps: [0.01], params: {alpha: 0.005, steps: 5}}]"])
    if prepare:
        load_test_set(domain_data(cfg).datamodule("d1"))
        return
    run_study(cfg)
    test_images = len(load_test_set(domain_data(cfg).datamodule("d1")).labels)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"test_images": test_images, "peak_rss_mib": peak_mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[200, 800])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.patients[0], args.size, args.root, args.prepare)
        return
    rows = []
    for patients in args.patients:
        with tempfile.TemporaryDirectory() as root:
            command = [sys.executable, __file__, "--child", "--patients", str(patients),
                       "--size", str(args.size), "--root", root]
            for step in (["--prepare"], []):
                done = subprocess.run(command + step, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(done.stderr[-3000:])
        rows.append({"patients": patients, **json.loads(done.stdout.strip().splitlines()[-1])})
    image_mib = 3 * args.size * args.size * 4 / 2**20
    for row in rows:
        held = 3 * row["test_images"] * image_mib
        print(f"num_patients {row['patients']:5d}: {row['test_images']:5d} test images of {args.size}px, "
              f"peak RSS {row['peak_rss_mib']:7.1f} MiB (test + adversarial + control in RAM would be "
              f"{held:6.1f} MiB)")
    first, last = rows[0], rows[-1]
    print(f"peak RSS grows {last['peak_rss_mib'] - first['peak_rss_mib']:+.1f} MiB while the test set grows "
          f"{last['test_images'] / first['test_images']:.1f}x "
          f"(in-RAM sets would grow {3 * (last['test_images'] - first['test_images']) * image_mib:+.1f} MiB)")


if __name__ == "__main__":
    main()
