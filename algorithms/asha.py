"""``asha``: asynchronous successive halving (Li et al., "A System for Massively Parallel Hyperparameter Tuning",
2020), asked of Katib in kubeflow/katib#1582 and not part of Katib.

Rungs ``k = 0 .. K - 1`` run at resource ``min_resource * reduction_factor**k`` and the top rung ``K`` at
``max_resource``, with ``K = round(log(max_resource / min_resource) / log(reduction_factor))``: 1..9 epochs with
factor 3 gives rungs 1, 3, 9; 1..10 gives 1, 3, 10; 2..50 gives 2, 6, 18, 50. Each free trial slot gets,
checking rungs from the highest down, a promotion of the best not-yet-promoted configuration in the top
``floor(m / reduction_factor)`` of the ``m`` completed results of its rung; a promotion is a new trial with the same
assignments and the next rung's resource. Only when nothing is promotable does the slot get a new random
configuration at rung 0. Promotions never wait for a rung to fill up, so no slot ever idles.

Completed results are the terminal trials except Killed ones; Failed, MetricsUnavailable and EarlyStopped trials
count as results that rank below every Succeeded one and are never promoted. Configurations are unlimited: the
experiment ends on ``maxTrialCount``, ``objective.goal`` or ``maxFailedTrialCount`` (or Ctrl-C and resume), as
with ``random``.

Trials carry ``katibx.io/asha-rung`` (k) and, when promoted, ``katibx.io/parent`` (the trial they continue), so
the state is rebuilt from the store on resume.

Settings: ``resource_name`` (required, an int or double parameter), ``min_resource`` and ``max_resource`` (default
to that parameter's feasibleSpace min and max), ``reduction_factor`` (default 3, > 1) and ``random_state``.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from katibx.algorithms._resource import (
    EPS,
    MAX_RUNGS,
    PARENT_LABEL,
    best_first,
    eta_setting,
    number_setting,
    objective_ranker,
    resource_parameter,
    resource_value,
    sample_config,
    seed_entropy,
)
from katibx.search_algorithm import SearchAlgorithm, Suggestion, int_setting, setting_path
from katibx.search_space import Parameter
from katibx.trial import TrialRecord, TrialState

RUNG_LABEL = "katibx.io/asha-rung"


class Asha(SearchAlgorithm):
    """Asynchronous successive halving; rung and parent in trial labels."""

    name = "asha"
    default_settings = {"resource_name": None, "min_resource": None, "max_resource": None,
                        "reduction_factor": "3", "random_state": None}

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        seed = int_setting(settings, "random_state", errors)
        resource = resource_parameter(self, settings, errors)
        eta = eta_setting(settings, "reduction_factor", errors, katib_default=False)
        low = self._bound(settings, "min_resource", resource, errors)
        high = self._bound(settings, "max_resource", resource, errors)
        if low is not None and low <= 0:
            errors.append(f"{setting_path('min_resource')}: must be greater than 0 (got {_number(low)})")
            return
        if resource is None or eta is None or low is None or high is None:
            return
        if high <= low:
            errors.append(f"{setting_path('max_resource')}: must be greater than min_resource "
                          f"({_number(high)} <= {_number(low)})")
            return
        top = round(math.log(high / low) / math.log(eta))  # rungs above 0, nearest on a log scale
        if top == 0:
            errors.append(
                f"{setting_path('max_resource')}: must be at least min_resource * sqrt(reduction_factor) = "
                f"{_number(round(low * math.sqrt(eta), 6))} (got {_number(high)}), or no trial can ever be promoted"
            )
            return
        if top >= MAX_RUNGS:
            errors.append(f"{setting_path('reduction_factor')}: too close to 1 for resources {_number(low)} to "
                          f"{_number(high)}: {top + 1} rungs (at most {MAX_RUNGS})")
            return
        resources = [resource_value(resource, low * eta**k) for k in range(top)] + [resource_value(resource, high)]
        if any(a >= b for a, b in zip(resources, resources[1:])):
            errors.append(f"{setting_path('reduction_factor')}: rungs {resources} of the int parameter "
                          f"{resource.name!r} must grow strictly; use a larger reduction_factor")
            return
        self.resource = resource
        self.eta = eta
        self.resources = resources
        self._entropy = seed_entropy(seed)
        self._score = objective_ranker(self)

    @staticmethod
    def _bound(settings: Mapping[str, str | None], name: str, resource: Parameter | None,
               errors: list[str]) -> float | None:
        """A resource bound from its setting, else from the resource parameter's feasible space."""
        value = number_setting(settings, name, errors)
        if settings.get(name) not in (None, "") and value is None:
            return None
        if value is None:
            if resource is None:
                return None
            value = resource.min if name == "min_resource" else resource.max
            assert value is not None
        elif resource is not None and resource.type == "int" and not float(value).is_integer():
            errors.append(f"{setting_path(name)}: must be an integer for the int parameter {resource.name!r} "
                          f"(got {settings.get(name)!r})")
            return None
        return value

    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        rungs: list[list[TrialRecord]] = [[] for _ in self.resources]
        promoted: set[str] = set()
        for trial in trials:
            try:
                k = int(trial.labels[RUNG_LABEL])
            except (KeyError, ValueError):
                continue
            if 0 <= k < len(rungs):
                rungs[k].append(trial)
                if PARENT_LABEL in trial.labels:
                    promoted.add(trial.labels[PARENT_LABEL])
        next_config = len(rungs[0])
        out: list[Suggestion] = []
        for _ in range(count):
            found = self._promotable(rungs, promoted)
            if found is not None:
                parent, k = found
                promoted.add(parent.name)
                config = {**parent.assignments, self.resource.name: self.resources[k + 1]}
                out.append(Suggestion(config, labels={RUNG_LABEL: str(k + 1), PARENT_LABEL: parent.name}))
            else:
                rng = np.random.default_rng([self._entropy, next_config])
                next_config += 1
                out.append(Suggestion(sample_config(self, self.resource, rng, self.resources[0]),
                                      labels={RUNG_LABEL: "0"}))
        return out

    def _promotable(self, rungs: list[list[TrialRecord]], promoted: set[str]) -> tuple[TrialRecord, int] | None:
        """The best unpromoted trial in the top 1/eta of its rung's completed results, highest rung first."""
        for k in range(len(rungs) - 2, -1, -1):
            results = [t for t in rungs[k] if t.state.is_terminal and t.state is not TrialState.KILLED]
            keep = int(math.floor(len(results) / self.eta + EPS))
            for trial in best_first(results, self._score)[:keep]:
                if trial.name not in promoted:
                    return trial, k
        return None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
