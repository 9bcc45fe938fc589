"""A scoring endpoint (MLflow's /invocations JSON protocol) through `requests`, and its score cache.

Everything that comes back is untrusted: a redirect is refused (never followed, so the bearer token
stays with the endpoint's host), the body is streamed up to `max_response_bytes` and read within
one deadline of `timeout` seconds per request, and every answer, fresh or cached, must have the
contract's shape and finite values (in [0, 1] where probabilities are declared) before it is used.
The cache stores each answer with a digest over its request and scores: an entry that is damaged,
tampered with or of the wrong shape is reported in one line, asked again and rewritten.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import numpy as np
import requests
import urllib3

from medcommon.atomic import replaced

from ..design.external import ExternalError

CHUNK = 1 << 16  # bytes read from the socket at a time
DIGEST = hashlib.sha256().digest_size


class Transient(Exception):
    """A failure worth retrying (no connection, a timeout, 429 or a 5xx answer)."""


class ScoreCache:
    """Endpoint answers on disk, one file per request (named by the digest of its images): the sha256 of
    (request key, scores) then the scores as .npy (read with allow_pickle=False), so a rerun never submits
    images an interrupted attempt already had scored, and an entry that does not prove itself is absent."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.scores"

    def get(self, key: str, max_bytes: int) -> np.ndarray | None:
        """The stored scores of request `key`; None if absent; ValueError if the entry is damaged."""
        path = self.path(key)
        if not path.is_file():
            return None
        if path.stat().st_size > max_bytes:
            raise ValueError(f"{path.stat().st_size} bytes, above max_response_bytes {max_bytes}")
        data = path.read_bytes()
        stored, payload = data[:DIGEST], data[DIGEST:]
        if stored != hashlib.sha256(key.encode() + payload).digest():
            raise ValueError("its digest does not match its request and scores")
        return np.load(io.BytesIO(payload), allow_pickle=False)

    def put(self, key: str, scores: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, scores, allow_pickle=False)
        payload = buffer.getvalue()
        part = self.folder / f"{key}.{os.getpid()}.{threading.get_ident()}.part"
        with replaced(self.path(key), temporary=part):
            part.write_bytes(hashlib.sha256(key.encode() + payload).digest() + payload)


