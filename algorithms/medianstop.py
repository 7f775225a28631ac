"""Katib's ``medianstop``: stop a trial whose best objective so far is worse than completed trials' early average."""

from __future__ import annotations

from statistics import fmean
from typing import Mapping, Sequence

from katibx.early_stopping import EarlyStoppingAlgorithm
from katibx.metrics import MetricLog, as_float
from katibx.trial import TrialRecord, TrialState


class MedianStop(EarlyStoppingAlgorithm):
    """Katib's rule: once ``min_trials_required`` trials have succeeded, the threshold is the mean over them of
    the average of their first ``start_step`` objective values; a running trial with at least ``start_step``
    reports whose best value so far is worse than the threshold is stopped."""

    name = "medianstop"
    default_settings = {"min_trials_required": "3", "start_step": "4"}

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        self.min_trials_required = self._positive(settings, "min_trials_required", errors)
        self.start_step = self._positive(settings, "start_step", errors)
        self.maximize = self.objective.maximize
        self._early_averages: dict[str, float] = {}

    @staticmethod
    def _positive(settings: Mapping[str, str | None], name: str, errors: list[str]) -> int:
        raw = settings.get(name) or ""
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            errors.append(f"spec.earlyStopping.algorithmSettings[{name}]: must be an integer greater than 0 (got {raw!r})")
        return value

    def _values(self, logs: Sequence[MetricLog]) -> list[float]:
        values = (as_float(log.value) for log in logs if log.name == self.objective.metric)
        return [v for v in values if v is not None]

    def observe(self, trial: TrialRecord, logs: Sequence[MetricLog]) -> None:
        if trial.state is not TrialState.SUCCEEDED:
            return
        values = self._values(logs)[: self.start_step]
        if values:
            self._early_averages[trial.name] = fmean(values)

    def threshold(self) -> float | None:
        """The current stopping threshold, or None until enough trials have succeeded."""
        if len(self._early_averages) < self.min_trials_required:
            return None
        return fmean(self._early_averages.values())

    def should_stop(self, trial: TrialRecord, logs: Sequence[MetricLog]) -> bool:
        threshold = self.threshold()
        values = self._values(logs)
        if threshold is None or len(values) < self.start_step:
            return False
        best = max(values) if self.maximize else min(values)
        return best < threshold if self.maximize else best > threshold
