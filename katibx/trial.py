"""Trials as the controller, the store and the algorithms see them: Katib's states and observations."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Sequence

from katibx.metrics import MetricLog, as_float, non_finite


class TrialState(str, Enum):
    """Katib's trial condition types; a trial's state is its latest one."""

    CREATED = "Created"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    KILLED = "Killed"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    EARLY_STOPPED = "EarlyStopped"

    @property
    def is_terminal(self) -> bool:
        return self is not _CREATED and self is not _RUNNING  # (asked of every trial: identity, no enum lookups)

    @property
    def is_active(self) -> bool:
        return self is _CREATED or self is _RUNNING

    @property
    def has_result(self) -> bool:
        """Succeeded or EarlyStopped: the trial's objective values count (Katib's optimal trial, the algorithms)."""
        return self in (TrialState.SUCCEEDED, TrialState.EARLY_STOPPED)


_CREATED, _RUNNING = TrialState.CREATED, TrialState.RUNNING

# Katib's labels on every trial (and on the objects a trial creates on a cluster).
EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"
TRIAL_LABEL = "katib.kubeflow.org/trial"

# A trial labelled ``katibx.io/checkpoint-from: <trial>`` starts from a copy of that trial's checkpoint directory,
# made each time it starts (a re-run after a controller restart gets a fresh copy); PBT sets it on every child.
CHECKPOINT_FROM_LABEL = "katibx.io/checkpoint-from"

# Katib's reasons, by state.
TRIAL_REASONS = {
    TrialState.CREATED: "TrialCreated",
    TrialState.RUNNING: "TrialRunning",
    TrialState.SUCCEEDED: "TrialSucceeded",
    TrialState.FAILED: "TrialFailed",
    TrialState.KILLED: "TrialKilled",
    TrialState.METRICS_UNAVAILABLE: "MetricsUnavailable",
    TrialState.EARLY_STOPPED: "TrialEarlyStopped",
}


@dataclass(frozen=True)
class MetricSummary:
    """Katib's per-metric observation: min, max and latest values as strings (non-numeric values only update latest)."""

    name: str
    min: str | None
    max: str | None
    latest: str

    def value(self, strategy: str) -> str:
        """The value a metric strategy picks, falling back to latest when min/max are unavailable."""
        picked = {"min": self.min, "max": self.max}.get(strategy)
        return picked if picked is not None else self.latest

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "min": self.min or "unavailable", "max": self.max or "unavailable", "latest": self.latest}


class SummaryFold:
    """Katib's per-metric observation (min, max, latest), folded one log at a time in arrival order."""

    def __init__(self) -> None:
        self.summaries: dict[str, MetricSummary] = {}
        self._latest_ts: dict[str, float] = {}

    def add(self, log: MetricLog) -> None:
        name, value, ts = log.name, log.value, log.timestamp or 0.0
        prev = self.summaries.get(name)
        lo, hi = (prev.min, prev.max) if prev else (None, None)
        if as_float(value) is not None or non_finite(value):
            lo, hi = _extreme(lo, value, min), _extreme(hi, value, max)
        latest = value
        if prev is not None and ts < self._latest_ts[name]:  # a log stamped earlier than the latest one so far
            latest = prev.latest
        else:
            self._latest_ts[name] = ts
        self.summaries[name] = MetricSummary(name, lo, hi, latest)


def summarize(logs: Sequence[MetricLog]) -> dict[str, MetricSummary]:
    """Fold metric logs, in arrival order and stamped with their time, into per-metric summaries."""
    fold = SummaryFold()
    for log in logs:
        fold.add(log)
    return fold.summaries


def _extreme(kept: str | None, value: str, pick: Callable[[float, float], float]) -> str:
    """The reported text of ``pick(kept, value)``; a NaN makes min and max NaN from then on (numpy's rule), so a
    trial that reported one never gets a min/max objective value that hides it."""
    if kept is None or math.isnan(float(kept)):
        return kept or value
    if math.isnan(float(value)):
        return value
    return value if pick(float(kept), float(value)) != float(kept) else kept


@dataclass
class TrialRecord:
    """A trial with its typed assignments and, once terminal, its observation."""

    name: str
    index: int
    assignments: dict[str, Any]
    state: TrialState = TrialState.CREATED
    labels: dict[str, str] = field(default_factory=dict)
    observation: dict[str, MetricSummary] = field(default_factory=dict)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    message: str = ""
    creation_time: float | None = None
    start_time: float | None = None
    completion_time: float | None = None
    id: int = 0

    def metric(self, name: str, strategy: str = "latest") -> str | None:
        summary = self.observation.get(name)
        return summary.value(strategy) if summary else None
