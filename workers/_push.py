"""The push-metrics endpoint of the kubernetes backend: ``katibx.report_metrics`` in a pod POSTs here.

A record is ``{"trial": name, "token": token, "metrics": {...}}``; the backend decides what to accept
(``accept(body) -> (HTTP status, message)``). Accepted records are also appended to the trial's
``pushed.jsonl`` (see :func:`append_record`), so a controller that re-attaches after a crash reads them again.
"""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
from pathlib import Path
from typing import Any, Callable

from katibx.trial_dir import PUSHED_FILE

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

    @property
    def port(self) -> int:
        """The port the endpoint listens on (the one picked when asked for port 0)."""
        return int(self._server.server_address[1])

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



def append_record(trial_dir: Path, line: str) -> None:
    """Keep one accepted metrics line (JSON, ending in a newline) in the trial's ``pushed.jsonl``."""
    with open(trial_dir / PUSHED_FILE, "a", encoding="utf-8") as f:
        f.write(line)


def read_records(trial_dir: Path) -> str:
    """The metrics lines pushed so far (empty when none); a line cut by a crash is dropped."""
    try:
        text = (trial_dir / PUSHED_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    return text[: text.rfind("\n") + 1]
