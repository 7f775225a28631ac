"""The push-metrics endpoint of the kubernetes backend: ``katibx.report_metrics`` in a pod POSTs here.

A record is a POST of ``{...metrics}`` with the headers ``X-Katibx-Trial: name`` and ``Authorization: Bearer token``;
:class:`PushEndpoint` decides from the headers alone whether to read the body (a running trial of this controller,
with its experiment's token, a body of at most 1 MiB) and serves it with :class:`PushServer`. Accepted
records are also appended to the trial's ``pushed.jsonl`` (see :func:`append_record`), so a controller that
re-attaches after a crash reads them again.
"""
from __future__ import annotations

import http.server
import json
import logging
import queue
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from katibx.backend import TrialEvent, TrialMetrics
from katibx.metric_parsers import MetricsFormatError
from katibx.report import PUSH_TRIAL_HEADER
from katibx.trial_dir import PUSHED_FILE
from katibx.workers._tracked import TrackedTrial

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 1 << 20  # one report_metrics() call; a larger body is refused before it is read


class PushEndpoint:
    """The backend's push endpoint: listens from first use; takes records of its running trials only.

    ``trials`` and ``lock`` are the backend's trial table and the lock that guards it; ``token(namespace, experiment)``
    is an experiment's push token ("" when unknown); accepted metrics go to ``events``.
    """

    def __init__(self, host: str, port: int, url: str | None, *, trials: dict[str, TrackedTrial],
                 lock: threading.RLock, token: Callable[[str, str], str], events: queue.Queue[TrialEvent]) -> None:
        self._host, self._port, self._url = host, port, url
        self._trials, self._lock = trials, lock
        self._token, self._events = token, events
        self._server: PushServer | None = None

    def start(self, previous_port: int | None = None) -> None:
        """Listen (once); on any free port unless one is configured, or the port a crashed controller used
        (``previous_port``, from a trial's handle), so that re-attached pods can still reach it."""
        if self._server is not None:
            return
        if not self._port and previous_port:
            try:
                self._server = PushServer(self._host, previous_port, self)
                return
            except OSError as exc:
                log.warning("cannot listen for pushed metrics on port %s again (%s): re-attached trials cannot "
                            "push any more; fix the port with --push-address", previous_port, exc)
        self._server = PushServer(self._host, self._port, self)

    @property
    def port(self) -> int:
        """The port the started endpoint listens on."""
        assert self._server is not None
        return self._server.port

    def url(self) -> str:
        """The URL pods POST metrics to (``push_url``, else the address the endpoint listens on); starts it."""
        self.start()
        assert self._server is not None
        return self._server.url(self._url)

    def admit(self, name: str, token: str, length: int | None) -> tuple[int, str] | None:
        """Whether a POST may send its body: None, or the refusal (HTTP status, message), decided from its headers
        alone, so that nobody without a running trial's token makes the controller read (or hold) a body."""
        with self._lock:
            trial = self._trials.get(name)
        if trial is None:
            return 404, f"trial {name!r} is not running under this controller"
        if not secrets.compare_digest(token, self._token(trial.namespace, trial.experiment)):
            return 403, "wrong token"
        if length is None:
            return 411, "Content-Length required"
        if length > MAX_RECORD_BYTES:
            return 413, f"a record is at most {MAX_RECORD_BYTES} bytes"
        if trial.attaching:
            return 503, f"trial {name!r} is being re-attached; retry"
        return None

    def accept(self, name: str, body: bytes) -> tuple[int, str]:
        """Take one pushed record of trial ``name`` (admitted): (HTTP status, message)."""
        try:
            metrics = parse_record(body)
        except (ValueError, KeyError, TypeError) as exc:
            return 400, f"expected a JSON object of metrics: {exc}"
        with self._lock:
            trial = self._trials.get(name)
        if trial is None:
            return 404, f"trial {name!r} is not running under this controller"
        metrics.setdefault("timestamp", time.time())  # kept with the record, so a replay keeps the time too
        line = json.dumps(metrics) + "\n"
        try:
            with trial.lock:
                logs = trial.push_parser.feed(line)
                append_record(trial.trial_dir, line)
        except MetricsFormatError as exc:
            return 400, str(exc)
        except OSError as exc:  # the value still counts; only a resume after a crash would miss it
            log.warning("trial %s: cannot keep a pushed record: %s", name, exc)
        if logs:
            self._events.put(TrialMetrics(name, logs))
        return 200, "ok"

    def replay(self, trial: TrackedTrial) -> None:
        """Queue again the records a re-attached trial pushed to the crashed controller, then take new pushes."""
        with trial.lock:
            try:
                text = read_records(trial.trial_dir)
                logs = trial.push_parser.feed(text)
            except (OSError, MetricsFormatError) as exc:
                log.warning("trial %s: cannot read the metrics it pushed before: %s", trial.name, exc)
                logs = []
            trial.attaching = False
        if logs:
            self._events.put(TrialMetrics(trial.name, logs))

    def close(self) -> None:
        """Stop listening (a later :meth:`start` listens again)."""
        if self._server is not None:
            self._server.close()
            self._server = None


class PushServer:
    """A threaded HTTP server that hands each POST body to ``accept``."""

    def __init__(self, host: str, port: int, endpoint: PushEndpoint) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                name = self.headers.get(PUSH_TRIAL_HEADER) or ""
                scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
                try:
                    length: int | None = int(self.headers["Content-Length"])
                except (KeyError, TypeError, ValueError):
                    length = None
                refusal = endpoint.admit(name, token if scheme == "Bearer" else "", length)
                if refusal is not None:
                    self.close_connection = True  # the body is never read
                    self._answer(*refusal)
                    return
                assert length is not None
                self._answer(*endpoint.accept(name, self.rfile.read(length)))

            def _answer(self, code: int, text: str) -> None:
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


def parse_record(body: bytes) -> dict[str, Any]:
    """The metrics object of a POST body; ValueError or TypeError when it is not one."""
    metrics = json.loads(body)
    if not isinstance(metrics, dict):
        raise TypeError("metrics must be an object")
    return metrics


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