class Endpoint:
    """A scoring endpoint speaking MLflow's /invocations JSON protocol (`{"inputs": array}` in,
    `{"predictions": array}` out): requests of `batch_size` images, at most `concurrency` at once,
    each within a deadline of `timeout` seconds (connecting, sending and reading the whole answer)
    and with `retries` retries (backoff doubling from `backoff` seconds) on connection errors,
    timeouts, 429 and 5xx answers. A bearer token is read from the environment variable `token_env`
    and never logged; redirects are not followed, environment proxies and .netrc are not used.
    `width` (set by `load_external`) is the contract's outputs per image: answers are (N, width), or
    (N,) for one output. `submitted` counts every image sent (retries included), `cached` the images
    answered from the score cache."""

    def __init__(self, name: str, settings: dict, cache: ScoreCache | None = None):
        url = str(settings["uri"]).rstrip("/")
        self.url = url if url.endswith("/invocations") else url + "/invocations"
        self.where, self.cache = f"models.{name}.external ({self.url})", cache
        self.batch_size, self.concurrency = int(settings["batch_size"]), int(settings["concurrency"])
        self.timeout, self.backoff = float(settings["timeout"]), float(settings["backoff"])
        self.retries, self.max_bytes = int(settings["retries"]), int(settings["max_response_bytes"])
        self.probabilities = settings.get("output", {}).get("kind") == "probabilities"
        self.width: int | None = None
        self.headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if settings["token_env"]:
            token = os.environ.get(settings["token_env"])
            if not token:
                raise ExternalError(f"{self.where}: token_env {settings['token_env']} is not set")
            self.headers["Authorization"] = f"Bearer {token}"
        self.submitted = self.cached = 0
        self.lock = threading.Lock()

    @property
    def queries(self) -> int:
        """Images whose scores came from the endpoint: sent now or by an earlier attempt (cached)."""
        return self.submitted + self.cached

    def __call__(self, images: np.ndarray) -> np.ndarray:
        chunks = [images[i:i + self.batch_size] for i in range(0, len(images), self.batch_size)]
        pool = ThreadPoolExecutor(self.concurrency)
        try:
            return np.concatenate(list(pool.map(self.scores, chunks)))
        finally:  # after a failure, requests not yet sent are not sent
            pool.shutdown(wait=True, cancel_futures=True)

    def scores(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        key = hashlib.sha256(repr(images.shape).encode() + images.tobytes()).hexdigest()[:32]
        if self.cache is not None:
            found = self.cached_scores(key, len(images))
            if found is not None:
                with self.lock:
                    self.cached += len(images)
                return found
        scores = self.check(self.post(images), len(images), "answered")
        if self.cache is not None:
            self.cache.put(key, scores)
        return scores

    def cached_scores(self, key: str, count: int) -> np.ndarray | None:
        """The checked cache entry of request `key`, or None (absent, or damaged: one warning line)."""
        try:
            found = self.cache.get(key, self.max_bytes)
            return None if found is None else self.check(found, count, "cached")
        except (ValueError, OSError, ExternalError) as err:
            problem = (str(err).splitlines() or [type(err).__name__])[0][:200]
            print(f"{self.where}: score cache entry {self.cache.path(key)} is damaged ({problem}); "
                  "asking the endpoint again", file=sys.stderr)
            return None

    def check(self, scores, count: int, what: str) -> np.ndarray:
        """`scores` as float32 if they are `count` images' scores of the contract's width, finite, and in
        [0, 1] where probabilities are declared; ExternalError naming the endpoint otherwise."""
        array = np.asarray(scores) if isinstance(scores, np.ndarray) else _numeric(scores)
        if array is None or array.dtype.kind not in "iuf":
            raise ExternalError(f"{self.where}: {what} something other than numbers")
        if self.width is None:
            fits, wanted = array.ndim in (1, 2) and len(array) == count, f"({count},) or ({count}, outputs)"
        else:
            shapes = ([(count,)] if self.width == 1 else []) + [(count, self.width)]
            fits, wanted = array.shape in shapes, " or ".join(map(str, shapes))
        if not fits:
            raise ExternalError(f"{self.where}: {what} scores of shape {array.shape} for {count} images "
                                f"(the contract's shape: {wanted})")
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ExternalError(f"{self.where}: {what} NaN or infinite scores")
        if self.probabilities and (array.min(initial=0) < 0 or array.max(initial=0) > 1):
            raise ExternalError(f"{self.where}: {what} values in [{array.min():.3g}, {array.max():.3g}], but the "
                                "contract declares probabilities")
        return array

    def post(self, images: np.ndarray):
        """The endpoint's predictions for `images` (parsed JSON, not checked yet)."""
        body = json.dumps({"inputs": images.tolist()}).encode()
        problem = ""
        with requests.Session() as session:
            session.trust_env = False  # no proxies or .netrc credentials from the environment
            for attempt in range(self.retries + 1):
                if attempt:
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                with self.lock:
                    self.submitted += len(images)
                try:
                    answer = self.answer(session, body)
                    break
                except Transient as err:
                    problem = str(err)
            else:
                raise ExternalError(f"{self.where}: no answer after {self.retries + 1} attempts (last: {problem})")
        return answer.get("predictions") if isinstance(answer, dict) else answer

    def answer(self, session: requests.Session, body: bytes):
        """One request's parsed answer; Transient for what a retry may cure, ExternalError otherwise."""
        deadline = time.monotonic() + self.timeout
        try:
            with session.post(self.url, data=body, headers=self.headers, timeout=urllib3.Timeout(total=self.timeout),
                              allow_redirects=False, stream=True) as response:
                status = f"HTTP {response.status_code} {str(response.reason)[:80]}"  # the server's words, cut
                if 300 <= response.status_code < 400:
                    target = urlsplit(urljoin(self.url, response.headers.get("Location", ""))).netloc or "nowhere"
                    raise ExternalError(f"{self.where}: redirected to {target[:200]}; not followed")
                if response.status_code == 429 or response.status_code >= 500:
                    raise Transient(status)
                if response.status_code >= 400:
                    raise ExternalError(f"{self.where}: the endpoint refused the request ({status})")
                if response.status_code != 200:
                    raise ExternalError(f"{self.where}: answered {status}, not 200 with scores")
                data = self.read(response, deadline)
        except requests.Timeout:
            raise Transient(f"timed out (timeout {self.timeout:g} s)") from None
        except requests.RequestException as err:  # no connection, reset, a broken chunked body
            raise Transient(str(err).splitlines()[0][:200] or type(err).__name__) from None
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            raise ExternalError(f"{self.where}: answered {len(data)} bytes that are not JSON") from None

    def read(self, response: requests.Response, deadline: float) -> bytes:
        """The body, at most `max_bytes` (the declared length is checked first) and before `deadline`."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise ExternalError(f"{self.where}: answer of {declared} bytes refused (max_response_bytes "
                                f"{self.max_bytes})")
        parts, size = [], 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Transient(f"timed out (the answer not read within timeout {self.timeout:g} s)")
            sock = getattr(response.raw.connection, "sock", None)
            if sock is not None:  # no single read may outlast the request's deadline
                sock.settimeout(left)
            try:
                part = response.raw.read1(CHUNK, decode_content=True)  # decoded output bounded by CHUNK
            except (TimeoutError, urllib3.exceptions.ReadTimeoutError):
                raise Transient(f"timed out (the answer not read within timeout {self.timeout:g} s)") from None
            except (OSError, urllib3.exceptions.HTTPError) as err:
                raise Transient(f"the answer broke off ({str(err)[:200] or type(err).__name__})") from None
            if not part:
                return b"".join(parts)
            parts.append(part)
            size += len(part)
            if size > self.max_bytes:
                raise ExternalError(f"{self.where}: answer stopped past max_response_bytes {self.max_bytes}")


def _numeric(value) -> np.ndarray | None:
    """A parsed JSON value as an array, None when it is no rectangular array."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return None
