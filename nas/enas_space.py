"""ENAS's search space as Katib defines it: ``spec.nasConfig`` -> numbered operations (each combination of an
operation type's parameter values is one operation id), and the two trial assignments Katib emits: ``architecture``
(row ``i`` = ``[op_id, skip bits to layers 0..i-1]``) and ``nn_config`` (layers, sizes and what each id means)."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from katibx.spec import NasConfig, ParameterSpec

# Katib's ENAS operation types and the parameters its trial code reads for each.
OPERATION_TYPES = ("convolution", "separable_convolution", "depthwise_convolution", "reduction")
MAX_OPERATIONS = 10_000  # the controller's output layer has one unit per operation
ARCHITECTURE, NN_CONFIG = "architecture", "nn_config"  # the assignment names (trialParameters reference these)


@dataclass(frozen=True)
class EnasSpace:
    """The layers to fill, the network's input and output sizes, and the operations (index = op id)."""

    num_layers: int
    input_sizes: list[int]
    output_sizes: list[int]
    operations: list[dict[str, Any]]  # {"opt_id", "opt_type", "opt_params": {name: value text}}

    def nn_config(self, architecture: list[list[int]]) -> dict[str, Any]:
        """Katib's ``nn_config`` of one architecture: its layers and sizes, and what each op id it uses means."""
        used = sorted({row[0] for row in architecture})
        return {"num_layers": self.num_layers, "input_sizes": self.input_sizes, "output_sizes": self.output_sizes,
                "embedding": {str(i): self.operations[i] for i in used}}

    def check_architecture(self, architecture: list[list[int]]) -> None:
        """ValueError unless it has one row per layer, a known op id and 0/1 skips to each earlier layer."""
        if len(architecture) != self.num_layers:
            raise ValueError(f"architecture: {len(architecture)} layers, expected {self.num_layers}")
        for i, row in enumerate(architecture):
            if len(row) != i + 1 or not 0 <= row[0] < len(self.operations) or any(b not in (0, 1) for b in row[1:]):
                raise ValueError(f"architecture: layer {i} is {row}: expected [op id < {len(self.operations)}, "
                                 f"then {i} skip bits]")


def assignments(space: EnasSpace, architecture: list[list[int]]) -> dict[str, str]:
    """A trial's two assignments, JSON with single quotes as Katib writes them (shell-safe in a command line)."""
    return {ARCHITECTURE: json.dumps(architecture).replace('"', "'"),
            NN_CONFIG: json.dumps(space.nn_config(architecture)).replace('"', "'")}


def read_assignment(text: str) -> Any:
    """A trial assignment back as JSON (single quotes as Katib writes them, or double)."""
    return json.loads(text.strip().strip('"').replace("'", '"'))


def enas_space(nas_config: NasConfig | None) -> tuple[EnasSpace | None, list[str]]:
    """The space of ``spec.nasConfig``, or None and the problems (one ``path: message`` line each)."""
    if nas_config is None:
        return None, ["spec.nasConfig: enas needs spec.nasConfig (graphConfig and operations)"]
    errors: list[str] = []
    graph = nas_config.graph_config
    path = "spec.nasConfig.graphConfig"
    if graph is None:
        errors.append(f"{path}: numLayers, inputSizes and outputSizes are required")
    else:
        if not graph.num_layers or graph.num_layers < 1:
            errors.append(f"{path}.numLayers: must be at least 1")
        for name, sizes in (("inputSizes", graph.input_sizes), ("outputSizes", graph.output_sizes)):
            if not sizes or any(size < 1 for size in sizes):
                errors.append(f"{path}.{name}: a list of positive sizes is required")
    operations: list[dict[str, Any]] = []
    if not nas_config.operations:
        errors.append("spec.nasConfig.operations: at least one operation is required")
    for i, operation in enumerate(nas_config.operations):
        where = f"spec.nasConfig.operations[{i}]"
        kind = operation.operation_type or ""
        if kind not in OPERATION_TYPES:
            errors.append(f"{where}.operationType: {kind!r} is not an enas operation; use one of "
                          f"{', '.join(OPERATION_TYPES)}")
            continue
        if not operation.parameters:
            errors.append(f"{where}.parameters: at least one parameter is required")
            continue
        values = [_values(p, f"{where}.parameters[{j}]", errors) for j, p in enumerate(operation.parameters)]
        names = [p.name for p in operation.parameters]
        if math.prod(len(v) for v in values) + len(operations) > MAX_OPERATIONS:
            errors.append(f"{where}: the operations' value combinations pass {MAX_OPERATIONS:,} operation ids; "
                          "give fewer values")
            break
        for combination in itertools.product(*values):
            operations.append({"opt_id": len(operations), "opt_type": kind,
                               "opt_params": dict(zip(names, combination))})
    if errors or graph is None:
        return None, errors
    return EnasSpace(int(graph.num_layers or 0), list(graph.input_sizes or []), list(graph.output_sizes or []),
                     operations), []


def _values(parameter: ParameterSpec, path: str, errors: list[str]) -> list[str]:
    """Every value of one operation parameter, as text (Katib: lists as given, ranges from min to max by step)."""
    space = parameter.feasible_space
    kind = parameter.parameter_type
    if kind in ("categorical", "discrete"):
        if not space.list:
            errors.append(f"{path}.feasibleSpace.list: {kind} needs a list of values")
            return []
        quoted = [str(v) for v in space.list if "'" in str(v) or '"' in str(v)]
        if quoted:  # the assignments are JSON written with single quotes, as Katib writes them
            errors.append(f"{path}.feasibleSpace.list: {quoted[0]!r}: a value cannot hold a quote")
            return []
        return [str(v) for v in space.list]
    if kind in ("int", "double"):
        try:
            low, high = Decimal(str(space.min)), Decimal(str(space.max))
            step = Decimal(str(space.step)) if space.step not in (None, "") else (Decimal(1) if kind == "int" else None)
        except (InvalidOperation, ValueError):
            errors.append(f"{path}.feasibleSpace: min, max (and step) must be numbers")
            return []
        if kind == "int" and any(v is not None and v != v.to_integral_value() for v in (low, high, step)):
            errors.append(f"{path}.feasibleSpace: an int parameter needs whole numbers for min, max and step")
            return []
        if step is None or step <= 0 or low > high:
            errors.append(f"{path}.feasibleSpace: needs min <= max and a step > 0"
                          + (" (a double needs a step)" if kind == "double" and step is None else ""))
            return []
        count = int((high - low) / step) + 1
        return [str(low + i * step) for i in range(count)]
    errors.append(f"{path}.parameterType: {kind!r} is not one of categorical, discrete, int, double")
    return []


__all__ = ["ARCHITECTURE", "NN_CONFIG", "OPERATION_TYPES", "EnasSpace", "assignments", "enas_space",
           "read_assignment"]
