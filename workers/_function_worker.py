"""Worker processes for function trials: forked from the controller, each runs trials one after another.

Forking a controller-sized Python process and tearing it down again costs several milliseconds, more than
everything else a trivial trial needs, so a worker that finishes a trial cleanly waits for the next one
(Ray Tune reuses its actors the same way). Each trial still gets its own environment, working directory,
log file (stdout and stderr) and signal handlers. A trial that fails in Python is reported and the worker
goes on; a trial that leaves threads or child processes behind, or is stopped, ends its worker, and the
next trial gets a fresh one. Module state (globals, caches) is what trials of one worker share.
"""

from __future__ import annotations

import ctypes
import faulthandler
import io
import multiprocessing.connection
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, Callable

import psutil

from katibx.functions import import_function
from katibx.report import report_metrics

_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h: orphaned descendants are re-parented to this process


@dataclass(frozen=True)
class TrialRequest:
    """What one trial needs inside the worker."""

    arguments: dict[str, Any]
    env: dict[str, str]
    workdir: str
    log_path: str


class FunctionWorker:
    """The controller's side of one worker process (its own session, so its whole process group can be stopped).

    ``function`` is the objective, or its ``module:qualname`` reference when the experiment was resumed without
    it. ``reuse`` False makes a worker that runs one trial and exits with the trial's status.
    """

    def __init__(self, context: BaseContext, function: Callable[..., Any] | str, reuse: bool) -> None:
        self.function = function
        self.reuse = reuse
        self._conn, child_conn = multiprocessing.connection.Pipe()
        self.process = context.Process(  # type: ignore[attr-defined]
            target=_serve, args=(function, child_conn, self._conn, reuse), name="katibx-trial-worker", daemon=False)
        self.process.start()
        child_conn.close()
        assert self.process.pid is not None
        self.pid: int = self.process.pid
        self.pidfd = os.pidfd_open(self.pid)
        try:
            self.create_time: float | None = psutil.Process(self.pid).create_time()
        except psutil.NoSuchProcess:
            self.create_time = None
        self.idle = False  # True once a trial finished cleanly and the worker waits for the next

    @property
    def fds(self) -> tuple[int, ...]:
        """Readable when the current trial has finished (its status arrives) or the worker has exited."""
        return (self.pidfd, self._conn.fileno())

    def serves(self, function: Callable[..., Any] | str) -> bool:
        return self.function is function or (isinstance(function, str) and self.function == function)

    def run(self, request: TrialRequest) -> bool:
        """Hand the worker a trial; False when it can take none (it exited while idle)."""
        try:
            self._conn.send(request)
        except OSError:
            return False
        self.idle = False
        return True

    def result(self) -> int | None:
        """The trial's exit status (0 succeeded) once it has finished, else None. A worker whose trial ended
        cleanly is then idle; one that exited reports its own exit code (negative: killed by that signal)."""
        if self.reuse and self._conn.poll():
            try:
                code = self._conn.recv()
            except (EOFError, OSError):
                pass  # the worker exited: its exit code follows
            else:
                self.idle = True
                return int(code)
        self.process.join(0)
        return self.process.exitcode

    def stop(self) -> None:
        """Kill the worker and whatever its trials left in its session, and release its descriptors."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:  # a worker that has not made its own session yet
                os.kill(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.process.join(5)
        self._conn.close()
        os.close(self.pidfd)


# worker side --------------------------------------------------------------------------------------------------
_INHERITED_STREAMS: list[Any] = []


def _serve(function: Callable[..., Any] | str, conn: multiprocessing.connection.Connection,
           parent_end: multiprocessing.connection.Connection, reuse: bool) -> None:
    """Worker main loop: take a trial, run it, report its status; exit when told nothing more or when unclean."""
    os.setsid()
    parent_end.close()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: processes a trial orphans are not noticed
    streams = _trial_streams()
    faulthandler.enable(streams[1])  # a crash in native code leaves its Python traceback in the trial log
    pid, threads = os.getpid(), threading.active_count()
    functions: dict[str, Callable[..., Any]] = {}
    while True:
        try:
            request: TrialRequest = conn.recv()
        except (EOFError, OSError):  # the controller closed the pipe or is gone
            os._exit(0)
        code = _run_trial(function, request, streams, functions)
        if os.getpid() != pid:  # a process the trial forked came back here: it is not the worker
            os._exit(code)
        if not reuse or threading.active_count() > threads or _has_children():
            os._exit(code)  # the controller stops what the trial left in this session
        try:
            conn.send(code)
        except OSError:
            os._exit(code)


def _trial_streams() -> tuple[io.TextIOWrapper, io.TextIOWrapper]:
    """sys.stdout and sys.stderr writing to file descriptors 1 and 2, which each trial points at its own log."""
    # The parent's streams may be a notebook's or pytest's, and may hold the parent's unflushed output: keep
    # them alive and never flush them (that would print the parent's output twice).
    _INHERITED_STREAMS.extend((sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__))
    out = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    err = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    return out, err


def _run_trial(function: Callable[..., Any] | str, request: TrialRequest,
               streams: tuple[io.TextIOWrapper, io.TextIOWrapper], functions: dict[str, Callable[..., Any]]) -> int:
    """Run one trial in this process: 0 when the objective returned, 1 when it raised (traceback in the log)."""
    fd = os.open(request.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout, sys.stderr = streams  # what a previous trial may have replaced
    sys.__stdout__, sys.__stderr__ = streams
    os.environ.clear()
    os.environ.update(request.env)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = 0
    try:
        os.chdir(request.workdir)
        if isinstance(function, str):  # resumed without the function object: import it (the folder is importable)
            if function not in functions:
                functions[function] = import_function(function, request.workdir)
            objective = functions[function]
        else:
            objective = function
        result = objective(request.arguments)
        if isinstance(result, dict):
            report_metrics(result)
        elif result is not None:
            raise TypeError(f"the objective returned {type(result).__name__}; return a dict of metrics or None")
    except BaseException:  # noqa: BLE001 - any failure of user code fails the trial, never the worker's loop
        traceback.print_exc()
        code = 1
    for stream in streams:
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


def _has_children() -> bool:
    """Whether a process this worker started (or, as subreaper, inherited from a trial) is still alive."""
    try:
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return True
    except ChildProcessError:
        return False
