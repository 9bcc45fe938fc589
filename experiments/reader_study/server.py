"""The reader study's web server (standard library, bodies checked by a pydantic schema): the static
page, the reader API and the images.

Every image response is built the same way (same headers, same length for one study's images, no
caching, no validators), so nothing but the pixels tells the two sides of a trial apart.

Everything a browser sends is checked before it is used: every read of a connection has a time
limit; `Host` must name the served address and a POST's `Origin`, when sent, that same address;
a POST must be `application/json` (so a cross-site page cannot send one without a CORS preflight,
which is never granted) with a whole-number `Content-Length` up to `MAX_BODY`; its body must be a
flat JSON object of short strings; an answer must carry its session's token (`TOKEN_HEADER`). Each
refusal is one JSON answer with a 4xx status and one line on stderr; nothing else is logged."""
from __future__ import annotations

import ipaddress
import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .limits import MAX_BODY, READ_TIMEOUT
from .session import ReaderSessions

PAGE = resources.files(__package__).joinpath("page.html").read_bytes()
COMMON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                  "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
TOKEN_HEADER = "X-Reader-Token"


class Refused(Exception):
    """A request that is answered with `status` and the one-line `message`."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reader: str = Field(max_length=40)


class AnswerBody(StartBody):
    trial: str = Field(max_length=64)
    choice: str = Field(max_length=8)


BODIES = {"/api/start": StartBody, "/api/answer": AnswerBody}


def shown(value: str, limit: int = 40) -> str:
    """A header value or path as it may appear in a refusal: quoted, escaped, cut short."""
    return ascii(value[:limit] + ("..." if len(value) > limit else ""))


def body_length(value: str | None) -> int:
    """The `Content-Length` of a POST, checked to be a whole number from 0 to MAX_BODY."""
    if value is None:
        raise Refused(HTTPStatus.LENGTH_REQUIRED, "Content-Length: required")
    if not (value.isascii() and value.isdigit()):
        raise Refused(HTTPStatus.BAD_REQUEST, f"Content-Length: {shown(value)} is not a whole number of bytes")
    if len(value) > 8 or int(value) > MAX_BODY:  # the digits are counted before any are converted
        raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"Content-Length: {shown(value)} is over {MAX_BODY} bytes")
    return int(value)


def parse_body(path: str, raw: bytes) -> StartBody:
    """The body of a POST to `path`: a flat JSON object of the route's short string fields, nothing else."""
    try:
        return BODIES[path].model_validate_json(raw)
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        where = ".".join(map(str, first["loc"])) or "JSON"
        raise Refused(HTTPStatus.BAD_REQUEST, f"request body: {where}: {first['msg']}") from None


def host_names(given: str, bound: str) -> set[str] | None:
    """The host names a request may name for a server asked for `given` and bound to IP `bound`;
    None where it listens on every address (then any IP literal, never a DNS name, is taken)."""
    address = ipaddress.ip_address(bound)
    if address.is_unspecified:
        return None
    return {given.lower(), bound} | ({"localhost"} if address.is_loopback else set())


def check_host(value: str | None, names: set[str] | None, port: int) -> None:
    """Refuse a `Host` that is not this server's address and port (a DNS-rebinding page names its own)."""
    if not value:
        raise Refused(HTTPStatus.BAD_REQUEST, "Host: required")
    name, sep, given_port = value.rpartition(":") if not value.endswith("]") else (value, "", "")
    name = name.lower() if sep else value.lower()
    if (given_port if sep else "80") != str(port):
        raise Refused(HTTPStatus.MISDIRECTED_REQUEST, f"Host: {shown(value)} is not this server's port {port}")
    if names is None:
        try:
            ipaddress.ip_address(name.strip("[]"))
            return
        except ValueError:
            pass
    elif name in names:
        return
    raise Refused(HTTPStatus.MISDIRECTED_REQUEST, f"Host: {shown(value)} is not this server's address")


