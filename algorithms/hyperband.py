"""Katib's ``hyperband``: successive halving in brackets of decreasing aggressiveness (Li et al., 2018).

With ``s_max`` the largest ``s`` such that ``eta**s <= r_l``, brackets ``s = s_max .. 0`` run one after the other.
Bracket ``s`` samples ``n = ceil((s_max + 1) * eta**s / (s + 1))`` random configurations at resource
``r = r_l * eta**-s`` (rung 0). Once every trial of rung ``i`` is terminal, the best
``n_{i+1} = floor(n * eta**-(i+1))`` Succeeded trials of the rung (by the objective, through its metric strategy)
are promoted: re-run as new trials with the same assignments and resource ``r * eta**(i+1)``. Failed,
MetricsUnavailable, EarlyStopped and Killed trials are never promoted; a rung with nothing to promote ends its
bracket. When the last rung of a bracket is
created the next bracket starts (as in Katib); after the last bracket the algorithm has no more suggestions and
the experiment ends Succeeded (ExperimentSuggestionEndReached) instead of hanging as Katib does (kubeflow/katib#1168).

Each trial carries the labels ``katibx.io/hyperband-bracket`` (s), ``katibx.io/hyperband-rung`` (i) and, when
promoted, ``katibx.io/parent`` (the trial it continues): the schedule is rebuilt from the store on resume.

Settings: ``r_l`` (required, the maximum resource, > 0; at least 1 for an int resource), ``resource_name``
(required, an int or double parameter; its feasible space is ignored, its values come from ``r_l``), ``eta``
(default 3; a value <= 0 means 3 as in Katib; otherwise it must be > 1) and ``random_state`` (katibx's: seeds the
sampled configurations). Katib's check ``parallelTrialCount >= ceil(eta**s_max)`` is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from katibx.algorithms._resource import (
    EPS,
    MAX_RUNGS,
    PARENT_LABEL,
    best_first,
    eta_setting,
    max_power,
    number_setting,
    objective_ranker,
    resource_parameter,
    sample_config,
    seed_entropy,
)
from katibx.search_algorithm import SearchAlgorithm, Suggestion, int_setting, setting_path
from katibx.trial import TrialRecord

BRACKET_LABEL = "katibx.io/hyperband-bracket"
RUNG_LABEL = "katibx.io/hyperband-rung"

# What a bracket asks of the caller after being given the chance to create trials.
_DONE, _WAIT, _FULL = "done", "wait", "full"


@dataclass(frozen=True)
class Bracket:
    """One successive-halving run: ``sizes[i]`` trials at resource ``resources[i]`` in rung ``i``."""

    s: int
    sizes: tuple[int, ...]
    resources: tuple[int | float, ...]


def schedule(r_l: float, eta: float, resource_type: str = "double") -> list[Bracket]:
    """Hyperband's brackets for a maximum resource ``r_l`` and reduction factor ``eta``, in running order."""
    s_max = max_power(eta, r_l)
    brackets = []
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) * eta**s / (s + 1) - EPS)
        sizes = tuple(int(math.floor(n * eta ** -i + EPS)) for i in range(s + 1))
        amounts = (r_l * eta ** (i - s) for i in range(s + 1))
        resources = tuple(int(math.floor(a + EPS)) if resource_type == "int" else float(a) for a in amounts)
        brackets.append(Bracket(s, sizes, resources))
    return brackets


class Hyperband(SearchAlgorithm):
    """Katib's ``hyperband`` with the paper's bracket sizes, state kept in trial labels."""

    name = "hyperband"
    default_settings = {"r_l": None, "resource_name": None, "eta": "3", "random_state": None}

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        seed = int_setting(settings, "random_state", errors)
        resource = resource_parameter(self, settings, errors)
        r_l = number_setting(settings, "r_l", errors, required=True,
                             why=": the maximum resource of a trial (r_l), in units of the resource parameter")
        if r_l is not None and r_l <= 0:
            errors.append(f"{setting_path('r_l')}: must be greater than 0 (got {settings.get('r_l')!r})")
            r_l = None
        if r_l is not None and resource is not None and resource.type == "int" and r_l < 1:
            errors.append(f"{setting_path('r_l')}: must be at least 1 for the int parameter {resource.name!r} "
                          f"(got {settings.get('r_l')!r})")
        eta = eta_setting(settings, "eta", errors, katib_default=True)
        if r_l is None or eta is None:
            return
        s_max = max_power(eta, r_l)
        if s_max >= MAX_RUNGS:
            errors.append(f"{setting_path('eta')}: too close to 1 for r_l={settings.get('r_l')}: "
                          f"{s_max + 1} brackets (at most {MAX_RUNGS})")
            return
        need = math.ceil(eta**s_max - EPS)
        parallel = self.experiment.spec.parallel_trial_count or 1
        if parallel < need:
            errors.append(
                f"spec.parallelTrialCount: parallelTrialCount must be not less than {need} "
                f"(hyperband with r_l={settings.get('r_l')} and eta={_number(eta)} starts with eta^s_max = {need} "
                f"trials, s_max = {s_max})"
            )
        if errors or resource is None:
            return
        self.resource = resource
        self.eta = eta
        self.r_l = r_l
        self.s_max = s_max
        self.brackets = schedule(r_l, eta, resource.type)
        self._entropy = seed_entropy(seed)
        self._score = objective_ranker(self)

    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        rungs: dict[tuple[int, int], list[TrialRecord]] = {}
        for trial in trials:
            try:
                key = (int(trial.labels[BRACKET_LABEL]), int(trial.labels[RUNG_LABEL]))
            except (KeyError, ValueError):
                continue
            rungs.setdefault(key, []).append(trial)
        out: list[Suggestion] = []
        for bracket in self.brackets:
            if self._fill(bracket, rungs, out, count) != _DONE:
                break
        return out

    def _fill(self, bracket: Bracket, rungs: dict[tuple[int, int], list[TrialRecord]], out: list[Suggestion],
              count: int) -> str:
        """Add the bracket's trials that can be created now to ``out`` (at most ``count`` in all).

        Returns _DONE when the bracket will create nothing more (the next bracket may start), _WAIT when a rung
        must finish first, _FULL when ``count`` was reached.
        """
        s = bracket.s
        for i in range(s + 1):
            rung = rungs.get((s, i), [])
            labels = {BRACKET_LABEL: str(s), RUNG_LABEL: str(i)}
            created = 0
            if i == 0:
                for index in range(len(rung), bracket.sizes[0]):
                    if len(out) >= count:
                        return _FULL
                    rng = np.random.default_rng([self._entropy, s, index])
                    config = sample_config(self, self.resource, rng, bracket.resources[0])
                    out.append(Suggestion(config, labels=dict(labels)))
                    created += 1
            else:
                previous = rungs.get((s, i - 1), [])
                parents = best_first(previous, self._score)[: bracket.sizes[i]]
                if not parents:
                    return _DONE  # every trial of the previous rung failed: the bracket ends early
                promoted = {t.labels.get(PARENT_LABEL) for t in rung}
                for parent in parents:
                    if parent.name in promoted:
                        continue
                    if len(out) >= count:
                        return _FULL
                    config = {**parent.assignments, self.resource.name: bracket.resources[i]}
                    out.append(Suggestion(config, labels={**labels, PARENT_LABEL: parent.name}))
                    created += 1
            if i == s:
                return _DONE
            if created or any(t.state.is_active for t in rung):
                return _WAIT
        return _DONE


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
