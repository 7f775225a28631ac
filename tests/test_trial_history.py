"""What the controller gives a search algorithm: the whole history as a read-only sequence, and its active trials
kept as trials move, so that finding them costs nothing however long the history is."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Sequence

import pytest

import katibx
from katibx.algorithms.random_search import RandomSearch
from katibx.preparation import PreparedExperiment, prepare
from katibx.runner import run_experiment
from katibx.search_algorithm import SearchAlgorithm, Suggestion, TrialHistory, active_trials
from katibx.store import ExperimentRecord, Store
from katibx.trial import TrialRecord, TrialState
from katibx.trial_book import TrialBook
from katibx.tuning import function_experiment


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


# the controller's history: read from the store only for an algorithm that looks at it ------------------------------
def _objective(parameters: dict[str, float]) -> dict[str, float]:
    return {"result": parameters["x"]}


def _run(tmp_path: Path, algorithm: SearchAlgorithm | None, name: str, trials: int = 12) -> ExperimentRecord:
    experiment = function_experiment(name, _objective, {"x": katibx.search.double(0, 1)},
                                     objective_metric_name="result", algorithm_name="random",
                                     algorithm_settings={"random_state": 3}, max_trial_count=trials,
                                     parallel_trial_count=3)
    prepared = prepare(experiment, mlflow=False)
    if algorithm is not None:
        algorithm.space, algorithm.objective = prepared.algorithm.space, prepared.algorithm.objective
        prepared = PreparedExperiment(experiment, algorithm, None)
    with Store(tmp_path / "katibx.db") as store:
        return run_experiment(experiment, store=store, function=_objective, prepared=prepared, workdir=tmp_path)


def test_a_run_whose_algorithm_needs_no_history_never_reads_or_keeps_finished_trials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random search asks only the history's length and its active trials: the controller holds no finished trial
    (its memory stays flat however many trials finish)."""
    finished: list[weakref.ref[TrialRecord]] = []  # every finished trial, weakly
    held: list[int] = []
    move = TrialBook.move

    def watched_move(book: TrialBook, trial: TrialRecord, state: TrialState, *args: Any) -> bool:
        held.append(sum(ref() is not None for ref in finished))  # finished trials someone still holds
        became = move(book, trial, state, *args)
        if state.is_terminal:
            finished.append(weakref.ref(trial))
        return became

    def no_history(book: TrialBook) -> list[TrialRecord]:
        raise AssertionError("the history was read")

    monkeypatch.setattr(TrialBook, "move", watched_move)
    monkeypatch.setattr(TrialBook, "_trials", no_history)  # where the book reads its history back from the store
    record = _run(tmp_path, None, "flat", trials=30)
    with Store(tmp_path / "katibx.db") as store:
        assert store.trial_counts(record.id).succeeded == 30
    # never more finished trials alive than twice the trials run at once: those just ended, and those whose end waits
    # to be written with the next trials created
    assert len(held) > 60 and max(held) <= 2 * 3


class _Recording(RandomSearch):
    """Random search that also notes, at each suggestion, every trial of the history it was given."""

    name = "random"

    def __init__(self) -> None:
        self.seen: list[list[tuple[str, TrialState, TrialRecord]]] = []
        self.configure({"random_state": "3"}, [])

    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        self.seen.append([(t.name, t.state, t) for t in trials])
        assert all(any(a is t for _, _, t in self.seen[-1]) for a in active_trials(trials))  # the same records
        return super().suggest(trials, count)


def test_an_algorithm_that_reads_the_history_gets_every_trial_as_the_store_has_it(tmp_path: Path) -> None:
    recording = _Recording()
    record = _run(tmp_path, recording, "history")
    with Store(tmp_path / "katibx.db") as store:
        stored = store.trials(record.id)
    assert [len(seen) for seen in recording.seen] == sorted({len(seen) for seen in recording.seen})
    last = recording.seen[-1]
    assert [name for name, _, _ in last] == [t.name for t in stored][:len(last)]
    finished = {t.name: t.state for t in stored}
    for seen in recording.seen:  # at each call, a finished trial was finished in the store too
        assert all(finished[name] is state for name, state, _ in seen if state.is_terminal)


class _LateReader(_Recording):
    """A model-based plugin's way: random draws first, the history read from the third suggestion on."""

    def __init__(self) -> None:
        super().__init__()
        self.stale: list[list[str]] = []  # at each call, trials shown unfinished that the controller no longer runs

    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        if len(trials) >= 3:
            active = {t.name for t in active_trials(trials)}
            self.stale.append([t.name for t in trials if not t.state.is_terminal and t.name not in active])
            self.seen.append([(t.name, t.state, t) for t in trials])
        return RandomSearch.suggest(self, trials, count)


def test_a_history_first_read_while_a_trials_end_waits_to_be_written_has_that_trial_ended(tmp_path: Path) -> None:
    """The controller writes a trial's end with the next trials it creates, after the suggestion: the history read
    back from the store in between must still show the trial as it ended, then and at every later call."""
    late = _LateReader()
    _run(tmp_path, late, "late", trials=20)
    assert len(late.seen) >= 4
    assert late.stale == [[]] * len(late.seen)  # every trial shown unfinished was running then
