"""The transfer study: train each model once, craft each adversarial set once, evaluate every target."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from attacks import attack_params, control_noise, craft
from lightning_modules.tasks import scores

from .config import load_config
from .metrics import attack_success_rate, auc, perturbation_metrics
from .tracking import code_version, config_hash, default_tracking_uri, log_frame, log_text_files, setup_experiment
from .training import datamodule_for, train_model

RESULT_COLUMNS = ["surrogate", "target", "attack", "eps", "auc_clean", "auc_adv", "auc_control",
                  "auc_pct_clean", "asr"]


@dataclass
class TestSet:
    images: torch.Tensor
    labels: torch.Tensor
    task: str
    label_names: list[str]
    sample_ids: list


def load_test_set(cfg: DictConfig) -> TestSet:
    data = datamodule_for(cfg, "d1")
    dataset = data.dataset("test")
    images, labels = zip(*data.test_dataloader())
    return TestSet(torch.cat(images), torch.cat(labels), data.task, data.label_names,
                   [int(i) for i in dataset.indices])


def prediction_table(test: TestSet, clean: torch.Tensor, adv: torch.Tensor, control: torch.Tensor) -> pd.DataFrame:
    """Per-sample labels and target scores on clean, adversarial and control images (one column per
    output for multi-output tasks)."""
    columns = {"sample": test.sample_ids}
    names = test.label_names if test.task != "binary" else [""]
    for kind, values in (("label", test.labels), ("clean", clean), ("adv", adv), ("control", control)):
        values = values.reshape(len(values), -1).float()
        for j, name in enumerate(names):
            columns[f"{kind}_{name}".rstrip("_")] = values[:, j].numpy()
    return pd.DataFrame(columns)


@torch.inference_mode()
def predict(model: torch.nn.Module, images: torch.Tensor, task: str, batch_size: int) -> torch.Tensor:
    return torch.cat([scores(task, model(images[i:i + batch_size])) for i in range(0, len(images), batch_size)])


def attack_settings(cfg: DictConfig) -> list[dict]:
    """Each (attack, eps) of the config as a complete, validated parameter dict with `name`."""
    settings = []
    for attack in cfg.attacks:
        for eps in attack.eps:
            name, params = attack_params({"name": attack.name, **attack.params, "eps": float(eps)})
            settings.append({"name": name, **params})
    return settings


def select_pairs(cfg: DictConfig) -> list[tuple[str, str]]:
    names = [m.name for m in cfg.models]
    surrogates, targets = list(cfg.surrogates) or names, list(cfg.targets) or names
    pairs = [(s, t) for s in surrogates for t in targets]
    if cfg.pairs == "whitebox":
        return [(s, t) for s, t in pairs if s == t]
    if cfg.pairs == "transfer":
        return [(s, t) for s, t in pairs if s != t]
    return pairs


def craft_set(model, test: TestSet, setting: dict, batch_size: int, seed: int):
    """Adversarial images and their control noise for the whole test set."""
    adv, ctrl = [], []
    generator = torch.Generator().manual_seed(seed)
    for i in range(0, len(test.images), batch_size):
        clean = test.images[i:i + batch_size]
        crafted = craft(model, clean, test.labels[i:i + batch_size], setting, test.task)
        adv.append(crafted)
        ctrl.append(control_noise(clean, crafted, generator))
    return torch.cat(adv), torch.cat(ctrl)


def run_study(cfg: DictConfig | str | Path) -> pd.DataFrame:
    """Run a study; one row per (surrogate, target, attack, eps), also logged to MLflow."""
    if not isinstance(cfg, DictConfig):
        cfg = load_config(cfg)
    settings, pairs = attack_settings(cfg), select_pairs(cfg)
    zoo = {m.name: m for m in cfg.models}
    needed = sorted({n for pair in pairs for n in pair}, key=list(zoo).index)
    uri = cfg.tracking.uri or default_tracking_uri()
    experiment_id = setup_experiment(uri, cfg.tracking.experiment or cfg.name)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    version = code_version()
    batch = cfg.data.batch_size

    with mlflow.start_run(experiment_id=experiment_id, run_name=cfg.name) as parent:
        mlflow.log_params({"study": cfg.name, "seed": cfg.seed, "models": ",".join(needed),
                           "attacks": ",".join(sorted({s["name"] for s in settings})),
                           "eps": ",".join(sorted({str(s["eps"]) for s in settings})),
                           "pairs": cfg.pairs, "data.domain": cfg.data.domain})
        mlflow.set_tags({"git_sha": version, "domain": cfg.data.domain})
        mlflow.log_dict(resolved, "config.yaml")

        trained, val_auc, train_seconds = {}, {}, {}
        for name in tqdm(needed, desc="training", unit="model"):
            start = time.perf_counter()
            trained[name], val_auc[name] = train_model(cfg, zoo[name])
            train_seconds[name] = time.perf_counter() - start
            mlflow.log_metric(f"val_auc.{name}", val_auc[name])

        test = load_test_set(cfg)
        targets = sorted({t for _, t in pairs}, key=needed.index)
        clean = {t: predict(trained[t], test.images, test.task, batch) for t in targets}

        rows = []
        work = [(s, setting) for s in sorted({s for s, _ in pairs}, key=needed.index) for setting in settings]
        for surrogate, setting in tqdm(work, desc="crafting", unit="set"):
            start = time.perf_counter()
            adv, ctrl = craft_set(trained[surrogate], test, setting, batch, cfg.seed)
            craft_seconds = time.perf_counter() - start
            distortion = perturbation_metrics(test.images, adv)
            for target in [t for s, t in pairs if s == surrogate]:
                start = time.perf_counter()
                adv_probs = predict(trained[target], adv, test.task, batch)
                ctrl_probs = predict(trained[target], ctrl, test.task, batch)
                metrics = {
                    "auc_clean": auc(test.task, test.labels, clean[target]),
                    "auc_adv": auc(test.task, test.labels, adv_probs),
                    "auc_control": auc(test.task, test.labels, ctrl_probs),
                    "asr": attack_success_rate(test.task, test.labels, clean[target], adv_probs),
                    **distortion,
                    "craft_seconds": craft_seconds,
                    "eval_seconds": time.perf_counter() - start,
                }
                metrics["auc_pct_clean"] = 100.0 * metrics["auc_adv"] / metrics["auc_clean"]
                log_pair(cfg, zoo[surrogate], zoo[target], setting, metrics, experiment_id, parent.info.run_id,
                         version, val_auc, prediction_table(test, clean[target], adv_probs, ctrl_probs))
                rows.append({"surrogate": surrogate, "target": target, "attack": setting["name"],
                             "eps": setting["eps"], **metrics})

        table = pd.DataFrame(rows)
        log_text_files({"results.csv": table.to_csv(index=False), "results.md": format_table(table)})
    return table


def log_pair(cfg, surrogate, target, setting, metrics, experiment_id, parent_id, version, val_auc,
             predictions: pd.DataFrame) -> None:
    """One child run per surrogate->target pair and attack setting (DESIGN.md's MLflow contract)."""
    params = {f"surrogate.{k}": v for k, v in surrogate.items()}
    params.update({f"target.{k}": v for k, v in target.items()})
    params.update({f"attack.{k}": v for k, v in setting.items()})
    params.update({f"data.{k}": v for k, v in cfg.data.items()})
    params["seed"] = cfg.seed
    tags = {
        "domain": cfg.data.domain,
        "same_arch": str(surrogate.arch == target.arch),
        "same_init": str(surrogate.init == target.init),
        "same_data": str(surrogate.dev_set == target.dev_set),
        "whitebox": str(surrogate.name == target.name),
        "config_hash": config_hash({"params": params, "code": version}),
        "git_sha": version,
        "mlflow.parentRunId": parent_id,
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{surrogate.name}->{target.name} "
                          f"{setting['name']} eps={setting['eps']}", nested=True, tags=tags):
        mlflow.log_params(params)
        mlflow.log_metrics({**metrics, "surrogate_val_auc": val_auc[surrogate.name],
                            "target_val_auc": val_auc[target.name]})
        log_frame(predictions, "predictions.csv")


def format_table(table: pd.DataFrame) -> str:
    """The result table as Markdown (columns of RESULT_COLUMNS)."""
    if table.empty:
        return "(no results)\n"
    shown = table[RESULT_COLUMNS].copy()
    lines = ["| " + " | ".join(RESULT_COLUMNS) + " |", "|" + "---|" * len(RESULT_COLUMNS)]
    for row in shown.itertuples(index=False):
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
