"""`medtransfer ui` as a user runs it: a real MLflow server on the store, the link, Ctrl-C (in a real
process); the links and one-line errors that start no server through the same `main` in this one."""
import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from experiments.cli import main


def make_store(uri: str, experiment: str = "ui-study") -> tuple[str, str]:
    """A store holding one experiment with a study parent run; (experiment id, run id)."""
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=experiment, tags={"kind": "study"})
    client.set_terminated(run.info.run_id)
    return experiment_id, run.info.run_id


def medtransfer_ui(*args, cwd) -> subprocess.Popen:
    """`medtransfer ui` in its own process with Ctrl-C's default behaviour, even where this test
    runs with SIGINT ignored (a background shell)."""
    return subprocess.Popen([sys.executable, "-m", "experiments", "ui", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


class Output:
    """A process's stdout, read in the background, so a test can wait for a line and still collect
    the rest."""

    def __init__(self, stream):
        self.text, self.seen = "", threading.Condition()
        self.reader = threading.Thread(target=self.read, args=(stream,), daemon=True)
        self.reader.start()

    def read(self, stream) -> None:
        for line in stream:
            with self.seen:
                self.text += line
                self.seen.notify_all()

    def wait_for(self, marker: str, seconds: float = 180) -> str:
        with self.seen:
            if not self.seen.wait_for(lambda: marker in self.text or not self.reader.is_alive(), seconds):
                raise AssertionError(f"no {marker!r} within {seconds} s: {self.text!r}")
            assert marker in self.text, self.text
            return self.text


def port_answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow  # `medtransfer ui` in a real process serving MLflow, then Ctrl-C: about 28 s here
def test_ui_serves_the_store_prints_the_link_and_stops_on_ctrl_c(tmp_path, unused_port):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    experiment_id, run_id = make_store(uri)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    ui = medtransfer_ui(f"tracking.uri={uri}", "--port", str(unused_port), cwd=elsewhere)
    output = Output(ui.stdout)
    try:
        shown = output.wait_for("workflowType")
        link = f"http://127.0.0.1:{unused_port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        assert link in shown.split()
        # the server behind the link is the one on this store: it knows the study run
        api = f"http://127.0.0.1:{unused_port}/ajax-api/2.0/mlflow/runs/get?run_id={run_id}"
        with urllib.request.urlopen(api, timeout=30) as reply:
            assert json.load(reply)["run"]["info"]["experiment_id"] == experiment_id
        ui.send_signal(signal.SIGINT)
        ui.wait(timeout=60)
    finally:
        if ui.poll() is None:
            ui.kill()
    output.reader.join(timeout=10)
    err = ui.stderr.read()
    assert ui.returncode == 0, err
    assert output.text.strip().splitlines()[-1] == "medtransfer ui: stopped"
    assert "Traceback" not in err
    assert not port_answers(unused_port)  # the MLflow server went with it


@pytest.mark.slow  # over 5 s on 2 cores
def test_ui_on_a_tracking_server_prints_its_link(mlflow_server, tmp_path, monkeypatch, capsys):
    experiment_id, _ = make_store(mlflow_server, "ui-remote")
    monkeypatch.chdir(tmp_path)
    assert main(["ui", f"tracking.uri={mlflow_server}"]) == 0
    assert f"{mlflow_server}/#/experiments/{experiment_id}/runs?workflowType=machine_learning" in capsys.readouterr().out


def test_ui_reads_mlflow_tracking_uri(mlflow_server, tmp_path, monkeypatch, capsys):
    experiment_id, _ = make_store(mlflow_server, "ui-from-env")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    assert main(["ui"]) == 0
    assert f"{mlflow_server}/#/experiments/{experiment_id}/runs" in capsys.readouterr().out


def test_ui_without_a_store_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nothing" / "mlflow.db"
    assert main(["ui", f"tracking.uri=sqlite:///{missing}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(missing) in err
    assert not missing.parent.exists()


def test_ui_port_in_use_is_one_line(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    make_store(uri)
    capsys.readouterr()  # MLflow's lines while the test built its store (the CLI leaves no logger quieted)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["ui", f"tracking.uri={uri}", "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip() == f"medtransfer ui: error: --port: {port} is in use on 127.0.0.1"
