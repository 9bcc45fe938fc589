"""The reader study's web server (standard library): the static page, the reader API and the images.

Every image response is built the same way (same headers, same length for one study's images, no
caching, no validators), so nothing but the pixels tells the two sides of a trial apart."""
from __future__ import annotations

import json
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from .session import ReaderSessions

PAGE = resources.files(__package__).joinpath("page.html").read_bytes()
COMMON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                  "Referrer-Policy": "no-referrer"}
MAX_BODY = 4096


class ReaderHandler(BaseHTTPRequestHandler):
    server: "ReaderServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # no per-request lines on the terminal
        pass

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        for name, value in {**COMMON_HEADERS, "Content-Type": content_type,
                            "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(HTTPStatus.OK, PAGE, "text/html; charset=utf-8")
        elif path.startswith("/image/") and (png := self.server.sessions.image(path.removeprefix("/image/"))):
            self._send(HTTPStatus.OK, png, "image/png")
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request too large"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            sessions, reader = self.server.sessions, str(body.get("reader", ""))
            if self.path == "/api/start":
                self._json(HTTPStatus.OK, sessions.state(reader))
            elif self.path == "/api/answer":
                self._json(HTTPStatus.OK, sessions.answer(reader, str(body.get("trial", "")),
                                                          str(body.get("choice", ""))))
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        except (ValueError, AttributeError) as err:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
        except LookupError as err:
            self._json(HTTPStatus.CONFLICT, {"error": str(err)})


class ReaderServer(ThreadingHTTPServer):
    """Serves `sessions` on (host, port); port 0 picks a free one (`server_port`)."""
    daemon_threads = True

    def __init__(self, sessions: ReaderSessions, host: str = "127.0.0.1", port: int = 0):
        self.sessions = sessions
        super().__init__((host, port), ReaderHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"
