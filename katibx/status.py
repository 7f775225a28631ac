"""Experiment status as Katib computes it: conditions, trial counters, the optimal trial and the completion rules."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from katibx.metrics import as_float, non_finite
from katibx.objective import Objective
from katibx.spec import Experiment
from katibx.template import format_value
from katibx.trial import TrialRecord, TrialState

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
    moment = dt.datetime.fromtimestamp(seconds, dt.timezone.utc) if seconds else dt.datetime.now(dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


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


def optimal_trial(experiment: Experiment, trials: Sequence[TrialRecord]) -> TrialRecord | None:
    """Katib's currentOptimalTrial: best strategy value of the objective; a non-numeric value (a genotype) wins
    outright; nan and infinities never count (a store written before they were refused may hold them)."""
    objective = Objective(experiment)
    best: TrialRecord | None = None
    best_value: float | None = None
    for trial in trials:
        raw = objective.raw(trial) if trial.state.has_result else None
        if raw is None or non_finite(raw):
            continue
        value = as_float(raw)
        if value is None:
            best, best_value = trial, None
            continue
        if best is None or (best_value is not None and (value > best_value if objective.maximize else value < best_value)):
            best, best_value = trial, value
    return best


def pareto_front(experiment: Experiment, trials: Sequence[TrialRecord]) -> list[TrialRecord]:
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


def completion(experiment: Experiment, trials: Sequence[TrialRecord],
               counts: TrialCounts | None = None) -> tuple[str, str, str] | None:
    """Katib's completion rules in order: goal, max failed, max trials. Returns (type, reason, message) or None.

    ``counts`` are the trials' counters when the caller keeps them (saves a pass over the trials)."""
    spec = experiment.spec
    objective = Objective(experiment)
    counts = counts or TrialCounts.of(trials)
    if objective.goal is not None:
        best = optimal_trial(experiment, trials)
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


def experiment_status(record: Any, trials: Sequence[TrialRecord]) -> dict[str, Any]:
    """Katib's ExperimentStatus for an ExperimentRecord and its trials."""
    experiment: Experiment = record.experiment
    counts = TrialCounts.of(trials)
    lists: dict[str, list[str]] = {}
    key = {
        TrialState.CREATED: "pendingTrialList", TrialState.RUNNING: "runningTrialList",
        TrialState.SUCCEEDED: "succeededTrialList", TrialState.FAILED: "failedTrialList",
        TrialState.KILLED: "killedTrialList", TrialState.EARLY_STOPPED: "earlyStoppedTrialList",
        TrialState.METRICS_UNAVAILABLE: "metricsUnavailableTrialList",
    }
    for t in trials:
        lists.setdefault(key[t.state], []).append(t.name)
    status: dict[str, Any] = {
        "startTime": timestamp(record.created),
        "conditions": record.conditions,
        "currentOptimalTrial": optimal_trial_status(experiment, trials),
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
    if experiment.spec.objective and experiment.spec.objective.additional_objectives:
        status["paretoFront"] = [_trial_summary(t) for t in pareto_front(experiment, trials)]
    if record.completed:
        status["completionTime"] = timestamp(record.completed)
    return status


def _trial_summary(trial: TrialRecord) -> dict[str, Any]:
    return {
        "trialName": trial.name,
        "parameterAssignments": [{"name": k, "value": format_value(v)} for k, v in trial.assignments.items()],
        "observation": {"metrics": [m.to_dict() for m in trial.observation.values()]},
    }


def optimal_trial_status(experiment: Experiment, trials: Sequence[TrialRecord]) -> dict[str, Any]:
    best = optimal_trial(experiment, trials)
    if best is None:
        return {"bestTrialName": "", "parameterAssignments": [], "observation": {"metrics": []}}
    summary = _trial_summary(best)
    return {"bestTrialName": summary.pop("trialName"), **summary}
