"""Study configuration: OmegaConf structured schema, YAML presets and dotlist overrides."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from attacks import ATTACKS, CraftingBatch, attack_params
from attacks.craft import PRECISIONS
from attacks.ensemble import MODES
from attacks.registry import TARGET_MODES, check_norm, check_target
from attacks.targets import named_index
from datamodules import SOURCES
from datamodules.settings import DataConfig
from datamodules.sources import domain_problem
from datamodules.splits import DEV_SETS
from datamodules.synthetic import GENERATORS
from lightning_modules import ARCHITECTURES, TASKS
from lightning_modules.defences import defence_params
from lightning_modules.model import INITS

from .data_keys import data_key_problem
from .queries import query_problem
from .locations import CONFIG_DIR, location_problem
from .model_kinds import COMPOSED, LOADED, TRAINED, kind_of
from .overrides import apply_override, parse_overrides
from .resources import MULTI_PROCESS_STRATEGIES, world_size
from .value_ranges import range_problem
from .zoo import PAIR_MODES, expand_zoo, study_pairs

EXECUTORS = ("local", "ray")


@dataclass
class ModelConfig:
    name: str = MISSING
    arch: str = "tiny_cnn"
    init: str = "random"
    dev_set: str = "d1"
    instance: int = 0
    # an input defence in front of the trained model, e.g. {name: jpeg, quality: 50} (not trained again)
    defence: Optional[dict[str, Any]] = None
    # Madry-style training on examples of a registered attack, e.g. {name: pgd, eps: 0.03, alpha: 0.01, steps: 5}
    adversarial_training: Optional[dict[str, Any]] = None
    ensemble: list[str] = field(default_factory=list)  # names of trained zoo models: a surrogate ensemble
    mode: str = "logits"  # ensemble: attack the mean of the logits or of the members' losses
    # a model trained elsewhere: {format: export|onnx|mlflow|http, path|uri, input, output, ...} (design.external)
    external: Optional[dict[str, Any]] = None


@dataclass
class ZooConfig:
    """Factor lists; their cross product joins the explicit `models` (names: arch-init-devset-vN)."""
    archs: list[str] = field(default_factory=list)
    inits: list[str] = field(default_factory=lambda: ["random"])
    dev_sets: list[str] = field(default_factory=lambda: ["d1"])
    instances: list[int] = field(default_factory=lambda: [0])


@dataclass
class DesignConfig:
    """A block of the pair grid: every listed surrogate against every listed target."""
    name: str = ""
    targets: list[str] = field(default_factory=list)
    surrogates: list[str] = field(default_factory=list)


@dataclass
class AttackConfig:
    name: str = "ifgsm"
    eps: list[float] = field(default_factory=lambda: [0.01])  # in the attack's norm
    params: dict[str, Any] = field(default_factory=dict)
    target: str = "untargeted"  # least_likely, random, or a class (finding) by index or data.labels name
    norm: str = "linf"  # l2: fgsm, ifgsm and pgd (eps and alpha are then L2 lengths)


@dataclass
class QueryConfig:
    """A score-only query attack on every target (docs/protocol.md, "Query attacks")."""
    name: str = "square"  # torchattacks.Square
    eps: list[float] = field(default_factory=lambda: [0.03])  # each in `norm`
    norm: str = "linf"  # linf or l2
    max_queries: int = 1000  # per-image budget of target queries
    budgets: list[int] = field(default_factory=lambda: [10, 100, 1000])  # success reported at (<= max_queries)
    start_from: list[str] = field(default_factory=lambda: ["clean"])  # clean and/or surrogates' transfer sets


@dataclass
class CraftingConfig:
    """How adversarial sets are crafted (speed only: the attack is set by `attacks`)."""
    batch_size: int = 0  # 0 = data.batch_size
    auto_batch: bool = True  # halve the crafting batch when the device runs out of memory
    precision: str = "fp32"  # fp32 or bf16 (autocast of the surrogate's forward passes)
    channels_last: bool = False
    device: str = "auto"  # where crafting and evaluation run: auto (the trainer's devices), cpu, cuda, cuda:N, mps


@dataclass
class TrainConfig:
    max_epochs: int = 5
    patience: int = 3
    lr: float = 1e-3
    weight_decay: float = 1e-4


@dataclass
class TrainerConfig:
    accelerator: str = "auto"  # Lightning's: the first CUDA GPU when there is one, else the CPU
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"


@dataclass
class TrackingConfig:
    uri: Optional[str] = None
    experiment: Optional[str] = None
    register_models: bool = False  # also log each trained model as an MLflow logged model + registry version


@dataclass
class RayConfig:
    """Where the `ray` executor runs its tasks and what each task reserves (never part of an identity)."""
    address: str = ""  # "" = a local Ray started by the run ($RAY_ADDRESS if set); "auto" or host:port = a cluster
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0  # fractions share a GPU (0.5 = two tasks per GPU); above 1 a whole number


@dataclass
class StudyConfig:
    name: str = "study"
    seed: int = 0
    seeds: list[int] = field(default_factory=list)  # several seeds aggregated; empty = [seed]
    bootstrap_resamples: int = 1000  # paired bootstrap CIs per pair; 0 = off
    data: DataConfig = field(default_factory=DataConfig)
    # several domains in one study: domain -> `data` overrides; each runs as its own sub-study
    domains: dict[str, Any] = field(default_factory=dict)
    models: list[Any] = field(default_factory=list)  # ModelConfig items (ITEM_SCHEMAS)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    targets: list[str] = field(default_factory=list)
    surrogates: list[str] = field(default_factory=list)
    designs: list[Any] = field(default_factory=list)  # DesignConfig items; when given: the union of their grids
    pairs: str = "all"
    attacks: list[Any] = field(default_factory=lambda: [AttackConfig()])  # AttackConfig items
    queries: list[Any] = field(default_factory=list)  # QueryConfig items: score-only query attacks on every target
    crafting: CraftingConfig = field(default_factory=CraftingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output_dir: str = "outputs"
    executor: str = "local"  # local (this process) or ray (Ray tasks: `ray`)
    ray: RayConfig = field(default_factory=RayConfig)


# The list keys whose items have a schema of their own. Items are typed when a config is checked
# (`checked_config`), not when they are assigned, so that Python may assign plain dicts to them.
ITEM_SCHEMAS = {"models": ModelConfig, "designs": DesignConfig, "attacks": AttackConfig, "queries": QueryConfig}


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the file, key or value."""


