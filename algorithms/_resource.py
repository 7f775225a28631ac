"""Helpers shared by the multi-fidelity algorithms (``hyperband``, ``asha``).

Both give every trial a *resource* (epochs, steps, data fraction...) through one of ``spec.parameters``, named by
the ``resource_name`` setting, and promote the best configurations to a larger resource as new trials. The
bookkeeping lives in trial labels, so the whole state is rebuilt from the store's history.
"""

from __future__ import annotations

import math
import secrets
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from katibx.metrics import as_float
from katibx.search_algorithm import SearchAlgorithm, setting_path
from katibx.search_space import Parameter
from katibx.trial import TrialRecord, TrialState

# Label naming the trial a promoted trial continues (same assignments, larger resource).
PARENT_LABEL = "katibx.io/parent"
# Most rungs a schedule may have: more means a reduction factor absurdly close to 1.
MAX_RUNGS = 100
# Slack for floating-point powers and logs (``math.log(1000) / math.log(10)`` is 2.9999999999999996).
EPS = 1e-9


def number_setting(settings: Mapping[str, str | None], name: str, errors: list[str], required: bool = False,
                   why: str = "") -> float | None:
    """A finite number setting; None (and a message when ``required``) when absent or invalid."""
    raw = settings.get(name)
    if raw is None or str(raw).strip() == "":
        if required:
            errors.append(f"{setting_path(name)}: required{why}")
        return None
    value = as_float(str(raw))
    if value is None:
        errors.append(f"{setting_path(name)}: must be a number (got {raw!r})")
    return value


def resource_parameter(algorithm: SearchAlgorithm, settings: Mapping[str, str | None],
                       errors: list[str]) -> Parameter | None:
    """The parameter named by ``resource_name``: it must exist and be an int or a double."""
    name = settings.get("resource_name")
    if not name:
        errors.append(f"{setting_path('resource_name')}: required: the name of the parameter that carries each "
                      f"trial's resource (epochs, steps...), one of {algorithm.space.names}")
        return None
    by_name = {p.name: p for p in algorithm.space}
    if name not in by_name:
        errors.append(f"{setting_path('resource_name')}: value of resource_name setting must be in parameters: "
                      f"{name!r} is not one of {algorithm.space.names}")
        return None
    param = by_name[name]
    if not param.is_numeric_range:
        errors.append(f"{setting_path('resource_name')}: the resource parameter {name!r} must be of type int or "
                      f"double (it is {param.type})")
        return None
    return param


def resource_value(param: Parameter, amount: float) -> int | float:
    """``amount`` of resource as the parameter's type: ints are truncated as Katib does (``int(r)``)."""
    if param.type == "int":
        return int(math.floor(amount + EPS))
    return float(amount)


def max_power(base: float, limit: float) -> int:
    """The largest ``k >= 0`` with ``base**k <= limit``: Katib's ``int(log(limit) / log(base))`` without its
    rounding errors."""
    if limit < base:
        return 0
    k = max(0, int(math.log(limit) / math.log(base)))
    while base ** (k + 1) <= limit * (1 + EPS):
        k += 1
    while k > 0 and base**k > limit * (1 + EPS):
        k -= 1
    return k


def eta_setting(settings: Mapping[str, str | None], name: str, errors: list[str], katib_default: bool) -> float | None:
    """The reduction factor: a number > 1. With ``katib_default``, values <= 0 mean 3 as in Katib's hyperband."""
    value = number_setting(settings, name, errors)
    if value is None:
        return None
    if katib_default and value <= 0:
        return 3.0
    if value <= 1:
        errors.append(f"{setting_path(name)}: must be greater than 1 (got {settings.get(name)!r}): "
                      f"each rung keeps the best 1/{name} of the previous one")
        return None
    return value


def seed_entropy(seed: int | None) -> int:
    return secrets.randbits(128) if seed is None else seed


def sample_config(algorithm: SearchAlgorithm, resource: Parameter, rng: np.random.Generator,
                  amount: int | float) -> dict[str, Any]:
    """A random configuration of every parameter but the resource, which gets ``amount``."""
    return {p.name: amount if p.name == resource.name else p.sample(rng) for p in algorithm.space}


def objective_ranker(algorithm: SearchAlgorithm) -> Callable[[TrialRecord], float | None]:
    """Trial -> a score where lower is better (the objective, negated when maximizing); None unless Succeeded
    with a numeric objective value (picked by the metric's strategy: min, max or latest)."""
    objective = algorithm.objective

    def score(trial: TrialRecord) -> float | None:
        return objective.loss(trial) if trial.state is TrialState.SUCCEEDED else None

    return score


def best_first(trials: Sequence[TrialRecord], score: Callable[[TrialRecord], float | None]) -> list[TrialRecord]:
    """Succeeded trials with a numeric objective, best first; ties go to the earlier trial."""
    scored = [(s, t.index, t) for t in trials if (s := score(t)) is not None]
    return [t for _, _, t in sorted(scored, key=lambda x: (x[0], x[1]))]
