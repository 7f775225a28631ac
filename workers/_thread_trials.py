"""Function trials on threads of the controller's process (``isolation: none``), for objectives so cheap that a
worker process's costs (its pipe, environment, trial folder and metrics file) dominate them.

The trade-off a user opts into: a trial shares everything with the controller (its environment, working directory,
signal handlers, module state) and cannot be stopped from outside. A trial that early stopping, a deadline or the
end of the experiment stops without it asking (:func:`katibx.should_prune`) is abandoned: reported as stopped at
once, its thread runs on until the function returns and its result is dropped. A crash of the interpreter ends the
controller too (what was committed is kept; ``resume`` runs the trials it had running again). What a trial prints
from its own thread goes to its log, parsed as a worker's stdout is; what it reports goes straight to the
controller. At parallelTrialCount 1, without early stopping or a deadline, a trial that follows a quick one runs on
the controller's own thread (:data:`INLINE_BELOW`), where nothing else would run meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from queue import SimpleQueue
from typing import Any, TextIO

from katibx.backend import TrialEvent, TrialExited, TrialMetrics
from katibx.metric_parsers import LineParser, MetricsFormatError, record_logs
from katibx.metrics import MetricLog
from katibx.metrics_collector import collector_kind, metric_names
from katibx.objective import Objective
from katibx.report import TrialPruned, report_metrics, returned_metrics, set_thread_trial, thread_trial
from katibx.spec import Experiment

# A trial that took less than this (seconds) has the next one run on the controller's own thread, where nothing else
# would run meanwhile (parallelTrialCount 1, no early stopping, no deadline): two thread switches less a trial. Not
# where an asyncio event loop runs on that thread (see _loop_running).
INLINE_BELOW = 0.005
ABANDONED = ("the objective's thread could not be stopped (isolation: none): it runs on until the function "
             "returns, its result dropped; call katibx.should_prune() to end by yourself")


class ThreadTrial:
    """One trial on a thread: the metrics it reports and prints, its log (made when it first prints) and its end.

    Written by the trial's thread, read by the controller's, under one lock."""

    def __init__(self, name: str, log_path: Path, metric_names: Sequence[str],
                 stdout_formats: Sequence[str] | None, parse_stdout: bool, deadline: float | None,
                 wake: Callable[[], None] | None = None, trim_log: Callable[[Path], None] = lambda _path: None) -> None:
        self.name = name
        self._wake = wake  # tells the controller at once of an intermediate report (for early stopping)
        self._trim_log = trim_log  # bounds the log once the trial has ended (the backend's log limit)
        self.log_path = log_path
        self.deadline = deadline  # time.monotonic() past which the trial is abandoned
        self._lock = threading.Lock()
        self._metric_names = metric_names
        self._printed = LineParser(metric_names, stdout_formats) if parse_stdout else None
        self._logs: list[MetricLog] = []
        self.errors: list[str] = []  # metrics that could not be read (the trial then fails, as Katib's collector)
        self._log: TextIO | None = None
        self.code: int | None = None  # 0 returned, 1 raised; set once the function has ended
        self.failure = ""  # what it raised, one line
        self.stopped_as: tuple[str, str] | None = None  # (reason, message) once abandoned
        self.asked_to_stop = False
        self.prunable = False  # it has called katibx.should_prune: it can be asked to stop
        self.returned = False  # the function has returned: its metrics come to the controller with its end
        self.seconds: float | None = None  # how long the function ran, once it has ended

    # the trial's side (its thread) ------------------------------------------------------------------------
    def report(self, record: dict[str, Any]) -> None:
        """A record of :func:`katibx.report_metrics`, read as a worker's metrics file is."""
        logs = record_logs(record, self._metric_names)
        with self._lock:
            if self.stopped_as is not None:  # abandoned: nobody reads it any more
                return
            self._logs.extend(logs)
        if self._wake is not None and not self.returned:
            self._wake()

    def should_prune(self) -> bool:
        self.prunable = True
        return self.asked_to_stop

    def write(self, text: str) -> int:
        """What the trial prints: into its log (made now if this is its first output) and, for the StdOut
        collector, parsed for metrics lines."""
        with self._lock:
            if self._log is None:
                with contextlib.suppress(OSError):  # a log that cannot be written loses output, not the trial
                    self.log_path.parent.mkdir(parents=True, exist_ok=True)
                    # line-buffered, as a worker's output is: `katibx logs -f` shows each line as it is printed
                    self._log = self.log_path.open("w", encoding="utf-8", errors="replace", buffering=1)
            if self._log is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._log.write(text)
            if self._printed is not None and self.stopped_as is None:
                self._feed(self._printed, text, self.log_path.name)
        return len(text)

    def _feed(self, parser: LineParser, text: str, source: str) -> None:
        try:
            self._logs.extend(parser.feed(text))
        except MetricsFormatError as exc:
            self.errors.append(f"{source}: {exc}")

    def end(self, code: int, failure: str = "") -> None:
        """The function has ended: the last partial lines are read and the log closed."""
        with self._lock:
            if self._printed is not None:
                try:
                    self._logs.extend(self._printed.flush())
                except MetricsFormatError as exc:
                    self.errors.append(f"{self.log_path.name}: {exc}")
            if self._log is not None:
                with contextlib.suppress(OSError):
                    self._log.close()
                self._trim_log(self.log_path)
            self.failure = failure
            self.code = code

    # the controller's side ---------------------------------------------------------------------------------
    def take(self) -> tuple[list[MetricLog], int | None]:
        """The metric logs since the last call, and the exit code once the function has ended."""
        with self._lock:
            logs, self._logs = self._logs, []
            return logs, self.code

    def abandon(self, reason: str, message: str) -> None:
        with self._lock:
            if self.code is None and self.stopped_as is None:
                self.stopped_as = (reason, message)


