"""Closed-form objectives for algorithm tests, as module-level functions so function trials can import them."""

from __future__ import annotations

import math
from typing import Any

# Branin-Hoo on x1 in [-5, 10], x2 in [0, 15]: three global minima of 0.397887.
BRANIN_MIN = 0.397887
# Hartmann-6 on [0, 1]^6: global minimum -3.32237.
HARTMANN6_MIN = -3.32237

_HARTMANN_ALPHA = (1.0, 1.2, 3.0, 3.2)
_HARTMANN_A = (
    (10, 3, 17, 3.5, 1.7, 8),
    (0.05, 10, 17, 0.1, 8, 14),
    (3, 3.5, 1.7, 10, 17, 8),
    (17, 8, 0.05, 10, 0.1, 14),
)
_HARTMANN_P = (
    (0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886),
    (0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991),
    (0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650),
    (0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381),
)


def branin_value(x1: float, x2: float) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def branin(p: dict[str, Any]) -> dict[str, float]:
    """Trial objective: ``loss`` = Branin at (x1, x2)."""
    return {"loss": branin_value(p["x1"], p["x2"])}


def hartmann6(p: dict[str, Any]) -> dict[str, float]:
    """Trial objective: ``loss`` = Hartmann-6 at (x0, ..., x5)."""
    x = [p[f"x{i}"] for i in range(6)]
    total = 0.0
    for alpha, a, q in zip(_HARTMANN_ALPHA, _HARTMANN_A, _HARTMANN_P):
        total -= alpha * math.exp(-sum(aj * (xj - qj) ** 2 for aj, xj, qj in zip(a, x, q)))
    return {"loss": total}