# The config's vocabularies: key -> its valid values, checked in one place (`validate`). Each list
# is defined by the package that uses it.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.source": SOURCES,
    "data.task": TASKS,
    "pairs": PAIR_MODES,
    "crafting.precision": PRECISIONS,
    "executor": EXECUTORS,
}


def load_config(path: str | Path | None = None,
                overrides: str | list[str] | Mapping[str, Any] | None = None) -> DictConfig:
    """The checked study config (`checked_config`): the schema, then a YAML file or preset name (after
    the file its `base:` key names, relative to it), then the overrides: one `key=value` string, a list
    of them or a nested mapping (`{"train": {"max_epochs": 1}}`), applied in order. Every problem is
    one line naming the file or the override and the key."""
    path = config_path(path) if path is not None else None
    layers = _yaml_layers(path) if path is not None else []
    try:
        cfg = typed_config(*layers)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path is not None else str(err)) from None
    try:
        parsed = parse_overrides(overrides)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for override in parsed:
        try:
            apply_override(cfg, override)
            if override.key.split(".")[0] in ITEM_SCHEMAS:  # its items typed now, so that a problem names it
                cfg = typed_config(cfg)
        except (OmegaConfBaseException, ValueError, TypeError) as err:  # ConfigError among them
            raise ConfigError(f"{override.blame}: {_problem(err)}") from None
    return checked_config(cfg)


def checked_config(cfg: DictConfig | StudyConfig | Mapping[str, Any]) -> DictConfig:
    """A study config however it was made (`load_config`, changed in Python, a mapping, a `StudyConfig`)
    on the schema with every value checked, or ConfigError: one line naming the key and the value.
    `load_config`, `run_study` and its dry run call it before anything else."""
    if not isinstance(cfg, (DictConfig, Mapping)) and not is_dataclass(cfg):
        raise ConfigError(f"config: {type(cfg).__name__}; give a DictConfig (load_config), a mapping or a "
                          "StudyConfig")
    cfg = typed_config(cfg)
    validate(cfg)
    return cfg


