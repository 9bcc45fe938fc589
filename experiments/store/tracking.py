"""MLflow helpers: the default SQLite store under mlruns/, tracking-URI checks, experiments, code version."""
from __future__ import annotations

import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

from .sqlite_store import ensure_store, store_lock

# MLflow's experiment kind for classical model development (vs. GenAI)
KIND_TAG, MODEL_DEVELOPMENT = "mlflow.experimentKind", "custom_model_development"
TRACKING_URI = "MLFLOW_TRACKING_URI"


def artifact_root(uri: str) -> str | None:
    """Where a local SQLite store keeps artifacts (beside the database); servers decide for themselves."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def setup_experiment(uri: str, name: str) -> str:
    """The id of experiment `name` in the store at `uri`, created if needed (MLflow's process-wide
    tracking URI is left alone). A local store is created atomically first (`sqlite_store`); both
    happen under the store's lock, so concurrent processes neither build the schema nor create the
    experiment twice."""
    with store_lock(uri):
        ensure_store(uri, artifact_root(uri))
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(name)
        if found is None:
            try:
                return client.create_experiment(name, artifact_location=artifact_root(uri),
                                                tags={KIND_TAG: MODEL_DEVELOPMENT})
            except MlflowException:  # a tracking server: another process created it first
                found = client.get_experiment_by_name(name)
                if found is None:
                    raise
        if KIND_TAG not in found.tags:  # created before experiments were tagged
            client.set_experiment_tag(found.experiment_id, KIND_TAG, MODEL_DEVELOPMENT)
        return found.experiment_id


@contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI set to `uri` for the block only, then put back with
    `MLFLOW_TRACKING_URI` as they were: the one call that needs it is MLflow 3's SQL model registry
    creating a version from a `models:/<logged model id>` source, which looks the logged model up
    through the global URI rather than its client's store (a TODO in MLflow's code)."""
    variable = os.environ.get(TRACKING_URI)
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if variable is None:
            os.environ.pop(TRACKING_URI, None)
        else:
            os.environ[TRACKING_URI] = variable


def check_tracking_uri(uri: str, timeout: float = 10.0) -> None:
    """Fail with one line naming `tracking.uri` when it carries credentials (MLflow would print and
    log them: they belong in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) or when an http(s)
    tracking server does not answer. Any HTTP reply counts as an answer (auth errors are MLflow's)."""
    parts = urllib.parse.urlsplit(uri)
    if "@" in parts.netloc:
        shown = urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))
        raise ValueError(f"tracking.uri: {shown}: credentials in the URI would be printed and logged; "
                         "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead")
    if parts.scheme not in ("http", "https"):
        return
    health = urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/health", query=""))
    try:
        urllib.request.urlopen(health, timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ValueError(f"tracking.uri: tracking server {uri} unreachable ({reason})") from None


UI_HOST, UI_PORT = "127.0.0.1", 5000


def ui_address(uri: str, port: int = UI_PORT) -> str:
    """The MLflow UI of tracking store `uri`: the server itself for http(s), else the local address
    that `medtransfer ui` serves."""
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return f"http://{UI_HOST}:{port}"


def ui_link(address: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """A UI link that opens on the runs (the model-training view, not MLflow 3's GenAI overview):
    the experiment's runs table, or one run's page."""
    if experiment_id is None:
        return f"{address}/#/experiments?workflowType=machine_learning"
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{address}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def study_links(uri: str, experiment_id: str, study_runs: dict[str, str]) -> dict[str, str]:
    """UI links of a study: `runs` (the experiment's runs table) and, per label, a study run's page."""
    address = ui_address(uri)
    return {"runs": ui_link(address, experiment_id),
            **{label: ui_link(address, experiment_id, run_id) for label, run_id in study_runs.items()}}


def ui_hint(uri: str, named: bool, links: dict[str, str]) -> str:
    """Lines telling the user how to open a study's runs (`study_links`) in the MLflow UI (`named`:
    the store came from `tracking.uri`, so `medtransfer ui` needs it too)."""
    lines = []
    if not uri.startswith(("http://", "https://")):
        lines.append("Open the runs in the MLflow UI: medtransfer ui" + (f" tracking.uri={uri}" if named else ""))
    lines.append(f"  runs of the study:      {links['runs']}")
    lines.extend(f"  study run ({label}): {link}" for label, link in links.items() if label != "runs")
    return "\n".join(lines)


def worker_name() -> str:
    """`<hostname>:<pid>` of this process: the `worker` tag of the model and pair runs it logs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def flag(value: bool) -> str:
    """A boolean tag's value: `true` or `false`, the one spelling of every boolean tag medtransfer writes."""
    return "true" if value else "false"


def numbers(params: dict) -> dict[str, float]:
    """The numeric params (int or float, never bool) as metrics of the same keys: MLflow compares
    params as strings only (`=`, `LIKE`), so `metrics.`attack.eps` > 0.01` is how a range is filtered."""
    return {key: float(value) for key, value in params.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}
