"""Parse trial metrics from logs and event files, as Katib's metrics collectors do.

Covers Katib v1beta1's File/StdOut collector (TEXT regex and JSON lines formats)
and the TensorFlowEvent collector. Everything here is pure parsing: callers own
the I/O, and fill in arrival time where a metric carries no timestamp.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from katibx.metrics import MetricLog

__all__ = [
    "DEFAULT_METRICS_FORMAT",
    "LineParser",
    "MetricsCollectorUnavailable",
    "MetricsFormatError",
    "parse_text",
    "read_tfevents",
]

logger = logging.getLogger(__name__)

DEFAULT_METRICS_FORMAT = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
"""Katib's default TEXT regex: ``name=value`` pairs (group 1 name, group 2 value)."""

_FILE_FORMATS = ("TEXT", "JSON")
_SNIPPET_CHARS = 80

# RFC 3339 date-time (Go's time.RFC3339Nano accepts any fraction length).
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


MAX_LINE_CHARS = 1 << 20  # longer lines (a progress bar without newlines, binary output) carry no metrics


class MetricsFormatError(ValueError):
    """A metrics format or a metrics line could not be parsed."""


class MetricsCollectorUnavailable(RuntimeError):
    """A collector needs an optional dependency that is not installed."""


def parse_rfc3339(text: str) -> float | None:
    """Return epoch seconds for an RFC 3339 timestamp, or None if ``text`` is not one.

    Fractions finer than microseconds (Go's nanoseconds) are truncated.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(0)
        if not zulu:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            if sign == "-":
                offset = -offset
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=timezone(offset),
        )
    except ValueError:  # out-of-range field, e.g. month 13 or offset >= 24h
        return None
    return moment.timestamp()


def _snippet(line: str) -> str:
    """Shorten a line for an error message."""
    return line if len(line) <= _SNIPPET_CHARS else line[:_SNIPPET_CHARS] + "..."


class _JsonNumber(str):
    """A JSON number kept as its source text, so metric values are reported as written."""


def _json_timestamp(raw: Any) -> float | None:
    """Epoch seconds from a JSON ``timestamp`` (RFC 3339 string or epoch number)."""
    if isinstance(raw, _JsonNumber):
        seconds = float(raw)
        return seconds if math.isfinite(seconds) else None
    if isinstance(raw, str):
        return parse_rfc3339(raw)
    return None


class LineParser:
    """Incremental parser: feed it chunks of text as they arrive."""

    def __init__(
        self,
        metric_names: Sequence[str],
        metrics_format: Sequence[str] | None = None,
        file_format: str = "TEXT",
    ) -> None:
        """Compile the metrics regexes up front so a bad one fails before the trial runs.

        ``metrics_format`` applies to TEXT only; JSON lines are looked up by key.
        """
        file_format = file_format.upper()
        if file_format not in _FILE_FORMATS:
            raise MetricsFormatError(
                f"unknown metrics file format {file_format!r}; expected one of {', '.join(_FILE_FORMATS)}"
            )
        self.file_format = file_format
        self.metric_names: tuple[str, ...] = tuple(dict.fromkeys(metric_names))
        self._wanted = frozenset(self.metric_names)
        self._patterns: list[re.Pattern[str]] = []
        if file_format == "TEXT":
            self._patterns = [_compile(regex) for regex in (metrics_format or [DEFAULT_METRICS_FORMAT])]
        self._buffer = ""
        self._overlong = False  # inside a line longer than MAX_LINE_CHARS, skipped to its end
        self._line_number = 0

    def feed(self, chunk: str) -> list[MetricLog]:
        """Parse the complete lines in ``chunk``; a trailing partial line waits for more. A line longer than
        MAX_LINE_CHARS is no metrics line: it is dropped up to its newline rather than held in memory."""
        lines = (self._buffer + chunk).split("\n")
        self._buffer = lines.pop()
        if self._overlong and lines:  # the rest of an overlong line
            lines[0], self._overlong = "", False
        if len(self._buffer) > MAX_LINE_CHARS:
            self._buffer, self._overlong = "", True
        return self._parse_lines(lines)

    def flush(self) -> list[MetricLog]:
        """Parse the final partial line at end of stream."""
        line, self._buffer = self._buffer, ""
        if not line or self._overlong:
            self._overlong = False
            return []
        return self._parse_lines([line])

    def _parse_lines(self, lines: Iterable[str]) -> list[MetricLog]:
        """Parse whole lines, counting them for error messages."""
        logs: list[MetricLog] = []
        for line in lines:
            self._line_number += 1
            line = line.rstrip("\r")
            if self.file_format == "JSON":
                logs.extend(self._parse_json_line(line))
            else:
                logs.extend(self._parse_text_line(line))
        return logs

    def _parse_text_line(self, line: str) -> list[MetricLog]:
        """Apply every regex to a line; a leading RFC 3339 token timestamps all its metrics."""
        if not any(name in line for name in self.metric_names):
            return []  # Katib's shortcut: skip lines that mention no wanted metric
        timestamp = None
        first, sep, rest = line.partition(" ")
        if sep:
            timestamp = parse_rfc3339(first)
            if timestamp is not None:
                line = rest
        logs: list[MetricLog] = []
        for pattern in self._patterns:
            for match in pattern.finditer(line):
                name = (match.group(1) or "").strip()
                value = (match.group(2) or "").strip()
                if pattern.pattern == DEFAULT_METRICS_FORMAT and not any(c.isdigit() for c in value):
                    value = _non_finite_at(line, match.start(2))
                if value and name in self._wanted:
                    logs.append(MetricLog(name, value, timestamp))
        return logs

    def _parse_json_line(self, line: str) -> list[MetricLog]:
        """Read wanted keys from one JSON object; string and number values count."""
        if not line.strip():
            return []
        try:
            obj = json.loads(
                line,
                parse_float=_JsonNumber,
                parse_int=_JsonNumber,
                parse_constant=_JsonNumber,  # NaN/Infinity: kept, as_float() says non-numeric
            )
        except ValueError as exc:
            raise MetricsFormatError(
                f"line {self._line_number}: invalid JSON metrics line ({exc}): {_snippet(line)!r}"
            ) from exc
        if not isinstance(obj, dict):
            raise MetricsFormatError(
                f"line {self._line_number}: JSON metrics line is not an object: {_snippet(line)!r}"
            )
        timestamp = None
        if "timestamp" in obj:
            timestamp = _json_timestamp(obj["timestamp"])
            if timestamp is None:
                logger.warning(
                    "line %d: ignoring unparseable timestamp %r", self._line_number, obj["timestamp"]
                )
        logs: list[MetricLog] = []
        for name in self.metric_names:
            value = obj.get(name)
            if isinstance(value, str):  # JSON strings and numbers (_JsonNumber); not bools/null
                logs.append(MetricLog(name, str(value), timestamp))
        return logs


def record_logs(record: dict[str, Any], metric_names: Sequence[str]) -> list[MetricLog]:
    """The metric logs of one :func:`katibx.report_metrics` record (its values numbers or strings, its
    ``timestamp`` epoch seconds) as :class:`LineParser` reads them from the record's JSON line, without writing and
    parsing the line (a trial on a thread of the controller hands its records over as they are)."""
    stamp = record.get("timestamp")
    timestamp = float(stamp) if isinstance(stamp, (int, float)) and math.isfinite(stamp) else None
    logs: list[MetricLog] = []
    for name in dict.fromkeys(metric_names):
        value = record.get(name)
        if isinstance(value, str):
            logs.append(MetricLog(name, str.__str__(value), timestamp))  # (a str subclass, numpy's, as plain str)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            logs.append(MetricLog(name, _json_number(value), timestamp))
    return logs


def _json_number(value: int | float) -> str:
    """A number as JSON writes it (and LineParser keeps it): ``3``, ``0.1``, ``NaN``, ``Infinity``."""
    if isinstance(value, int) or math.isfinite(value):
        return repr(value)
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


_NON_FINITE = re.compile(r"[+-]?(?:inf(?:inity)?|nan)\b", re.IGNORECASE)


def _non_finite_at(line: str, start: int) -> str:
    """The ``nan``/``inf``/``-inf`` spelled at ``start``, or "". Katib's default regex matches only a bare sign
    there (``loss=-inf`` gave ``-``): the value is kept whole so that the trial is told it is not a finite number."""
    match = _NON_FINITE.match(line, start)
    return match.group(0) if match else ""


def _compile(regex: str) -> re.Pattern[str]:
    """Compile a metrics regex, requiring the name and value groups."""
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise MetricsFormatError(f"invalid metrics format regex `{regex}`: {exc}") from exc
    if pattern.groups < 2:
        raise MetricsFormatError(
            f"metrics format regex `{regex}` needs two groups: (metric name)(metric value)"
        )
    return pattern


def parse_text(
    text: str,
    metric_names: Sequence[str],
    metrics_format: Sequence[str] | None = None,
    file_format: str = "TEXT",
) -> list[MetricLog]:
    """Parse a whole log at once (feed + flush)."""
    parser = LineParser(metric_names, metrics_format, file_format)
    return parser.feed(text) + parser.flush()


def read_tfevents(directory: str | Path, metric_names: Sequence[str]) -> list[MetricLog]:
    """Collect wanted metrics from every TensorFlow event file under ``directory``.

    A metric's name is its tag, prefixed with ``subdir/`` when the file sits in a
    subdirectory of ``directory`` (Katib's rule). Scalar and tensor summaries count.
    """
    try:
        import tensorboard  # noqa: F401  (checked first: submodules may already be cached)
        from tensorboard.backend.event_processing import event_file_loader
        from tensorboard.util import tensor_util
    except ImportError as exc:
        raise MetricsCollectorUnavailable(
            "TensorFlowEvent metrics collector needs the 'tensorboard' package: "
            "pip install 'katibx[tensorboard]'"
        ) from exc

    root = Path(directory)
    wanted = frozenset(metric_names)
    logs: list[MetricLog] = []
    for path in sorted(p for p in root.rglob("*") if "tfevents" in p.name and p.is_file()):
        subdir = path.parent.relative_to(root).as_posix()
        prefix = "" if subdir == "." else subdir + "/"
        for event in event_file_loader.EventFileLoader(os.fspath(path)).Load():
            if not event.HasField("summary"):
                continue
            for summary_value in event.summary.value:
                name = prefix + summary_value.tag
                if name not in wanted:
                    continue
                value = _summary_value(summary_value, tensor_util)
                if value is not None:
                    logs.append(MetricLog(name, value, event.wall_time))
    return logs


def _summary_value(summary_value: Any, tensor_util: Any) -> str | None:
    """String form of a scalar or single-element tensor summary; None for other kinds."""
    kind = summary_value.WhichOneof("value")
    if kind == "simple_value":  # float32 on the wire; print it as such ("0.1", not "0.100000001")
        import numpy as np  # (here only: reading metrics of other formats never needs it)

        return str(np.float32(summary_value.simple_value))
    if kind != "tensor":
        return None
    array = tensor_util.make_ndarray(summary_value.tensor)
    if array.size != 1:
        return None  # histograms, images, ...: not a metric value
    item = array.reshape(())[()]
    if isinstance(item, bytes):
        return item.decode("utf-8", errors="replace")  # text summaries, e.g. a genotype
    return str(item)
