"""Optuna-backed search algorithms: an in-memory study told trial by trial, rebuilt on resume by replaying history.

Each katibx trial is one optuna trial. Succeeded and EarlyStopped trials with a finite objective value are
COMPLETE, other finished trials FAIL, and Created/Running trials stay RUNNING, so a constant liar (and a
re-draw when a sample repeats a pending point) keeps parallel suggestions apart. A fresh algorithm with a
non-empty history (a resumed controller) asks again for every past trial, in order, after telling the
trials that had finished before that trial was created: with ``random_state`` set it draws the very same
points, so the study ends in the state an uninterrupted run would have; without it, the stored
assignments replace what was drawn.
"""

from __future__ import annotations

import abc
import math
import secrets
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import optuna
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import TrialState as OptunaState

from katibx.optuna_study import distribution, quiet
from katibx.search_algorithm import SearchAlgorithm, Suggestion, int_setting
from katibx.trial import TrialRecord

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A draw that repeats a pending trial's assignment is thrown away and drawn again: by the algorithm's sampler
# MODEL_REDRAWS times (independent TPE in a small discrete space keeps proposing the same argmax), then at
# random, MAX_REDRAWS times in all (a space smaller than parallelTrialCount cannot avoid repeats).
MODEL_REDRAWS = 4
MAX_REDRAWS = 16
SUPPORTED_DISTRIBUTIONS = ("uniform", "logUniform")

Key = tuple[Any, ...]


def derive_seed(*entropy: int) -> int:
    """A 32-bit seed that depends only on ``entropy`` (the experiment's seed, a trial number, ...)."""
    return int(np.random.SeedSequence([int(e) & 0xFFFFFFFFFFFFFFFF for e in entropy]).generate_state(1)[0])


def _reseed(sampler: BaseSampler, seed: int) -> bool:
    """Seed a TPESampler's random states in place, as its constructor would with ``seed``; False where it keeps them
    elsewhere (optuna's private ``_rng`` of the sampler and of its startup RandomSampler, since optuna 3)."""
    try:
        states = [sampler._rng.rng, sampler._random_sampler._rng.rng]  # type: ignore[attr-defined]
    except AttributeError:
        return False
    if not all(isinstance(state, np.random.RandomState) for state in states):
        return False
    for state in states:
        state.seed(seed)
    return True


