"""Random search: independent draws honouring each parameter's distribution, step and type."""

from __future__ import annotations

import secrets
from typing import Any, Mapping, Sequence

import numpy as np

from katibx.search_algorithm import SearchAlgorithm, Suggestion, int_setting
from katibx.trial import TrialRecord

# Draws of a point before one that no active trial has is taken anyway (a space smaller than the parallelism).
MAX_REDRAWS = 100


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
        """Draw ``count`` points; a point a Created or Running trial (or this batch) already has is drawn again,
        up to MAX_REDRAWS times, so parallel trials do not evaluate the same point (a small discrete space may
        still repeat one once nothing else is left)."""
        taken = {_key(t.assignments) for t in trials if t.state.is_active}
        out = []
        for index in range(len(trials), len(trials) + count):
            rng = np.random.default_rng([self._entropy, index])
            for _ in range(MAX_REDRAWS + 1):
                assignments = {p.name: p.sample(rng) for p in self.space}
                if _key(assignments) not in taken:
                    break
            taken.add(_key(assignments))
            out.append(Suggestion(assignments))
        return out


def _key(assignments: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, repr(value)) for name, value in assignments.items()))
