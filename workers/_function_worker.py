"""Worker processes for function trials: forked from the controller, each runs trials one after another.

Forking a controller-sized Python process and tearing it down again costs several milliseconds, more than
everything else a trivial trial needs, so a worker that finishes a trial cleanly waits for the next one
(Ray Tune reuses its actors the same way). Each trial still gets its own environment, working directory,
log file (stdout and stderr), signal handlers and timers. A trial that fails in Python is reported and the
worker goes on; a trial that leaves threads (started with ``threading``) or child processes behind, or is
stopped, ends its worker, and the next trial gets a fresh one. What trials of one worker share is the rest
of the process: module state (globals, caches), ``sys.path``, open files, umask and resource limits.
"""

from __future__ import annotations

import faulthandler
import io
import multiprocessing.connection
import multiprocessing.util
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, Callable

from katibx import capabilities
from katibx.functions import import_function
from katibx.processes import kill_group, process_started
from katibx.report import TrialPruned, report_metrics, returned_metrics
from katibx.workers._process_exit import ProcessExit


@dataclass(frozen=True)
class TrialRequest:
    """What one trial needs inside the worker."""

    arguments: dict[str, Any]
    env: dict[str, str]
    workdir: str
    log_path: str
    objectives: tuple[str, ...] = ()  # the experiment's objective metrics, for an objective that returns numbers


class FunctionWorker:
    """The controller's side of one worker process (its own session, so its whole process group can be stopped).

    ``function`` is the objective, or its ``module:qualname`` reference when the experiment was resumed without
    it. ``reuse`` False makes a worker that runs one trial and exits with the trial's status. ``close_inherited``
    lets go of every descriptor the worker inherited but its pipe (a Ray actor's sockets: Ray notices a dead actor
    only when its connections close, and a trial holding them would hide the death until it ended).
    """

    def __init__(self, context: BaseContext, function: Callable[..., Any] | str, reuse: bool,
                 close_inherited: bool = False) -> None:
        self.function = function
        self.reuse = reuse
        # A child subreaper (where the system has them) sees every process its trial left alive (its own children,
        # or orphans re-parented to it) and is not reused when there is one.
        self.subreaper = capabilities.subreaper()
        self.idle = False  # True once a trial finished cleanly and the worker waits for the next
        self._pipe_open = reuse  # statuses come over the pipe until the worker closes its end
        self._conn, child_conn = multiprocessing.connection.Pipe()
        try:
            # Not a daemon: a trial may start processes of its own (a daemonic process may not).
            self.process = context.Process(  # type: ignore[attr-defined]
                target=_serve, args=(function, child_conn, self._conn, reuse, os.getpid(), self.subreaper,
                                     close_inherited),
                name="katibx-trial-worker", daemon=False)
            self.process.start()
        except BaseException:
            self._conn.close()
            raise
        finally:
            child_conn.close()
        assert self.process.pid is not None
        self.pid: int = self.process.pid
        # An idle worker waits for work forever: killed at interpreter exit, before multiprocessing joins it.
        self._at_exit = multiprocessing.util.Finalize(None, kill_group, args=(self.pid,), exitpriority=10)
        try:
            self.exit = ProcessExit(self.pid, lambda: self.process.exitcode is not None)
        except BaseException:
            kill_group(self.pid)
            self.process.join(5)
            self._conn.close()
            self._at_exit.cancel()
            raise
        self.started = process_started(self.pid, zombies=True)

    @property
    def fds(self) -> tuple[int, ...]:
        """Readable when the current trial has finished (its status arrives) or the worker has exited."""
        return (self.exit.fd, self._conn.fileno()) if self._pipe_open else (self.exit.fd,)

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
        if self._pipe_open and self._conn.poll():
            try:
                code = self._conn.recv()
            except (EOFError, OSError):
                # The worker is exiting, or its trial closed the worker's end of the pipe: only its exit
                # (self.exit) tells from now on, and a pipe at its end must not wake the controller again.
                self._pipe_open = False
            else:
                self.idle = True
                return int(code)
        self.process.join(0)
        return self.process.exitcode

    def stop(self) -> None:
        """Kill the worker and whatever its trials left in its session, and release its descriptors."""
        if not (self.idle and self.process.exitcode is not None):  # a clean idle worker that died left nothing,
            kill_group(self.pid)  # and its pid may belong to another process by now
            self.exit.kill()  # a worker not yet in its own session
        self.process.join(5)
        self._conn.close()
        self.exit.close()
        self._at_exit.cancel()


