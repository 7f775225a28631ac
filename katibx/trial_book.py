"""The trial book: an experiment's trials as the controller keeps them, counted by state as they move.

Counts, the active trials and the optimal trial are kept up to date with every move, so a step of the controller's
loop costs the same at trial 10 and at trial 100,000. Finished trials are not held: the store has them, and the
whole history is read back from it only when something asks for it (a search algorithm that learns from the past,
``tune``'s callbacks), so a run whose algorithm needs no history (random search) keeps its memory flat.
"""

from __future__ import annotations

import secrets
import string
from collections import Counter
from typing import Any, Iterable

from katibx.search_algorithm import TrialHistory
from katibx.status import OptimalTrial, TrialCounts, set_condition
from katibx.store import ExperimentRecord, Store
from katibx.trial import TRIAL_REASONS, TrialRecord, TrialState

_SUFFIX = string.ascii_lowercase + string.digits


class TrialBook:
    """The trials of one experiment: the active ones by name, every one counted by state, the optimal one, and the
    history in creation order on demand (:meth:`history`)."""

    def __init__(self, store: Store, record: ExperimentRecord) -> None:
        self._store, self._experiment_id = store, record.id
        self._optimal = OptimalTrial(record.experiment)
        self._states: Counter[TrialState] = Counter()
        self._active: dict[str, TrialRecord] = {}
        self._count = 0
        for trial in store.trials(record.id):  # once, at start; only the active ones are kept
            self._optimal.offer(trial)
            self._states[trial.state] += 1
            self._count += 1
            if trial.state.is_active:
                self._active[trial.name] = trial
        self._history: list[TrialRecord] | None = None  # read from the store when first asked for
        self._named: set[str] = set()  # names this book made for trials the store has not taken yet
        self._unwritten: dict[str, TrialRecord] = {}  # ended trials whose end the store has not taken yet

    def __len__(self) -> int:
        return self._count

    def get(self, name: str) -> TrialRecord | None:
        """An active trial by name (a finished one is in the store: :meth:`Store.trial_named`)."""
        return self._active.get(name)

    def history(self) -> TrialHistory:
        """Every trial in creation order, read-only: read back from the store when first asked for (the active ones
        are the book's own records, so they move with it), then kept and extended as trials are added."""
        return TrialHistory(self._trials(), self.active())

    def suggestion_history(self) -> TrialHistory:
        """What a search algorithm is given: the history, read only if the algorithm looks at more than its length
        and active trials."""
        return TrialHistory(self._trials, self.active(), length=self._count)

    def _trials(self) -> list[TrialRecord]:
        if self._history is None:
            self._history = [self._active.get(t.name) or self._unwritten.get(t.name) or t
                             for t in self._store.trials(self._experiment_id)]
        return self._history

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
        trial = TrialRecord(name=name or self._new_name(prefix), index=index, assignments=assignments,
                            labels=labels)
        self.move(trial, TrialState.CREATED, TRIAL_REASONS[TrialState.CREATED], "Trial is created")
        return trial

    def add(self, trials: list[TrialRecord]) -> None:
        """Trials the store has just taken (Created)."""
        for trial in trials:
            self._named.discard(trial.name)
            self._count += 1
            self._states[trial.state] += 1
            if trial.state.is_active:
                self._active[trial.name] = trial
            if self._history is not None:
                self._history.append(trial)

    def move(self, trial: TrialRecord, state: TrialState, reason: str, message: str) -> bool:
        """Set the trial's state with Katib's conditions (Running turns False when it leaves), keeping counts;
        True when the trial has become the optimal one. A trial that ends leaves the book's active set."""
        known = self._active.get(trial.name) is trial  # a trial being created is counted once it joins the book
        if known:
            self._states[trial.state] -= 1
            self._states[state] += 1
            if not state.is_active:
                del self._active[trial.name]
        trial.state, trial.reason, trial.message = state, reason, message
        if state is not TrialState.RUNNING:
            for cond in trial.conditions:
                if cond["type"] == TrialState.RUNNING.value:
                    set_condition(trial.conditions, TrialState.RUNNING.value, False, reason, message)
        set_condition(trial.conditions, state.value, True, reason, message)
        return known and state.has_result and self._optimal.offer(trial)

    def unwritten(self, trial: TrialRecord) -> None:
        """A trial that has ended in this book but not yet in the store (its end is written later): the history,
        read back from the store meanwhile, has this record of it."""
        self._unwritten[trial.name] = trial

    def written(self, trials: Iterable[TrialRecord]) -> None:
        """The store has taken these trials' ends."""
        for trial in trials:
            self._unwritten.pop(trial.name, None)

    def rename(self, trial: TrialRecord) -> bool:
        """Give a trial not yet stored, named by this book, another name (the store has one of its name: see
        :meth:`Store.add_trials`); False for a trial named otherwise (its search algorithm named it)."""
        if trial.name not in self._named:
            return False
        self._named.discard(trial.name)
        trial.name = self._new_name(trial.name.rsplit("-", 1)[0])
        return True

    def _new_name(self, prefix: str) -> str:
        """``<experiment>-<8 random characters>``, as Katib names trials: none of an active trial's (the store checks
        its own as it takes the trial, and asks :meth:`rename` in the rare case that it has one)."""
        while True:
            number = secrets.randbelow(len(_SUFFIX) ** 8)  # one draw from the system's randomness, not eight
            suffix = []
            for _ in range(8):
                number, digit = divmod(number, len(_SUFFIX))
                suffix.append(_SUFFIX[digit])
            name = f"{prefix}-" + "".join(suffix)
            if name not in self._active and name not in self._named:
                self._named.add(name)
                return name
