"""HTTP plumbing of the fake API server: a ThreadingHTTPServer on 127.0.0.1, bearer-token auth, chunked streams,
recorded calls and injected failures."""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from .api import Api, Response
from .errors import REASONS, status_body


class Call(NamedTuple):
    """One recorded request."""

    method: str
    path: str
    query: dict[str, str]
    status: int


@dataclass
class Failure:
    """An injected failure: requests matching `method` and `pattern` get `status` (0: no answer) `times` times."""

    method: str
    pattern: re.Pattern[str]
    status: int
    times: int
    reason: str = ""
    retry_after: int = 1
    hang_seconds: float = 30.0
    after: bool = False


class FakeHTTPServer(ThreadingHTTPServer):
    """Tracks its connections so that stopping closes them and joins their threads."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, api: Api, token: str, stopping: threading.Event) -> None:
        self.api = api
        self.token = token
        self.stopping = stopping
        self.calls: list[Call] = []
        self.failures: list[Failure] = []
        self.failures_lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), FakeApiHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self._serve_connection, args=(request, client_address),
                                  name="fake-apiserver-conn", daemon=True)
        with self._connections_lock:
            self._connections[thread] = request
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # a broken connection ends its thread quietly
            pass
        finally:
            self.shutdown_request(request)
            with self._connections_lock:
                self._connections.pop(threading.current_thread(), None)

    def close_connections(self, timeout: float = 5.0) -> None:
        """Shut every open connection and wait for its thread."""
        with self._connections_lock:
            connections = list(self._connections.items())
        for _, sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for thread, _ in connections:
            thread.join(max(0.0, deadline - time.monotonic()))

    def take_failure(self, method: str, path: str) -> Failure | None:
        """The first armed failure that matches, with one use taken."""
        with self.failures_lock:
            for failure in self.failures:
                if failure.times > 0 and failure.method in ("*", method) and failure.pattern.search(path):
                    failure.times -= 1
                    return failure
        return None


class FakeApiHandler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection to the fake API server."""

    protocol_version = "HTTP/1.1"
    server: FakeHTTPServer
    timeout = 300
    disable_nagle_algorithm = True  # headers and body are separate writes: Nagle would add ~40 ms per answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Silence the per-request log."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        failure = self.server.take_failure(method, url.path)
        if failure is not None and failure.status == 0:
            self.server.calls.append(Call(method, url.path, query, 0))
            self.server.stopping.wait(failure.hang_seconds)
            self.close_connection = True
            return
        if url.path not in ("/healthz", "/readyz", "/livez") and \
                headers.get("authorization") != f"Bearer {self.server.token}":
            response = Response(401, status_body(401, "Unauthorized", "Unauthorized"))
        elif failure is not None and not failure.after:
            response = self._failure_response(failure)
        else:
            response = self.server.api.handle(method, url.path, query, body, headers)
            if failure is not None:
                if response.stream is not None:
                    response.stream.close()  # type: ignore[attr-defined]
                response = self._failure_response(failure)
        self.server.calls.append(Call(method, url.path, query, response.status))
        self._send(response)

    @staticmethod
    def _failure_response(failure: Failure) -> Response:
        reason = failure.reason or REASONS.get(failure.status, "InternalError")
        message = {429: "Too many requests, please try again later.",
                   503: "the server is currently unable to handle the request",
                   504: "the server was unable to return a response in the time allotted"}.get(
            failure.status, f"injected failure ({reason})")
        headers = {"Retry-After": str(failure.retry_after)} if failure.status in (429, 503) else {}
        return Response(failure.status, status_body(failure.status, reason, message), headers=headers)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Audit-Id", "fake")
        for key, value in response.headers.items():
            self.send_header(key, value)
        if response.stream is None:
            payload = response.payload()
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        stream = response.stream
        try:
            self.wfile.flush()
            for chunk in stream:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True
        finally:
            stream.close()  # type: ignore[attr-defined]
