"""The search-algorithm plugin contract: search space + settings + full trial history in, new assignments out."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence, overload

from katibx.objective import Objective
from katibx.search_space import SearchSpace
from katibx.spec import Experiment
from katibx.trial import TrialRecord


class AlgorithmSettingsError(ValueError):
    """Invalid algorithm settings or an algorithm that cannot serve this experiment; one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass(frozen=True)
class Suggestion:
    """One proposed trial: typed parameter values, and optionally a trial name and labels chosen by the algorithm."""

    assignments: dict[str, Any]
    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


class TrialHistory(Sequence[TrialRecord]):
    """The trials the controller gives :meth:`SearchAlgorithm.suggest`: every trial in creation order (a read-only
    view of the controller's own list, valid during the call) and the active ones, which the controller keeps as
    trials move, so that finding them costs nothing however long the history is (see :func:`active_trials`).

    ``trials`` may be a function giving the list, with its ``length``: the controller reads its finished trials back
    from the store only for an algorithm that looks at them (one that uses ``len`` and the active trials never does).
    """

    def __init__(self, trials: Sequence[TrialRecord] | Callable[[], Sequence[TrialRecord]],
                 active: Sequence[TrialRecord], *, length: int | None = None) -> None:
        self._source, self.active = trials, list(active)
        self._trials: Sequence[TrialRecord] | None = None if callable(trials) else trials
        if length is None and self._trials is None:
            raise TypeError("TrialHistory: a function giving the trials needs their length")
        self._length = len(trials) if length is None else length  # trials added afterwards are not in it

    def _list(self) -> Sequence[TrialRecord]:
        if self._trials is None:
            self._trials = self._source()  # type: ignore[operator]
        return self._trials

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> TrialRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[TrialRecord]: ...

    def __getitem__(self, index: int | slice) -> TrialRecord | list[TrialRecord]:
        trials = self._list()
        if isinstance(index, slice):
            return [trials[i] for i in range(*index.indices(self._length))]
        if not -self._length <= index < self._length:
            raise IndexError("trial history index out of range")
        return trials[index % self._length]

    def __iter__(self) -> Iterator[TrialRecord]:
        trials = self._list()
        for i in range(self._length):
            yield trials[i]


def active_trials(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The Created and Running trials of a history: kept by the controller (no scan) when it is a
    :class:`TrialHistory`, found by walking it otherwise (a plain list, as tests and the conformance kit pass)."""
    if isinstance(trials, TrialHistory):
        return list(trials.active)
    return [t for t in trials if t.state.is_active]


class SearchAlgorithm(abc.ABC):
    """Base of every ``katibx.algorithms`` plugin.

    The constructor validates everything up front (raise :class:`AlgorithmSettingsError`); :meth:`suggest`
    is then called with the whole history, which is the single source of truth, so a resumed experiment
    gets the same suggestions as an uninterrupted one.
    """

    #: Katib's ``algorithmName``.
    name: ClassVar[str]
    #: Setting name -> default (as Katib's string); names not listed here are refused.
    default_settings: ClassVar[Mapping[str, str | None]] = {}
    #: Whether the algorithm handles several objectives (``spec.objective.additionalObjectives``).
    supports_multi_objective: ClassVar[bool] = False

    def __init__(self, experiment: Experiment, space: SearchSpace) -> None:
        self.experiment = experiment
        self.space = space
        algorithm = experiment.spec.algorithm
        given = algorithm.settings_dict() if algorithm else {}
        unknown = sorted(set(given) - set(self.default_settings))
        if unknown:
            known = ", ".join(self.default_settings) or "none"
            raise AlgorithmSettingsError(
                [f"{setting_path(n)}: unknown setting for algorithm {self.name!r} (known: {known})" for n in unknown]
            )
        objective = experiment.spec.objective
        if objective is not None and objective.additional_objectives and not self.supports_multi_objective:
            raise AlgorithmSettingsError([
                f"spec.objective.additionalObjectives: algorithm {self.name!r} optimises a single objective; "
                "use an algorithm that supports several (see the README)"
            ])
        self.objective = Objective(experiment)
        self.settings = {**self.default_settings, **given}
        errors: list[str] = []
        self.configure(self.settings, errors)
        if errors:
            raise AlgorithmSettingsError(errors)

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        """Parse and check settings, appending ``path: message`` lines to ``errors``."""

    @abc.abstractmethod
    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        """Up to ``count`` new suggestions given every trial so far: a read-only sequence (the controller gives a
        :class:`TrialHistory`, valid during the call; copy it with ``list()`` to keep or change it).

        Returning fewer than asked means "nothing more for now"; returning none while no trial is
        active ends the experiment (ExperimentSuggestionEndReached).
        """


def setting_path(name: str) -> str:
    return f"spec.algorithm.algorithmSettings[{name}]"


def _parse_setting(settings: Mapping[str, str | None], name: str, errors: list[str], convert: Callable[[str], Any],
                   kind: str) -> Any:
    """An optional setting converted by ``convert``; None when absent or, with a message naming it, unreadable."""
    raw = settings.get(name)
    if raw is None or raw == "":
        return None
    try:
        return convert(raw)
    except ValueError:
        errors.append(f"{setting_path(name)}: must be {kind} (got {raw!r})")
        return None


def int_setting(settings: Mapping[str, str | None], name: str, errors: list[str], minimum: int = 0) -> int | None:
    """Parse an optional integer setting that must be >= ``minimum``."""
    value = _parse_setting(settings, name, errors, int, "an integer")
    if value is not None and value < minimum:
        errors.append(f"{setting_path(name)}: must be >= {minimum} (got {value})")
        return None
    return value


def float_setting(settings: Mapping[str, str | None], name: str, errors: list[str],
                  valid: Callable[[float], bool], requirement: str) -> float | None:
    """Parse an optional number setting; ``requirement`` says what ``valid`` checks, for the error line."""
    value = _parse_setting(settings, name, errors, float, "a number")
    if value is not None and (not math.isfinite(value) or not valid(value)):
        errors.append(f"{setting_path(name)}: {requirement} (got {settings.get(name)!r})")
        return None
    return value
