"""The `data` settings of a study and of `build_datamodule`, with their defaults: one schema for both
(`experiments.design.config` nests it as the config's `data` section and checks each value)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .readers.images import DEFAULT_MAX_PIXELS
from .splits import TEST_FRACTION, VAL_FRACTION


@dataclass
class DataConfig:
    domain: str = "pathology"
    source: str = "synthetic"
    image_size: int = 32
    num_patients: int = 600
    images_per_patient: int = 4
    signal: float = 1.0
    test_fraction: float = TEST_FRACTION
    val_fraction: float = VAL_FRACTION
    splits: str = ""  # split files instead of drawn splits: the authors' d0..d3 YAML folder or a sample_id,split CSV
    seed: int = 0
    batch_size: int = 64
    num_workers: int = 0
    pin_memory: bool = False  # page-locked loader batches (faster host-to-GPU copies)
    cache_dir: str = ""  # synthetic sets: "" = ~/.cache/medtransfer (or $MEDTRANSFER_CACHE), "none" = off
    root: str = ""  # real sources: the data set's folder
    max_pixels: int = DEFAULT_MAX_PIXELS  # image and DICOM files: the most pixels one may declare in its header
    flag: str = ""  # medmnist: any 2-D flag of medmnist.INFO ("" = the synthetic domain's counterpart)
    npz_size: int = 0  # medmnist: 28, 64, 128 or 224 (0 = smallest >= image_size)
    ordinal_threshold: int = 2  # medmnist ordinal grades (RetinaMNIST only): positive = grade >= this
    csv_file: str = "labels.csv"  # csv and dicom sources: relative to root
    path_column: str = "path"
    label_column: str = "label"
    patient_column: str = ""
    # csv, dicom: the class names (binary: [negative, positive], the file's 0 and 1; optional); medmnist:
    # optional, must be medmnist.INFO's class order (the positive class of a binary set is class 1)
    labels: list[str] = field(default_factory=list)
    task: str = "binary"  # csv and dicom sources: binary, multiclass or multilabel
    channels: int = 0  # csv and dicom sources: 1 or 3 (0 = 1 for radiology and dicom, else 3)
