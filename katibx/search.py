"""Search-space helpers for the Python API, as in Katib's SDK (``katibx.search.int(10, 20)`` and friends)."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any, Sequence

from katibx.spec import FeasibleSpace, ParameterSpec


@dataclass(frozen=True)
class Domain:
    """A parameter's type and feasible space, named when it is placed in ``parameters={...}``."""

    parameter_type: str
    feasible_space: FeasibleSpace
    values: tuple[Any, ...] | None = None  # categorical choices with their Python types

    def to_spec(self, name: str) -> ParameterSpec:
        return ParameterSpec(name=name, parameter_type=self.parameter_type, feasible_space=self.feasible_space)


def _numeric(kind: str, low: float, high: float, step: float | None, distribution: str | None) -> Domain:
    space = FeasibleSpace(min=str(low), max=str(high), step=None if step is None else str(step), distribution=distribution)
    return Domain(kind, space)


def int(min: builtins.int, max: builtins.int, step: builtins.int | None = None, distribution: str | None = None) -> Domain:  # noqa: A001
    """Integers in [min, max]; ``distribution`` is uniform (default), logUniform, normal or logNormal."""
    return _numeric("int", min, max, step, distribution)


def double(min: float, max: float, step: float | None = None, distribution: str | None = None) -> Domain:  # noqa: A002
    """Floats in [min, max]; with ``step`` only min + k*step values are drawn."""
    return _numeric("double", min, max, step, distribution)


def categorical(values: Sequence[Any]) -> Domain:
    """One of ``values``; the objective receives the value itself (ints stay ints, bools stay bools)."""
    values = tuple(values)
    return Domain("categorical", FeasibleSpace(list=[str(v) for v in values]), values)


def discrete(values: Sequence[float]) -> Domain:
    """One of the numbers in ``values``."""
    return Domain("discrete", FeasibleSpace(list=[str(v) for v in values]))
