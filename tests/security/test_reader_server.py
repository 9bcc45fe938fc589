"""Hostile requests to the reader-study server, over a real socket, and hostile `medtransfer readers`
command lines: every outcome is a 2xx or 4xx JSON answer with at most one log line each, never a
5xx, a traceback or a hang; a refused command line is one line and leaves nothing behind."""
import http.client
import json
import socket
import threading
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from attacks import AdversarialSetCache
from experiments.cli import main
from experiments.design.config import preset_path
from experiments.execution.evaluation import TestSet
from experiments.reader_study.answers import AnswerStore
from experiments.reader_study.plan import ReaderPlan, StoredSet
from experiments.reader_study.server import TOKEN_HEADER, ReaderServer
from experiments.reader_study.session import ReaderSessions, load_secret
from experiments.reader_study.stimuli import Stimuli

READ_TIMEOUT = 0.25  # seconds: the server's limit on each read in these tests
IMAGES, MAX_NEW = 12, 5


def stored_set(root, clean: torch.Tensor, key: str) -> AdversarialSetCache:
    """A real set file: each clean batch plus a signed perturbation of 8 grey levels."""
    cache = AdversarialSetCache(root)

    def fill(write):
        for batch in clean.split(4):
            noise = torch.sign(torch.randn(batch.shape, generator=torch.Generator().manual_seed(1)))
            write(batch, (batch + 8 / 255 * noise).clamp(0, 1))

    cache.ensure(key, 0, fill)
    return cache