# worker side --------------------------------------------------------------------------------------------------
_INHERITED_STREAMS: list[Any] = []
# How often an idle worker checks that the controller that forked it is still there.
PARENT_CHECK_SECONDS = 1.0
_TIMERS = ("ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF")  # names: Windows has none (this module must import)
try:  # a signal's handler as the interpreter keeps it: signal.getsignal wraps SIG_DFL and SIG_IGN in enums, a
    # tenth of a millisecond a trial over every signal (either one, used throughout, gives the identities compared)
    from _signal import getsignal as _getsignal
except ImportError:  # pragma: no cover - an interpreter without the C module
    _getsignal = signal.getsignal


def _serve(function: Callable[..., Any] | str, conn: multiprocessing.connection.Connection,
           parent_end: multiprocessing.connection.Connection, reuse: bool, parent: int, subreaper: bool,
           close_inherited: bool = False) -> None:
    """Worker main loop: take a trial, run it, report its status; exit when told nothing more or when unclean."""
    os.setsid()
    parent_end.close()
    if close_inherited:
        _release_inherited(conn.fileno())
    if subreaper:  # elsewhere processes a trial orphans are found by its token (workers/_escaped.py)
        capabilities.become_subreaper()
    # The parent's streams may be a notebook's or pytest's, and may hold the parent's unflushed output: keep
    # them alive and never flush them (that would print the parent's output twice).
    _INHERITED_STREAMS.extend((sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__))
    # A crash in native code leaves its Python traceback in the trial log. The parent may have put its own handlers
    # on the fatal signals (Ray's driver installs one that prints no Python frames): the default comes back first.
    # faulthandler may already be on (the parent's), and then enable() would keep the handlers it found.
    faulthandler.disable()
    for fatal in (signal.SIGSEGV, signal.SIGFPE, signal.SIGABRT, signal.SIGBUS, signal.SIGILL):
        signal.signal(fatal, signal.SIG_DFL)
    faulthandler.enable(2)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signals = _signal_state()
    pid, threads = os.getpid(), threading.active_count()
    functions: dict[str, Callable[..., Any]] = {}
    while True:
        request = _next_request(conn, parent)
        if request is None:  # the controller closed the pipe or is gone
            os._exit(0)
        code = _run_trial(function, request, functions)
        if os.getpid() != pid:  # a process the trial forked came back here: it is not the worker
            os._exit(code)
        _restore_signals(signals)
        if not reuse or threading.active_count() > threads or _has_children():
            os._exit(code)  # the controller stops what the trial left in this session
        try:
            conn.send(code)
        except OSError:
            os._exit(code)


def _release_inherited(keep: int) -> None:
    """Point every descriptor this worker inherited (a Ray actor's sockets) but ``keep`` at /dev/null: the
    connections are let go, and a Python object that still holds a number writes nowhere rather than into a
    descriptor the number was given again."""
    for folder in ("/proc/self/fd", "/dev/fd"):  # the open ones (Linux; macOS and BSDs)
        try:
            open_fds = sorted({int(name) for name in os.listdir(folder)})
            break
        except (OSError, ValueError):
            continue
    else:  # (every number up to the limit, which may be huge or unlimited: bounded)
        limit = os.sysconf("SC_OPEN_MAX")
        open_fds = [fd for fd in range(3, limit if 0 < limit <= 65536 else 65536) if _is_open(fd)]
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in open_fds:
            if fd > 2 and fd not in (keep, null):
                try:
                    os.dup2(null, fd)
                except OSError:
                    continue
    finally:
        os.close(null)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _next_request(conn: multiprocessing.connection.Connection, parent: int) -> TrialRequest | None:
    """The next trial, or None once the controller has closed the pipe or exited (checked while waiting, since
    workers forked later hold copies of the controller's end of this worker's pipe)."""
    try:
        while not conn.poll(PARENT_CHECK_SECONDS):
            if os.getppid() != parent:
                return None
        return conn.recv()
    except (EOFError, OSError):
        return None


