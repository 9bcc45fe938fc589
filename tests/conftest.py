import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tracking_uri(tmp_path):
    """A fresh SQLite MLflow store inside the test's tmp dir."""
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
