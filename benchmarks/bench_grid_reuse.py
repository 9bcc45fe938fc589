"""Grid reuse: a surrogate x target study through `run_study` against the naive protocol.

The naive protocol (as the paper's code did) crafts the adversarial set again for every
(surrogate, target) pair: N x M crafts instead of N. Both sides use the framework's own crafting
(`experiments.execution.predicting.Predictor`) on the same trained models, which are trained before either side
is timed (training is excluded from both). Prints both wall times, their ratio and checks that every
pair's auc_clean, auc_adv and auc_control are identical.

    python benchmarks/bench_grid_reuse.py --models 4 --size 32 --patients 2000 --steps 40
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from attacks import AdversarialSetCache
from experiments.design.config import load_config
from experiments.design.identity import attack_grid
from experiments.design.zoo import expand_zoo
from experiments.execution import read_data
from experiments.execution.predict_batches import SetBatches, TestBatches
from experiments.execution.devices import Process
from experiments.execution.evaluation import load_test_set
from experiments.execution.predicting import Predictor
from experiments.execution.training import train_model
from experiments.preflight.facts import study_facts
from experiments.report.metrics import auc
from experiments.study import run_study


def study_config(args, root: Path, name: str):
    models = ", ".join(f"{{name: m{i}, arch: tiny_cnn, instance: {i}}}" for i in range(args.models))
    return load_config(None, [
        f"name={name}", f"output_dir={root / name}", f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        "tracking.experiment=grid-reuse", f"models=[{models}]", "pairs=all", "bootstrap_resamples=0",
        "data.domain=pathology", f"data.image_size={args.size}", f"data.num_patients={args.patients}",
        "data.images_per_patient=2", "data.cache_dir=none", f"data.batch_size={args.batch}",
        f"attacks=[{{name: ifgsm, eps: [0.01], params: {{alpha: 0.0025, steps: {args.steps}}}}}]",
        "train.max_epochs=2"])


def naive(cfg, root: Path) -> pd.DataFrame:
    """Craft on the surrogate for every pair, then evaluate the target on that set."""
    data = read_data(cfg)
    test = load_test_set(data.datamodule("d1"))
    batches = TestBatches(OmegaConf.to_container(cfg.data, resolve=True), test.loader.dataset)
    facts = study_facts(cfg, data.cache)
    models = {m["name"]: train_model(cfg, OmegaConf.create(m), data, facts).module for m in expand_zoo(cfg)}
    setting, rows, cache = attack_grid(cfg)[0], [], AdversarialSetCache(root / "naive")
    predictor = Predictor(cfg, Process())
    for surrogate, surrogate_model in models.items():
        for target, target_model in models.items():
            key = f"{surrogate}-{target}"
            cache.ensure(key, cfg.seed, lambda write: predictor.adversarial_set(surrogate_model, batches, setting, cfg.seed, test.task,
                                                            write, f"crafting {key}"))
            scores = dict(zip(("adv", "control"), predictor.set_scores(target_model, SetBatches(cache.root, key, batches))))
            scores["clean"] = predictor.scores(target_model, batches)
            rows.append({"surrogate": surrogate, "target": target,
                         **{f"auc_{kind}": auc(test.task, test.labels, s) for kind, s in scores.items()}})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = study_config(args, root, "framework")
        start = time.perf_counter()
        data = read_data(cfg)
        for model in expand_zoo(cfg):  # both sides read these back; their training is timed by neither
            train_model(cfg, OmegaConf.create(model), data, study_facts(cfg, data.cache))
        print(f"training {args.models} models (excluded): {time.perf_counter() - start:.1f} s")

        start = time.perf_counter()
        table = run_study(cfg).table
        framework = time.perf_counter() - start
        start = time.perf_counter()
        reference = naive(cfg, root)
        protocol = time.perf_counter() - start

    columns = ["auc_clean", "auc_adv", "auc_control"]
    merged = table.merge(reference, on=["surrogate", "target"], suffixes=("", "_naive"))
    assert len(merged) == args.models ** 2 == len(table), "the pair grids differ"
    identical = all((merged[c] == merged[f"{c}_naive"]).all() for c in columns)
    print(f"{args.models} surrogates x {args.models} targets, ifgsm {args.steps} steps, "
          f"{len(load_test_set(read_data(cfg).datamodule('d1')).labels)} test images of {args.size}px, {torch.get_num_threads()} threads")
    print(f"framework (run_study: a craft per surrogate, MLflow and report included): {framework:.1f} s")
    print(f"naive protocol (a craft per pair):                                        {protocol:.1f} s")
    print(f"speed-up naive / framework: {protocol / framework:.2f}x (goal >= 3x)")
    print(f"metrics identical for all {len(merged)} pairs ({', '.join(columns)}): {identical}")
    if not identical:
        raise SystemExit("metrics differ between the framework and the naive protocol")


if __name__ == "__main__":
    main()
