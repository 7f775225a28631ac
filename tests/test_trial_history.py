"""What the controller gives a search algorithm: the whole history as a read-only sequence, and its active trials
kept as trials move, so that finding them costs nothing however long the history is."""

from __future__ import annotations

import pytest

from katibx.search_algorithm import TrialHistory, active_trials
from katibx.trial import TrialRecord, TrialState


def _trial(index: int, state: TrialState) -> TrialRecord:
    return TrialRecord(name=f"t{index}", index=index, assignments={"x": index}, state=state)


class _Untouchable:
    """A finished trial whose state must not be read: the history is not walked to find the active ones."""

    @property
    def state(self) -> TrialState:
        raise AssertionError("the history was walked")


def test_the_history_is_a_sequence_of_the_trials_given() -> None:
    trials = [_trial(i, TrialState.SUCCEEDED) for i in range(5)]
    history = TrialHistory(trials, [])
    assert len(history) == 5 and list(history) == trials and history[-1] is trials[4] and history[1:3] == trials[1:3]
    with pytest.raises(IndexError):
        history[5]
    trials.append(_trial(5, TrialState.CREATED))  # the controller goes on; the history given stays as it was
    assert len(history) == 5 and list(history) == trials[:5]


def test_active_trials_come_from_the_controller_not_from_walking_the_history() -> None:
    running = _trial(3, TrialState.RUNNING)
    history = TrialHistory([_Untouchable(), _Untouchable(), _Untouchable(), running], [running])  # type: ignore[list-item]
    assert active_trials(history) == [running]
    plain = [_trial(0, TrialState.SUCCEEDED), _trial(1, TrialState.CREATED), _trial(2, TrialState.RUNNING)]
    assert active_trials(plain) == plain[1:]  # a plain list (tests, the conformance kit) is walked
