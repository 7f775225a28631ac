"""Closed-form test problems with a known optimum, shared by the benchmarks (and usable from tests).

Every problem is minimised. A problem knows its search space in each framework's own terms (katibx
``parameters=``, optuna ``trial.suggest_*``, scikit-optimize dimensions), so all arms search exactly the
same space, and has a module-level objective (``problem.objective``) that katibx function trials can run.

Problems: Branin-2D, Hartmann-6, Rosenbrock-4D, Ackley-5D (bounds and f* as in COCO / the usual
literature) and ``branin-mixed``: Branin plus an irrelevant categorical and an integer whose only
effect is a penalty ``n**2 / 10`` (best at n = 0), so f* stays Branin's while every parameter type is
exercised (double, int, categorical).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

METRIC = "y"  # the objective metric every problem reports (minimised)
REGRET_FLOOR = 1e-12  # simple regret is clipped here before taking log10
BRANIN_OPTIMUM = 0.397887357729738  # usually quoted as 0.397887
HARTMANN6_OPTIMUM = -3.32236801141551  # usually quoted as -3.32237


@dataclass(frozen=True)
class Param:
    """One parameter: ``kind`` is double, int or categorical; ``low``/``high`` bound numbers, ``choices`` lists."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()


def double(name: str, low: float, high: float) -> Param:
    return Param(name, "double", low, high)


def integer(name: str, low: int, high: int) -> Param:
    return Param(name, "int", low, high)


def categorical(name: str, choices: Sequence[Any]) -> Param:
    return Param(name, "categorical", choices=tuple(choices))


# --- the functions ------------------------------------------------------------------------------------------
def branin(x1: float, x2: float) -> float:
    """Branin-Hoo on [-5, 10] x [0, 15]; f* = 0.397887 at (-pi, 12.275), (pi, 2.275), (9.42478, 2.475)."""
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 ** 2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


_H6_ALPHA = (1.0, 1.2, 3.0, 3.2)
_H6_A = ((10, 3, 17, 3.5, 1.7, 8), (0.05, 10, 17, 0.1, 8, 14), (3, 3.5, 1.7, 10, 17, 8), (17, 8, 0.05, 10, 0.1, 14))
_H6_P = ((1312, 1696, 5569, 124, 8283, 5886), (2329, 4135, 8307, 3736, 1004, 9991),
         (2348, 1451, 3522, 2883, 3047, 6650), (4047, 8828, 8732, 5743, 1091, 381))


def hartmann6(x: Sequence[float]) -> float:
    """Hartmann-6 on [0, 1]^6; f* = -3.32237."""
    total = 0.0
    for alpha, a_row, p_row in zip(_H6_ALPHA, _H6_A, _H6_P):
        total += alpha * math.exp(-sum(a * (xi - p * 1e-4) ** 2 for a, xi, p in zip(a_row, x, p_row)))
    return -total


def rosenbrock(x: Sequence[float]) -> float:
    """Rosenbrock on [-5, 10]^d; f* = 0 at (1, ..., 1)."""
    return sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(len(x) - 1))


def ackley(x: Sequence[float]) -> float:
    """Ackley on [-32.768, 32.768]^d; f* = 0 at the origin."""
    d = len(x)
    s1 = sum(xi * xi for xi in x) / d
    s2 = sum(math.cos(2 * math.pi * xi) for xi in x) / d
    return -20 * math.exp(-0.2 * math.sqrt(s1)) - math.exp(s2) + 20 + math.e


# --- module-level objectives (katibx function trials import or fork these) ----------------------------------
def _branin_value(p: Mapping[str, Any]) -> float:
    return branin(float(p["x1"]), float(p["x2"]))


def _hartmann6_value(p: Mapping[str, Any]) -> float:
    return hartmann6([float(p[f"x{i}"]) for i in range(6)])


def _rosenbrock4_value(p: Mapping[str, Any]) -> float:
    return rosenbrock([float(p[f"x{i}"]) for i in range(4)])


def _ackley5_value(p: Mapping[str, Any]) -> float:
    return ackley([float(p[f"x{i}"]) for i in range(5)])


def _branin_mixed_value(p: Mapping[str, Any]) -> float:
    # "color" is irrelevant on purpose; "n" only adds a penalty that vanishes at 0.
    return branin(float(p["x1"]), float(p["x2"])) + int(p["n"]) ** 2 / 10


def branin_objective(p: Mapping[str, Any]) -> dict[str, float]:
    return {METRIC: _branin_value(p)}