def typed_config(*layers) -> DictConfig:
    """The layers merged onto the schema, each list item onto its own (`ITEM_SCHEMAS`); unknown keys,
    values of the wrong type and items that are not mappings raise ConfigError naming the key."""
    try:
        cfg = OmegaConf.merge(_schema(StudyConfig), *layers)
    except (OmegaConfBaseException, TypeError) as err:  # TypeError: a list key given as a mapping
        raise ConfigError(_problem(err)) from None
    for key, schema in ITEM_SCHEMAS.items():
        items = []
        for i, item in enumerate(cfg[key]):
            if not OmegaConf.is_dict(item):
                raise ConfigError(f"{key}[{i}]: {item!r}; each item must be a mapping of {schema.__name__} keys")
            try:
                items.append(OmegaConf.merge(_schema(schema), item))
            except (OmegaConfBaseException, TypeError) as err:
                raise ConfigError(_problem(err, f"{key}[{i}]")) from None
        cfg[key] = items
    return cfg


@cache
def _schema(schema: type) -> DictConfig:
    """The structured config of a schema dataclass, made once (merging copies it)."""
    return OmegaConf.structured(schema)


def _problem(err: Exception, within: str = "") -> str:
    """An OmegaConf error as one line that starts with the full key (`within` the item it is in)."""
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    key = getattr(err, "full_key", None) or ""
    key = f"{within}.{key}" if within and key else within or key
    if message.startswith("Invalid value assigned:") and "is not a ListConfig" in message:
        message = f"must be a list, e.g. [{getattr(err, 'value', '')}]".replace("[None]", "[...]")
    elif message.startswith("Cannot merge incompatible container types"):
        message = "a list and a mapping do not merge; give a value of the key's kind (a list for a list)"
    return f"{key}: {message}" if key and not message.startswith(f"{key}:") else message


def presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(path: str | Path) -> Path:
    """A YAML file, or a preset's (`smoke`: experiments/configs/smoke.yaml) where no such file is."""
    if not Path(path).is_file() and str(path) in presets():
        return preset_path(str(path))
    return Path(path)


def _yaml_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[DictConfig]:
    """The YAML file's layers: its base chain first, then the file itself (without `base`)."""
    if not path.is_file():
        named = "" if path.suffix or len(path.parts) > 1 else f" (nor a preset: {', '.join(presets())})"
        raise ConfigError(f"{path}: config file not found{named}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: `base` chain loops back to this file")
    try:
        layer = OmegaConf.load(path)
    except Exception as err:  # YAML syntax errors and the like
        raise ConfigError(f"{path}: " + " ".join(str(err).split())) from None
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"{path}: a study config must be a mapping of keys")
    base = layer.pop("base", None)
    below = _yaml_layers(path.parent / str(base), (*seen, path.resolve())) if base else []
    return [*below, layer]


def domain_config(cfg: DictConfig, domain: str) -> DictConfig:
    """The sub-study of one entry of `domains`: its data overrides applied, named `<name>-<domain>`,
    logged to the study's experiment."""
    try:
        sub = OmegaConf.merge(cfg, {"name": f"{cfg.name}-{domain}",
                                    "tracking": {"experiment": cfg.tracking.experiment or cfg.name},
                                    "data": {**(cfg.domains[domain] or {}), "domain": domain}})
    except OmegaConfBaseException as err:
        raise ConfigError(f"domains.{domain}: {str(err).splitlines()[0]}") from None
    sub.domains = {}  # merging an empty mapping would keep the entries
    return sub


