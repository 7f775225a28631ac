"""The early-stopping plugin contract: watch running trials' metrics and decide which to stop."""

from __future__ import annotations

import abc
from typing import ClassVar, Mapping, Sequence

from katibx.metrics import MetricLog
from katibx.objective import Objective
from katibx.search_algorithm import AlgorithmSettingsError
from katibx.spec import Experiment
from katibx.trial import TrialRecord


class EarlyStoppingAlgorithm(abc.ABC):
    """Base of every ``katibx.early_stopping`` plugin.

    The controller replays every completed trial through :meth:`observe` (also after a resume, so the
    store stays the single source of truth) and asks :meth:`should_stop` whenever a running trial
    reports metrics. A stopped trial ends ``EarlyStopped`` and counts as completed, as in Katib.
    """

    name: ClassVar[str]
    default_settings: ClassVar[Mapping[str, str | None]] = {}

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.objective = Objective(experiment)
        spec = experiment.spec.early_stopping
        given = spec.settings_dict() if spec else {}
        errors = [
            f"spec.earlyStopping.algorithmSettings[{n}]: unknown setting for early stopping {self.name!r} "
            f"(known: {', '.join(self.default_settings) or 'none'})"
            for n in sorted(set(given) - set(self.default_settings))
        ]
        self.settings = {**self.default_settings, **given}
        if not errors:
            self.configure(self.settings, errors)
        if errors:
            raise AlgorithmSettingsError(errors)

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        """Parse and check settings, appending ``path: message`` lines to ``errors``."""

    def observe(self, trial: TrialRecord, logs: Sequence[MetricLog]) -> None:
        """Learn from a trial that has completed (Succeeded or EarlyStopped)."""

    @abc.abstractmethod
    def should_stop(self, trial: TrialRecord, logs: Sequence[MetricLog]) -> bool:
        """Whether a running trial, with the metric logs it has reported so far, should be stopped now."""
