"""`medtransfer ui`: the MLflow UI on the project's tracking store, opened on the newest study's runs."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

from .tracking import UI_HOST, UI_PORT, artifact_root, ui_address, ui_link

START_SECONDS = 120


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((UI_HOST, port))
        except OSError:
            return False
    return True


def choose_port(requested: int | None) -> int:
    """`requested` if given (it must be free), else MLflow's usual port 5000 if free, else any free port."""
    if requested is not None:
        if not port_is_free(requested):
            raise ValueError(f"--port: {requested} is in use on {UI_HOST}")
        return requested
    if port_is_free(UI_PORT):
        return UI_PORT
    with socket.socket() as sock:
        sock.bind((UI_HOST, 0))
        return sock.getsockname()[1]


def newest_study(uri: str) -> tuple[str, str] | None:
    """(experiment id, run id) of the most recently started study parent run in the store, if any."""
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "tags.kind = 'study'", max_results=1,
                              order_by=["attributes.start_time DESC"]) if experiments else []
    return (runs[0].info.experiment_id, runs[0].info.run_id) if runs else None


def landing_link(uri: str, address: str) -> str:
    study = newest_study(uri)
    return ui_link(address, *study[:1]) if study else ui_link(address)


def server_command(uri: str, port: int) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "server", "--host", UI_HOST, "--port", str(port),
               "--backend-store-uri", uri, "--workers", "1"]
    root = artifact_root(uri)
    return command + (["--default-artifact-root", root] if root else [])


def wait_until_serving(server: subprocess.Popen, address: str, log) -> None:
    """Return once the server answers HTTP; raise with the tail of its log if it exits or never answers."""
    deadline = time.monotonic() + START_SECONDS
    while server.poll() is None and time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{address}/health", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the MLflow server did not start: {last_line(log)}")


def last_line(log) -> str:
    log.seek(0)
    lines = log.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no output"


def stop(server: subprocess.Popen) -> None:
    """End the server and its workers (its whole process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue


def serve(uri: str, port: int | None = None) -> int:
    """Serve the MLflow UI for store `uri` until Ctrl-C (or SIGTERM); print the link to open.
    An http(s) URI is a running server already: its link is printed and nothing is started."""
    if uri.startswith(("http://", "https://")):
        print(f"MLflow UI (tracking server): {landing_link(uri, ui_address(uri))}")
        return 0
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise FileNotFoundError(f"tracking.uri: {uri}: no such store yet (run a study first)")
    port = choose_port(port)
    address = ui_address(uri, port)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with tempfile.TemporaryFile() as log:
        # its own session: a terminal's Ctrl-C reaches only this process, which stops the server
        server = subprocess.Popen(server_command(uri, port), stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_until_serving(server, address, log)
            print(f"MLflow UI on {uri}\n  {landing_link(uri, address)}\n(Ctrl-C stops it)", flush=True)
            server.wait()
            raise RuntimeError(f"the MLflow server exited with status {server.returncode}: {last_line(log)}")
        except KeyboardInterrupt:
            print("medtransfer ui: stopped", flush=True)
            return 0
        finally:
            stop(server)
            signal.signal(signal.SIGTERM, previous)