def sessions_in(folder, readers=None) -> ReaderSessions:
    """The real sessions of a small stored set (answers and secret in `folder`; made again after a
    'restart' from the same folder)."""
    clean = torch.rand(IMAGES, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    test = TestSet(DataLoader(TensorDataset(clean, torch.zeros(IMAGES)), batch_size=4), torch.zeros(IMAGES),
                   "binary", ["a", "b"], list(range(IMAGES)))
    plan = ReaderPlan([StoredSet("set0", "fgsm", 8 / 255, "s", 0)], IMAGES, 0, IMAGES, 2)
    cache = stored_set(folder / "sets", clean, "set0")
    return ReaderSessions(plan, Stimuli(plan, test, cache), AnswerStore(folder / "answers.jsonl"),
                          load_secret(folder / "secret"), 4, readers, MAX_NEW)


class Served:
    def __init__(self, sessions: ReaderSessions):
        self.sessions = sessions
        self.server = ReaderServer(sessions, port=0, read_timeout=READ_TIMEOUT)
        self.port = self.server.server_port
        self.host = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def raw(self, request: bytes, timeout: float = 10) -> tuple[int, dict]:
        """Send raw bytes; (status, JSON body) of the answer, which must come within `timeout`."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(request)
            reply = http.client.HTTPResponse(sock)
            reply.begin()
            body = reply.read()
        assert reply.getheader("Content-Type") in ("application/json", "text/html; charset=utf-8", "image/png")
        return reply.status, json.loads(body) if reply.getheader("Content-Type") == "application/json" else {}

    def post(self, path: str, body: bytes | dict, headers: dict | None = None, timeout: float = 10):
        body = json.dumps(body).encode() if isinstance(body, dict) else body
        headers = {"Host": self.host, "Content-Type": "application/json", "Content-Length": str(len(body)),
                   **(headers or {})}
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if v is not None)
        return self.raw(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body, timeout)

    def start(self, reader: str) -> dict:
        status, state = self.post("/api/start", {"reader": reader})
        assert status == 200, state
        return state


@pytest.fixture
def served(tmp_path):
    serving = Served(sessions_in(tmp_path))
    yield serving
    serving.close()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    serving = Served(sessions_in(tmp_path_factory.mktemp("fuzzed")))
    yield serving
    serving.close()


def only_error_lines(err: str) -> list[str]:
    lines = err.strip().splitlines()
    assert all(line.startswith("reader server: ") for line in lines) and "Traceback" not in err, err
    return lines


def test_a_deeply_nested_body_is_refused_by_the_schema(served, capfd):
    status, reply = served.post("/api/start", b'{"reader": ' + b"[" * 2000 + b"]" * 2000 + b"}")
    assert status == 413 and "Content-Length" in reply["error"]
    status, reply = served.post("/api/start", b'{"reader": ' + b"[" * 500 + b"]" * 500 + b"}")
    assert status == 400 and "recursion limit" in reply["error"]
    status, reply = served.post("/api/start", {"reader": {"nested": "x"}})
    assert status == 400 and reply["error"].startswith("request body: reader:")
    assert len(only_error_lines(capfd.readouterr().err)) == 3


@pytest.mark.parametrize("length, status", [("12abc", 400), ("-5", 400), ("1e3", 400), ("99999999999", 413),
                                            ("", 400), ("2000", 413), (None, 411)])
def test_a_content_length_that_is_not_a_whole_number_in_range_is_refused(served, capfd, length, status):
    got, reply = served.post("/api/start", {"reader": "ann"}, {"Content-Length": length})
    assert got == status and "Content-Length" in reply["error"]
    assert len(only_error_lines(capfd.readouterr().err)) == 1


def test_an_overstated_length_is_cut_off_by_the_read_timeout_and_the_server_goes_on(served, capfd):
    started = time.monotonic()
    status, reply = served.post("/api/start", b'{"reader": "ann"}', {"Content-Length": "500"}, timeout=5)
    assert status == 408 and time.monotonic() - started < 5
    with socket.create_connection(("127.0.0.1", served.port)) as idle:  # sends nothing at all
        idle.settimeout(5)
        assert served.start("ann")["done"] == 0  # another connection is served meanwhile
        assert idle.recv(100) == b""  # then the idle one is closed, silently
    assert len(only_error_lines(capfd.readouterr().err)) == 1


@pytest.mark.parametrize("headers, status, culprit", [
    ({"Origin": "http://evil.example"}, 403, "Origin"),
    ({"Origin": "null"}, 403, "Origin"),
    ({"Host": None}, 400, "Host"),
    ({"Host": "evil.example:{port}"}, 421, "Host"),
    ({"Host": "127.0.0.1:1"}, 421, "Host"),
    ({"Content-Type": "text/plain"}, 415, "Content-Type"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
    ({"Content-Type": None}, 415, "Content-Type"),
    ({TOKEN_HEADER: None}, 403, "token"),
    ({TOKEN_HEADER: "0" * 32 + "." + "0" * 32}, 403, "token"),
])
def test_an_answer_from_another_page_or_without_the_sessions_token_is_refused(served, capfd, headers, status, culprit):
    """What a cross-site page (a form, a text/plain fetch, a DNS-rebound name) could send is refused,
    and nothing is stored; the same answer from the page itself is taken."""
    state = served.start("ann")
    body = {"reader": "ann", "trial": state["trial"]["id"], "choice": "left"}
    headers = {k: v.format(port=served.port) if v else v for k, v in headers.items()}
    got, reply = served.post("/api/answer", body, {TOKEN_HEADER: state["token"], **headers})
    assert got == status and culprit in reply["error"]
    assert served.sessions.store.answered("ann") == 0
    assert len(only_error_lines(capfd.readouterr().err)) == 1
    origin = {"Origin": f"http://{served.host}"}
    got, reply = served.post("/api/answer", body, {TOKEN_HEADER: state["token"], **origin})
    assert got == 200 and reply["done"] == 1 and served.sessions.store.answered("ann") == 1


def test_the_token_of_one_reader_does_not_answer_for_another(served):
    ann, ben = served.start("ann"), served.start("ben")
    body = {"reader": "ben", "trial": ben["trial"]["id"], "choice": "left"}
    assert served.post("/api/answer", body, {TOKEN_HEADER: ann["token"]})[0] == 403
    assert served.post("/api/answer", body, {TOKEN_HEADER: ben["token"]})[0] == 200


def test_made_up_pseudonyms_are_capped_and_known_ones_still_taken(served, capfd):
    state = served.start("known")
    served.post("/api/answer", {"reader": "known", "trial": state["trial"]["id"], "choice": "none"},
                {TOKEN_HEADER: state["token"]})
    restarted = Served(sessions_in(served.sessions.store.path.parent))  # a new server: the cap starts again
    try:
        statuses = [restarted.post("/api/start", {"reader": f"made-up-{i}"})[0] for i in range(3 * MAX_NEW)]
        assert statuses == [200] * MAX_NEW + [403] * 2 * MAX_NEW
        assert restarted.start("known")["done"] == 1  # a reader with answers is no new pseudonym
        assert len(restarted.sessions.plans) == MAX_NEW + 1
    finally:
        restarted.close()
    lines = only_error_lines(capfd.readouterr().err)
    assert len(lines) == 2 * MAX_NEW and "--max-new-readers" in lines[-1]


def test_with_a_list_of_readers_only_those_are_taken(tmp_path):
    listed = Served(sessions_in(tmp_path, readers=frozenset({"ann"})))
    try:
        assert listed.start("ann")["done"] == 0
        status, reply = listed.post("/api/start", {"reader": "ben"})
        assert status == 403 and "'ben'" in reply["error"] and "--readers" in reply["error"]
    finally:
        listed.close()


def test_the_sides_follow_the_secret_and_a_restart_keeps_the_open_page_going(tmp_path):
    """The stored attacked sides are those drawn under this server's secret (`secret` beside the
    answers), not those any other secret gives; a restart from the same folder takes the open page's
    token and trial id as they were."""
    served = Served(sessions_in(tmp_path))
    state = served.start("ann")
    for choice in ["left", "right", "left"]:
        state = served.post("/api/answer", {"reader": "ann", "trial": state["trial"]["id"], "choice": choice},
                            {TOKEN_HEADER: state["token"]})[1] | {"token": state["token"]}
    served.close()
    folder = tmp_path
    secret = (folder / "secret").read_text().strip()
    assert len(secret) == 64 and (folder / "secret").stat().st_mode & 0o077 == 0
    stored = [a["attacked"] for a in served.sessions.store.records]
    plan = served.sessions.plan
    assert stored == [t.attacked for t in plan.trials("ann", bytes.fromhex(secret))][:3]
    others = [[t.attacked for t in plan.trials("ann", bytes([k]) * 32)][:12] for k in range(8)]
    assert any(o != [t.attacked for t in plan.trials("ann", bytes.fromhex(secret))][:12] for o in others)
    again = Served(sessions_in(folder))
    try:
        body = {"reader": "ann", "trial": state["trial"]["id"], "choice": "none"}
        status, reply = again.post("/api/answer", body, {TOKEN_HEADER: state["token"]})
        assert status == 200 and reply["done"] == 4
    finally:
        again.close()


def test_a_damaged_secret_or_answers_file_is_one_line_naming_it(tmp_path):
    (tmp_path / "secret").write_text("not hex")
    with pytest.raises(ValueError, match=r"secret: not a reader-study secret"):
        load_secret(tmp_path / "secret")
    (tmp_path / "answers.jsonl").write_text('{"reader": "ann"}\n')
    with pytest.raises(ValueError, match=r"answers.jsonl: line 1 is not an answer record"):
        AnswerStore(tmp_path / "answers.jsonl")


# capfd is read (and so emptied) in every example
FUZZ = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60)


@FUZZ
@given(body=st.one_of(st.binary(max_size=300), st.recursive(
           st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
           max_leaves=30).map(lambda v: json.dumps(v).encode()),
           st.integers(1, 3000).map(lambda depth: b'{"reader": ' + b"[" * depth + b"]" * depth + b"}")),
       path=st.sampled_from(["/api/start", "/api/answer", "/api/other", "/"]))
def test_fuzzed_bodies_get_a_json_answer_with_a_2xx_or_4xx(fuzzed, capfd, body, path):
    status, reply = fuzzed.post(path, body, {TOKEN_HEADER: "x"})
    assert 200 <= status < 300 or 400 <= status < 500
    assert status == 200 or "error" in reply
    only_error_lines(capfd.readouterr().err)


@FUZZ
@given(length=st.one_of(st.integers(0, 1100).map(str), st.integers(-10**9, 10**9).map(str), HEADER_TEXT),
       host=st.one_of(st.none(), st.just("{host}"), HEADER_TEXT),
       origin=st.one_of(st.none(), st.just("http://{host}"), HEADER_TEXT),
       kind=st.one_of(st.none(), st.just("application/json; charset=utf-8"), HEADER_TEXT),
       extra=st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True), HEADER_TEXT, max_size=4))
def test_fuzzed_headers_and_lengths_get_a_json_answer_in_time(fuzzed, capfd, length, host, origin, kind, extra):
    """Any Content-Length, Host, Origin, Content-Type and other headers: an answer (a refusal within
    the read timeout where the body is shorter than announced), never a 5xx or a hang."""
    body = b'{"reader": "fuzz"}'
    headers = {**extra, "Content-Length": length, "Host": host and host.format(host=fuzzed.host),
               "Origin": origin and origin.format(host=fuzzed.host), "Content-Type": kind}
    started = time.monotonic()
    status, reply = fuzzed.post("/api/start", body, headers, timeout=5 * READ_TIMEOUT + 5)
    assert 200 <= status < 300 or 400 <= status < 500, reply
    assert time.monotonic() - started < 5 * READ_TIMEOUT + 5
    only_error_lines(capfd.readouterr().err)


@FUZZ
@given(length=st.one_of(st.integers(0, 1100), st.integers(-10**12, 10**12)).map(str), body=st.binary(max_size=100))
def test_fuzzed_content_lengths_are_answered_within_the_read_timeout(fuzzed, capfd, length, body):
    """A well-formed request from the page but for its Content-Length: a short body is cut off by the
    server's read timeout (408), a long one read as far as announced; never a 5xx or a hang."""
    started = time.monotonic()
    status, reply = fuzzed.post("/api/start", body, {"Content-Length": length}, timeout=4 * READ_TIMEOUT + 5)
    assert 200 <= status < 300 or 400 <= status < 500, reply
    if 0 <= int(length) <= 1024 and len(body) < int(length):
        assert status == 408
    assert time.monotonic() - started < 4 * READ_TIMEOUT + 5
    only_error_lines(capfd.readouterr().err)


