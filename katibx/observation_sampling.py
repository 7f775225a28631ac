"""Bounded observations of a running trial: a trial may print millions of metric lines, the controller keeps a
sample of them in memory and in the store, while the trial's summary (min, max, latest) stays exact.

Per metric, the first ``head`` logs are all kept; after them one log in ``stride``, where the stride doubles
whenever more than ``tail`` sampled logs have piled up (the older half of the sample is thinned in memory; the
store keeps what was sampled when it arrived). The logs holding the min, the max and the latest value are always
part of the history that early stopping reads, and stored when the trial ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from katibx.metrics import MetricLog
from katibx.trial import MetricSummary, SummaryFold

HEAD = 1000  # the first logs of each metric: all kept (early stopping reads a trial's first steps)
TAIL = 1000  # sampled logs of each metric after the head, at most, before the stride doubles


@dataclass
class _MetricSample:
    head: list[tuple[int, MetricLog]] = field(default_factory=list)
    tail: list[tuple[int, MetricLog]] = field(default_factory=list)
    seen: int = 0
    stride: int = 1
    latest: tuple[int, MetricLog] | None = None


class ObservationSampler:
    """The observations of one trial: :meth:`add` folds logs into exact summaries and says which to store."""

    def __init__(self, head: int = HEAD, tail: int = TAIL) -> None:
        self.head, self.tail = head, tail
        self._fold = SummaryFold()
        self._metrics: dict[str, _MetricSample] = {}
        self._extremes: dict[tuple[str, str], tuple[int, MetricLog]] = {}  # (metric, "min"/"max") -> its log
        self._seq = 0
        self._stored: set[int] = set()  # arrival numbers of the logs add() returned (bounded by the sampling)

    @property
    def summaries(self) -> dict[str, MetricSummary]:
        """Min, max and latest of every metric over all logs added (Katib's observation), exact."""
        return self._fold.summaries

    def add(self, logs: Iterable[MetricLog]) -> list[MetricLog]:
        """Fold ``logs`` (in arrival order) into the summaries; returns the ones to store."""
        kept = []
        for log in logs:
            self._seq += 1
            entry = (self._seq, log)
            before = self._fold.summaries.get(log.name)
            self._fold.add(log)
            after = self._fold.summaries[log.name]
            for side in ("min", "max"):
                if getattr(after, side) is not None and (before is None or getattr(before, side) != getattr(after, side)):
                    self._extremes[(log.name, side)] = entry
            sample = self._metrics.setdefault(log.name, _MetricSample())
            sample.latest = entry
            if self._keep(sample, entry):
                self._stored.add(self._seq)
                kept.append(log)
        return kept

    def _keep(self, sample: _MetricSample, entry: tuple[int, MetricLog]) -> bool:
        sample.seen += 1
        if len(sample.head) < self.head:
            sample.head.append(entry)
            return True
        if (sample.seen - self.head) % sample.stride:
            return False
        sample.tail.append(entry)
        if len(sample.tail) > self.tail:
            sample.stride *= 2
            sample.tail = sample.tail[::2]
        return True

    def history(self) -> list[MetricLog]:
        """The sampled logs of every metric plus those holding each min, max and latest value, in arrival order:
        what early stopping reads (bounded, whatever the trial printed)."""
        entries = {seq: log for sample in self._metrics.values() for seq, log in (*sample.head, *sample.tail)}
        entries.update(self._extremes.values())
        entries.update(s.latest for s in self._metrics.values() if s.latest is not None)
        return [entries[seq] for seq in sorted(entries)]

    def unstored_final(self) -> list[MetricLog]:
        """The logs holding each metric's latest, min and max value that sampling did not store, in arrival order:
        stored when the trial ends, so that the stored history ends with the final values and holds the extremes
        (early stopping reads it after a restart)."""
        entries = dict(self._extremes.values())
        entries.update(s.latest for s in self._metrics.values() if s.latest is not None)
        unstored = sorted(seq for seq in entries if seq not in self._stored)
        self._stored.update(unstored)
        return [entries[seq] for seq in unstored]
