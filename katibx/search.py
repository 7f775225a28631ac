"""Search-space helpers for the Python API, as in Katib's SDK (``katibx.search.int(10, 20)`` and friends)."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any, Sequence

from katibx.spec import FeasibleSpace, ParameterSpec
from katibx.template import format_value
from katibx.validation import ValidationError


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
    """One of ``values``; the objective receives the value itself (ints stay ints, bools stay bools).

    Values must be strings, numbers or bools, each with a distinct text form (``1`` and ``"1"`` clash).
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValidationError([f"categorical: values must be a list, got {type(values).__name__}"])
    values = tuple(values)
    bad = [f"categorical[{i}]: must be a string, number or bool, got {type(v).__name__}"
           for i, v in enumerate(values) if not isinstance(v, (str, builtins.int, float))]
    if bad:
        raise ValidationError(bad)
    return Domain("categorical", FeasibleSpace(list=[format_value(v) for v in values]), values)


def discrete(values: Sequence[float]) -> Domain:
    """One of the numbers in ``values``."""
    return Domain("discrete", FeasibleSpace(list=[format_value(v) for v in values]))