class OptunaSearch(SearchAlgorithm):
    """Base of the optuna-backed algorithms: subclasses parse their settings and build the sampler."""

    default_settings = {"random_state": None}

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        self.seed = int_setting(settings, "random_state", errors)
        self.root_seed = secrets.randbits(32) if self.seed is None else self.seed
        for i, param in enumerate(self.space):
            if param.is_numeric_range and param.distribution not in SUPPORTED_DISTRIBUTIONS:
                errors.append(
                    f"spec.parameters[{i}].feasibleSpace.distribution: {param.distribution} is not supported by "
                    f"algorithm {self.name!r} (supported: {', '.join(SUPPORTED_DISTRIBUTIONS)})"
                )
        self.configure_sampler(settings, errors)
        if errors:
            return
        self._directions = [StudyDirection.MAXIMIZE if maximize else StudyDirection.MINIMIZE
                            for _, maximize in self.objective.objectives]
        self.distributions = {p.name: distribution(p, choice_indices=True) for p in self.space}
        self._study: optuna.Study | None = None
        self._numbers: dict[str, int] = {}  # katibx trial name -> optuna trial number
        self._told: set[str] = set()
        self._pending: dict[int, tuple[int, Key]] = {}  # trial index we proposed -> (optuna number, key)
        self._kept_sampler: BaseSampler | None = None

    def configure_sampler(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        """Parse the algorithm's own settings, appending ``path: message`` lines to ``errors``."""

    @abc.abstractmethod
    def sampler(self, number: int) -> BaseSampler:
        """The sampler that draws optuna trial ``number`` (seed it from ``derive_seed(self.root_seed, number)``)."""

    def reseeded(self, number: int, build: Callable[[int], BaseSampler]) -> BaseSampler:
        """The sampler of optuna trial ``number``: ``build(seed)`` with its seed the first time, then that same
        sampler with the random state a new one built with the seed would have (building one costs two fresh numpy
        RandomStates: 0.3-0.5 ms at every suggestion). Where optuna lacks the attributes :func:`_reseed` sets, each
        trial builds its own, as before."""
        seed = derive_seed(self.root_seed, number)
        if self._kept_sampler is not None and _reseed(self._kept_sampler, seed):
            return self._kept_sampler
        with quiet():
            self._kept_sampler = build(seed)
        return self._kept_sampler

    # SearchAlgorithm ----------------------------------------------------------------------------------------
    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        news: Sequence[TrialRecord] = trials
        if self._study is None:
            self._study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=self.sampler(0),
                                              directions=self._directions)
            self._replay(sorted(trials, key=lambda t: t.index))
        else:
            news = [t for t in trials if t.name not in self._told]  # a told trial has no news: one pass, not two
            self._link(news)
        self._tell(news)
        out = []
        for index in range(len(trials), len(trials) + count):
            trial, assignments = self._ask()
            self._pending[index] = (trial.number, self._key(assignments))
            out.append(Suggestion(assignments))
        return out

    # history ------------------------------------------------------------------------------------------------
    def _replay(self, history: list[TrialRecord]) -> None:
        """Ask again for every past trial, after telling what had finished before it was created."""
        for position, trial in enumerate(history):
            created = trial.creation_time if trial.creation_time is not None else math.inf
            self._tell([t for t in history[:position]
                        if t.state.is_terminal and t.completion_time is not None and t.completion_time <= created])
            asked, assignments = self._ask()
            if self._key(assignments) != self._key(trial.assignments):  # unseeded, or not ours: keep what ran
                self._force(asked, trial.assignments)
            self._numbers[trial.name] = asked.number

    def _link(self, trials: Sequence[TrialRecord]) -> None:
        """Match new trials to the points proposed for them; anything else joins the study as given."""
        for trial in trials:
            if trial.name in self._numbers:
                continue
            key = self._key(trial.assignments)
            proposed = self._pending.get(trial.index)
            index = trial.index if proposed and proposed[1] == key else next(
                (i for i, (_, k) in self._pending.items() if k == key), None)
            if index is not None:
                self._numbers[trial.name] = self._pending.pop(index)[0]
            else:
                assert self._study is not None
                with quiet():
                    self._study.enqueue_trial(self._to_optuna(trial.assignments))
                    self._numbers[trial.name] = self._study.ask(self.distributions).number
        assert self._study is not None
        for number, _ in self._pending.values():  # proposed but never created: not pending any more
            self._study.tell(number, state=OptunaState.FAIL)
        self._pending.clear()

    def _tell(self, trials: Sequence[TrialRecord]) -> None:
        """Report every finished trial not reported yet."""
        assert self._study is not None
        for trial in trials:
            if trial.name in self._told or not trial.state.is_terminal or trial.name not in self._numbers:
                continue
            self._told.add(trial.name)
            value = self._value(trial)
            with quiet():
                if value is None:
                    self._study.tell(self._numbers[trial.name], state=OptunaState.FAIL)
                else:
                    self._study.tell(self._numbers[trial.name], value)

    def _value(self, trial: TrialRecord) -> list[float] | None:
        """The objective values optuna sees: each metric strategy's pick, for trials with a result."""
        return self.objective.values(trial)

    def _ask(self) -> tuple[optuna.Trial, dict[str, Any]]:
        """A new optuna trial whose assignment no pending trial has, unless re-draws run out."""
        study = self._study
        assert study is not None
        pending = {self._key(self._from_optuna(t.params))
                   for t in study.get_trials(deepcopy=False, states=(OptunaState.RUNNING,))}
        for attempt in range(MAX_REDRAWS + 1):
            number = len(study.get_trials(deepcopy=False))
            with quiet():
                study.sampler = (self.sampler(number) if attempt <= MODEL_REDRAWS
                                 else RandomSampler(seed=derive_seed(self.root_seed, number)))
                trial = study.ask(self.distributions)
            assignments = self._from_optuna(trial.params)
            if self._key(assignments) not in pending or attempt == MAX_REDRAWS:
                return trial, assignments
            study.tell(trial, state=OptunaState.FAIL)
        raise AssertionError("unreachable")

    def _force(self, trial: optuna.Trial, assignments: Mapping[str, Any]) -> None:
        """Overwrite a pending optuna trial's parameters with the assignment that actually ran."""
        assert self._study is not None
        for name, value in self._to_optuna(assignments).items():
            dist = self.distributions[name]
            self._study._storage.set_trial_param(trial._trial_id, name, dist.to_internal_repr(value), dist)

    # values -------------------------------------------------------------------------------------------------
    def _from_optuna(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna's values as katibx assignments: ints stay int, stepped doubles lose float noise, indices become choices."""
        out: dict[str, Any] = {}
        for p in self.space:
            value = params[p.name]
            if p.type == "int":
                out[p.name] = int(value)
            elif p.type == "double":
                assert p.min is not None and p.max is not None
                value = float(value) if p.step is None else round(float(value), 12)
                out[p.name] = min(max(value, p.min), p.max)
            else:
                out[p.name] = p.values[int(value)]
        return out

    def _to_optuna(self, assignments: Mapping[str, Any]) -> dict[str, Any]:
        """A katibx assignment in optuna's terms (list values become their index)."""
        out: dict[str, Any] = {}
        for p in self.space:
            value = p.cast(assignments[p.name])
            if p.is_numeric_range:
                out[p.name] = value
            else:
                out[p.name] = next(i for i, c in enumerate(p.values) if type(c) is type(value) and c == value)
        return out

    def _key(self, assignments: Mapping[str, Any]) -> Key:
        """An assignment's identity: ``True`` and ``1`` are different choices, ``1`` and ``1.0`` the same number."""
        optuna_values = self._to_optuna(assignments)
        return tuple(optuna_values[p.name] for p in self.space)
