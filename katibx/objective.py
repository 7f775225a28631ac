"""An experiment's objective: its metrics, their directions and strategies, and a trial's objective value.

The one place that turns a trial's observation into the number(s) algorithms, early stopping, the optimal trial
and the completion rules compare, so they never disagree about which value a trial reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from katibx.metrics import as_float
from katibx.trial import TrialRecord

if TYPE_CHECKING:
    from katibx.spec import Experiment


class Objective:
    """``spec.objective`` of an experiment: the objective metric first, then any ``additionalObjectives``.

    Made from an :class:`Experiment`, or from a stored spec (Katib's JSON) by the reading commands, which build
    no model."""

    def __init__(self, experiment: Experiment | Mapping[str, Any]) -> None:
        if isinstance(experiment, Mapping):
            stored = (experiment.get("spec") or {}).get("objective") or {}
            metric, kind, goal = stored.get("objectiveMetricName"), stored.get("type"), stored.get("goal")
            objectives = [(metric or "", kind or "")] + [(o.get("objectiveMetricName") or "", o.get("type") or "")
                                                         for o in stored.get("additionalObjectives") or []]
            strategies = {s["name"]: s["value"] for s in stored.get("metricStrategies") or []}
        else:
            spec = experiment.spec.objective
            assert spec is not None, "validation requires spec.objective"
            metric, kind, goal = spec.objective_metric_name, spec.type, spec.goal
            objectives, strategies = spec.objectives(), {s.name: s.value for s in spec.metric_strategies}
        assert metric, "validation requires spec.objective.objectiveMetricName"
        self.metric: str = metric
        self.maximize = kind == "maximize"
        self.goal: float | None = goal
        #: (metric, maximize) for every objective, the objective metric first.
        self.objectives: list[tuple[str, bool]] = [(name, kind == "maximize") for name, kind in objectives]
        self._strategies: dict[str, str] = strategies

    def strategy(self, metric: str) -> str:
        """Which of a metric's reported values counts: ``min``, ``max`` or ``latest`` (Katib's metricStrategies)."""
        return self._strategies.get(metric, "latest")

    def raw(self, trial: TrialRecord, metric: str | None = None) -> str | None:
        """The metric's value as reported (a string; a genotype need not be numeric), picked by its strategy."""
        name = metric or self.metric
        return trial.metric(name, self.strategy(name))

    def value(self, trial: TrialRecord) -> float | None:
        """The trial's numeric objective value, or None unless it has a result (``TrialState.has_result``)."""
        return as_float(self.raw(trial)) if trial.state.has_result else None

    def values(self, trial: TrialRecord) -> list[float] | None:
        """The trial's value for every objective, or None unless it has a result and all of them are numeric."""
        if not trial.state.has_result:
            return None
        values = [as_float(self.raw(trial, name)) for name, _ in self.objectives]
        return None if any(v is None for v in values) else values  # type: ignore[return-value]

    def loss(self, trial: TrialRecord) -> float | None:
        """The objective value turned into a quantity to minimise (negated when maximising), or None."""
        value = self.value(trial)
        return None if value is None else (-value if self.maximize else value)

    def reached_goal(self, value: float) -> bool:
        return self.goal is not None and (value >= self.goal if self.maximize else value <= self.goal)
