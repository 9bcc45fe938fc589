"""A scoring endpoint's hostile or wrong answers (issue 31): redirects that would carry the token to
another host, tokens over plain http, NaN, wrong shapes, probabilities outside [0, 1], oversized and
trickled bodies, and tampered score-cache entries. Real HTTP servers on loopback addresses only
(127.0.0.2 is another host); `scoring.example.invalid` is never contacted."""
import hashlib
import io
import json
import pickle
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments.cli import main
from experiments.design.config import preset_path
from experiments.design.external import ExternalError, external_settings
from experiments.execution.endpoint import Endpoint, ScoreCache

TOKEN = "secret-token-31"
IMAGES = np.random.default_rng(31).random((4, 3, 16, 16), dtype=np.float32)


def mean_pixel(images) -> list[float]:
    """What the honest server answers: each image's mean pixel, a probability."""
    return np.asarray(images, dtype=np.float64).mean(axis=(1, 2, 3)).tolist()


class ScoringServer:
    """An /invocations server on `host` (a free port): `answer(images)` gives the status, headers and
    body to send (a bytes iterator for a streamed body, with `pause` seconds between parts); every
    request is recorded as (number of images, Authorization header)."""

    def __init__(self, host: str = "127.0.0.1"):
        self.answer, self.pause, self.requests = self.honest, 0.0, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((len(body["inputs"]), self.headers.get("Authorization")))
                status, headers, data = server.answer(body["inputs"])
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if isinstance(data, bytes):
                    self.send_header("Content-Length", str(len(data)))
                    data = [data]
                self.end_headers()
                try:
                    for part in data:
                        self.wfile.write(part)
                        self.wfile.flush()
                        time.sleep(server.pause)
                except OSError:  # the client stopped reading
                    pass
                self.close_connection = True

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    @staticmethod
    def honest(images):
        return 200, {"Content-Type": "application/json"}, json.dumps({"predictions": mean_pixel(images)}).encode()

    def answers(self, predictions) -> None:
        """Answer every request with `predictions` (any JSON value, NaN allowed) as MLflow does."""
        self.answer = lambda images: (200, {}, json.dumps({"predictions": predictions}).encode())

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    started = ScoringServer()
    yield started
    started.close()


@pytest.fixture(scope="module")
def shared_server():
    """One server for every example of a property."""
    started = ScoringServer()
    yield started
    started.close()


@pytest.fixture
def elsewhere():
    """A server on another host (127.0.0.2), where no request of the study may arrive."""
    started = ScoringServer("127.0.0.2")
    yield started
    started.close()


def endpoint(url: str, cache: Path | None = None, width: int = 1, **keys) -> Endpoint:
    """The endpoint of entry `m` as the study builds it: settings through the schema check."""
    settings = external_settings("m", {"format": "http", "uri": url, "output": {"kind": "probabilities"},
                                       "retries": 0, "backoff": 0.01, **keys})
    built = Endpoint("m", settings, ScoreCache(cache) if cache is not None else None)
    built.width = width
    return built


def one_line(err: ExternalError, url: str) -> str:
    """The error's message, checked to be one line naming the endpoint."""
    message = str(err)
    assert "\n" not in message and message.startswith(f"models.m.external ({url}/invocations): "), message
    return message.split(": ", 1)[1]


def study(tmp_path, *models: dict, extra=()) -> list[str]:
    """CLI arguments of a smoke study whose targets are the external `models` (surrogate `b`)."""
    entries = [{"name": "b", "arch": "tiny_cnn", "init": "random", "dev_set": "d2", "instance": 0}, *models]
    return ["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"output_dir={tmp_path / 'out'}", "train.max_epochs=1", "bootstrap_resamples=20",
            f"models={json.dumps(entries)}", "surrogates=[b]", f"targets=[{','.join(m['name'] for m in models)}]",
            "attacks=[{name: ifgsm, eps: [0.02], params: {alpha: 0.005, steps: 2}}]", *extra]


def http_model(url: str, **keys) -> dict:
    return {"name": "ep", "external": {"format": "http", "uri": url, "output": {"kind": "probabilities"}, **keys}}


