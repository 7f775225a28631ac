"""Katib's nasConfig -> DARTS primitive names (``separable_convolution_3x3``, ...), and parsing those names back."""

from __future__ import annotations

import re
from dataclasses import dataclass

from katibx.spec import NasConfig

NONE = "none"
SKIP = "skip_connection"
# operationType -> kind of operation; every kind but skip takes a filter size from its first parameter (as Katib).
SIZED_TYPES = ("separable_convolution", "dilated_convolution", "convolution", "avg_pooling", "max_pooling")
OPERATION_TYPES = (*SIZED_TYPES, SKIP)
_NAME = re.compile(r"^(%s)_(\d+)x(\d+)$" % "|".join(SIZED_TYPES))


@dataclass(frozen=True)
class Primitive:
    """A parsed primitive: its operation type and filter size (0 for skip and none)."""

    kind: str
    size: int = 0

    @property
    def parameter_free(self) -> bool:
        return self.kind in ("avg_pooling", "max_pooling", SKIP, NONE)


def parse_primitive(name: str) -> Primitive:
    """``'dilated_convolution_5x5'`` -> Primitive('dilated_convolution', 5); ValueError for anything else."""
    if name in (NONE, SKIP):
        return Primitive(name)
    match = _NAME.match(name)
    if match is None or match.group(2) != match.group(3):
        raise ValueError(f"unknown operation {name!r}: expected {NONE!r}, {SKIP!r} or <type>_<k>x<k> with type one of "
                         f"{', '.join(SIZED_TYPES)}")
    size = int(match.group(2))
    if size < 1 or size % 2 == 0:
        raise ValueError(f"operation {name!r}: the filter size must be an odd number >= 1")
    return Primitive(match.group(1), size)


def primitives_from_nas_config(nas_config: NasConfig) -> tuple[list[str], list[str]]:
    """Katib's mapping of ``spec.nasConfig.operations`` to primitive names (without ``none``), and error lines."""
    names: list[str] = []
    errors: list[str] = []
    if not nas_config.operations:
        errors.append("spec.nasConfig.operations: at least one operation is required")
    for i, op in enumerate(nas_config.operations):
        path = f"spec.nasConfig.operations[{i}]"
        kind = op.operation_type or ""
        if kind not in OPERATION_TYPES:
            errors.append(f"{path}.operationType: {kind!r} is not supported by darts; use one of {', '.join(OPERATION_TYPES)}")
            continue
        if kind == SKIP:
            candidates = [SKIP]
        elif not op.parameters or not (op.parameters[0].feasible_space.list or []):
            errors.append(f"{path}.parameters[0].feasibleSpace.list: {kind} needs a list of filter sizes (e.g. [\"3\"])")
            continue
        else:
            candidates = [f"{kind}_{size}x{size}" for size in op.parameters[0].feasible_space.list or []]
        for name in candidates:
            try:
                parse_primitive(name)
            except ValueError as exc:
                errors.append(f"{path}.parameters[0].feasibleSpace.list: {exc}")
                continue
            if name not in names:
                names.append(name)
    return names, errors


def num_layers_from_nas_config(nas_config: NasConfig) -> tuple[int | None, list[str]]:
    """``spec.nasConfig.graphConfig.numLayers`` (required, >= 1) and error lines."""
    layers = nas_config.graph_config.num_layers if nas_config.graph_config else None
    if layers is None:
        return None, ["spec.nasConfig.graphConfig.numLayers: Required value for darts"]
    if layers < 1:
        return None, [f"spec.nasConfig.graphConfig.numLayers: must be >= 1 (got {layers})"]
    return layers, []


def reduction_layers(num_layers: int) -> list[int]:
    """Indices of reduction cells as Katib places them: none for 1 layer, the 2nd for 2, L//3 and 2L//3 beyond."""
    if num_layers == 1:
        return []
    if num_layers == 2:
        return [1]
    return sorted({num_layers // 3, 2 * num_layers // 3})


def with_none(primitives: list[str]) -> list[str]:
    """The search space as the supernet uses it: the given primitives plus the implicit ``none``, last (as Katib)."""
    return [p for p in primitives if p != NONE] + [NONE]
