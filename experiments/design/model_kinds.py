"""The kinds of zoo model, one small class each: what the config decides about a model (pure: no I/O).

A zoo entry (`design.zoo`) is one of
- `Zoo`: a plain model trained here (`arch`, `init`, `dev_set`, `instance`);
- `AdversariallyTrained`: one trained on adversarial batches (`adversarial_training`);
- `Defended`: a trained model (plain or adversarially trained: its twin) behind an input `defence`;
- `Ensemble`: trained members composed into one surrogate (`ensemble`, `mode`, `members`);
- `External`: a model trained elsewhere and loaded (`external`, `design.external`).

`kind_of` is the only place that tells them apart by the entry's keys. Each kind owns its identity
(`job_key`: what its `ModelJob` is named by; `network_key`), its params and hardening label, how it
is obtained (`obtained`: trained, composed or loaded; `execution.networks.OBTAIN` does it) and the
roles it may take (`target`, `gradients`).
"""
from __future__ import annotations

from typing import ClassVar

from omegaconf import DictConfig, OmegaConf

from lightning_modules.defences import defence_params

from .external import DIFFERENTIABLE, NON_DIFFERENTIABLE, external_settings, external_source
from .facts import StudyFacts
from .identity import digest, external_key, model_key

TRAINED, COMPOSED, LOADED = "trained", "composed", "loaded"  # how a kind's network is obtained
OPTIONAL = ("defence", "adversarial_training")  # left out of an entry when not set
EXTERNAL = "external"


class ModelKind:
    """A zoo entry seen through its kind; the defaults are a model trained here."""
    kind: ClassVar[str]
    obtained: ClassVar[str] = TRAINED
    target: ClassVar[bool] = True  # may be a target (an ensemble only crafts)
    defended: ClassVar[bool] = False
    probed: ClassVar[bool] = False  # loaded from outside: its contract and speed are probed before a study
    noun: ClassVar[str] = ""  # how a refusal names the kind

    def __init__(self, entry):
        self.entry = entry

    @property
    def name(self) -> str:
        return self.entry["name"]

    @classmethod
    def entry_of(cls, model: dict) -> dict:
        """The zoo entry of a config `models` item: without its unset optional keys (a plain entry
        has exactly the factor keys)."""
        entry = _set_keys(model)
        entry.pop("mode", None)
        return entry

    @property
    def label(self) -> str:
        return self.noun

    @property
    def gradients(self) -> bool:
        """Whether it may give gradients (be a surrogate or start a query attack from a transfer set)."""
        return True

    @property
    def default_surrogate(self) -> bool:
        """Whether it is a surrogate when `surrogates` is empty."""
        return self.gradients

    @property
    def trained_init(self) -> str | None:
        """What a model trained here starts from (`init`); None for a kind not trained here."""
        return str(self.entry["init"]) if self.obtained == TRAINED else None

    @property
    def training_attack(self) -> dict | None:
        """The attack its training batches are crafted with (adversarial training), or None."""
        return None

    @property
    def endpoint(self) -> str | None:
        """The URI of the HTTP endpoint that scores it, or None."""
        return None

    @property
    def member_names(self) -> list[str]:
        """The zoo models it is composed of (none but an ensemble's)."""
        return []

    def training_entry(self) -> DictConfig:
        """The zoo entry its training run is made of: without its `defence` (its undefended twin)."""
        return OmegaConf.create({k: v for k, v in self.entry.items() if k != "defence"})

    def training_identity(self) -> dict | None:
        """What makes two entries one trained model (None for a kind not trained here)."""
        return {k: v for k, v in self.entry.items() if k not in ("name", "defence")}

    def job_key(self, cfg: DictConfig, facts: StudyFacts) -> str:
        """What its `ModelJob` is named by: a trained model's `model_key` (shared by a defended model
        and its twin), else its `network_key`."""
        return model_key(cfg, self.entry, facts)

    def network_key(self, cfg: DictConfig, facts: StudyFacts) -> str:
        """Identity of the network a set is crafted on or a pair evaluates."""
        return model_key(cfg, self.entry, facts)

    def hardening_parts(self) -> list[str]:
        return []

    def hardening(self) -> str:
        """What hardens it, e.g. `jpeg(quality=50)`, `pgd(eps=0.03,alpha=0.01,steps=5)`, both joined
        by ` + `, or `none`."""
        return " + ".join(self.hardening_parts()) or "none"

    def params(self) -> dict:
        """The entry as flat MLflow params: `defence.quality`, `adversarial_training.eps`, ..."""
        params = {}
        for key, value in self.entry.items():
            params.update(self._param(key, value))
        return params

    def _param(self, key: str, value) -> dict:
        if hasattr(value, "items"):
            return {f"{key}.{inner}": v for inner, v in value.items()}
        return {key: value}

    def pair_tags(self, network: str) -> dict:
        """Its pair runs' tags as a target, beyond the common ones."""
        return {}


class Zoo(ModelKind):
    """A plain model trained here."""
    kind = "zoo"


class AdversariallyTrained(ModelKind):
    """A model trained here on adversarial batches."""
    kind = "adversarially_trained"

    @property
    def training_attack(self) -> dict:
        return self.entry["adversarial_training"]

    def hardening_parts(self) -> list[str]:
        return [setting_label(self.training_attack)]


