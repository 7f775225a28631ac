"""One observed metric value, as backends report it, the store keeps it and plugins read it."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MetricLog:
    """One observed metric value; ``value`` stays a string, as in Katib's DB (a genotype is a metric too)."""

    name: str
    value: str
    timestamp: float | None = None  # epoch seconds; None until the controller stamps it with the arrival time


def as_float(value: str | None) -> float | None:
    """``value`` as a finite float, or None when it is absent or not numeric (nan/inf too)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def non_finite(value: str | None) -> bool:
    """Whether ``value`` is a number that is not finite: nan, inf, -inf, or one that overflows a double (1e309).
    Such a value is never an objective value; text that is not a number at all (a genotype) is not one of these."""
    if value is None:
        return False
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
