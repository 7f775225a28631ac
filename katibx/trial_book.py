"""The trial book: an experiment's trials as the controller keeps them, counted by state as they move.

Counts, the set of active trials and the optimal trial are kept up to date with every move, so a step of the
controller's loop costs the same at trial 10 and at trial 10,000.
"""

from __future__ import annotations

import secrets
import string
from collections import Counter
from typing import Any

from katibx.spec import Experiment
from katibx.status import OptimalTrial, TrialCounts, set_condition
from katibx.trial import TRIAL_REASONS, TrialRecord, TrialState

_SUFFIX = string.ascii_lowercase + string.digits


class TrialBook:
    """Every trial of one experiment in creation order, by name, and counted by state."""

    def __init__(self, trials: list[TrialRecord], experiment: Experiment) -> None:
        self.trials = trials
        self._optimal = OptimalTrial(experiment)
        for trial in trials:
            self._optimal.offer(trial)
        self._by_name = {t.name: t for t in trials}
        self._states: Counter[TrialState] = Counter(t.state for t in trials)
        self._active: dict[str, TrialRecord] = {t.name: t for t in trials if t.state.is_active}

    def __len__(self) -> int:
        return len(self.trials)

    def get(self, name: str) -> TrialRecord | None:
        return self._by_name.get(name)

    @property
    def best(self) -> TrialRecord | None:
        """Katib's currentOptimalTrial (see :class:`katibx.status.OptimalTrial`)."""
        return self._optimal.trial

    def counts(self) -> TrialCounts:
        return TrialCounts.from_states(self._states)

    def active(self) -> list[TrialRecord]:
        """Created and Running trials (a copy: callers may move trials while they walk it)."""
        return list(self._active.values())

    def new_trial(self, assignments: dict[str, Any], labels: dict[str, str], name: str | None, prefix: str,
                  index: int) -> TrialRecord:
        """A Created trial that is not in the book yet (``add`` puts it there once the store has it)."""
        trial = TrialRecord(name=name or self._unique_name(prefix), index=index, assignments=assignments,
                            labels=labels)
        self.move(trial, TrialState.CREATED, TRIAL_REASONS[TrialState.CREATED], "Trial is created")
        return trial

    def add(self, trials: list[TrialRecord]) -> None:
        for trial in trials:
            self.trials.append(trial)
            self._by_name[trial.name] = trial
            self._states[trial.state] += 1
            if trial.state.is_active:
                self._active[trial.name] = trial

    def move(self, trial: TrialRecord, state: TrialState, reason: str, message: str) -> bool:
        """Set the trial's state with Katib's conditions (Running turns False when it leaves), keeping counts;
        True when the trial has become the optimal one."""
        if trial.name in self._by_name:  # a trial being created is counted once it joins the book
            self._states[trial.state] -= 1
            self._states[state] += 1
            if state.is_active:
                self._active[trial.name] = trial
            else:
                self._active.pop(trial.name, None)
        trial.state, trial.reason, trial.message = state, reason, message
        if state is not TrialState.RUNNING:
            for cond in trial.conditions:
                if cond["type"] == TrialState.RUNNING.value:
                    set_condition(trial.conditions, TrialState.RUNNING.value, False, reason, message)
        set_condition(trial.conditions, state.value, True, reason, message)
        return trial.name in self._by_name and state.has_result and self._optimal.offer(trial)

    def _unique_name(self, prefix: str) -> str:
        """``<experiment>-<8 random characters>``, as Katib names trials."""
        while True:
            name = f"{prefix}-" + "".join(secrets.choice(_SUFFIX) for _ in range(8))
            if name not in self._by_name:
                return name
