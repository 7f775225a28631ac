"""The push-metrics endpoint of the kubernetes backend: ``katibx.report_metrics`` in a pod POSTs here.

A record is ``{"trial": name, "token": token, "metrics": {...}}``; the backend decides what to accept
(``accept(body) -> (HTTP status, message)``).
"""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)


class PushServer:
    """A threaded HTTP server that hands each POST body to ``accept``."""

    def __init__(self, host: str, port: int, accept: Callable[[bytes], tuple[int, str]]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                code, text = accept(self.rfile.read(length))
                body = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                log.debug("push: " + format, *args)

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="katibx-push", daemon=True).start()

    def url(self, push_url: str | None = None) -> str:
        """The URL pods POST metrics to (``push_url``, else the address the endpoint listens on)."""
        if push_url:
            return push_url
        address = self._server.server_address
        host, port = str(address[0]), address[1]
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        return f"http://{host}:{port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


def parse_record(body: bytes) -> tuple[str, str, dict[str, Any]]:
    """(trial, token, metrics) of a POST body; ValueError, KeyError or TypeError when it is not one."""
    data = json.loads(body)
    name, token, metrics = str(data["trial"]), str(data.get("token", "")), data["metrics"]
    if not isinstance(metrics, dict):
        raise TypeError("metrics must be an object")
    return name, token, metrics

