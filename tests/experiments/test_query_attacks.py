"""Query attacks in a study (issue 35): Square from the clean image and from an FGSM transfer set
against a model served by a real `mlflow models serve`, behind a proxy of the test's own that counts
what reaches the endpoint; a SIGKILL mid-queries and a rerun that sends nothing twice; the query
runs in the store; `plan`'s bound on what each endpoint is sent."""
import hashlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from experiments.cli import main
from experiments.design.config import preset_path
from experiments.preflight.facts import study_facts
from experiments.report.queries import QUERY_ONLY, TRANSFER_BEST, TRANSFER_STARTED

REPO = Path(__file__).resolve().parents[2]


def _external_models_tests():
    """tests/experiments/test_external_models.py (its served model fixture and config overrides)."""
    spec = importlib.util.spec_from_file_location("external_models_tests", Path(__file__).with_name(
        "test_external_models.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_EXTERNAL = _external_models_tests()  # loaded once
exported, external_models = _EXTERNAL.exported, _EXTERNAL.external_models
MAX_QUERIES = 20
QUERIES = (f"queries=[{{name: square, eps: [0.03], norm: linf, max_queries: {MAX_QUERIES}, budgets: [1, 5, 20], "
           "start_from: [clean, b]}]")


class RecordingProxy:
    """Forwards /invocations to `target`, keeping the digest and image count of each request it
    answered; once `kill_after` requests are answered it SIGKILLs process `victim` instead of
    answering the next one (that request never got its answer)."""

    def __init__(self, target: str):
        self.target, self.answered, self.kill_after, self.victim = target, [], None, None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if proxy.kill_after is not None and len(proxy.answered) >= proxy.kill_after:
                    os.kill(proxy.victim, signal.SIGKILL)
                    proxy.kill_after = None
                    self.close_connection = True
                    return
                request = urllib.request.Request(proxy.target + "/invocations", body,
                                                 {"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=60) as answer:
                    data = answer.read()
                proxy.answered.append((hashlib.sha256(body).hexdigest(), len(json.loads(body)["inputs"])))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


# the certifier's attackers (issue 35): FGSM transfer (the transfer starts' set), targeted iterative FGSM, PGD in L2
ATTACKS = ("attacks=[{name: fgsm, eps: [0.03]}, {name: ifgsm, eps: [0.03], target: least_likely, "
           "params: {alpha: 0.01, steps: 3}}, {name: pgd, eps: [0.5], norm: l2, params: {alpha: 0.2, steps: 3}}]")
SETS = 3  # one set of surrogate b per attack setting, each a pair with the endpoint


def study_args(tmp_path: Path, root: Path, url: str) -> list[str]:
    return ["--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"output_dir={tmp_path}", "train.max_epochs=1", "bootstrap_resamples=50",
            *external_models(root, url, ("b", "a_http")), ATTACKS, QUERIES]


@pytest.mark.slow
def test_square_on_a_served_model_counts_every_query_and_a_killed_run_resumes_without_asking_twice(
        exported, tmp_path, capsys):  # noqa: F811 - the fixture imported above
    proxy = RecordingProxy(exported["url"])
    args = study_args(tmp_path, exported["root"], proxy.url)
    test = exported["test_size"]
    assert main(["plan", *args]) == 0
    bound = int(re.search(r"queries to a_http\s+at most (\d+) images", capsys.readouterr().out).group(1))
    assert bound == (1 + 2 * SETS) * test + 2 * test * MAX_QUERIES  # clean + each pair's images; two query runs
    proxy.answered.clear()  # the plan's probe

    # probe (1 request of 8), clean scores (16 a request), each pair's adversarial and control images,
    # then 30 requests of the query attacks: killed there
    before_queries = 1 + -(-test // 16) + SETS * -(-2 * test // 16)
    proxy.kill_after = before_queries + 30
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([sys.executable, "-m", "experiments", "run", *args], cwd=tmp_path, stdout=log,
                                 stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
        proxy.victim = first.pid
        assert first.wait(timeout=600) == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    killed_at = len(proxy.answered)
    assert killed_at == before_queries + 30
    assert main(["run", *args]) == 0

    bodies = Counter(digest for digest, _ in proxy.answered)
    probe = proxy.answered[0][0]
    assert proxy.answered[killed_at][0] == probe  # the rerun probes again ...
    assert {digest: n for digest, n in bodies.items() if n > 1} == {probe: 2}  # ... and asks nothing else twice

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke").experiment_id
    runs = client.search_runs([experiment], "tags.kind = 'query'")
    assert sorted(r.data.tags["start"] for r in runs) == ["b", "clean"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    [study] = client.search_runs([experiment], "tags.kind = 'study'")
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {study.info.run_id}
    pairs = client.search_runs([experiment], "tags.kind = 'pair'")
    assert len(pairs) == SETS
    images = sum(n for _, n in proxy.answered)
    # what reached the endpoint: two probes, the clean test set, the pairs' images and the query runs' queries
    logged = sum(r.data.metrics["queries"] for r in runs)
    assert images == 2 * 8 + test + sum(p.data.metrics["queries"] for p in pairs) + logged
    assert images - 2 * 8 <= bound
    for run in runs:
        path = client.download_artifacts(run.info.run_id, "queries.csv", str(tmp_path / run.info.run_id))
        rows = pd.read_csv(path)
        assert list(rows.columns) == ["target", "start", "attack", "norm", "eps", "max_queries", "image", "label",
                                      "clean_correct", "queries", "success"]
        assert len(rows) == test and rows["image"].tolist() == list(range(test))
        assert rows["queries"].max() <= MAX_QUERIES and rows.loc[~rows["clean_correct"], "queries"].eq(0).all()
        attacked = rows[rows["clean_correct"]]
        assert attacked.loc[~attacked["success"], "queries"].eq(MAX_QUERIES).all()
        # what was sent: the queries to each success, at most the budget for the others (a step that
        # repeated an image is not sent again)
        fooled = rows.loc[rows["success"], "queries"].sum()
        assert fooled <= run.data.metrics["queries"] <= rows["queries"].sum()
        for budget in (1, 5, 20):
            expected = (attacked["success"] & (attacked["queries"] <= budget)).mean()
            assert run.data.metrics[f"success_at_{budget}"] == pytest.approx(expected)
        print(run.data.tags["start"], dict(run.data.metrics), rows["queries"].tolist())

    # the attackers' pairs: targeted success where the attack had a target, L2 budgets measured in L2
    table = pd.read_csv(next(tmp_path.glob("smoke/*/report/results.csv")))
    targeted, l2 = table[table.attack_target == "least_likely"], table[table.norm == "l2"]
    assert len(targeted) == len(l2) == 1 and targeted.targeted_success.between(0, 1).all()
    assert table[table.attack_target == "untargeted"].targeted_success.isna().all()
    assert (l2.l2 <= 0.5 + 1e-4).all() and (l2.l2 > 0).all()
    # the report: the threat models of the endpoint and the queries-to-success curves
    report = next(tmp_path.glob("smoke/*/report"))
    threats = pd.read_csv(report / "queries_threat_models.csv")
    assert set(threats.target) == {"a_http"}
    assert {TRANSFER_BEST, QUERY_ONLY, TRANSFER_STARTED} <= set(threats.threat_model)
    assert set(threats[threats.threat_model == QUERY_ONLY].queries) == {1, 5, MAX_QUERIES}  # the study's budgets
    assert (report / f"queries_square_linf_eps0.03_q{MAX_QUERIES}.png").stat().st_size > 0
    print((report / "queries_threat_models.md").read_text())


def smoke(*overrides: str):
    from experiments.design.config import load_config
    return load_config(preset_path("smoke"), list(overrides))


def test_query_runs_are_scheduled_per_setting_start_and_target_and_named_by_what_changes_them():
    from omegaconf import OmegaConf, open_dict

    from experiments.design.identity import study_key
    from experiments.design.scheduler import Scheduler

    base = ["models=[{name: a}, {name: b, dev_set: d2}, {name: c, dev_set: d2, instance: 1}]", "targets=[a, b]",
            "surrogates=[b]", "attacks=[{name: fgsm, eps: [0.03]}, {name: ifgsm, eps: [0.03]}]"]
    cfg = smoke(*base, QUERIES.replace("[clean, b]", "[clean, b, c]"))
    scheduler = Scheduler(cfg, study_facts(cfg))
    jobs = [(q.start_name, q.target.name) for q in scheduler.queries]
    assert jobs == [(s, t) for s in ("clean", "b", "c") for t in ("a", "b")]
    pair_sets = {g.set.key for g in scheduler.groups}
    starts = {q.start_name: q.start for q in scheduler.queries if q.start}
    assert starts["b"].key in pair_sets and starts["c"].key not in pair_sets  # b's FGSM set is the pair's set
    assert starts["c"].setting["name"] == "fgsm" and starts["c"].setting["eps"] == 0.03
    assert "c" in {job.name for job in scheduler.model_jobs()}  # c is trained for its start set only
    assert starts["c"] in scheduler.set_jobs()

    def keys(*overrides):
        cfg = smoke(*base, *overrides)
        return [q.key for q in Scheduler(cfg, study_facts(cfg)).queries]
    first = keys(QUERIES)
    assert len(set(first)) == len(first)
    assert keys(QUERIES, "crafting.batch_size=7", "data.num_workers=1") == first  # speed options
    for changed in (QUERIES.replace("max_queries: 20", "max_queries: 30"), QUERIES.replace("[1, 5, 20]", "[2, 20]"),
                    "seed=1", "data.num_patients=100"):
        assert not set(keys(changed)) & set(first), changed

    cfg = smoke()  # a study without query attacks keeps the identity it had before they existed
    without = OmegaConf.create(OmegaConf.to_container(cfg))
    with open_dict(without):
        del without["queries"]
    assert study_key(cfg, study_facts(cfg)) == study_key(without, study_facts(without))
    with_queries, plain = smoke(base[-1], QUERIES), smoke(base[-1])
    assert study_key(with_queries, study_facts(with_queries)) != study_key(plain, study_facts(plain))


@pytest.mark.slow  # Ray's start-up and a study on each executor: about 70 s here
def test_ray_runs_the_query_runs_in_its_workers_and_the_local_executor_reads_them_back(tmp_path):
    pytest.importorskip("ray")
    from experiments.design.config import load_config
    from experiments.study import run_study

    overrides = [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"output_dir={tmp_path}", "train.max_epochs=1",
                 "bootstrap_resamples=0", "attacks=[{name: fgsm, eps: [0.03]}]", "targets=[a]", "surrogates=[b]",
                 QUERIES.replace(f"max_queries: {MAX_QUERIES}", "max_queries: 10").replace("[1, 5, 20]", "[1, 10]")]
    run_study(load_config(preset_path("smoke"), [*overrides, "executor=ray", "ray.cpus_per_task=1"]))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke").experiment_id
    runs = client.search_runs([experiment], "tags.kind = 'query'")
    assert sorted(r.data.tags["start"] for r in runs) == ["b", "clean"]
    assert all(int(r.data.tags["worker"].rpartition(":")[2]) != os.getpid() for r in runs)  # in Ray's workers
    run_study(load_config(preset_path("smoke"), overrides))
    again = client.search_runs([experiment], "tags.kind = 'query'")
    assert {r.info.run_id for r in again} == {r.info.run_id for r in runs}
