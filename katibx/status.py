"""Experiment status as Katib computes it: conditions, trial counters, the optimal trial and the completion rules."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from katibx.metrics import as_float, non_finite
from katibx.objective import Objective
from katibx.template import format_value
from katibx.trial import TrialRecord, TrialState

if TYPE_CHECKING:
    from katibx.spec import Experiment

# An algorithm that runs another one it chooses (``auto``) records the choice and why in the experiment's annotations:
# stored with the experiment (a resume keeps the choice), shown in its status as ``chosenAlgorithm``.
CHOSEN_ALGORITHM_ANNOTATION = "katibx.io/chosen-algorithm"
CHOSEN_REASON_ANNOTATION = "katibx.io/chosen-algorithm-reason"


def forget_chosen_algorithm(experiment: Experiment) -> Experiment:
    """``experiment`` without a recorded choice: a new experiment (one exported from another carries that one's
    choice) chooses afresh; only a resume keeps it."""
    for key in (CHOSEN_ALGORITHM_ANNOTATION, CHOSEN_REASON_ANNOTATION):
        experiment.metadata.annotations.pop(key, None)
    return experiment

# Experiment condition types and Katib's reasons.
CREATED, RUNNING, RESTARTING, SUCCEEDED, FAILED = "Created", "Running", "Restarting", "Succeeded", "Failed"
REASON_CREATED = "ExperimentCreated"
REASON_RUNNING = "ExperimentRunning"
REASON_RESTARTING = "ExperimentRestarting"
REASON_GOAL_REACHED = "ExperimentGoalReached"
REASON_MAX_TRIALS = "ExperimentMaxTrialsReached"
REASON_SUGGESTION_END = "ExperimentSuggestionEndReached"
REASON_FAILED = "ExperimentFailed"
REASON_TIME_LIMIT = "ExperimentTimeLimitReached"  # katibx's: tune(timeout=...), as Optuna's optimize(timeout=...)


def timestamp(seconds: float | None = None) -> str:
    """Katib's time format (RFC 3339 in UTC, whole seconds) of ``seconds`` since the epoch, or of now."""
    global _last_stamp
    whole = math.floor(seconds if seconds else time.time())
    last = _last_stamp  # read once: another thread may replace it meanwhile
    if last[0] != whole:  # a trial's conditions take several stamps in the same second
        last = _last_stamp = (whole, dt.datetime.fromtimestamp(whole, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return last[1]


_last_stamp: tuple[int | None, str] = (None, "")  # (epoch second, its text)


def set_condition(conditions: list[dict[str, Any]], ctype: str, status: bool, reason: str, message: str) -> None:
    """Katib's setCondition: an unchanged condition stays put; a changed one moves to the end of the list
    (keeping its transition time when only the reason changed)."""
    value = "True" if status else "False"
    current = next((c for c in conditions if c["type"] == ctype), None)
    if current is not None and current["status"] == value and current["reason"] == reason:
        return
    now = timestamp()
    transition = current["lastTransitionTime"] if current is not None and current["status"] == value else now
    conditions[:] = [c for c in conditions if c["type"] != ctype]
    conditions.append({"type": ctype, "status": value, "reason": reason, "message": message,
                       "lastUpdateTime": now, "lastTransitionTime": transition})


def current_condition(conditions: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The last condition with status True (what kubectl shows as the experiment's status)."""
    true = [c for c in conditions if c["status"] == "True"]
    return true[-1] if true else None


def is_completed(conditions: Sequence[dict[str, Any]]) -> bool:
    return any(c["type"] in (SUCCEEDED, FAILED) and c["status"] == "True" for c in conditions)


@dataclass
class TrialCounts:
    """Katib's status counters."""

    trials: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    killed: int = 0
    early_stopped: int = 0
    metrics_unavailable: int = 0

    @classmethod
    def of(cls, trials: Sequence[TrialRecord]) -> "TrialCounts":
        return cls.from_states(Counter(t.state for t in trials))

    @classmethod
    def from_states(cls, states: Mapping[TrialState, int]) -> "TrialCounts":
        """Counters from the number of trials in each state (what a controller keeps up to date as trials move)."""
        get = states.get
        return cls(
            trials=sum(states.values()), pending=get(TrialState.CREATED, 0), running=get(TrialState.RUNNING, 0),
            succeeded=get(TrialState.SUCCEEDED, 0), failed=get(TrialState.FAILED, 0), killed=get(TrialState.KILLED, 0),
            early_stopped=get(TrialState.EARLY_STOPPED, 0), metrics_unavailable=get(TrialState.METRICS_UNAVAILABLE, 0),
        )

    @property
    def active(self) -> int:
        return self.pending + self.running

    @property
    def completed(self) -> int:
        return self.trials - self.active

    @property
    def failures(self) -> int:
        """What maxFailedTrialCount counts: Failed plus MetricsUnavailable."""
        return self.failed + self.metrics_unavailable


class OptimalTrial:
    """Katib's currentOptimalTrial kept up to date as trials get results, in any order: always the trial that
    :func:`optimal_trial` would pick from all of them (so a controller or a reader need not walk every trial)."""

    def __init__(self, experiment: Experiment | Mapping[str, Any]) -> None:
        self._objective = Objective(experiment)
        self.trial: TrialRecord | None = None
        self._value: float | None = None  # the trial's numeric value; None for a non-numeric one (a genotype)

    def offer(self, trial: TrialRecord) -> bool:
        """Take ``trial`` when it is better (True): the best strategy value, the earlier trial on a tie; a
        non-numeric value wins outright over numbers (the later one over another); nan and infinities never count."""
        raw = self._objective.raw(trial) if trial.state.has_result else None
        if raw is None or non_finite(raw):
            return False
        value = as_float(raw)
        best, best_value = self.trial, self._value
        if best is not None:
            if value is None:
                if best_value is None and trial.index <= best.index:
                    return False
            elif best_value is None or not (
                    (value > best_value if self._objective.maximize else value < best_value)
                    or (value == best_value and trial.index < best.index)):
                return False
        self.trial, self._value = trial, value
        return True


def optimal_trial(experiment: Experiment | Mapping[str, Any], trials: Sequence[TrialRecord]) -> TrialRecord | None:
    """Katib's currentOptimalTrial among ``trials`` (see :class:`OptimalTrial`)."""
    optimal = OptimalTrial(experiment)
    for trial in trials:
        optimal.offer(trial)
    return optimal.trial


def pareto_front(experiment: Experiment | Mapping[str, Any], trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Trials with a result that no other trial dominates on every objective (each in its own direction)."""
    import numpy as np  # only here: the CLI's reading verbs start without it

    objective = Objective(experiment)
    signs = np.array([-1.0 if maximize else 1.0 for _, maximize in objective.objectives])
    candidates, points = [], []
    for trial in trials:
        values = objective.values(trial)
        if values is not None:
            candidates.append(trial)
            points.append(values)
    if not candidates:
        return []
    costs = np.array(points) * signs  # minimise every column
    front = []
    for i, cost in enumerate(costs):
        dominated = np.any(np.all(costs <= cost, axis=1) & np.any(costs < cost, axis=1))
        if not dominated:
            front.append(candidates[i])
    return front


def completion(experiment: Experiment, counts: TrialCounts,
               best: TrialRecord | None) -> tuple[str, str, str] | None:
    """Katib's completion rules in order: goal, max failed, max trials, given the trials' counters and optimal trial.
    Returns (type, reason, message) or None."""
    spec = experiment.spec
    objective = Objective(experiment)
    if objective.goal is not None:
        raw = objective.raw(best) if best else None
        value = as_float(raw)
        if value is not None and objective.reached_goal(value):
            return (SUCCEEDED, REASON_GOAL_REACHED,
                    f"Experiment has succeeded because Objective goal has reached ({objective.metric}={raw})")
    if spec.max_failed_trial_count is not None and counts.failures > 0 and counts.failures >= spec.max_failed_trial_count:
        return FAILED, REASON_FAILED, f"Experiment has failed because max failed count has reached ({counts.failures} failed trials)"
    if spec.max_trial_count is not None and counts.completed >= spec.max_trial_count:
        return SUCCEEDED, REASON_MAX_TRIALS, "Experiment has succeeded because max trial count has reached"
    return None


@dataclass
class ExperimentSummary:
    """What an experiment's status says of its trials: the counters, the optimal trial, each trial's name and state
    in creation order (the status lists them) and, with several objectives, the Pareto front. Built from trials in
    memory (:meth:`of`) or read from the store in one snapshot (:meth:`katibx.store.Store.summary`)."""

    counts: TrialCounts
    best: TrialRecord | None
    names: Sequence[tuple[str, TrialState]] | None = None  # None when not read (a table row needs no list)
    pareto: Sequence[TrialRecord] | None = None  # None with one objective

    @classmethod
    def of(cls, experiment: Experiment | Mapping[str, Any], trials: Sequence[TrialRecord]) -> "ExperimentSummary":
        multi = len(Objective(experiment).objectives) > 1
        return cls(TrialCounts.of(trials), optimal_trial(experiment, trials), [(t.name, t.state) for t in trials],
                   pareto_front(experiment, trials) if multi else None)


def experiment_status(record: Any, summary: ExperimentSummary) -> dict[str, Any]:
    """Katib's ExperimentStatus for an ExperimentRecord and the summary of its trials."""
    counts = summary.counts
    lists: dict[str, list[str]] = {}
    key = {
        TrialState.CREATED: "pendingTrialList", TrialState.RUNNING: "runningTrialList",
        TrialState.SUCCEEDED: "succeededTrialList", TrialState.FAILED: "failedTrialList",
        TrialState.KILLED: "killedTrialList", TrialState.EARLY_STOPPED: "earlyStoppedTrialList",
        TrialState.METRICS_UNAVAILABLE: "metricsUnavailableTrialList",
    }
    for name, state in summary.names or ():
        lists.setdefault(key[state], []).append(name)
    status: dict[str, Any] = {
        "startTime": timestamp(record.created),
        "conditions": record.conditions,
        "currentOptimalTrial": optimal_trial_status(summary.best),
        **lists,
        "trials": counts.trials,
        "trialsSucceeded": counts.succeeded,
        "trialsFailed": counts.failed,
        "trialsKilled": counts.killed,
        "trialsPending": counts.pending,
        "trialsRunning": counts.running,
        "trialsEarlyStopped": counts.early_stopped,
        "trialMetricsUnavailable": counts.metrics_unavailable,
    }
    annotations = (record.spec.get("metadata") or {}).get("annotations") or {}
    if CHOSEN_ALGORITHM_ANNOTATION in annotations:
        status["chosenAlgorithm"] = {"algorithmName": annotations[CHOSEN_ALGORITHM_ANNOTATION],
                                     "reason": annotations.get(CHOSEN_REASON_ANNOTATION, "")}
    if summary.pareto is not None:
        status["paretoFront"] = [_trial_summary(t) for t in summary.pareto]
    if record.completed:
        status["completionTime"] = timestamp(record.completed)
    return status


def _trial_summary(trial: TrialRecord) -> dict[str, Any]:
    return {
        "trialName": trial.name,
        "parameterAssignments": [{"name": k, "value": format_value(v)} for k, v in trial.assignments.items()],
        "observation": {"metrics": [m.to_dict() for m in trial.observation.values()]},
    }


def optimal_trial_status(best: TrialRecord | None) -> dict[str, Any]:
    """``status.currentOptimalTrial`` for the optimal trial (empty while there is none)."""
    if best is None:
        return {"bestTrialName": "", "parameterAssignments": [], "observation": {"metrics": []}}
    summary = _trial_summary(best)
    return {"bestTrialName": summary.pop("trialName"), **summary}
