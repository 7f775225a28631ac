"""Typed search space parsed from Katib's string-valued ParameterSpecs.

Algorithms work on :class:`Parameter` (numbers already parsed, values typed), never on raw spec strings.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from katibx.spec import Experiment, ParameterSpec
from katibx.template import format_value

if TYPE_CHECKING:
    import numpy as np

PARAMETER_TYPES = ("double", "int", "discrete", "categorical")
DISTRIBUTIONS = ("uniform", "logUniform", "normal", "logNormal")
# Annotation in which the Python API keeps categorical values with their Python types.
TYPED_VALUES_ANNOTATION = "katibx.io/parameter-values"


@dataclass(frozen=True)
class Parameter:
    """One search dimension. Numeric bounds are floats; ``values`` holds typed choices for lists."""

    name: str
    type: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    values: tuple[Any, ...] = ()
    distribution: str = "uniform"

    @property
    def is_numeric_range(self) -> bool:
        return self.type in ("double", "int")

    def cast(self, value: Any) -> Any:
        """Coerce a value (possibly a string from the store or a CLI) to this parameter's type."""
        if self.type == "int":
            return int(round(float(value)))
        if self.type == "double":
            return float(value)
        for choice in self.values:  # exact type first: 1, 1.0 and True are different categories
            if type(choice) is type(value) and choice == value:
                return choice
        for choice in self.values:
            if format_value(choice) == str(value) or str(choice) == str(value):
                return choice
        raise ValueError(f"{value!r} is not one of {list(self.values)} for parameter {self.name!r}")

    def grid(self) -> list[Any]:
        """Every value of this dimension for grid search; doubles need a step."""
        if not self.is_numeric_range:
            return list(self.values)
        assert self.min is not None and self.max is not None
        step = self.step if self.step is not None else 1.0
        count = int(math.floor((self.max - self.min) / step + 1e-9)) + 1
        points = [self.min + i * step for i in range(count)]
        if self.type == "int":
            return [int(round(p)) for p in points]
        return [round(p, 12) for p in points]

    def sample(self, rng: np.random.Generator) -> Any:
        """One random draw honouring distribution, step and type."""
        if not self.is_numeric_range:
            return self.values[int(rng.integers(len(self.values)))]
        assert self.min is not None and self.max is not None
        low, high = self.min, self.max
        if self.type == "int" and self.step is None and self.distribution == "uniform":
            return int(rng.integers(int(low), int(high) + 1))
        if self.distribution == "logUniform":
            x = math.exp(rng.uniform(math.log(low), math.log(high)))
        elif self.distribution == "normal":
            x = rng.normal((low + high) / 2, (high - low) / 6)
        elif self.distribution == "logNormal":
            lo, hi = math.log(low), math.log(high)
            x = math.exp(rng.normal((lo + hi) / 2, (hi - lo) / 6))
        else:
            x = rng.uniform(low, high)
        x = min(max(x, low), high)
        if self.step is not None:
            x = low + round((x - low) / self.step) * self.step
            x = min(x, low + math.floor((high - low) / self.step + 1e-9) * self.step)
        return int(round(x)) if self.type == "int" else float(x)


# Draws of a random point before one already used is taken anyway.
MAX_REDRAWS = 100


