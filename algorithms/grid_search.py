"""Grid search: every combination of the grid exactly once, then the search ends."""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from katibx.search_algorithm import AlgorithmSettingsError, SearchAlgorithm, Suggestion, int_setting
from katibx.trial import TrialRecord


class GridSearch(SearchAlgorithm):
    """Katib's ``grid``: doubles need ``step``, ints step 1 by default; ``random_state`` shuffles the order."""

    name = "grid"
    default_settings = {"random_state": None}
    supports_multi_objective = True

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        seed = int_setting(settings, "random_state", errors)
        for i, param in enumerate(self.space):
            if param.type == "double" and param.step is None:
                errors.append(
                    f"spec.parameters[{i}].feasibleSpace.step: Param {param.name} step is nil; "
                    "for grid search all double parameters must include step"
                )
        if errors:
            return
        axes = [param.grid() for param in self.space]
        total = math.prod(len(a) for a in axes)
        max_trials = self.experiment.spec.max_trial_count
        if max_trials is not None and max_trials > total:
            raise AlgorithmSettingsError(
                [f"spec.maxTrialCount: Max Trial Count: {max_trials} > all possible search combinations: {total}"]
            )
        self._grid = [tuple(point) for point in itertools.product(*axes)]
        if seed is not None:
            order = np.random.default_rng(seed).permutation(len(self._grid))
            self._grid = [self._grid[i] for i in order]

    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        names = self.space.names
        seen = {_key(t.assignments.get(n) for n in names) for t in trials}
        out: list[Suggestion] = []
        for point in self._grid:
            if len(out) == count:
                break
            if _key(point) not in seen:
                out.append(Suggestion(dict(zip(names, point))))
        return out


def _key(values: Iterable[Any]) -> tuple[tuple[bool, Any], ...]:
    """A grid point's identity: ``True`` and ``1`` are different choices of a categorical parameter."""
    return tuple((isinstance(v, bool), v) for v in values)
