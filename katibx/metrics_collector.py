"""Collect a running trial's metrics from the files it writes, incrementally, as Katib's collectors do.

Shared by worker backends: the stdout log (StdOut), a metrics file (File, TEXT or JSON), event files
(TensorFlowEvent, read at exit) and the push channel that :func:`katibx.report_metrics` appends to.
A collector never raises: a malformed metrics line or an unreadable event file is kept in ``error``
(Katib's collector fails the trial then) and collection goes on with the other sources.
"""

from __future__ import annotations

import codecs
import os
import time
from pathlib import Path
from typing import Callable

from katibx.metric_parsers import LineParser, MetricsCollectorUnavailable, MetricsFormatError, read_tfevents
from katibx.metrics import MetricLog
from katibx.spec import Experiment
from katibx.trial_dir import PUSH_FILE, STDOUT_LOG

# A trial's files are read CHUNK_BYTES at a time, at most READ_LIMIT_BYTES per poll (the rest at the next one).
CHUNK_BYTES = 64 << 10
READ_LIMIT_BYTES = 256 << 10
# Event files older than the trial by more than this (clock granularity) belong to an earlier run.
_TFEVENT_SLACK_SECONDS = 1.0


def metric_names(experiment: Experiment) -> list[str]:
    """The objective metric first, then further objectives, then the additional metrics."""
    objective = experiment.spec.objective
    assert objective is not None and objective.objective_metric_name
    return [name for name, _ in objective.objectives()] + list(objective.additional_metric_names)


def collector_kind(experiment: Experiment) -> str:
    """``spec.metricsCollectorSpec.collector.kind`` (StdOut when unset)."""
    mc = experiment.spec.metrics_collector_spec
    return (mc.collector.kind if mc and mc.collector else None) or "StdOut"


def source_path(experiment: Experiment) -> str | None:
    """The metrics file (File) or event directory (TensorFlowEvent) the trial writes, as given in the spec."""
    mc = experiment.spec.metrics_collector_spec
    fsp = mc.source.file_system_path if mc and mc.source else None
    if collector_kind(experiment) in ("File", "TensorFlowEvent") and fsp and fsp.path:
        return fsp.path
    return None


class _Tail:
    """Feeds what was appended to a file since the last read to a parser; a truncated or replaced file restarts."""

    def __init__(self, path: Path, new_parser: Callable[[], LineParser], skip_existing: bool = False) -> None:
        # skip_existing: what the file holds now was written by an earlier run, not by this trial.
        self.path = path
        self._new_parser = new_parser
        self._inode: int | None = None
        self._reset()
        if skip_existing:
            try:
                st = os.stat(path)
            except OSError:
                return
            self.offset, self._inode = st.st_size, st.st_ino

    def _reset(self) -> None:
        """Start over at the beginning of the file, with a fresh parser."""
        self.parser = self._new_parser()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.offset = 0
        self._inode = None
        self.pending = False  # the last read stopped at its limit with more in the file

    def read(self, errors: list[str], limit: int = READ_LIMIT_BYTES) -> list[MetricLog]:
        """New metric logs from at most ``limit`` new bytes (the rest waits for the next call), read and parsed a
        chunk at a time, so memory does not grow with what the trial prints; parse errors are appended to
        ``errors`` and the offending line is skipped."""
        logs: list[MetricLog] = []
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if (self._inode is not None and st.st_ino != self._inode) or st.st_size < self.offset:
                    self._reset()
                self._inode = st.st_ino
                f.seek(self.offset)
                self.pending = False
                while True:
                    data = f.read(min(CHUNK_BYTES, limit))
                    if not data:
                        break
                    limit -= len(data)
                    self.offset += len(data)
                    self._parse(self._decoder.decode(data), logs, errors)
                    if limit <= 0:
                        self.pending = self.offset < os.fstat(f.fileno()).st_size
                        break
        except OSError:  # not written yet, or not a readable file
            pass
        return logs

    def _parse(self, text: str, logs: list[MetricLog], errors: list[str]) -> None:
        for line in _lines(text):
            try:
                logs.extend(self.parser.feed(line))
            except MetricsFormatError as exc:
                errors.append(f"{self.path.name}: {exc}")

    def flush(self, errors: list[str]) -> list[MetricLog]:
        """Parse a last line that has no newline."""
        try:
            return self.parser.feed(self._decoder.decode(b"", final=True)) + self.parser.flush()
        except MetricsFormatError as exc:
            errors.append(f"{self.path.name}: {exc}")
            return []


def _lines(text: str) -> list[str]:
    """``text`` cut after each newline, so a bad line fails alone."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


class MetricsCollector:
    """Per-trial collector; ``poll`` while the trial runs, ``finish`` once it has exited."""

    def __init__(self, experiment: Experiment, trial_dir: Path, workdir: Path, source: Path | None = None) -> None:
        # source: this trial's File metrics file or event directory (default: the spec's path, from workdir).
        names = metric_names(experiment)
        mc = experiment.spec.metrics_collector_spec
        kind = collector_kind(experiment)
        src = mc.source if mc else None
        formats = src.filter.metrics_format if src and src.filter else None
        fsp = src.file_system_path if src else None
        spec_path = source_path(experiment)
        path = source if source is not None else (workdir / spec_path if spec_path else None)
        self.errors: list[str] = []
        self._names = names
        self._started = time.time()
        self._tails = [_Tail(trial_dir / PUSH_FILE, lambda: LineParser(names, file_format="JSON"))]
        self._tfevent_dir: Path | None = None
        if kind == "StdOut":
            self._tails.append(_Tail(trial_dir / STDOUT_LOG, lambda: LineParser(names, formats)))
        elif kind == "File" and path is not None:
            file_format = (fsp.format if fsp else None) or "TEXT"
            self._tails.append(_Tail(path, lambda: LineParser(names, formats, file_format), skip_existing=True))
        elif kind == "TensorFlowEvent" and path is not None:
            self._tfevent_dir = path

    @property
    def error(self) -> str | None:
        """The first collection problem, if any."""
        return self.errors[0] if self.errors else None

    def poll(self) -> list[MetricLog]:
        """Metric logs that appeared since the last call, from at most READ_LIMIT_BYTES of each file."""
        return [log for tail in self._tails for log in tail.read(self.errors)]

    @property
    def pending(self) -> bool:
        """Whether the last :meth:`poll` left unread output behind (poll again before waiting, or finishing)."""
        return any(tail.pending for tail in self._tails)

    def finish(self) -> list[MetricLog]:
        """The last logs once the trial has exited and :meth:`poll` left nothing pending, with its event files."""
        logs = self.poll()
        for tail in self._tails:
            logs.extend(tail.flush(self.errors))
        if self._tfevent_dir is not None and self._tfevent_dir.is_dir():
            try:
                events = read_tfevents(self._tfevent_dir, self._names)
            except MetricsCollectorUnavailable as exc:
                self.errors.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - a corrupt event file must not stop the controller
                self.errors.append(f"TensorFlowEvent: cannot read event files in {self._tfevent_dir}: {exc}")
            else:
                since = self._started - _TFEVENT_SLACK_SECONDS
                logs.extend(e for e in events if e.timestamp is None or e.timestamp >= since)
        return logs
