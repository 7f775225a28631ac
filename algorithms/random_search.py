"""Random search: independent draws honouring each parameter's distribution, step and type."""

from __future__ import annotations

import secrets
from typing import Mapping, Sequence

import numpy as np

from katibx.search_algorithm import SearchAlgorithm, Suggestion, active_trials, int_setting
from katibx.search_space import point_key
from katibx.trial import TrialRecord


class RandomSearch(SearchAlgorithm):
    """Katib's ``random``; ``random_state`` makes the n-th suggestion a function of (seed, n) and of the points of
    the trials still active, so a resumed run draws what an uninterrupted one did."""

    name = "random"
    default_settings = {"random_state": None}
    supports_multi_objective = True

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        self.seed = int_setting(settings, "random_state", errors)
        self._entropy = secrets.randbits(128) if self.seed is None else self.seed

    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        """Draw ``count`` points, each different from those of Created or Running trials and of this batch."""
        used = {point_key(t.assignments) for t in active_trials(trials)}
        return [Suggestion(self.space.sample_unused(np.random.default_rng([self._entropy, index]), used))
                for index in range(len(trials), len(trials) + count)]
