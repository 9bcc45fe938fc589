import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
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


@pytest.fixture(scope="session")
def store_template(tmp_path_factory) -> Path:
    """An empty, complete SQLite MLflow store built once by the project's own `ensure_store`: the
    study fixtures below copy it instead of running MLflow's schema migrations (seconds) for every
    store a test makes. How a store is built is tested in tests/reliability/test_store_creation.py."""
    from experiments.store.sqlite_store import ensure_store
    path = tmp_path_factory.mktemp("store_template") / "mlflow.db"
    ensure_store(f"sqlite:///{path}", None)
    return path


def place_store(template: Path, path: Path) -> str:
    """The URI of a store at `path`: a copy of `template` (its default experiment's artifact folder
    moved beside `path`, where `ensure_store` would put it) unless one is there already."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)
        with sqlite3.connect(path) as db:
            db.execute("update experiments set artifact_location = ? where experiment_id = 0",
                       (str(path.parent / "artifacts"),))
        db.close()
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def new_store(store_template):
    """`new_store(path)`: the URI of an MLflow store at `path`, a copy of `store_template`."""
    return lambda path: place_store(store_template, Path(path))


@pytest.fixture(scope="session")
def smoke_config(store_template):
    """`smoke_config(root, *overrides)`: the smoke preset with its MLflow store (`root/mlflow.db`, a
    copy of `store_template`; `store=False`: none yet, for tests that check nothing is written) and
    outputs under `root`, then `overrides` (the one config fixture of the study tests)."""
    from experiments.design.config import load_config, preset_path

    def make(root: Path, *overrides: str, store: bool = True):
        path = Path(root) / "mlflow.db"
        uri = place_store(store_template, path) if store else f"sqlite:///{path}"
        return load_config(preset_path("smoke"), [f"tracking.uri={uri}", f"output_dir={root}", *overrides])
    return make


@pytest.fixture
def tracking_uri(tmp_path, store_template):
    """A fresh SQLite MLflow store inside the test's tmp dir (a copy of `store_template`)."""
    return place_store(store_template, tmp_path / "mlruns" / "mlflow.db")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    """A local port nothing listens on."""
    return free_port()


class CodePayload:
    """Unpickling this creates `marker`: proof that a file's code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture
def code_payload(tmp_path) -> CodePayload:
    """An object to pickle into a file; `code_payload.marker` exists only if the file's code ran."""
    return CodePayload(tmp_path / "code-ran")


@contextmanager
def serve_mlflow(root: Path, *options: str, env: dict | None = None):
    """A real `mlflow server` on 127.0.0.1 and a free port (SQLite backend under `root`, served
    artifacts, extra command-line `options`); yields its URL once it answers HTTP."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"), "--workers", "1", *options]
    log = open(root / "server.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
            break
        except urllib.error.HTTPError:  # answering, if only to say "log in first"
            break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    try:
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server, shared by the session's tests."""
    with serve_mlflow(tmp_path_factory.mktemp("mlflow_server")) as url:
        yield url


@pytest.fixture(scope="session")
def mlflow_auth_server(tmp_path_factory):
    """A real MLflow server behind MLflow's basic-auth app, which refuses anonymous requests;
    yields (url, admin user, admin password)."""
    root = tmp_path_factory.mktemp("mlflow_auth_server")
    user, password = "admin", "s3cret-admin-password"
    (root / "auth.ini").write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root / 'auth.db'}\n"
        f"admin_username = {user}\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 600\n")  # one password hash check, not one per request
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-csrf-key"}
    with serve_mlflow(root, "--app-name", "basic-auth", env=env) as url:
        yield url, user, password