def _run_trial(function: Callable[..., Any] | str, request: TrialRequest, functions: dict[str, Callable[..., Any]]) -> int:
    """Run one trial in this process: 0 when the objective returned, 1 when it raised (traceback in the log)."""
    fd = os.open(request.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for target in (1, 2):  # fd may be 1 or 2 itself when a previous trial closed it
        if fd != target:
            os.dup2(fd, target)
    if fd not in (1, 2):
        os.close(fd)
    # New stream objects each trial: a previous trial may have closed or replaced the ones it had.
    out = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    err = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    sys.stdout = sys.__stdout__ = out
    sys.stderr = sys.__stderr__ = err
    _set_environment(request.env)
    code = 0
    try:
        os.chdir(request.workdir)
        if isinstance(function, str):  # resumed without the function object: import it (the folder is importable)
            if function not in functions:
                functions[function] = import_function(function, request.workdir)
            objective = functions[function]
        else:
            objective = function
        metrics = returned_metrics(objective(request.arguments), request.objectives)
        if metrics:
            report_metrics(metrics)
    except TrialPruned:  # it ended itself, early stopping having asked (katibx.should_prune): a clean end
        print("katibx: trial pruned (TrialPruned raised)", file=err)
    except BaseException:  # noqa: BLE001 - any failure of user code fails the trial, never the worker's loop
        code = 1
        try:
            traceback.print_exc(file=err)
        except (OSError, ValueError):
            pass
    # Whatever the trial printed goes to its own log, also through streams it put in place of ours: flush them
    # and let them go now, while descriptors 1 and 2 still lead to this trial's log.
    for stream in {id(s): s for s in (sys.stdout, sys.stderr, out, err)}.values():
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    sys.stdout = sys.__stdout__ = out
    sys.stderr = sys.__stderr__ = err
    return code


def _set_environment(env: dict[str, str]) -> None:
    """Make the environment exactly ``env``: what is not in it removed, every variable of it set again (also in the
    process's C environment, which a trial may have changed with os.putenv or native code). Clearing os.environ
    first cost a third of a millisecond a trial (its clear() pops one variable at a time)."""
    current = os.environ
    for name in [name for name in current if name not in env]:
        del current[name]
    for name, value in env.items():
        current[name] = value


def _signal_state() -> tuple[dict[int, Any], set[int]]:
    """This process's Python signal handlers and blocked signals, to give every trial the same start."""
    handlers = {}
    for sig in signal.valid_signals():
        try:
            handlers[sig] = _getsignal(sig)
        except (ValueError, OSError):
            continue
    return handlers, signal.pthread_sigmask(signal.SIG_BLOCK, [])


def _restore_signals(state: tuple[dict[int, Any], set[int]]) -> None:
    """Undo what a trial did to signals: timers it armed, handlers it installed, signals it blocked."""
    handlers, mask = state
    for timer in _TIMERS:
        signal.setitimer(getattr(signal, timer), 0)
    for sig, handler in handlers.items():
        if handler is not None and _getsignal(sig) is not handler:
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError, TypeError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _has_children() -> bool:
    """Whether a process this worker started (or, as subreaper, inherited from a trial) is still alive."""
    try:
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return True
    except ChildProcessError:
        return False
