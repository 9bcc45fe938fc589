"""The study's crafting path against a bare PyTorch loop over the same numbered batches.

The study's path is what `StudyWork.ensure_set` runs: `Predictor.adversarial_set` over `TestBatches`
(a `Trainer.predict` of a `CraftingModule`, through `attacks.craft` and torchattacks) into an
`AdversarialSetCache`. The bare loop is hand-written FGSM / iterative FGSM with torch autograd on the
same surrogate and the same batches, with no Lightning, no torchattacks and no cache. Both attacks
(one step, `steps` steps) run in interleaved rounds so that machine load hits every side alike; each
ratio is the bare loop's seconds over the study's, i.e. the study's throughput as a fraction of the
bare loop's, from each side's fastest round (load only ever adds time; the median of the per-round
ratios is printed beside it). The sets are checked to agree with the bare loop's. The images
are the first test images of the synthetic pathology domain (what the demo crafts on; how well a
set compresses, and so how long writing it takes, depends on the images).

    python benchmarks/bench_study_crafting.py                       # ResNet-18, 64 px, 6 batches of 16
    python benchmarks/bench_study_crafting.py --device cuda --size 224 --batch 64
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # the study's progress bars (they still run) print nothing
import torch  # noqa: E402 (tqdm reads TQDM_ settings when it is first imported)
from bench_crafting import bare_ifgsm  # the same hand-written loop as the attacks.craft benchmark
from torch.utils.data import Subset

from attacks import AdversarialSetCache
from experiments.design.config import load_config, preset_path
from experiments.execution.predict_batches import TestBatches
from experiments.execution.devices import Process
from experiments.execution.predicting import Predictor
from experiments.execution.work import read_data
from lightning_modules import ClassifierModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (crafting.device)")
    args = parser.parse_args()

    device = torch.device(args.device)
    count = args.batch * args.batches
    cfg = load_config(preset_path("smoke"), [f"crafting.device={args.device}", f"data.batch_size={args.batch}",
                                             f"data.image_size={args.size}", f"data.num_patients={2 * count}"])  # test: a quarter
    test = read_data(cfg).datamodule("d1").dataset("test")
    if len(test) < count:
        raise SystemExit(f"the synthetic test split holds {len(test)} images, fewer than --batch x --batches")
    torch.manual_seed(0)
    surrogate = ClassifierModule(args.arch, "random", "binary", 1, 3).eval()
    batches = TestBatches({"batch_size": args.batch}, Subset(test, range(count)))
    predictor, root = Predictor(cfg, Process()), tempfile.mkdtemp(prefix="bench_study_crafting.")
    eps = 2 / 255
    settings = {"fgsm": {"name": "fgsm", "eps": eps},
                f"ifgsm{args.steps}": {"name": "ifgsm", "eps": eps, "alpha": eps / 4, "steps": args.steps}}
    runs = iter(range(10**9))

    def study(setting: dict) -> torch.Tensor:
        cache, key = AdversarialSetCache(root), f"set{next(runs)}"
        cache.ensure(key, 0, lambda write: predictor.adversarial_set(surrogate, batches, setting, 0, "binary", write,
                                                                  f"study {setting['name']}"))
        return key

    bare_model = surrogate.model

    def bare(setting: dict) -> torch.Tensor:
        bare_model.to(device)
        out = []
        for batch_id in range(len(batches)):
            x, y, _ = batches[batch_id]
            x, y = x.to(device), y.to(device)
            alpha = setting.get("alpha", setting["eps"])
            out.append(bare_ifgsm(bare_model, x, y, "binary", setting["eps"], alpha,
                                   setting.get("steps", 1)).cpu())
        return torch.cat(out)

    def timed(fn, setting):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn(setting)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, result

    try:
        for name, setting in settings.items():  # warm-up, and the agreement check
            _, key = timed(study, setting)
            _, reference = timed(bare, setting)
            stored = AdversarialSetCache(root).load(key, (batches[i][0] for i in range(len(batches))))[0]
            differ = (stored - reference).abs() > 1e-6
            print(f"{name}: study set vs bare loop: {float(differ.float().mean()):.2e} of the pixels differ "
                  f"by more than 1e-6 (a gradient sign flipped by rounding)")
        seconds = {(name, side): [] for name in settings for side in ("study", "bare")}
        for round_ in range(args.rounds):
            for name, setting in settings.items():
                order = (("study", study), ("bare", bare)) if round_ % 2 == 0 else (("bare", bare), ("study", study))
                for side, fn in order:
                    seconds[name, side].append(timed(fn, setting)[0])
            shutil.rmtree(root)
            root = tempfile.mkdtemp(prefix="bench_study_crafting.")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\n{args.arch} binary 3x{args.size}x{args.size}, {args.batches} batches of {args.batch}, on {device}, "
          f"{torch.get_num_threads()} threads, {args.rounds} interleaved rounds")
    for name in settings:
        study_s, bare_s = seconds[name, "study"], seconds[name, "bare"]
        best = min(bare_s) / min(study_s)
        median = statistics.median(b / s for b, s in zip(bare_s, study_s))
        goal = 0.90 if settings[name].get("steps", 1) == 1 else 0.95
        print(f"{name:>8}: study {count / min(study_s):8.1f} images/s, bare loop {count / min(bare_s):8.1f} images/s "
              f"(best rounds); study/bare throughput {best:.3f} (best rounds; median of per-round ratios "
              f"{median:.3f}; goal >= {goal:.2f})")

if __name__ == "__main__":
    main()