class Defended(ModelKind):
    """A trained model (its twin, plain or adversarially trained) behind an input defence."""
    kind = "defended"
    defended = True

    @property
    def twin(self) -> ModelKind:
        return kind_of(self.training_entry())

    @property
    def training_attack(self) -> dict | None:
        return self.twin.training_attack

    def network_key(self, cfg: DictConfig, facts: StudyFacts) -> str:
        name, params = defence_params(self.entry["defence"])
        return digest({"model": model_key(cfg, self.entry, facts), "defence": {"name": name, **params}})

    def hardening_parts(self) -> list[str]:
        return [*self.twin.hardening_parts(), setting_label(self.entry["defence"])]


class Ensemble(ModelKind):
    """Trained members composed into one surrogate (`attacks.Ensemble`); `arch`, `init` and `dev_set`
    are its members' common value or `mixed`."""
    kind = "ensemble"
    obtained = COMPOSED
    target = False
    noun = "an ensemble"

    @classmethod
    def entry_of(cls, model: dict) -> dict:
        entry = _set_keys(model)
        for key in OPTIONAL:
            if model.get(key):
                raise ValueError(f"models.{model['name']}.{key}: an ensemble takes none (give it to its members)")
        for key in ("arch", "init", "dev_set", "instance"):
            entry.pop(key, None)
        return entry

    @property
    def member_names(self) -> list[str]:
        return list(self.entry["ensemble"])

    @property
    def mode(self) -> str:
        return self.entry["mode"]

    def training_identity(self) -> None:
        return None

    def job_key(self, cfg: DictConfig, facts: StudyFacts) -> str:
        return self.network_key(cfg, facts)

    def network_key(self, cfg: DictConfig, facts: StudyFacts) -> str:
        """Its members' network identities (in order) and its mode."""
        return digest({"ensemble": [network_key(cfg, m, facts) for m in self.entry["members"]], "mode": self.mode})

    def _param(self, key: str, value) -> dict:
        if key == "members":
            return {}
        if key == "ensemble":
            return {key: ",".join(value)}
        return super()._param(key, value)


class External(ModelKind):
    """A model trained elsewhere, loaded from its `external` settings (`arch` and `dev_set` are
    `external`, `init` its format)."""
    kind = "external"
    obtained = LOADED
    probed = True
    noun = "an external model"

    @classmethod
    def entry_of(cls, model: dict) -> dict:
        """Its complete settings; training keys and hardening are refused."""
        for key in (*OPTIONAL, "ensemble"):
            if model.get(key):
                raise ValueError(f"models.{model['name']}.{key}: an external model takes none "
                                 "(it is not trained here)")
        settings = external_settings(model["name"], model["external"])
        return {"name": model["name"], "arch": EXTERNAL, "init": settings["format"], "dev_set": EXTERNAL,
                "external": settings}

    @property
    def settings(self):
        return self.entry["external"]

    @property
    def label(self) -> str:
        return f"an external {self.settings['format']} model"

    @property
    def gradients(self) -> bool:
        """Whether its format may give gradients (an `mlflow` model does when it has a pt2 flavour)."""
        return self.settings["format"] not in NON_DIFFERENTIABLE

    @property
    def default_surrogate(self) -> bool:
        """Only a differentiable format's by default (others only when named, and checked then)."""
        return self.settings["format"] in DIFFERENTIABLE

    @property
    def endpoint(self) -> str | None:
        return self.settings["uri"] if self.settings["format"] == "http" else None

    def training_identity(self) -> None:
        return None

    def job_key(self, cfg: DictConfig, facts: StudyFacts) -> str:
        return external_key(self.entry, facts)

    def network_key(self, cfg: DictConfig, facts: StudyFacts) -> str:
        return external_key(self.entry, facts)

    def pair_tags(self, network: str) -> dict:
        """Its declared source's digest and its network identity."""
        return {"external_source": digest(external_source(self.settings)), "target_network": network}


# The keys that make a `models` item or zoo entry a kind, in the order they decide (an item has at
# most one of the first two; a defended model may also be adversarially trained).
KINDS_BY_KEY = (("external", External), ("ensemble", Ensemble), ("defence", Defended),
                ("adversarial_training", AdversariallyTrained))


def kind_class(entry) -> type[ModelKind]:
    """The kind of a zoo entry (or a config `models` item): the one place that reads its keys for it."""
    return next((kind for key, kind in KINDS_BY_KEY if entry.get(key)), Zoo)


def kind_of(entry) -> ModelKind:
    """A zoo entry as its kind."""
    return kind_class(entry)(entry)


def network_key(cfg: DictConfig, entry, facts: StudyFacts) -> str:
    """Identity of the network a set is crafted on or a pair evaluates: a trained model's `model_key`;
    for a defended model, that and the complete defence; for an ensemble, its members' network
    identities (in order) and its mode; for an external model, `external_key`."""
    return kind_of(entry).network_key(cfg, facts)


def _set_keys(model: dict) -> dict:
    """A `models` item without `external` and without its unset optional keys, `ensemble` and `mode`."""
    model.pop("external", None)
    return {k: v for k, v in model.items() if k not in (*OPTIONAL, "ensemble", "mode") or v}


def setting_label(setting) -> str:
    """A hardening setting as `name(key=value,...)` (floats as `%g`)."""
    settings = dict(setting)
    name = settings.pop("name")
    values = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()]
    return f"{name}({','.join(values)})"
