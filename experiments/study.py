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
from .runs import StudyRuns
from .tracking import code_version, config_hash, default_tracking_uri, log_frame, log_text_files, setup_experiment
from .training import datamodule_for, train_model
from .zoo import expand_zoo, select_pairs

RESULT_COLUMNS = ["surrogate", "target", "attack", "eps", "auc_clean", "auc_adv", "auc_control",
                  "auc_pct_clean", "asr"]
METRICS = ["auc_clean", "auc_adv", "auc_control", "auc_pct_clean", "asr", "linf", "l2", "ssim", "psnr",
           "craft_seconds", "eval_seconds"]
TABLE_COLUMNS = ["surrogate", "target", "attack", "eps", *METRICS]


@dataclass
class TestSet:
    images: torch.Tensor
    labels: torch.Tensor
    task: str
    label_names: list[str]
    sample_ids: list


@dataclass
class Plan:
    """What a study (or one shard of it) does: zoo, attack settings, and craft units with their targets."""

    zoo: dict[str, DictConfig]
    settings: list[dict]
    units: list[tuple[str, dict, list[str]]]

    @property
    def models(self) -> list[str]:
        needed = {s for s, _, _ in self.units} | {t for _, _, ts in self.units for t in ts}
        return [name for name in self.zoo if name in needed]


def attack_settings(cfg: DictConfig) -> list[dict]:
    """Each (attack, eps) of the config as a complete, validated parameter dict with `name`."""
    settings = []
    for attack in cfg.attacks:
        for eps in attack.eps:
            name, params = attack_params({"name": attack.name, **attack.params, "eps": float(eps)})
            settings.append({"name": name, **params})
    return settings


def plan_study(cfg: DictConfig, shard: tuple[int, int] = (0, 1)) -> Plan:
    """Craft units (surrogate x attack setting, each with its targets), every n-th one for shard i/n."""
    zoo = {m["name"]: OmegaConf.create(m) for m in expand_zoo(cfg)}
    pairs = select_pairs(list(zoo), list(cfg.surrogates), list(cfg.targets), cfg.pairs)
    settings = attack_settings(cfg)
    surrogates = [s for s in zoo if any(p[0] == s for p in pairs)]
    units = [(s, setting, [t for p, t in pairs if p == s]) for s in surrogates for setting in settings]
    index, count = shard
    return Plan(zoo, settings, units[index::count])


def load_test_set(cfg: DictConfig) -> TestSet:
    data = datamodule_for(cfg, "d1")
    dataset = data.dataset("test")
    images, labels = zip(*data.test_dataloader())
    return TestSet(torch.cat(images), torch.cat(labels), data.task, data.label_names,
                   [int(i) for i in dataset.indices])


@torch.inference_mode()
def predict(model: torch.nn.Module, images: torch.Tensor, task: str, batch_size: int) -> torch.Tensor:
    return torch.cat([scores(task, model(images[i:i + batch_size])) for i in range(0, len(images), batch_size)])


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


def pair_params(cfg: DictConfig, surrogate: DictConfig, target: DictConfig, setting: dict) -> dict:
    """The child run's params (DESIGN.md's MLflow contract)."""
    params = {f"surrogate.{k}": v for k, v in surrogate.items()}
    params.update({f"target.{k}": v for k, v in target.items()})
    params.update({f"attack.{k}": v for k, v in setting.items()})
    params.update({f"data.{k}": v for k, v in cfg.data.items()})
    params["seed"] = cfg.seed
    return params


def pair_tags(cfg: DictConfig, surrogate: DictConfig, target: DictConfig) -> dict:
    """Tags that let the MLflow UI filter pairs by factor."""
    return {"kind": "pair", "domain": cfg.data.domain,
            "same_arch": str(surrogate.arch == target.arch), "same_init": str(surrogate.init == target.init),
            "same_data": str(surrogate.dev_set == target.dev_set),
            "whitebox": str(surrogate.name == target.name)}


