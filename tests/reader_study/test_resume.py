"""`medtransfer readers` killed mid-session and started again: the open page carries on where it was,
a new page resumes by pseudonym, no answer is lost or doubled; stopping it logs the `kind=readers`
run under the study's run, with the answers as CSV."""
import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiments.design.config import preset_path


def start(cfg, port: int, cwd: Path) -> subprocess.Popen:
    overrides = [f"tracking.uri={cfg.tracking.uri}", f"output_dir={cfg.output_dir}",
                 "train.max_epochs=1", "surrogates=[a]", "targets=[a]",
                 "attacks=[{name: fgsm, eps: [0.004, 0.03]}, "
                 "{name: ifgsm, eps: [0.03], params: {alpha: 0.01, steps: 3}}]"]
    server = subprocess.Popen([sys.executable, "-m", "experiments", "readers", "--config", str(preset_path("smoke")),
                               "--port", str(port), "--trials-per-set", "4", *overrides],
                              cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    for line in server.stdout:
        if "answers in " in line:
            server.answers = Path(line.split("answers in ", 1)[1].strip()) / "answers.jsonl"
        if line.strip().startswith("http://"):
            return server
    pytest.fail(f"the reader server did not start: {server.stderr.read()[-2000:]}")


def stop(server: subprocess.Popen, sig: int) -> str:
    server.send_signal(sig)
    out, err = server.communicate(timeout=120)
    assert server.returncode == (0 if sig == signal.SIGTERM else -sig), err[-2000:]
    return out


def stored_answers(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow  # a reader server process SIGKILLed and started again: about 25 s here
def test_a_killed_server_loses_no_answer_and_the_run_is_logged(stored_study, chromium, unused_port, tmp_path):
    cfg, url, clicks = stored_study, f"http://127.0.0.1:{unused_port}/", []
    server = start(cfg, unused_port, tmp_path)
    chromium.begin(url, "kim")
    for side in ["left", "right", "none", "left", "right"]:
        chromium.answer(side)
        clicks.append(side)
    server.kill()  # SIGKILL: no clean-up of any kind
    stop(server, signal.SIGKILL)
    chromium.answer("left", wait=False)  # answered while the server is down: the page keeps trying
    chromium.wait_for("document.getElementById('error').textContent.includes('Waiting')")
    clicks.append("left")
    server = start(cfg, unused_port, tmp_path)
    assert chromium.trial_index() == 6  # the open page went on by itself
    chromium.answer("right")
    clicks.append("right")

    chromium.begin(url, "kim")  # a new page: the session resumes by pseudonym
    assert chromium.trial_index() == 7
    while chromium.trial_index() is not None:
        side = ["left", "right"][len(clicks) % 2]
        chromium.answer(side, how="key")
        clicks.append(side)
    out = stop(server, signal.SIGTERM)

    answers = stored_answers(server.answers)
    assert [a["trial"] for a in answers] == list(range(len(clicks))) == list(range(3 * 4 + 2))
    assert [a["choice"] for a in answers] == clicks
    first = [a for a in answers if a["repeat_of"] is None]
    rate = sum(a["picked"] == a["attacked"] for a in first) / len(first)

    client = MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.name).experiment_id
    (study,) = client.search_runs([experiment], "tags.kind = 'study'")
    (readers,) = client.search_runs([experiment], "tags.kind = 'readers'")
    assert readers.data.tags["mlflow.parentRunId"] == study.info.run_id
    assert readers.data.metrics["detection.reader.kim"] == pytest.approx(rate)
    assert readers.data.metrics["answers"] == len(clicks)
    assert readers.info.run_id in out
    logged = client.download_artifacts(readers.info.run_id, "answers.csv", str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(Path(logged).read_text())))
    assert [(r["trial"], r["choice"], r["set_key"]) for r in rows] == [
        (str(a["trial"]), a["choice"], a["set_key"]) for a in answers]
    assert {p.path for p in client.list_artifacts(readers.info.run_id)} >= {
        "answers.csv", "by_reader.csv", "by_setting.csv", "readers.md", "detection_vs_eps.png"}