def point_key(assignments: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A hashable key of a point, by value and type (``1``, ``1.0`` and ``True`` are different points)."""
    return tuple(sorted((name, f"{type(value).__name__}:{value!r}") for name, value in assignments.items()))


@dataclass(frozen=True)
class SearchSpace:
    """The ordered parameters of an experiment."""

    parameters: tuple[Parameter, ...] = field(default_factory=tuple)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self.parameters)

    def __len__(self) -> int:
        return len(self.parameters)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def sample_unused(self, rng: Any, used: set[tuple[tuple[str, str], ...]]) -> dict[str, Any]:
        """A random point no key in ``used`` names (drawn again up to MAX_REDRAWS times: a space smaller than the
        parallelism may still repeat one), added to ``used``; parallel trials then rarely evaluate one point twice."""
        for _ in range(MAX_REDRAWS + 1):
            point = {p.name: p.sample(rng) for p in self.parameters}
            if point_key(point) not in used:
                break
        used.add(point_key(point))
        return point

    def cast(self, assignment: dict[str, Any]) -> dict[str, Any]:
        by_name = {p.name: p for p in self.parameters}
        return {k: by_name[k].cast(v) if k in by_name else v for k, v in assignment.items()}

    @classmethod
    def from_experiment(cls, experiment: Experiment) -> "SearchSpace":
        """Build from a validated experiment (raises ValueError on unparsable specs)."""
        typed = json.loads(experiment.metadata.annotations.get(TYPED_VALUES_ANNOTATION, "{}"))
        params = []
        for i, spec in enumerate(experiment.spec.parameters):
            param, errors = parse_parameter(spec, f"spec.parameters[{i}]", typed.get(spec.name))
            if param is None:
                raise ValueError("; ".join(errors))
            params.append(param)
        return cls(tuple(params))


def _number(raw: str | None, path: str, errors: list[str], integer: bool) -> float | None:
    """``raw`` as a finite float (an integer when asked); None and a message in ``errors`` when it is not."""
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        errors.append(f"{path}: {raw!r} is not a number")
        return None
    if not math.isfinite(value):
        errors.append(f"{path}: {raw!r} must be a finite number")
        return None
    if integer and value != int(value):
        errors.append(f"{path}: {raw!r} is not an integer")
        return None
    return value


def _discrete_value(raw: str) -> float | int:
    """A discrete list item: an int when written as one, else a float."""
    value = float(raw)
    return int(value) if value.is_integer() and "." not in raw and "e" not in raw.lower() else value


def parse_parameter(
    spec: ParameterSpec, path: str, typed_values: Sequence[Any] | None = None
) -> tuple[Parameter | None, list[str]]:
    """Parse one ParameterSpec into a typed Parameter, collecting every problem as ``path: message``."""
    errors: list[str] = []
    fs = spec.feasible_space
    fpath = f"{path}.feasibleSpace"
    ptype = spec.parameter_type
    distribution = fs.distribution or "uniform"
    if ptype in ("double", "int"):
        if not fs.min or not fs.max:
            return None, [f"{fpath}: min and max must be specified for parameterType {ptype}"]
        integer = ptype == "int"
        low = _number(fs.min, f"{fpath}.min", errors, integer)
        high = _number(fs.max, f"{fpath}.max", errors, integer)
        step = _number(fs.step, f"{fpath}.step", errors, integer)
        # min == max is a fixed value (Katib's hyperband example pins its resource parameter this way)
        if low is not None and high is not None and low > high:
            errors.append(f"{fpath}: min ({fs.min}) must not be greater than max ({fs.max})")
        if step is not None and step <= 0:
            errors.append(f"{fpath}.step: must be greater than 0")
        if distribution in ("logUniform", "logNormal") and low is not None and low <= 0:
            errors.append(f"{fpath}.min: must be greater than 0 for distribution {distribution}")
        if errors or low is None or high is None:
            return None, errors
        return Parameter(spec.name, ptype, low, high, step, (), distribution), []
    if ptype in ("discrete", "categorical"):
        raw = fs.list or []
        if not raw:
            errors.append(f"{fpath}.list: must not be empty")
            return None, errors
        if len(set(raw)) != len(raw):
            errors.append(f"{fpath}.list: contains duplicate values")
        if ptype == "discrete":
            values: list[Any] = []
            for j, item in enumerate(raw):
                try:
                    values.append(_discrete_value(item))
                except ValueError:
                    errors.append(f"{fpath}.list[{j}]: {item!r} is not a number")
        else:
            values = list(typed_values) if typed_values and len(typed_values) == len(raw) else list(raw)
        if errors:
            return None, errors
        return Parameter(spec.name, ptype, values=tuple(values), distribution=distribution), []
    if not ptype:
        return None, [f"{path}.parameterType: Required value"]
    return None, [f"{path}.parameterType: {ptype!r} is not supported; must be one of {', '.join(PARAMETER_TYPES)}"]
