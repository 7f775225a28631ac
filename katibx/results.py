"""What ``katibx.tune`` returns: the finished Experiment as Katib shapes it, with Optuna-style views of its trials.

:class:`TuneResult` is the Katib-shaped dict (``result["status"]["currentOptimalTrial"]``, as
``KatibClient.get_experiment`` gives it) and also answers ``best_params``, ``best_value``, ``best_trial``,
``best_trials`` (the Pareto front of a multi-objective experiment), ``trials`` and ``trials_dataframe()``, with the
values typed as the objective received them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from katibx.katib_object import KatibObject
from katibx.metrics import MetricLog, as_float
from katibx.objective import Objective
from katibx.search_space import SearchSpace
from katibx.status import optimal_trial, pareto_front
from katibx.store import ExperimentRecord
from katibx.trial import TrialRecord, TrialState


@dataclass(frozen=True)
class TrialResult:
    """One trial: its typed parameters, its objective value(s), its metrics (as the experiment's strategies pick
    them) and its state."""

    name: str
    number: int
    state: TrialState
    params: dict[str, Any]
    value: float | None
    values: list[float] | None
    metrics: dict[str, float | str | None]
    reason: str
    message: str
    #: Every value reported of each metric, in order (Optuna's intermediate values; a very long series is sampled).
    history: dict[str, list[float | str]] = field(default_factory=dict)


class TuneResult(KatibObject):
    """The finished Experiment (this dict, Katib-shaped) and its trials, Optuna-style."""

    def __init__(self, experiment: dict[str, Any], record: ExperimentRecord, trials: Sequence[TrialRecord],
                 logs: Mapping[int, Sequence[MetricLog]] | None = None,
                 finished: Mapping[str, TrialResult] | None = None) -> None:
        """``logs``: each trial's metric logs by trial id (``Store.experiment_observation_logs``), its history;
        ``finished``: results already made of finished trials (they do not change), by name, used as they are."""
        super().__init__(experiment)
        self._record = record
        self._records = list(trials)
        self._objective = Objective(record.experiment)
        self._space = SearchSpace.from_experiment(record.experiment)
        self._logs = logs or {}
        known = finished or {}
        self._made = {t.name: known[t.name] for t in self._records  # results made, by trial name
                      if t.state.is_terminal and t.name in known}
        self._trials: list[TrialResult] | None = None

    @property
    def trials(self) -> list[TrialResult]:
        """Every trial, in creation order (made on first use: a caller asking only for the best reads one)."""
        if self._trials is None:
            try:
                self._trials = [self._result_of(t) for t in self._records]
            except AttributeError as exc:  # (raised from a property, the Katib dict's attribute lookup would hide it)
                raise RuntimeError(f"the trials could not be read: {exc}") from exc
        return self._trials

    def _result_of(self, trial: TrialRecord) -> TrialResult:
        made = self._made.get(trial.name)
        if made is None:
            made = self._made[trial.name] = self._result(trial, self._logs.get(trial.id, ()))
        return made

    def _result(self, trial: TrialRecord, logs: Sequence[MetricLog]) -> TrialResult:
        names = list(dict.fromkeys([m for m, _ in self._objective.objectives] +
                                   list(self._record.experiment.spec.objective.additional_metric_names or [])))
        metrics = {}
        for name in names:
            raw = self._objective.raw(trial, name)
            number = as_float(raw) if raw is not None else None
            metrics[name] = number if number is not None else raw
        history: dict[str, list[float | str]] = {}
        for log in logs:
            number = as_float(log.value)
            history.setdefault(log.name, []).append(number if number is not None else log.value)
        return TrialResult(trial.name, trial.index, trial.state, self._space.cast(dict(trial.assignments)),
                           self._objective.value(trial), self._objective.values(trial), metrics,
                           trial.reason or "", trial.message or "", history)

    def _by_name(self, record: TrialRecord | None) -> TrialResult | None:
        return None if record is None else self._result_of(record)

    @property
    def best_trial(self) -> TrialResult | None:
        """The trial with the best objective value (Katib's currentOptimalTrial: for several objectives, by the
        first; see :attr:`best_trials`); None when no trial has one."""
        return self._by_name(optimal_trial(self._record.experiment, self._records))

    @property
    def best_params(self) -> dict[str, Any]:
        """The best trial's parameters, typed ({} when no trial has an objective value)."""
        best = self.best_trial
        return dict(best.params) if best is not None else {}

    @property
    def best_value(self) -> float | None:
        """The best trial's objective value (None when no trial has one)."""
        best = self.best_trial
        return best.value if best is not None else None

    @property
    def best_trials(self) -> list[TrialResult]:
        """The Pareto-optimal trials of a multi-objective experiment (the best trial alone otherwise)."""
        if len(self._objective.objectives) == 1:
            return [self.best_trial] if self.best_trial is not None else []
        return [self._by_name(t) for t in pareto_front(self._record.experiment, self._records)]  # type: ignore[misc]

    def trials_dataframe(self) -> Any:
        """The trials as a pandas DataFrame (one row each: number, name, state, value(s), params_*, metrics_*), like
        Optuna's ``study.trials_dataframe()``; ImportError naming pandas when it is not installed."""
        try:
            import pandas
        except ImportError:
            raise ImportError("trials_dataframe() needs pandas: pip install pandas") from None
        rows = []
        for trial in self.trials:
            row: dict[str, Any] = {"number": trial.number, "name": trial.name, "state": trial.state.value,
                                   "value": trial.value}
            if len(self._objective.objectives) > 1:
                row["values"] = trial.values
            row.update({f"params_{k}": v for k, v in trial.params.items()})
            row.update({f"metrics_{k}": v for k, v in trial.metrics.items()})
            rows.append(row)
        return pandas.DataFrame(rows)

    to_pandas = trials_dataframe
