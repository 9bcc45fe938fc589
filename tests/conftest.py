import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def synthetic_cache(tmp_path_factory):
    """Generated data sets are cached in a tmp dir, never in the user's home (subprocesses inherit it)."""
    path = tmp_path_factory.mktemp("synthetic_cache")
    previous = os.environ.get("MEDTRANSFER_CACHE")
    os.environ["MEDTRANSFER_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("MEDTRANSFER_CACHE")
    else:
        os.environ["MEDTRANSFER_CACHE"] = previous


@pytest.fixture
def tracking_uri(tmp_path):
    """A fresh SQLite MLflow store inside the test's tmp dir."""
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 and a free port (SQLite backend, served artifacts)."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
    log = open(root / "server.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()
