"""Kubernetes quantities (``500m``, ``2``, ``1.5Gi``, ``1e3``): the one grammar for resource amounts and sizes."""

from __future__ import annotations

import math
import re
from typing import Any

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_FACTORS = {None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
            "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60}


def quantity(value: Any) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``1Gi``, ``1e3``) or a number, as a number; ValueError when it is
    none or negative."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")  # noqa: TRY004 - callers report ValueErrors as bad input
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        match = _QUANTITY.match(str(value).strip())
        if match is None:
            raise ValueError(f"not a quantity: {value!r}")
        number = float(match.group(1)) * _FACTORS[match.group(2)]
    if number < 0:
        raise ValueError(f"must not be negative: {value!r}")
    if not math.isfinite(number):  # 1e400, nan
        raise ValueError(f"not a finite quantity: {value!r}")
    return number


def parse_size(text: str) -> int:
    """A size in bytes written as a Kubernetes quantity (``1048576``, ``512Ki``, ``100M``, ``1.5Gi``; ``K`` is taken
    for ``k``): a whole, positive number of bytes; ValueError otherwise."""
    compact = re.sub(r"K(?!i)", "k", re.sub(r"\s+", "", text))
    try:
        size = quantity(compact)
    except ValueError:
        size = 0.0
    if size < 1 or size != int(size):
        raise ValueError(f"expected a positive size such as 1048576, 512Mi or 2Gi, got {text!r}")
    return int(size)
