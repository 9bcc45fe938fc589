"""Classifiers: architecture registry, initialisation, pixel-space model contract, LightningModule."""
from .architectures import ARCHITECTURES, get_architecture
from .classifier import ClassifierModule
from .model import build_classifier
from .tasks import TASKS

__all__ = ["ARCHITECTURES", "TASKS", "ClassifierModule", "build_classifier", "get_architecture"]
