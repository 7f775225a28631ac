"""Katib experiments as Optuna studies: what Optuna's plots (``katibx plot``) show of a katibx store.

Parameters become Optuna distributions (a list's choices as themselves, or as indices for the samplers of
``katibx.algorithms``), trials become frozen trials with Katib's states mapped onto Optuna's, the objective
metric's reports become intermediate values (one step per report, so curves show) and the other metrics, Katib's
reason and message user attributes. The study lives in memory: the store is only read.
"""

from __future__ import annotations

import contextlib
import datetime
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import InMemoryStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState as OptunaState

from katibx.metrics import MetricLog, as_float
from katibx.objective import Objective
from katibx.search_space import Parameter, SearchSpace
from katibx.store import ExperimentRecord
from katibx.trial import TrialRecord, TrialState

# Katib's trial states as Optuna's: an early-stopped trial is Optuna's pruned one.
STATES = {
    TrialState.CREATED: OptunaState.WAITING, TrialState.RUNNING: OptunaState.RUNNING,
    TrialState.SUCCEEDED: OptunaState.COMPLETE, TrialState.EARLY_STOPPED: OptunaState.PRUNED,
    TrialState.FAILED: OptunaState.FAIL, TrialState.METRICS_UNAVAILABLE: OptunaState.FAIL,
    TrialState.KILLED: OptunaState.FAIL,
}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Optuna's warnings about trimmed ranges and experimental features are not the user's business here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def distribution(param: Parameter, *, choice_indices: bool = False) -> BaseDistribution:
    """Optuna's distribution for a parameter; a list's choices as themselves or, with ``choice_indices``, as their
    indices (for samplers, which must tell ``1`` from ``True``); logUniform drops step, as in Katib."""
    if param.type == "int":
        assert param.min is not None and param.max is not None
        low, high = int(param.min), int(param.max)
        if param.distribution == "logUniform":
            return IntDistribution(max(1, low), high, log=True)
        step = int(param.step or 1)
        return IntDistribution(low, low + (high - low) // step * step, step=step)
    if param.type == "double":
        assert param.min is not None and param.max is not None
        if param.distribution == "logUniform":
            return FloatDistribution(param.min, param.max, log=True)
        with quiet():  # optuna trims a max that is not on the step grid, with a warning
            return FloatDistribution(param.min, param.max, step=param.step)
    return CategoricalDistribution(tuple(range(len(param.values))) if choice_indices else tuple(param.values))


def experiment_study(record: ExperimentRecord, trials: Sequence[TrialRecord],
                     logs: Mapping[int, Sequence[MetricLog]] | None = None) -> optuna.Study:
    """An in-memory Optuna study of the experiment: one frozen trial per Katib trial, in creation order; ``logs``
    (each trial's metric logs by trial id) give the intermediate values."""
    storage = optuna.storages.InMemoryStorage()
    add_trials(storage, add_study(storage, record), record, trials, logs)
    return optuna.load_study(study_name=record.qualified_name, storage=storage)


def add_study(storage: InMemoryStorage, record: ExperimentRecord, *, stable_ids: bool = False) -> int:
    """Add the experiment to ``storage`` as a study without trials (:func:`add_trials` adds them); returns its id.
    ``stable_ids``: the study gets the store's id, so it stays the same however the store grows or shrinks (the
    dashboard's links and caches keep working)."""
    objective = Objective(record.experiment)
    directions = [StudyDirection.MAXIMIZE if maximize else StudyDirection.MINIMIZE for _, maximize in objective.objectives]
    level = optuna.logging.get_verbosity()  # no "A new study created in memory" line
    optuna.logging.set_verbosity(max(level, optuna.logging.WARNING))
    try:
        with quiet():
            if stable_ids:
                storage._max_study_id = record.id - 1  # InMemoryStorage numbers studies from its counter
            study_id = storage.create_new_study(directions, study_name=record.qualified_name)
    finally:
        optuna.logging.set_verbosity(level)
    storage.set_study_system_attr(study_id, "study:metric_names", [name for name, _ in objective.objectives])
    return study_id


def add_trials(storage: InMemoryStorage, study_id: int, record: ExperimentRecord, trials: Sequence[TrialRecord],
               logs: Mapping[int, Sequence[MetricLog]] | None = None, *,
               system_attrs: Callable[[TrialRecord], dict[str, Any]] | None = None,
               stable_ids: bool = False) -> None:
    """Add the experiment's trials to its study in ``storage``, in creation order (see :func:`experiment_study`).
    ``system_attrs(trial)``: Optuna system attributes of a trial (the dashboard's artifacts); ``stable_ids``: each
    trial gets the store's id.

    The trials are appended as InMemoryStorage's ``create_new_trial`` appends them, without its deep copy of each
    (two thirds of the time at 100,000 trials): the frozen trials are made here and nobody else holds them."""
    objective = Objective(record.experiment)
    space = SearchSpace.from_experiment(record.experiment)
    distributions = {p.name: distribution(p) for p in space}
    study = storage._studies[study_id]
    with quiet(), storage._lock:
        for trial in sorted(trials, key=lambda t: t.index):
            frozen = _frozen(trial, objective, space, distributions, (logs or {}).get(trial.id, ()))
            if system_attrs is not None:
                frozen.system_attrs.update(system_attrs(trial))
            trial_id = trial.id if stable_ids else storage._max_trial_id + 1
            storage._max_trial_id = max(storage._max_trial_id, trial_id)
            frozen.number, frozen._trial_id = len(study.trials), trial_id
            storage._trial_id_to_study_id_and_number[trial_id] = (study_id, frozen.number)
            study.trials.append(frozen)
            storage._update_cache(trial_id, study_id)  # the study's best trial


def _frozen(trial: TrialRecord, objective: Objective, space: SearchSpace,
            distributions: Mapping[str, BaseDistribution], logs: Sequence[MetricLog]) -> optuna.trial.FrozenTrial:
    state = STATES[trial.state]
    values = objective.values(trial) if state is OptunaState.COMPLETE else None
    if state is OptunaState.COMPLETE and values is None:  # succeeded without the objective metric
        state = OptunaState.FAIL
    params = {}
    for parameter in space:
        if parameter.name in trial.assignments:
            value = parameter.cast(trial.assignments[parameter.name])
            if parameter.is_numeric_range:  # stepped doubles may carry float noise past a bound
                assert parameter.min is not None and parameter.max is not None
                value = type(value)(min(max(value, parameter.min), parameter.max))
            params[parameter.name] = value
    steps = [as_float(log.value) for log in sorted(logs, key=lambda e: e.timestamp or 0.0)  # in report order
             if log.name == objective.metric]
    attrs: dict[str, Any] = {"katib_name": trial.name, "katib_state": trial.state.value}
    if trial.reason:
        attrs["katib_reason"] = trial.reason
    for name, summary in trial.observation.items():
        if name != objective.metric:
            attrs[name] = summary.latest
    own = {k: distributions[k] if distributions[k]._contains(distributions[k].to_internal_repr(v)) else _loose(
        distributions[k], v) for k, v in params.items()}  # a value off the step grid (Hyperband's resource)
    frozen = optuna.trial.create_trial(
        state=state, values=values, params=params, distributions=own,
        user_attrs=attrs, intermediate_values={i: v for i, v in enumerate(steps) if v is not None})
    frozen.datetime_start = _moment(trial.start_time or trial.creation_time)  # Katib's times, not the rebuild's
    frozen.datetime_complete = _moment(trial.completion_time) if frozen.state.is_finished() else None
    return frozen


def _loose(dist: BaseDistribution, value: Any) -> BaseDistribution:
    """A distribution that holds ``value``: the same range without step (widened to it), or just that choice."""
    if isinstance(dist, (IntDistribution, FloatDistribution)) and isinstance(value, (int, float)):
        low, high = min(dist.low, value), max(dist.high, value)
        if isinstance(dist, IntDistribution) and isinstance(value, int):
            return IntDistribution(low, high, log=dist.log and low >= 1)
        return FloatDistribution(float(low), float(high), log=dist.log and low > 0)
    return CategoricalDistribution((value,))


def _moment(seconds: float | None) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(seconds) if seconds else None