@FUZZ
@given(line=st.binary(max_size=200))
def test_fuzzed_request_lines_get_a_json_refusal(fuzzed, capfd, line):
    try:
        status, reply = fuzzed.raw(line + b"\r\nHost: " + fuzzed.host.encode() + b"\r\n\r\n", timeout=5)
    except http.client.HTTPException:  # the server closed without a word: an idle or empty request
        status = None
    assert status is None or 200 <= status < 300 or 400 <= status < 500
    only_error_lines(capfd.readouterr().err)


STUDY = ("train.max_epochs=1", "surrogates=[a]", "targets=[a]", "attacks=[{name: fgsm, eps: [0.03]}]")


@pytest.fixture(scope="module")
def ran_study(smoke_config, tmp_path_factory):
    """A smoke study that has run (its store and one stored set), for `medtransfer readers`."""
    from experiments import run_study

    root = tmp_path_factory.mktemp("ran_study")
    run_study(smoke_config(root, *STUDY))
    return root


def listing(root) -> dict:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow  # the study runs first: about 20 s here
@pytest.mark.parametrize("options, overrides, culprit", [
    (["--port", "70000"], [], "--port: 70000"),
    (["--port", "-1"], [], "--port: -1"),
    (["--host", "nohost.invalid"], [], "'nohost.invalid'"),
    (["--port", "{busy}"], [], "cannot listen on '127.0.0.1', {busy}"),
    ([], ["tracking.uri=sqlite:///{root}/elsewhere/mlflow.db"], "elsewhere/mlflow.db: no MLflow store"),
    (["--readers", "ann,b c"], [], "--readers: 'b c'"),
])
def test_a_bad_readers_command_line_is_one_line_and_leaves_nothing_behind(ran_study, capsys, options, overrides,
                                                                          culprit):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        fill = {"busy": busy.getsockname()[1], "root": ran_study}
        before = listing(ran_study)
        code = main(["readers", "--config", str(preset_path("smoke")), *[o.format(**fill) for o in options],
                     f"tracking.uri=sqlite:///{ran_study / 'mlflow.db'}", f"output_dir={ran_study}", *STUDY,
                     *[o.format(**fill) for o in overrides]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and culprit.format(**fill) in err[0], err
    assert listing(ran_study) == before  # no secret, no answers folder, no store, no lock file
    assert not (ran_study / "elsewhere").exists() and not (ran_study / "smoke" / "readers").exists()


@pytest.mark.slow  # the study runs first, then a server process starts: about 40 s here
def test_the_readers_command_serves_the_stored_study_and_logs_it_on_sigterm(ran_study, tmp_path):
    """The positive case beside the refusals: the same command line with good options serves the
    page (an answer through the API is stored), and SIGTERM ends it with the MLflow run logged."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{ran_study / 'mlflow.db'}"
    server = subprocess.Popen([sys.executable, "-m", "experiments", "readers", "--config", str(preset_path("smoke")),
                               "--port", "0", "--readers", "ann", f"tracking.uri={uri}", f"output_dir={ran_study}",
                               *STUDY], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        for line in server.stdout:
            if line.strip().startswith("http://"):
                port = int(line.strip().rstrip("/").rsplit(":", 1)[1])
                break
        else:
            pytest.fail(server.stderr.read()[-2000:])
        client = Served.__new__(Served)
        client.port, client.host = port, f"127.0.0.1:{port}"
        state = client.start("ann")
        status, reply = client.post("/api/answer", {"reader": "ann", "trial": state["trial"]["id"], "choice": "left"},
                                    {TOKEN_HEADER: state["token"]})
        assert status == 200 and reply["done"] == 1
        assert client.post("/api/start", {"reader": "ben"})[0] == 403
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=120)
    assert server.returncode == 0, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("reader server: ")]
    assert len(lines) == 1 and "'ben'" in lines[0] and "Traceback" not in err
    (run,) = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("smoke").experiment_id],
                                           "tags.kind = 'readers'")
    assert run.data.metrics["answers"] == 1 and run.info.run_id in out
