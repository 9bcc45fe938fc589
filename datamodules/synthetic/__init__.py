"""Synthetic medical-image domains, generated deterministically from a seed (the offline default)."""
from . import chestxray, fundus, pathology

# domain -> (generator, label names, task)
GENERATORS = {
    "ophthalmology": (fundus.generate_fundus, fundus.LABEL_NAMES, "binary"),
    "radiology": (chestxray.generate_chestxray, chestxray.LABEL_NAMES, "multilabel"),
    "pathology": (pathology.generate_pathology, pathology.LABEL_NAMES, "binary"),
}
