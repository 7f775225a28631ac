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
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
            raise ValueError(f"metric {name!r}: value must be a number or a string, got {type(value).__name__}")
        record[str(name)] = value if isinstance(value, str) else float(value)
    record["timestamp"] = time.time()
    line = json.dumps(record) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
