"""Classifiers: architecture registry, initialisation, pixel-space model contract, LightningModule."""
from .architectures import ARCHITECTURES, architecture_listing, get_architecture
from .classifier import ClassifierModule
from .model import build_classifier
from .pretrained import MissingWeightsError
from .tasks import TASKS, scores

__all__ = ["ARCHITECTURES", "TASKS", "ClassifierModule", "MissingWeightsError", "architecture_listing",
           "build_classifier", "get_architecture", "scores"]