def hartmann6_objective(p: Mapping[str, Any]) -> dict[str, float]:
    return {METRIC: _hartmann6_value(p)}


def rosenbrock4_objective(p: Mapping[str, Any]) -> dict[str, float]:
    return {METRIC: _rosenbrock4_value(p)}


def ackley5_objective(p: Mapping[str, Any]) -> dict[str, float]:
    return {METRIC: _ackley5_value(p)}


def branin_mixed_objective(p: Mapping[str, Any]) -> dict[str, float]:
    return {METRIC: _branin_mixed_value(p)}


@dataclass(frozen=True)
class Problem:
    """A minimisation problem with a known optimum ``optimum`` over ``params``."""

    name: str
    params: tuple[Param, ...]
    optimum: float
    value: Callable[[Mapping[str, Any]], float]
    objective: Callable[[Mapping[str, Any]], dict[str, float]]  # module-level, returns {METRIC: value}

    @property
    def dims(self) -> int:
        return len(self.params)

    def regret(self, value: float) -> float:
        """Simple regret of a value, clipped at REGRET_FLOOR (noise in f* must not give log10 of <= 0)."""
        return max(value - self.optimum, REGRET_FLOOR)

    def log10_regret(self, value: float) -> float:
        return math.log10(self.regret(value))

    # each framework's view of the space ---------------------------------------------------------------------
    def katibx_parameters(self) -> dict[str, Any]:
        import katibx

        out: dict[str, Any] = {}
        for p in self.params:
            if p.kind == "double":
                out[p.name] = katibx.search.double(p.low, p.high)
            elif p.kind == "int":
                out[p.name] = katibx.search.int(int(p.low), int(p.high))
            else:
                out[p.name] = katibx.search.categorical(list(p.choices))
        return out

    def optuna_distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict[str, Any] = {}
        for p in self.params:
            if p.kind == "double":
                out[p.name] = FloatDistribution(p.low, p.high)
            elif p.kind == "int":
                out[p.name] = IntDistribution(int(p.low), int(p.high))
            else:
                out[p.name] = CategoricalDistribution(p.choices)
        return out

    def skopt_dimensions(self) -> list[Any]:
        from skopt.space import Categorical, Integer, Real

        out: list[Any] = []
        for p in self.params:
            if p.kind == "double":
                out.append(Real(p.low, p.high, name=p.name))
            elif p.kind == "int":
                out.append(Integer(int(p.low), int(p.high), name=p.name))
            else:
                out.append(Categorical(list(p.choices), name=p.name))
        return out

    def from_vector(self, x: Sequence[Any]) -> dict[str, Any]:
        """A list of values in parameter order (scikit-optimize's points) as a named assignment."""
        return {p.name: v for p, v in zip(self.params, x)}


PROBLEMS: dict[str, Problem] = {
    p.name: p
    for p in (
        Problem("branin-2d", (double("x1", -5, 10), double("x2", 0, 15)), BRANIN_OPTIMUM, _branin_value, branin_objective),
        Problem("hartmann-6d", tuple(double(f"x{i}", 0, 1) for i in range(6)), HARTMANN6_OPTIMUM, _hartmann6_value,
                hartmann6_objective),
        Problem("rosenbrock-4d", tuple(double(f"x{i}", -5, 10) for i in range(4)), 0.0, _rosenbrock4_value,
                rosenbrock4_objective),
        Problem("ackley-5d", tuple(double(f"x{i}", -32.768, 32.768) for i in range(5)), 0.0, _ackley5_value,
                ackley5_objective),
        Problem("branin-mixed",
                (double("x1", -5, 10), double("x2", 0, 15), categorical("color", ["red", "green", "blue"]),
                 integer("n", -5, 5)),
                BRANIN_OPTIMUM, _branin_mixed_value, branin_mixed_objective),
    )
}

# Points where each problem attains its optimum (for tests of the closed forms).
OPTIMA: dict[str, dict[str, Any]] = {
    "branin-2d": {"x1": math.pi, "x2": 2.275},
    "hartmann-6d": dict(zip((f"x{i}" for i in range(6)), (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573))),
    "rosenbrock-4d": {f"x{i}": 1.0 for i in range(4)},
    "ackley-5d": {f"x{i}": 0.0 for i in range(5)},
    "branin-mixed": {"x1": math.pi, "x2": 2.275, "color": "green", "n": 0},
}
