"""Push metrics from inside a trial (Katib's ``report_metrics``), for command and function trials alike."""

from __future__ import annotations

import json
import numbers
import os
import time
from typing import Any, Mapping

TRIAL_NAME_ENV = "KATIB_TRIAL_NAME"
TRIAL_DIR_ENV = "KATIBX_TRIAL_DIR"
METRICS_FILE_ENV = "KATIBX_METRICS_FILE"
# Every trial has ``<trial dir>/checkpoint`` for its own state, given to it as $KATIBX_CHECKPOINT_DIR.
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_ENV = "KATIBX_CHECKPOINT_DIR"


def _metric_value(name: str, value: Any) -> int | float | str:
    """A number as float (NumPy and framework scalars too), a string as is; anything else is refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)  # kept as written: 3, not 3.0
    if not isinstance(value, bool) and not (isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real)):
        try:
            return float(value)  # also NumPy scalars and 0-d tensors
        except (TypeError, ValueError):
            pass
    raise ValueError(f"metric {name!r}: value must be a number or a string, got {type(value).__name__}")


def report_metrics(metrics: Mapping[str, Any]) -> None:
    """Record metric values for the current trial; call it as often as you like (each call is one observation).

    Values must be numbers (strings are accepted for non-numeric metrics such as a DARTS genotype).
    """
    path = os.environ.get(METRICS_FILE_ENV)
    if not os.environ.get(TRIAL_NAME_ENV) or not path:
        raise RuntimeError(
            "katibx.report_metrics() must be called inside a katibx trial "
            f"(environment variables {TRIAL_NAME_ENV} and {METRICS_FILE_ENV} are not set)"
        )
    record: dict[str, Any] = {}
    for name, value in metrics.items():
        if str(name) == "timestamp":
            raise ValueError("metric name 'timestamp' is reserved for the time of the report")
        record[str(name)] = _metric_value(str(name), value)
    record["timestamp"] = time.time()
    line = json.dumps(record) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
