"""External models (issue 25): one trained zoo model exported as a torch.export archive, as ONNX, as a
registered MLflow model and served by a real `mlflow models serve`, attacked by transfer from another
zoo model; every format gives the in-process model's numbers. A small local HTTP server in front of
the served model fails, answers wrong shapes or answers slowly on demand."""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from experiments.design.config import ConfigError
from experiments.design.external import FORMATS, ExternalError
from experiments.execution import read_data
from experiments.execution.endpoint import Endpoint
from experiments.execution.external import LOADERS, load_external
from experiments.execution.loaders.pt2 import check_pt2
from experiments.execution.training import train_model
from experiments.preflight.checks import StudyProblems
from experiments.preflight.externals import pin_externals
from experiments.study import run_study
from experiments.preflight.facts import study_facts

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = ["train.max_epochs=1", "bootstrap_resamples=50"]
CONTRACT = {"input": {"size": 16, "channels": 3}, "output": {"kind": "logits"}}
AGREEING = ["auc_clean", "auc_adv", "auc_control", "auc_pct_clean", "asr_correct", "asr_all", "auc_adv_lo",
            "auc_adv_hi"]


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proxy:
    """A local HTTP server in front of the served model: forwards /invocations, counting the images
    it was sent; `mode` makes it fail (503), answer a wrong shape, or answer after `delay` seconds;
    `fail_after` images forwarded, it fails every request."""

    def __init__(self, target: str):
        self.target, self.mode, self.delay, self.fail_after, self.received = target, "ok", 0.0, None, 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                images = len(json.loads(body)["inputs"])
                proxy.received += images
                failing = proxy.mode == "fail" or (proxy.fail_after is not None and proxy.received > proxy.fail_after)
                if failing:
                    return self.answer(503, b'{"error": "down"}')
                if proxy.mode == "slow":
                    time.sleep(proxy.delay)
                request = urllib.request.Request(proxy.target + "/invocations", body,
                                                 {"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
                if proxy.mode == "shape":
                    answer["predictions"] = answer["predictions"][:-1]
                self.answer(200, json.dumps(answer).encode())

            def answer(self, code, data):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, smoke_config):
    """The smoke preset's model `a` trained and registered, exported as .pt2 and ONNX, and served."""
    root = tmp_path_factory.mktemp("external")
    cfg = smoke_config(root, *OVERRIDES, "tracking.register_models=true")
    data = read_data(cfg)
    model = train_model(cfg, cfg.models[0], data, study_facts(cfg, data.cache)).module.model.eval()
    split = data.datamodule("d1")
    split.setup()
    images, _ = next(iter(split.test_dataloader()))
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (images,), dynamic_shapes=({0: batch},))
    torch.export.save(program, root / "a.pt2")
    torch.onnx.export(model, (images,), str(root / "a.onnx"), dynamo=True, dynamic_shapes=({0: batch},),
                      input_names=["images"], output_names=["logits"])
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.tracking.uri,  # the scoring server is the venv's uvicorn
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    log = open(root / "serve.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", "models:/smoke.a/1",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{url}/ping", timeout=2).close()
            break
        except (OSError, urllib.error.HTTPError):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"mlflow models serve did not start: {(root / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)
    try:
        yield {"root": root, "cfg": cfg, "data": data, "model": model, "url": url,
               "test_size": len(split.indices["test"])}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def external_models(root: Path, url: str, names=("a", "b", "a_pt2", "a_onnx", "a_mlflow", "a_http"),
                    **endpoint) -> list[str]:
    """Config overrides: model `a` in every external format (`names` of them), as targets of surrogate
    `b`; `endpoint`: settings of `a_http`."""
    models = [{"name": "a", "arch": "tiny_cnn", "init": "random", "dev_set": "d1", "instance": 0},
              {"name": "b", "arch": "tiny_cnn", "init": "random", "dev_set": "d2", "instance": 0},
              {"name": "a_pt2", "external": {"format": "export", "path": str(root / "a.pt2"), **CONTRACT}},
              {"name": "a_onnx", "external": {"format": "onnx", "path": str(root / "a.onnx"), **CONTRACT}},
              {"name": "a_mlflow", "external": {"format": "mlflow", "uri": "models:/smoke.a/1", "trust_code": True,
                                                "output": {"kind": "probabilities"}}},
              {"name": "a_http", "external": {"format": "http", "uri": url, "batch_size": 16,
                                              "output": {"kind": "probabilities"}, **endpoint}}]
    models = [m for m in models if m["name"] in names]
    targets = ",".join(n for n in names if n != "b")
    return [f"models={json.dumps(models)}", "surrogates=[b]", f"targets=[{targets}]",
            "attacks=[{name: ifgsm, eps: [0.02], params: {alpha: 0.005, steps: 3}}]"]


def test_every_format_gives_the_in_process_numbers(exported, smoke_config):
    root, url = exported["root"], exported["url"]
    proxy = Proxy(url)
    cfg = smoke_config(root, *OVERRIDES, *external_models(root, proxy.url))
    table = run_study(cfg).table.set_index("target")
    test_size = exported["test_size"]
    for target in ("a_pt2", "a_onnx", "a_mlflow", "a_http"):
        for metric in AGREEING:
            assert abs(table.loc[target, metric] - table.loc["a", metric]) < 1e-4, (target, metric)
    client = MlflowClient(cfg.tracking.uri)
    [served] = client.search_runs([client.get_experiment_by_name("smoke").experiment_id],
                                  "tags.kind = 'pair' and tags.`mlflow.runName` LIKE '%a_http%'")
    # adversarial and control images of the pair: each scored by the endpoint once
    assert served.data.metrics["queries"] == 2 * test_size
    # what the endpoint saw: the probe batch, the clean test set, the pair's images, nothing twice
    assert proxy.received == 8 + 3 * test_size
    assert table.loc["a", "auc_adv"] < table.loc["a", "auc_clean"]  # the attack did something to compare

    again = run_study(cfg).table.set_index("target")  # read back: only the probe reaches the endpoint
    assert proxy.received == 16 + 3 * test_size
    assert (again.loc[:, "run_id"] == table.loc[:, "run_id"]).all()


def test_an_endpoint_failing_mid_pair_leaves_no_finished_run_and_the_rerun_resumes(exported, smoke_config,
                                                                                  tmp_path):
    root, url = exported["root"], exported["url"]
    proxy = Proxy(url)
    cfg = smoke_config(tmp_path, *OVERRIDES, *external_models(root, proxy.url, ("b", "a_http"), batch_size=8,
                                                              concurrency=1, retries=1, backoff=0.05))
    test_size = exported["test_size"]
    proxy.fail_after = 8 + test_size + 24  # probe, clean scores, then three requests of the pair
    with pytest.raises(ExternalError, match=r"models\.a_http\.external .*no answer after 2 attempts .*HTTP 503"):
        run_study(cfg)
    client = MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name("smoke").experiment_id
    assert not [r for r in client.search_runs([experiment], "tags.kind = 'pair'") if r.info.status == "FINISHED"]
    first = proxy.received
    proxy.fail_after, proxy.received = None, 0
    run_study(cfg)
    [pair] = client.search_runs([experiment], "tags.kind = 'pair' and attributes.status = 'FINISHED'")
    assert pair.data.metrics["queries"] == 2 * test_size
    # the rerun sent the probe and only the pair's images the failed attempt had not had scored
    assert proxy.received == 8 + 2 * test_size - 24
    # the failing request was sent twice (one retry); the worker may have started the next one (also
    # failing) before the failure stopped the rest
    assert first in (8 + test_size + 24 + 2 * 8, 8 + test_size + 24 + 4 * 8)


def test_endpoint_errors_are_one_line_naming_the_model(exported):
    proxy = Proxy(exported["url"])
    settings = {"uri": proxy.url, "batch_size": 4, "concurrency": 2, "timeout": 0.3, "retries": 1, "backoff": 0.01,
                "token_env": "", "max_response_bytes": 1 << 20}
    images = np.random.default_rng(0).random((6, 3, 16, 16), dtype=np.float32)
    proxy.mode = "shape"
    with pytest.raises(ExternalError, match=r"^models\.m\.external \(.*\): answered scores of shape \(3,\) for 4 "
                                            r"images \(the contract's shape: \(4,\) or \(4, outputs\)\)$"):
        Endpoint("m", settings)(images)
    proxy.mode, proxy.delay = "slow", 1.0
    with pytest.raises(ExternalError, match=r"no answer after 2 attempts \(last: .*timed out"):
        Endpoint("m", settings)(images)
    proxy.mode = "ok"
    endpoint = Endpoint("m", settings)
    np.testing.assert_allclose(endpoint(images), torch.sigmoid(exported["model"](torch.as_tensor(images))).squeeze(1)
                               .detach().numpy(), atol=1e-6)
    assert endpoint.submitted == 6
    with pytest.raises(ExternalError, match="token_env MEDTRANSFER_NO_SUCH_TOKEN is not set"):
        Endpoint("m", {**settings, "token_env": "MEDTRANSFER_NO_SUCH_TOKEN"})


def test_a_contract_that_does_not_match_is_one_line_before_any_work(exported, smoke_config, tmp_path):
    root = exported["root"]
    bad = [{"name": "wide", "external": {"format": "onnx", "path": str(root / "a.onnx"),
                                         "output": {"labels": ["normal", "tumour"]}}},
           {"name": "probs", "external": {"format": "export", "path": str(root / "a.pt2"),
                                          "output": {"kind": "probabilities"}}}]
    cfg = smoke_config(tmp_path, f"models={json.dumps(bad)}")
    with pytest.raises(StudyProblems) as raised:
        pin_externals(cfg, exported["data"], study_facts(cfg, exported["data"].cache))
    assert raised.value.problems[0] == "models.wide.external.output: the model gives 1 outputs, the contract 2"
    assert raised.value.problems[1].startswith("models.probs.external.output.kind: probabilities, but the model "
                                               "gives values in [")
    with pytest.raises(ConfigError, match=r"surrogates: 'wide' is an external onnx model, which gives no gradients"):
        smoke_config(tmp_path, f"models={json.dumps(bad)}", "surrogates=[wide]")


def test_pickled_payloads_are_refused_never_run(exported, code_payload, tmp_path):
    torch.save(code_payload, tmp_path / "plain.pt2")
    with pytest.raises(ExternalError, match="not a torch.export archive of the current format"):
        check_pt2(tmp_path / "plain.pt2")
    # a real archive whose first weight is swapped for a pickle of code, flagged as pickled
    source, forged = zipfile.ZipFile(exported["root"] / "a.pt2"), zipfile.ZipFile(tmp_path / "forged.pt2", "w")
    for item in source.infolist():
        data = source.read(item.filename)
        if item.filename.endswith("_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True
            data = json.dumps(config).encode()
        forged.writestr(item, data)
    forged.close()
    with pytest.raises(ExternalError, match="is stored pickled"):
        check_pt2(tmp_path / "forged.pt2")
    entry = {"name": "x", "external": {"format": "onnx", "path": str(tmp_path / "plain.pt2"), "device": "cpu",
                                       **CONTRACT, "output": {"kind": "logits", "labels": []}}}
    with pytest.raises(ExternalError, match="not a readable ONNX model"):
        load_external(entry, {"task": "binary", "label_names": ["tumour"], "channels": 3, "size": 16})
    assert not code_payload.marker.exists()


def test_each_format_the_config_accepts_has_one_loader_module():
    """The registry finds a loader for every external format, each in a module of its own."""
    assert sorted(LOADERS) == sorted(FORMATS)
    assert len({loader.__module__ for loader in LOADERS.values()}) == len(FORMATS)
