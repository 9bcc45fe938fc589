"""Memory: peak RSS of a whole study, data generation included, at two data sizes.

Each (size, storage) runs in a fresh subprocess that reports its own peak RSS (`ru_maxrss`). The
study is shaped like the paper preset (several models, fgsm and ifgsm, reports) but small: tiny
CNNs on synthetic pathology images, one thread. Storage `cache` is the default (images generated
chunk by chunk into the on-disk cache and read back per image); `memory` (`data.cache_dir=none`)
holds the generated set in RAM, for comparison. Adversarial sets are streamed to disk in both.

    python benchmarks/bench_memory.py --patients 1000 4000 --size 128
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile

import torch

MODELS = "[{name: a, instance: 0}, {name: b, instance: 1}, {name: c, dev_set: d2}]"


def child(patients: int, size: int, root: str, storage: str) -> None:
    from experiments.design.config import load_config
    from experiments.execution import read_data
    from experiments.study import run_study

    torch.set_num_threads(1)
    cache = f"{root}/data" if storage == "cache" else "none"
    cfg = load_config(None, [
        "name=memory", f"output_dir={root}/out", f"tracking.uri=sqlite:///{root}/mlflow.db",
        f"models={MODELS}", "data.domain=pathology", f"data.image_size={size}",
        f"data.num_patients={patients}", "data.images_per_patient=2", f"data.cache_dir={cache}",
        "bootstrap_resamples=100", "train.max_epochs=1",
        "attacks=[{name: fgsm, eps: [0.01]}, {name: ifgsm, eps: [0.01], params: {alpha: 0.005, steps: 3}}]"])
    run_study(cfg)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    data = read_data(cfg).datamodule("d1")
    data.setup()
    print(json.dumps({"images": len(data.labels), "train_d1": len(data.indices["train"]),
                      "test": len(data.indices["test"]), "peak_rss_mib": peak_mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs=2, default=[1000, 4000])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--storage", nargs="+", default=["cache", "memory"], choices=["cache", "memory"])
    parser.add_argument("--child", nargs=2, metavar=("PATIENTS", "STORAGE"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), args.size, args.root, args.child[1])
        return
    rows = {}
    for storage in args.storage:
        for patients in args.patients:
            with tempfile.TemporaryDirectory() as root:
                command = [sys.executable, __file__, "--child", str(patients), storage,
                           "--size", str(args.size), "--root", root]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(done.stderr[-3000:])
            rows[storage, patients] = json.loads(done.stdout.strip().splitlines()[-1])
            row = rows[storage, patients]
            print(f"{storage:6s} num_patients {patients:5d}: {row['images']:6d} images of {args.size}px "
                  f"({row['train_d1']} d1 training, {row['test']} test), peak RSS {row['peak_rss_mib']:7.1f} MiB",
                  flush=True)
    image_mib = 3 * args.size * args.size / 2**20
    small, large = args.patients
    for storage in args.storage:
        a, b = rows[storage, small], rows[storage, large]
        print(f"{storage}: peak RSS x{b['peak_rss_mib'] / a['peak_rss_mib']:.3f} "
              f"({b['peak_rss_mib'] - a['peak_rss_mib']:+.1f} MiB) while the data grow "
              f"x{b['images'] / a['images']:.1f} "
              f"({(b['images'] - a['images']) * image_mib:+.1f} MiB of uint8 images)")


if __name__ == "__main__":
    main()