class ReaderHandler(BaseHTTPRequestHandler):
    server: "ReaderServer"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # every read and write of this connection
        super().setup()

    def handle_one_request(self) -> None:
        """One request, as the standard library does it, except that an idle connection closes
        silently, a timed-out read ends with one line and an unknown method is a 405."""
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > 65536:
                self.requestline, self.request_version, self.command = "", "", ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.parse_request():
                return
            method = getattr(self, f"do_{self.command}", None)
            if method is None:
                self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, f"method {shown(self.command)} is not served")
                return
            method()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True

    def log_message(self, format, *args) -> None:  # no per-request lines on the terminal
        pass

    def log_error(self, format, *args) -> None:
        print(f"reader server: {self.client_address[0]}: {format % args}", file=sys.stderr, flush=True)

    def send_error(self, code, message=None, explain=None) -> None:
        """The standard library's refusals (bad request lines, headers) as JSON too, on a closed
        connection; an HTTP version it does not speak (505) is the client's error, a 400."""
        self.close_connection = True
        status = HTTPStatus(code) if code < 500 else HTTPStatus.BAD_REQUEST
        self._refuse(Refused(status, message or HTTPStatus(code).phrase))

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        headers = {**COMMON_HEADERS, "Content-Type": content_type, "Content-Length": str(len(body))}
        if self.close_connection:
            headers["Connection"] = "close"
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _refuse(self, refused: Refused) -> None:
        self.log_error("%s %s refused (%d): %s", self.command or "-", shown(getattr(self, "path", ""), 80),
                       refused.status, refused.message)
        self._json(refused.status, {"error": refused.message})

    def _check_host(self) -> None:
        if len(self.headers.get_all("Host") or ()) > 1:
            raise Refused(HTTPStatus.BAD_REQUEST, "Host: sent more than once")
        check_host(self.headers.get("Host"), self.server.names, self.server.server_port)

    def do_GET(self) -> None:
        if self.headers.get("Transfer-Encoding") or self.headers.get("Content-Length", "0") != "0":
            self.close_connection = True  # a body is never read: the connection cannot go on
        path = self.path.split("?", 1)[0]
        try:
            self._check_host()
        except Refused as refused:
            self.close_connection = True
            self._refuse(refused)
            return
        if path == "/":
            self._send(HTTPStatus.OK, PAGE, "text/html; charset=utf-8")
        elif path.startswith("/image/") and (png := self.server.sessions.image(path.removeprefix("/image/"))):
            self._send(HTTPStatus.OK, png, "image/png")
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    do_HEAD = do_GET

    def _read_body(self) -> StartBody:
        """The checked body of this POST (refusals close the connection: a body may be left unread)."""
        if self.path not in BODIES:
            raise Refused(HTTPStatus.NOT_FOUND, "not found")
        self._check_host()
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers['Host']}":
            raise Refused(HTTPStatus.FORBIDDEN, f"Origin: {shown(origin)} is not this server")
        kind = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"Content-Type: {shown(kind)} is not application/json")
        if self.headers.get("Transfer-Encoding"):
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "Transfer-Encoding: not taken (send Content-Length)")
        length = body_length(self.headers.get("Content-Length"))
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            raise Refused(HTTPStatus.REQUEST_TIMEOUT, f"body: fewer than the {length} bytes announced "
                                                      f"within {self.server.read_timeout:g} s") from None
        if len(raw) < length:
            raise Refused(HTTPStatus.BAD_REQUEST, f"body: {len(raw)} bytes, {length} announced")
        return parse_body(self.path, raw)

    def do_POST(self) -> None:
        sessions = self.server.sessions
        try:
            try:
                body = self._read_body()
            except Refused:
                self.close_connection = True
                raise
            if isinstance(body, AnswerBody):
                state = sessions.answer(body.reader, self.headers.get(TOKEN_HEADER, ""), body.trial, body.choice)
            else:
                state = sessions.start(body.reader)
        except Refused as refused:
            self._refuse(refused)
        except PermissionError as err:
            self._refuse(Refused(HTTPStatus.FORBIDDEN, str(err)))
        except ValueError as err:
            self._refuse(Refused(HTTPStatus.BAD_REQUEST, str(err)))
        except LookupError as err:
            self._refuse(Refused(HTTPStatus.CONFLICT, str(err)))
        else:
            self._json(HTTPStatus.OK, state)


class ReaderServer(ThreadingHTTPServer):
    """Serves `sessions` on (host, port); port 0 picks a free one (`server_port`). The socket is
    bound at once, so a busy port or an unknown host fails (OSError) before anything is made;
    `sessions` may be given later."""
    daemon_threads = True
    handler = ReaderHandler

    def __init__(self, sessions: ReaderSessions | None, host: str = "127.0.0.1", port: int = 0,
                 read_timeout: float = READ_TIMEOUT):
        self.sessions, self.read_timeout = sessions, read_timeout
        super().__init__((host, port), self.handler)
        self.names = host_names(host, self.server_address[0])

    def handle_error(self, request, client_address) -> None:
        """An error no handler answered (a connection reset mid-reply): one line, no traceback."""
        error = sys.exc_info()[1]
        print(f"reader server: {client_address[0]}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"
