"""Loader options of the study config reach the test DataLoader the study streams from."""
import pytest

from experiments.design.config import ConfigError, load_config
from experiments.execution import read_data
from experiments.execution.evaluation import load_test_set


def test_workers_and_pinned_memory_reach_the_loader():
    cfg = load_config(None, ["data.image_size=16", "data.num_patients=40", "data.images_per_patient=1",
                             "data.cache_dir=none", "data.num_workers=1", "data.pin_memory=true",
                             "data.batch_size=5", "models=[{name: a}]"])
    test = load_test_set(read_data(cfg).datamodule("d1"))
    assert (test.loader.num_workers, test.loader.pin_memory, test.loader.batch_size) == (1, True, 5)
    labels = [labels for _, labels in test.loader]
    assert [len(batch) for batch in labels[:-1]] == [5] * (len(labels) - 1)
    assert test.labels.tolist() == [int(v) for batch in labels for v in batch]


def test_bad_crafting_precision_is_one_line_error():
    with pytest.raises(ConfigError, match="crafting.precision: unknown 'fp16'; valid: fp32, bf16"):
        load_config(None, ["crafting.precision=fp16", "models=[{name: a}]"])