def study_hash(cfg: DictConfig, version: str) -> str:
    """Identity of a study: its resolved config without where results go, and the code version."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key in ("tracking", "output_dir"):
        resolved.pop(key, None)
    return config_hash({"config": resolved, "code": version})


def run_study(cfg: DictConfig | str | Path, shard: tuple[int, int] = (0, 1)) -> pd.DataFrame:
    """Run a study (or shard `i/n` of it); one row per (surrogate, target, attack, eps).

    Work already logged by an earlier run of the same config and code is read back, not redone.
    """
    if not isinstance(cfg, DictConfig):
        cfg = load_config(cfg)
    plan = plan_study(cfg, shard)
    uri = cfg.tracking.uri or default_tracking_uri()
    experiment_id = setup_experiment(uri, cfg.tracking.experiment or cfg.name)
    version = code_version()
    runs = StudyRuns(uri, experiment_id, study_hash(cfg, version), Path(cfg.output_dir) / "locks")

    with runs.parent(cfg.name):
        mlflow.log_params({"study": cfg.name, "seed": cfg.seed, "models": ",".join(plan.zoo),
                           "attacks": ",".join(sorted({s["name"] for s in plan.settings})),
                           "eps": ",".join(sorted({str(s["eps"]) for s in plan.settings})),
                           "pairs": cfg.pairs, "data.domain": cfg.data.domain})
        mlflow.set_tags({"git_sha": version, "domain": cfg.data.domain})
        mlflow.log_dict(OmegaConf.to_container(cfg, resolve=True), "config.yaml")
        rows = _run_units(cfg, plan, runs, experiment_id, version)
        table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
        if shard == (0, 1):
            log_text_files({"results.csv": table.to_csv(index=False), "results.md": format_table(table)})
    return table


def _run_units(cfg, plan: Plan, runs: StudyRuns, experiment_id: str, version: str) -> list[dict]:
    trained, val_auc, test, clean = {}, {}, None, {}

    def model(name):
        if name not in trained:
            trained[name], val_auc[name] = train_model(cfg, plan.zoo[name])
        return trained[name]

    rows = []
    for surrogate, setting, targets in tqdm(plan.units, desc="crafting + evaluating", unit="set"):
        pending, results = {}, {}
        for target in targets:
            params = pair_params(cfg, plan.zoo[surrogate], plan.zoo[target], setting)
            key = config_hash({"params": params, "train": OmegaConf.to_container(cfg.train), "code": version})
            done = runs.finished_pair(key)
            if done is None:
                pending[target] = (params, key)
            else:
                results[target] = {m: done.data.metrics.get(m) for m in METRICS}
        if pending and test is None:
            test = load_test_set(cfg)
        if pending:
            start = time.perf_counter()
            adv, ctrl = craft_set(model(surrogate), test, setting, cfg.data.batch_size, cfg.seed)
            craft_seconds = time.perf_counter() - start
            distortion = perturbation_metrics(test.images, adv)
        for target, (params, key) in pending.items():
            start = time.perf_counter()
            if target not in clean:
                clean[target] = predict(model(target), test.images, test.task, cfg.data.batch_size)
            adv_probs = predict(model(target), adv, test.task, cfg.data.batch_size)
            ctrl_probs = predict(model(target), ctrl, test.task, cfg.data.batch_size)
            metrics = {
                "auc_clean": auc(test.task, test.labels, clean[target]),
                "auc_adv": auc(test.task, test.labels, adv_probs),
                "auc_control": auc(test.task, test.labels, ctrl_probs),
                "asr": attack_success_rate(test.task, test.labels, clean[target], adv_probs),
                **distortion, "craft_seconds": craft_seconds, "eval_seconds": time.perf_counter() - start,
            }
            metrics["auc_pct_clean"] = 100.0 * metrics["auc_adv"] / metrics["auc_clean"]
            tags = {**pair_tags(cfg, plan.zoo[surrogate], plan.zoo[target]), "config_hash": key,
                    "git_sha": version, "mlflow.parentRunId": runs.parent_id}
            with mlflow.start_run(experiment_id=experiment_id, nested=True, tags=tags,
                                  run_name=f"{surrogate}->{target} {setting['name']} eps={setting['eps']}"):
                mlflow.log_params(params)
                mlflow.log_metrics({**metrics, "surrogate_val_auc": val_auc[surrogate],
                                    "target_val_auc": val_auc[target]})
                log_frame(prediction_table(test, clean[target], adv_probs, ctrl_probs), "predictions.csv")
            results[target] = metrics
        rows += [{"surrogate": surrogate, "target": t, "attack": setting["name"], "eps": setting["eps"],
                  **results[t]} for t in targets]
    return rows


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