def validate(cfg: DictConfig) -> None:
    for sub in [domain_config(cfg, domain) for domain in cfg.domains] or [cfg]:
        problem = domain_problem(sub.data.domain, sub.data.source)
        if problem:
            raise ConfigError(problem)
    for study in [cfg, *(domain_config(cfg, domain) for domain in cfg.domains)]:
        problem = range_problem(study) or location_problem(study)
        if problem:
            raise ConfigError(problem if study is cfg else f"domains.{study.data.domain}: {problem}")
    for sub in [domain_config(cfg, domain) for domain in cfg.domains] or [cfg]:
        problem = data_key_problem(sub.data, DataConfig())
        if problem:
            raise ConfigError(f"domains.{sub.data.domain}: {problem}" if cfg.domains else problem)
    try:
        zoo = expand_zoo(cfg)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    names = [m["name"] for m in zoo]
    for model in zoo:
        _validate_model(model)
    if not names:
        raise ConfigError("models: the model zoo is empty (give `models` or `zoo.archs`)")
    duplicate = sorted({n for n in names if names.count(n) > 1})
    if duplicate:
        raise ConfigError(f"models: duplicate model name {duplicate[0]!r}")
    lists = [(key, cfg[key]) for key in ("targets", "surrogates")]
    lists += [(f"designs[{i}].{key}", design[key]) for i, design in enumerate(cfg.designs)
              for key in ("targets", "surrogates")]
    for key, listed in lists:
        for index, name in enumerate(listed):
            if name not in names:
                raise ConfigError(f"{key}[{index}]: unknown model {name!r}; valid: {', '.join(names)}")
            kind = kind_of(zoo[names.index(name)])
            if key.endswith("targets") and not kind.target:
                raise ConfigError(f"{key}: {name!r} is {kind.label}, which can only be a surrogate")
            if key.endswith("surrogates") and not kind.gradients:
                raise ConfigError(f"{key}: {name!r} is {kind.label}, which gives no gradients: "
                                  "it can only be a target")
    problem = query_problem(cfg, zoo)
    if problem:
        raise ConfigError(problem)
    for key, valid in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in valid:
            raise ConfigError(f"{key}: unknown {value!r}; valid: {', '.join(valid)}")
    _validate_grid(cfg, zoo)
    try:
        CraftingBatch(int(cfg.crafting.batch_size))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _validate_ray(cfg)
    _validate_crafting_device(str(cfg.crafting.device))
    strategy = str(cfg.trainer.strategy)
    if world_size(cfg) > 1 and strategy not in MULTI_PROCESS_STRATEGIES:
        raise ConfigError(f"trainer.strategy: {strategy!r} cannot share a study's devices; use "
                          f"{' or '.join(MULTI_PROCESS_STRATEGIES)} (one study process per device)")


def _validate_grid(cfg: DictConfig, zoo: list[dict]) -> None:
    """Attacks known with valid parameters at every epsilon, and a grid that selects some work: at
    least one attack setting and one (surrogate, target) pair (so no run writes an empty table)."""
    if not cfg.attacks:
        raise ConfigError("attacks: empty, so no adversarial set would be crafted; give at least one, e.g. "
                          "[{name: fgsm, eps: [0.01]}]")
    for i, attack in enumerate(cfg.attacks):
        if attack.name not in ATTACKS:
            raise ConfigError(f"attacks[{i}].name: unknown attack {attack.name!r}; valid: {', '.join(sorted(ATTACKS))}")
        if not attack.eps:
            raise ConfigError(f"attacks[{i}].eps: empty; give at least one epsilon, e.g. [0.01]")
    for sub in [domain_config(cfg, domain) for domain in cfg.domains] or [cfg]:
        _validate_attacks(sub)
    for i, attack in enumerate(cfg.attacks):
        for eps in attack.eps:
            try:
                attack_params({"name": attack.name, **attack.params, "eps": float(eps), "target": attack.target,
                               "norm": attack.norm})
            except ValueError as err:
                raise ConfigError(f"attacks[{i}]: {err}") from None
    if not study_pairs(cfg, zoo):
        blocks = "its designs" if cfg.designs else (f"surrogates {list(cfg.surrogates) or 'all'} and targets "
                                                    f"{list(cfg.targets) or 'all'}")
        raise ConfigError(f"pairs: {cfg.pairs!r} selects no (surrogate, target) pair of {blocks}; valid: "
                          f"{', '.join(PAIR_MODES)}")