class _TrialStream:
    """``sys.stdout`` or ``sys.stderr`` while thread trials run: a trial thread's writes go to its trial's log,
    every other thread's to the stream it replaced."""

    def __init__(self, original: TextIO) -> None:
        self.original = original

    def write(self, text: str) -> int:
        trial = thread_trial()
        if isinstance(trial, ThreadTrial):
            return trial.write(text)
        return self.original.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not isinstance(thread_trial(), ThreadTrial):
            self.original.flush()

    def isatty(self) -> bool:
        return False if isinstance(thread_trial(), ThreadTrial) else self.original.isatty()

    def __getattr__(self, name: str) -> Any:  # (``fileno`` and ``buffer`` are the original's: they bypass the log)
        return getattr(self.original, name)


class _Streams:
    """The process's one pair of trial streams, in place while any :class:`ThreadTrials` has a trial running (two
    experiments in one process share it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0

    def take(self) -> None:
        """Route trial threads' output from now on; put back in place if something replaced ``sys.stdout`` or
        ``sys.stderr`` since (a trial's ``contextlib.redirect_stdout`` affects every thread while it lasts)."""
        with self._lock:
            self._users += 1
        self.keep()

    def keep(self) -> None:
        """Put the trial streams back in place where something replaced them."""
        with self._lock:
            for name in ("stdout", "stderr"):
                if self._users and not isinstance(getattr(sys, name), _TrialStream):
                    setattr(sys, name, _TrialStream(getattr(sys, name)))

    def give_back(self) -> None:
        """One user less; the last one puts the original streams back (unless someone replaced ours since)."""
        with self._lock:
            self._users -= 1
            if self._users:
                return
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if isinstance(stream, _TrialStream):
                    setattr(sys, name, stream.original)


_STREAMS = _Streams()


class ThreadTrials:
    """Runs the function trials of ``experiment`` on threads, reused from trial to trial; :attr:`fd` is readable
    when one has ended (or was abandoned). A thread whose trial was abandoned serves again once its function
    returns."""

    def __init__(self, experiment: Experiment, trim_log: Callable[[Path], None] = lambda _path: None) -> None:
        self.experiment = experiment
        self._trim_log = trim_log
        self._wake_on_report = experiment.spec.early_stopping is not None  # it decides on intermediate values
        # The controller only waits while a trial runs: a quick trial may run on its thread (see INLINE_BELOW).
        self._may_inline = (experiment.spec.parallel_trial_count or 1) == 1 and not self._wake_on_report
        self._last_seconds: float | None = None  # how long the last trial that ended ran
        self._count = 0  # threads started, to name them
        mc = experiment.spec.metrics_collector_spec
        source = mc.source if mc else None
        self._metric_names = metric_names(experiment)
        self._formats = source.filter.metrics_format if source and source.filter else None
        self._parse_stdout = collector_kind(experiment) == "StdOut"
        self._objectives = tuple(name for name, _ in Objective(experiment).objectives)
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._trials: dict[str, ThreadTrial] = {}
        self._idle: list[SimpleQueue[Any]] = []  # each idle thread's inbox
        self._streams = False  # whether this runner has taken the trial streams
        self._closing = threading.Lock()  # the pipe is closed once, never written after (its numbers get reused)
        self._closed = False

    @property
    def fd(self) -> int:
        return self._wake_read

    def __contains__(self, name: str) -> bool:
        return name in self._trials

    def __bool__(self) -> bool:
        return bool(self._trials)

    def start(self, name: str, log_path: Path, function: Callable[..., Any], arguments: dict[str, Any],
              deadline: float | None) -> None:
        """Run ``function(arguments)`` as trial ``name`` (its log at ``log_path``, abandoned after ``deadline``,
        a ``time.monotonic()``)."""
        trial = ThreadTrial(name, log_path, self._metric_names, self._formats, self._parse_stdout, deadline,
                            self._wake if self._wake_on_report else None, self._trim_log)
        with contextlib.suppress(FileNotFoundError):  # a trial run again: its earlier run's log goes
            os.unlink(log_path)
        self._capture_output()
        inline = (self._may_inline and deadline is None and not self._trials and self._last_seconds is not None
                  and self._last_seconds < INLINE_BELOW and not _loop_running())
        self._trials[trial.name] = trial
        if inline:
            self._run(trial, function, arguments, self._objectives, inline=True)
            self._wake()
            return
        try:
            inbox = self._idle.pop()
        except IndexError:
            inbox = SimpleQueue()
            self._count += 1
            threading.Thread(target=self._serve, args=(inbox,), name=f"katibx-trial-{self._count}",
                             daemon=True).start()
        inbox.put((trial, function, arguments, self._objectives))

    def _serve(self, inbox: SimpleQueue[Any]) -> None:
        """A trial thread: run the trials put in its inbox, one at a time, until it gets None."""
        while True:
            work = inbox.get()
            if work is None:
                return
            self._run(*work)
            with self._closing:
                if self._closed:  # an abandoned trial that ended after the run: nothing waits for this thread
                    return
                self._idle.append(inbox)
            self._wake()

    def _run(self, trial: ThreadTrial, function: Callable[..., Any], arguments: dict[str, Any],
             objectives: tuple[str, ...], inline: bool = False) -> None:
        """Run one trial on this thread. ``inline`` (the controller's thread): Ctrl-C abandons the trial and goes on
        to the controller, which stops the run. The thread's own trial (a sweep run inside a trial) is its trial
        again afterwards."""
        outer = thread_trial()
        set_thread_trial(trial)
        code, failure = 0, ""
        began = time.perf_counter()
        try:
            metrics = returned_metrics(function(arguments), objectives)
            trial.returned = True
            if metrics:
                report_metrics(metrics)
        except TrialPruned:  # it ended itself, early stopping having asked: a clean end
            trial.write("katibx: trial pruned (TrialPruned raised)\n")
        except BaseException as exc:  # noqa: BLE001 - sys.exit() too: any failure of user code fails the trial
            if inline and isinstance(exc, KeyboardInterrupt):
                trial.abandon("Killed", "the run was interrupted while the trial ran on the controller's thread")
                trial.end(1)
                raise
            code, failure = 1, traceback.format_exception_only(type(exc), exc)[-1].strip()
            with contextlib.suppress(Exception):
                trial.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        finally:
            set_thread_trial(outer)
        trial.seconds = time.perf_counter() - began
        trial.end(code, failure)

    def _wake(self) -> None:
        with self._closing, contextlib.suppress(BlockingIOError, OSError):  # a full pipe wakes the controller already
            if not self._closed:
                os.write(self._wake_write, b".")

    def _capture_output(self) -> None:
        """Route what trial threads print to their logs (from the first trial until :meth:`close`)."""
        if not self._streams:
            self._streams = True
            _STREAMS.take()
        else:
            _STREAMS.keep()

    def events(self) -> list[TrialEvent]:
        """Metrics reported since the last call, and the trials that ended or were abandoned."""
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_read, 4096):
                pass
        now = time.monotonic()
        events: list[TrialEvent] = []
        for trial in list(self._trials.values()):
            if trial.deadline is not None and now > trial.deadline:
                trial.abandon("DeadlineExceeded", "Job was active longer than specified deadline")
            logs, code = trial.take()
            if trial.stopped_as is not None:
                del self._trials[trial.name]
                events.append(TrialExited(trial.name, False, *trial.stopped_as, logs))
            elif code is not None:
                del self._trials[trial.name]
                self._last_seconds = trial.seconds
                events.append(_exit_event(trial, code, logs))
            elif logs:
                events.append(TrialMetrics(trial.name, logs))
        return events

    def kill(self, name: str) -> None:
        trial = self._trials.get(name)
        if trial is not None:
            trial.abandon("Killed", ABANDONED)
            self._wake()

    def ask_to_stop(self, name: str) -> bool:
        """Tell a trial that has called katibx.should_prune to stop; False for one that never asks."""
        trial = self._trials.get(name)
        if trial is None or not trial.prunable:
            return False
        trial.asked_to_stop = True
        return True

    def close(self) -> None:
        """Abandon the trials still running, let idle threads end and give the streams back."""
        for trial in self._trials.values():
            trial.abandon("Killed", ABANDONED)
        self._trials.clear()
        with self._closing:
            self._closed = True
            for fd in (self._wake_read, self._wake_write):
                with contextlib.suppress(OSError):
                    os.close(fd)
        while self._idle:
            self._idle.pop().put(None)
        if self._streams:
            self._streams = False
            _STREAMS.give_back()


def _loop_running() -> bool:
    """Whether an asyncio event loop runs on this thread (a notebook's): an objective that runs one of its own
    (``asyncio.run``) works on a trial thread, not on this one."""
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and asyncio.events._get_running_loop() is not None


def _exit_event(trial: ThreadTrial, code: int, logs: list[MetricLog]) -> TrialExited:
    if code == 0 and trial.errors:
        return TrialExited(trial.name, False, "MetricsCollectorError", f"metrics collection failed: {trial.errors[0]}",
                           logs)
    if code == 0:
        return TrialExited(trial.name, True, "Completed", "the objective returned", logs)
    return TrialExited(trial.name, False, "Error", f"the objective raised {trial.failure}", logs)
