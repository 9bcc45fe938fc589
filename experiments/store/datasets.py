"""The data a run used, as MLflow dataset inputs: a model run's development set (context `training`)
and a pair run's test set (context `evaluation`), so the UI's Dataset column and filter show them.
A real source's record holds its content (`DomainData.fingerprint`) in its source and its digest."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from omegaconf import DictConfig, OmegaConf

from datamodules.sources import deciding_keys



class StudyDataSource(DatasetSource):
    """Where a study's images come from: the `data` settings that decide them (`sources.deciding_keys`)."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings

    @staticmethod
    def _get_source_type() -> str:
        return "medtransfer"

    def load(self):
        raise NotImplementedError("load a medtransfer data set with datamodules.build_datamodule")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> StudyDataSource:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return self.settings

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> StudyDataSource:
        return cls(dict(source_dict))


class SplitDataset(MetaDataset):
    """A development or test set: named `<domain>/<split>`, digest of its sample ids (and of a real
    source's content), with a profile (sample and patient counts)."""

    def __init__(self, source: StudyDataSource, name: str, digest: str, profile: dict):
        self._profile = profile
        super().__init__(source, name=name, digest=digest)

    @property
    def profile(self) -> dict:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self.profile)}


def sample_digest(sample_ids, content: str = "") -> str:
    """A short hash of a set of sample ids (order-independent) and, when given, the data's content."""
    text = "\n".join(sorted(str(sample) for sample in sample_ids)) + (f"\ncontent {content}" if content else "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_dataset(data_cfg: DictConfig, datamodule, split: str) -> SplitDataset:
    """The samples of `split` ("test", or the development set the datamodule was built for, training
    and validation parts together) as an MLflow dataset."""
    stages = ("test",) if split == "test" else ("train", "val")
    rows = datamodule.manifest.iloc[np.concatenate([np.asarray(datamodule.indices[s]) for s in stages])]
    settings = OmegaConf.to_container(data_cfg, resolve=True)
    described = {key: settings.get(key) for key in deciding_keys(settings["source"])}
    if described.get("root"):
        described["root"] = str(Path(described["root"]).resolve())
    content = datamodule.domain.fingerprint()
    if content:
        described["content"] = content
    source = StudyDataSource(described)
    profile = {"samples": len(rows), "patients": int(rows["patient_id"].nunique()),
               **{stage: int((rows["stage"] == stage).sum()) for stage in stages}}
    return SplitDataset(source, f"{settings['domain']}/{split}", sample_digest(rows["sample_id"], content), profile)


def log_dataset(client: MlflowClient, run_id: str, dataset: SplitDataset, context: str) -> None:
    """Record `dataset` as an input of run `run_id` with `context` (training, evaluation)."""
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(),
                                                     [InputTag(MLFLOW_DATASET_CONTEXT, context)])])

