"""Random search: independent draws honouring each parameter's distribution, step and type."""

from __future__ import annotations

import secrets
from typing import Mapping, Sequence

import numpy as np

from katibx.search_algorithm import SearchAlgorithm, Suggestion, int_setting
from katibx.trial import TrialRecord


class RandomSearch(SearchAlgorithm):
    """Katib's ``random``; ``random_state`` makes the n-th suggestion a function of (seed, n) only."""

    name = "random"
    default_settings = {"random_state": None}
    supports_multi_objective = True

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        self.seed = int_setting(settings, "random_state", errors)
        self._entropy = secrets.randbits(128) if self.seed is None else self.seed

    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        out = []
        for index in range(len(trials), len(trials) + count):
            rng = np.random.default_rng([self._entropy, index])
            out.append(Suggestion({p.name: p.sample(rng) for p in self.space}))
        return out
