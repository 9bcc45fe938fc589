"""Data: one LightningDataModule per domain and source, split into the paper's development sets."""
from .base import DevSetDataModule
from .build import DomainData, build_datamodule
from .sources import DOMAINS, SOURCES
from .splits import DEV_SETS

__all__ = ["DEV_SETS", "DevSetDataModule", "DOMAINS", "DomainData", "SOURCES", "build_datamodule"]