def _validate_crafting_device(device: str) -> None:
    """`crafting.device` names a kind of device (whether this machine has it is a study's up-front check,
    `preflight.checks.device_problems`)."""
    kind, _, index = device.partition(":")
    if device in ("auto", "cpu", "mps"):
        return
    if kind != "cuda" or not (index == "" or index.isdigit()):
        raise ConfigError(f"crafting.device: unknown {device!r}; valid: auto, cpu, cuda, cuda:N, mps")


def _validate_model(model: dict) -> None:
    """A zoo entry checked as its kind is: a trained model's, an ensemble's (an external model's
    settings are checked by `expand_zoo`, design.external)."""
    MODEL_CHECKS[kind_of(model).obtained](model)


def _validate_ensemble(model: dict) -> None:
    """The ensemble mode valid."""
    if model["mode"] not in MODES:
        raise ConfigError(f"models.{model['name']}.mode: unknown ensemble mode {model['mode']!r}; "
                          f"valid: {', '.join(MODES)}")


def _validate_trained(model: dict) -> None:
    """Architecture, init and development set known; defence and adversarial training valid."""
    where = f"models.{model['name']}"
    for key, check in (("defence", defence_params), ("adversarial_training", attack_params)):
        if model.get(key):
            try:
                check(model[key])
            except ValueError as err:
                raise ConfigError(f"{where}.{key}: {err}") from None
    if model["arch"] not in ARCHITECTURES:
        raise ConfigError(f"{where}.arch: unknown architecture {model['arch']!r}; "
                          f"valid: {', '.join(sorted(ARCHITECTURES))}")
    if model["dev_set"] not in DEV_SETS:
        raise ConfigError(f"{where}.dev_set: unknown development set {model['dev_set']!r}; "
                          f"valid: {', '.join(DEV_SETS)}")
    init = model["init"]  # a `checkpoint:` file is read by the up-front checks (experiments.preflight.checks)
    if not init.startswith("checkpoint:") and init not in INITS:
        raise ConfigError(f"{where}.init: unknown init {init!r}; valid: {', '.join(INITS)}")


MODEL_CHECKS = {TRAINED: _validate_trained, COMPOSED: _validate_ensemble, LOADED: lambda model: None}


def _validate_attacks(cfg: DictConfig) -> None:
    """Each attack's `norm` is one it has and its `target` one it can aim at: a class (finding) named by
    index or name must be one of the task's where the config tells them (`data.labels`, or the
    synthetic domain's), else it is checked when the set is crafted."""
    names, task = (list(cfg.data.labels), cfg.data.task) if cfg.data.labels else (None, None)
    if cfg.data.source == "synthetic" and cfg.data.domain in GENERATORS:
        _, names, task = GENERATORS[cfg.data.domain]
    for i, attack in enumerate(cfg.attacks):
        for key, check in (("norm", check_norm), ("target", check_target)):
            try:
                check(attack.name, attack[key])
                if key == "target" and names is not None and attack.target not in TARGET_MODES:
                    outputs = 2 if task == "binary" else len(names)
                    named_index(attack.target, task, names, outputs)
            except ValueError as err:
                raise ConfigError(f"attacks[{i}].{key}: {attack[key]}; {err}") from None


def _validate_ray(cfg: DictConfig) -> None:
    """Task resources Ray accepts (some CPU, no negative GPU, fractions of at most one GPU); with the
    `ray` executor each task uses the devices Ray gave it, so the trainer asks for one."""
    ray = cfg.ray
    if cfg.executor == "ray" and str(cfg.trainer.devices) != "1":
        raise ConfigError(f"trainer.devices: {cfg.trainer.devices}; executor: ray runs each task on one "
                          "device (ray.gpus_per_task sets its share of a GPU), so trainer.devices must be 1")
    if not ray.cpus_per_task > 0:
        raise ConfigError(f"ray.cpus_per_task: {ray.cpus_per_task}; must be above 0")
    gpus = ray.gpus_per_task
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise ConfigError(f"ray.gpus_per_task: {gpus}; must be 0, a fraction of one GPU or a whole number")


def preset_path(name: str) -> Path:
    return CONFIG_DIR / f"{name}.yaml"