def refused(capsys, tmp_path, expected: str) -> str:
    """The CLI's one error line, checked: `expected` in it, no traceback, nothing written."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "out").exists()
    return err[0]


# --- the token stays with the endpoint's host ---------------------------------------------------------

@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_host_is_not_followed(status, server, elsewhere, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_TEST_TOKEN", TOKEN)
    server.answer = lambda images: (status, {"Location": elsewhere.url + "/invocations"}, b"")
    with pytest.raises(ExternalError) as raised:
        endpoint(server.url, token_env="MEDTRANSFER_TEST_TOKEN")(IMAGES)
    host = elsewhere.url.removeprefix("http://")
    assert one_line(raised.value, server.url) == f"redirected to {host}; not followed"
    assert server.requests == [(4, f"Bearer {TOKEN}")] and elsewhere.requests == []


def test_a_study_whose_endpoint_redirects_is_refused_in_one_line(server, elsewhere, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_TEST_TOKEN", TOKEN)
    server.answer = lambda images: (302, {"Location": elsewhere.url + "/invocations"}, b"")
    code = main(study(tmp_path, http_model(server.url, token_env="MEDTRANSFER_TEST_TOKEN")))
    line = refused(capsys, tmp_path, f"redirected to {elsewhere.url.removeprefix('http://')}; not followed")
    assert code == 2 and line.startswith("medtransfer: error: models.ep.external (") and TOKEN not in line
    assert len(server.requests) == 1 and elsewhere.requests == []  # the probe, answered by a redirect


@pytest.mark.parametrize("uri", ["http://scoring.example.invalid", "http://scoring.example.invalid:8080/v1",
                                 "http://10.0.0.7:5001", "http://[2001:db8::1]:5001",
                                 "http://127.0.0.1.example.invalid"])
def test_a_token_over_plain_http_to_another_host_is_refused_before_any_request(uri, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_TEST_TOKEN", TOKEN)
    code = main(study(tmp_path, http_model(uri, token_env="MEDTRANSFER_TEST_TOKEN")))
    line = refused(capsys, tmp_path, f"models.ep.external.uri: {uri!r}; a bearer token (token_env "
                                        "MEDTRANSFER_TEST_TOKEN) is sent over https only")
    assert code == 2 and TOKEN not in line


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5001", "http://127.3.4.5", "http://localhost:5001",
                                 "http://[::1]:5001", "https://scoring.example.invalid"])
def test_a_token_may_go_over_https_or_to_loopback(uri):
    settings = external_settings("m", {"format": "http", "uri": uri, "token_env": "MEDTRANSFER_TEST_TOKEN"})
    assert settings["uri"] == uri  # only checked: nothing is contacted here


@pytest.mark.parametrize("keys, culprit", [
    pytest.param({"uri": "http://user:pw@127.0.0.1:5001"}, "models.ep.external.uri: credentials in the URI are "
                 "refused", id="credentials in the URI"),
    pytest.param({"uri": "ftp://127.0.0.1/x"}, "a scoring endpoint is http(s)://host:port", id="not http"),
    pytest.param({"uri": "http://127.0.0.1:99999"}, "models.ep.external.uri: 'http://127.0.0.1:99999'; not a URL",
                 id="port out of range"),
    pytest.param({"token_env": "A-B;C"}, "models.ep.external.token_env: 'A-B;C'", id="token_env not a name"),
    pytest.param({"max_response_bytes": 0}, "models.ep.external.max_response_bytes: 0; must be a whole number "
                 "at least 1", id="no response size"),
    pytest.param({"max_response_bytes": 1.5}, "models.ep.external.max_response_bytes: 1.5", id="fractional size"),
    pytest.param({"timeout": 0}, "models.ep.external.timeout: 0; must be a finite number above 0", id="no timeout"),
    pytest.param({"timeout": "nan"}, "models.ep.external.timeout: 'nan'", id="timeout nan"),
    pytest.param({"timeout": "inf"}, "models.ep.external.timeout: 'inf'", id="timeout infinite"),
    pytest.param({"backoff": -1}, "models.ep.external.backoff: -1; must be a finite number at least 0",
                 id="negative backoff"),
    pytest.param({"retries": -1}, "models.ep.external.retries: -1; must be a whole number at least 0",
                 id="negative retries"),
    pytest.param({"batch_size": "many"}, "models.ep.external.batch_size: 'many'", id="batch size a word"),
    pytest.param({"concurrency": 0}, "models.ep.external.concurrency: 0", id="no concurrency"),
])
def test_endpoint_settings_out_of_range_are_one_line_before_any_work(keys, culprit, tmp_path, capsys):
    model = http_model("http://127.0.0.1:5001")
    model["external"].update(keys)
    assert main(study(tmp_path, model)) == 2
    refused(capsys, tmp_path, culprit)


# --- answers are checked before use, and never cached when wrong -----------------------------------------

WRONG_ANSWERS = [
    pytest.param([0.5, float("nan"), 0.5, 0.5], "answered NaN or infinite scores", id="NaN"),
    pytest.param([0.5, float("inf"), 0.5, 0.5], "answered NaN or infinite scores", id="infinite"),
    pytest.param([0.5] * 7, "answered scores of shape (7,) for 4 images (the contract's shape: (4,) or (4, 1))",
                 id="7 scores for 4 images"),
    pytest.param([[0.5] * 3] * 4, "answered scores of shape (4, 3) for 4 images (the contract's shape: (4,) or "
                 "(4, 1))", id="3 outputs for 1"),
    pytest.param([[[0.5]]] * 4, "answered scores of shape (4, 1, 1) for 4 images (the contract's shape: (4,) or "
                 "(4, 1))", id="three dimensions"),
    pytest.param([0.5, 1.5, 0.5, 0.5], "answered values in [0.5, 1.5], but the contract declares probabilities",
                 id="probability above 1"),
    pytest.param([0.5, -0.1, 0.5, 0.5], "answered values in [-0.1, 0.5], but the contract declares probabilities",
                 id="probability below 0"),
    pytest.param(["0.5", "0.5", "0.5", "0.5"], "answered something other than numbers", id="strings"),
    pytest.param([True, False, True, False], "answered something other than numbers", id="booleans"),
    pytest.param([[0.5], [0.5, 0.5], [0.5], [0.5]], "answered something other than numbers", id="ragged"),
    pytest.param({"scores": [0.5] * 4}, "answered something other than numbers", id="a mapping"),
    pytest.param(None, "answered something other than numbers", id="null"),
    pytest.param([10 ** 30] * 4, "answered something other than numbers", id="integers beyond 64 bits"),
]


@pytest.mark.parametrize("predictions, problem", WRONG_ANSWERS)
def test_a_wrong_answer_is_one_line_and_not_cached(predictions, problem, server, tmp_path):
    server.answers(predictions)
    with pytest.raises(ExternalError) as raised:
        endpoint(server.url, tmp_path / "cache")(IMAGES)
    assert one_line(raised.value, server.url) == problem
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("body, problem", [(b"<html>busy</html>", "answered 17 bytes that are not JSON"),
                                           (b"[" * 5000 + b"]" * 5000, "answered 10000 bytes that are not JSON")])
def test_an_answer_that_is_not_json_is_one_line(body, problem, server, tmp_path):
    server.answer = lambda images: (200, {}, body)
    with pytest.raises(ExternalError) as raised:
        endpoint(server.url, tmp_path / "cache")(IMAGES)
    assert one_line(raised.value, server.url) == problem
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_contract_width_is_what_an_answer_must_have(server):
    server.answers([[0.2, 0.8]] * 4)
    np.testing.assert_array_equal(endpoint(server.url, width=2)(IMAGES), np.float32([[0.2, 0.8]] * 4))
    with pytest.raises(ExternalError) as raised:
        endpoint(server.url, width=3)(IMAGES)
    assert one_line(raised.value, server.url) == ("answered scores of shape (4, 2) for 4 images (the contract's "
                                                  "shape: (4, 3))")


@pytest.mark.parametrize("nan_from", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_a_study_given_nan_scores_stops_in_one_line(nan_from, server, tmp_path, capsys):
    """NaN on the probe (exit 2, before any work), or from the second request on, mid-study (exit 1,
    after training the surrogate: slow)."""
    honest = server.answer
    server.answer = lambda images: (honest(images) if len(server.requests) <= nan_from else
                                    (200, {}, json.dumps({"predictions": [float("nan")] * len(images)}).encode()))
    code = main(study(tmp_path, http_model(server.url, batch_size=16)))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]  # progress bars aside
    assert code == (2 if nan_from == 0 else 1) and "Traceback" not in err
    assert len(errors) == 1 and re.fullmatch(r"medtransfer: error: models\.ep\.external \(http://127\.0\.0\.1:"
                                             r"\d+/invocations\): answered NaN or infinite scores", errors[0]), errors
    assert not list((tmp_path / "out").rglob("*.scores"))  # the probe's honest answer is never cached


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner,
                                                                                max_size=3),
                    max_leaves=12))
def test_any_json_answer_is_checked_scores_or_one_line(shared_server, predictions):
    """Whatever JSON comes back: four finite probabilities, or one line naming the endpoint."""
    server = shared_server
    server.answers(predictions)
    try:
        scores = endpoint(server.url)(IMAGES)
    except ExternalError as err:
        one_line(err, server.url)
        return
    assert scores.shape in ((4,), (4, 1)) and np.isfinite(scores).all() and (0 <= scores).all() and (scores <= 1).all()
    np.testing.assert_array_equal(scores.reshape(-1), np.float32(predictions).reshape(-1))


# --- size and time bounds -----------------------------------------------------------------------------

def test_a_declared_oversized_body_is_refused_before_reading(server):
    server.answers([0.5] * 4)
    size = len(json.dumps({"predictions": [0.5] * 4}))
    with pytest.raises(ExternalError) as raised:
        endpoint(server.url, max_response_bytes=size - 1)(IMAGES)
    assert one_line(raised.value, server.url) == f"answer of {size} bytes refused (max_response_bytes {size - 1})"
    np.testing.assert_array_equal(endpoint(server.url, max_response_bytes=size)(IMAGES), np.float32([0.5] * 4))


def test_an_endless_body_is_stopped_at_the_cap(server):
    """No Content-Length, then megabytes without end: reading stops past the cap (not at the deadline)."""
    server.answer = lambda images: (200, {"Connection": "close"}, iter(lambda: b"[" + b"0.5, " * 100_000, None))
    start = time.monotonic()
    with pytest.raises(ExternalError) as raised:
        endpoint(server.url, max_response_bytes=1_000_000, timeout=20)(IMAGES)
    assert one_line(raised.value, server.url) == "answer stopped past max_response_bytes 1000000"
    assert time.monotonic() - start < 10


def test_a_trickled_body_is_stopped_by_the_whole_request_deadline(server):
    """A byte every 50 ms: no single read ever waits 0.6 s, but the answer is cut at the 0.6 s deadline."""
    body = json.dumps({"predictions": [0.5] * 4}).encode()
    server.answer = lambda images: (200, {"Content-Length": str(len(body))}, (body[i:i + 1] for i in range(len(body))))
    server.pause = 0.05  # 35 bytes: 1.75 s in all
    start = time.monotonic()
    with pytest.raises(ExternalError) as raised:
        endpoint(server.url, timeout=0.6, retries=1)(IMAGES)
    elapsed = time.monotonic() - start
    message = one_line(raised.value, server.url)
    assert message.startswith("no answer after 2 attempts (last: timed out") and "0.6 s" in message, message
    assert 1.2 <= elapsed < 1.2 + 0.01 + 1.0 and len(server.requests) == 2


@pytest.mark.parametrize("status, attempts", [(503, 3), (429, 3), (500, 3), (401, 1), (404, 1)])
def test_busy_answers_are_retried_refusals_are_not(status, attempts, server):
    server.answer = lambda images: (status, {}, b'{"error": "no"}')
    with pytest.raises(ExternalError) as raised:
        endpoint(server.url, retries=2)(IMAGES)
    message = one_line(raised.value, server.url)
    assert len(server.requests) == attempts
    assert message.startswith("no answer after 3 attempts (last: HTTP " if attempts == 3 else
                              "the endpoint refused the request (HTTP "), message


def test_no_connection_is_retried(unused_port):
    url = f"http://127.0.0.1:{unused_port}"
    built = endpoint(url, retries=1)
    with pytest.raises(ExternalError) as raised:
        built(IMAGES)
    assert one_line(raised.value, url).startswith("no answer after 2 attempts (last: ") and built.submitted == 8


def test_a_server_that_never_answers_is_a_timeout(server):
    def stalled(images):
        time.sleep(2)
        return server.honest(images)

    server.answer = stalled
    start = time.monotonic()
    with pytest.raises(ExternalError) as raised:
        endpoint(server.url, timeout=0.3)(IMAGES)
    assert one_line(raised.value, server.url).startswith("no answer after 1 attempts (last: timed out")
    assert time.monotonic() - start < 1.5


# --- the score cache proves its entries ------------------------------------------------------------------

def test_a_good_answer_is_cached_and_read_back(server, tmp_path):
    first = endpoint(server.url, tmp_path / "cache", batch_size=2)
    np.testing.assert_allclose(first(IMAGES), mean_pixel(IMAGES), rtol=1e-6)
    again = endpoint(server.url, tmp_path / "cache", batch_size=2)
    np.testing.assert_allclose(again(IMAGES), mean_pixel(IMAGES), rtol=1e-6)
    assert [n for n, _ in server.requests] == [2, 2] and (first.submitted, again.cached, again.submitted) == (4, 4, 0)


def tampered(entry: Path, how: str, payload=None) -> None:
    """Change a stored entry: 7 scores for 4 images under a digest recomputed to match, a flipped bit
    in the scores, a truncated file, or a pickle of `payload` in place of the .npy (digest recomputed)."""
    key, data = entry.stem, entry.read_bytes()
    if how == "seven scores":
        buffer = io.BytesIO()
        np.save(buffer, np.full(7, 0.5, dtype=np.float32))
        entry.write_bytes(hashlib.sha256(key.encode() + buffer.getvalue()).digest() + buffer.getvalue())
    elif how == "flipped bit":
        entry.write_bytes(data[:-3] + bytes([data[-3] ^ 0x10]) + data[-2:])
    elif how == "truncated":
        entry.write_bytes(data[:40])
    else:
        data = pickle.dumps(payload)
        entry.write_bytes(hashlib.sha256(key.encode() + data).digest() + data)


@pytest.mark.parametrize("how", ["seven scores", "flipped bit", "truncated", "pickle"])
def test_a_tampered_cache_entry_is_asked_again_and_rewritten(how, server, tmp_path, capsys, code_payload):
    cache = tmp_path / "cache"
    endpoint(server.url, cache)(IMAGES)
    [entry] = cache.iterdir()
    good = entry.read_bytes()
    tampered(entry, how, code_payload)
    again = endpoint(server.url, cache)
    np.testing.assert_allclose(again(IMAGES), mean_pixel(IMAGES), rtol=1e-6)
    assert len(server.requests) == 2 and (again.submitted, again.cached) == (4, 0)
    assert entry.read_bytes() == good and not code_payload.marker.exists()  # rewritten; no code ran
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"models.m.external ({server.url}/invocations): score cache entry "
                                               f"{entry} is damaged (")
    assert err[0].endswith("asking the endpoint again")


@pytest.mark.slow
def test_a_study_rerun_asks_again_for_tampered_entries_only(server, tmp_path, capsys):
    """A study through the CLI, then a rerun into a new store (so the pairs are computed again from the
    score cache): only the probe and the two tampered entries' images reach the endpoint again."""
    args = study(tmp_path, http_model(server.url, batch_size=16))
    assert main(args) == 0
    capsys.readouterr()
    test_images = (sum(n for n, _ in server.requests) - 8) // 3  # probe, clean test set, adversarial + control
    entries = sorted((tmp_path / "out").rglob("*.scores"))
    assert len(entries) >= 3
    sizes = [len(np.load(io.BytesIO(e.read_bytes()[32:]))) for e in entries[:2]]
    tampered(entries[0], "seven scores")
    tampered(entries[1], "flipped bit")
    server.requests.clear()
    assert main([a.replace("mlflow.db", "again.db") for a in args]) == 0
    captured = capsys.readouterr()
    assert sorted(n for n, _ in server.requests) == sorted([8, *sizes])
    warnings = [line for line in captured.err.splitlines() if "score cache entry" in line]
    assert len(warnings) == 2 and all(line.endswith("asking the endpoint again") for line in warnings)
    first, again = (pair_metrics(f"sqlite:///{tmp_path / name}") for name in ("mlflow.db", "again.db"))
    assert first == again and first["queries"] == 2 * test_images


def pair_metrics(uri: str) -> dict:
    """The pair's numbers in a store: the same answers give the same numbers."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    [pair] = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], "tags.kind = 'pair'")
    keys = ("auc_clean", "auc_adv", "auc_control", "asr_correct", "asr_all", "queries")
    return {key: pair.data.metrics[key] for key in keys}
