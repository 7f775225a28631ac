"""Collect a running trial's metrics from the files it writes, incrementally, as Katib's collectors do.

Shared by worker backends: the stdout log (StdOut), a metrics file (File, TEXT or JSON), event files
(TensorFlowEvent, read at exit) and the push channel that :func:`katibx.report_metrics` appends to.
"""

from __future__ import annotations

from pathlib import Path

from katibx.collectors import LineParser, MetricLog, read_tfevents
from katibx.spec import Experiment

STDOUT_LOG = "stdout.log"
PUSH_FILE = "metrics.jsonl"


def metric_names(experiment: Experiment) -> list[str]:
    objective = experiment.spec.objective
    assert objective is not None and objective.objective_metric_name
    return [objective.objective_metric_name, *objective.additional_metric_names]


class _Tail:
    """Reads what was appended to a file since the last call and feeds it to a parser."""

    def __init__(self, path: Path, parser: LineParser) -> None:
        self.path = path
        self.parser = parser
        self.offset = 0

    def read(self) -> list[MetricLog]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        return self.parser.feed(data.decode("utf-8", errors="replace")) if data else []


class MetricsCollector:
    """Per-trial collector; ``poll`` while the trial runs, ``finish`` once it has exited."""

    def __init__(self, experiment: Experiment, trial_dir: Path, workdir: Path) -> None:
        names = metric_names(experiment)
        mc = experiment.spec.metrics_collector_spec
        kind = mc.collector.kind if mc and mc.collector else "StdOut"
        source = mc.source if mc else None
        formats = source.filter.metrics_format if source and source.filter else None
        fsp = source.file_system_path if source else None
        self._tails = [_Tail(trial_dir / PUSH_FILE, LineParser(names, file_format="JSON"))]
        self._tfevent_dir: Path | None = None
        if kind == "StdOut":
            self._tails.append(_Tail(trial_dir / STDOUT_LOG, LineParser(names, formats)))
        elif kind == "File" and fsp and fsp.path:
            self._tails.append(_Tail(workdir / fsp.path, LineParser(names, formats, fsp.format or "TEXT")))
        elif kind == "TensorFlowEvent" and fsp and fsp.path:
            self._tfevent_dir = workdir / fsp.path
        self._names = names

    def poll(self) -> list[MetricLog]:
        return [log for tail in self._tails for log in tail.read()]

    def finish(self) -> list[MetricLog]:
        logs = self.poll()
        for tail in self._tails:
            logs.extend(tail.parser.flush())
        if self._tfevent_dir is not None and self._tfevent_dir.is_dir():
            logs.extend(read_tfevents(self._tfevent_dir, self._names))
        return logs
