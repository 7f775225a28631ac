"""Push metrics from inside a trial (Katib's ``report_metrics``), for command and function trials alike.

Locally the record is appended to ``$KATIBX_METRICS_FILE``; a trial that runs on a thread of the controller's
process (``isolation: none``) hands it to its :class:`TrialSink` instead. In a Kubernetes pod the backend sets
``$KATIBX_PUSH_URL`` (its push endpoint) and ``$KATIBX_PUSH_TOKEN`` instead: the record is POSTed there as a JSON
object of metrics, with the trial's name and the token in headers (the endpoint checks them before it reads the
body), and the call returns once the controller has it.
"""

from __future__ import annotations

import json
import numbers
import os
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Mapping, Protocol, Sequence

from katibx.trial_dir import (
    METRICS_FILE_ENV,
    PRUNABLE_FILE,
    PUSH_TOKEN_ENV,
    PUSH_URL_ENV,
    STOP_FILE,
    TRIAL_DIR_ENV,
    TRIAL_NAME_ENV,
)

PUSH_ATTEMPTS = 5
PUSH_TRIAL_HEADER = "X-Katibx-Trial"  # a pushed record's trial; its token goes in "Authorization: Bearer"
PUSH_TIMEOUT_SECONDS = 30.0


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


class TrialSink(Protocol):
    """Where a trial running on a thread of the controller's process (``isolation: none``) reports to: its
    environment is the controller's, so the trial is known by the thread that runs it."""

    def report(self, record: dict[str, Any]) -> None:
        """One record of :func:`report_metrics` (metric values and ``timestamp``)."""

    def should_prune(self) -> bool:
        """Whether early stopping has asked the trial to stop (it asks, so it can be asked)."""


_thread_trial = threading.local()  # .sink: the TrialSink of the trial this thread runs, if any
# A process forked from a trial's thread (a worker of a nested katibx.tune, a helper process) is not that trial.
os.register_at_fork(after_in_child=lambda: setattr(_thread_trial, "sink", None))


def set_thread_trial(sink: TrialSink | None) -> None:
    """Make ``sink`` the trial of the calling thread (None: it runs none); for in-process trial runners."""
    _thread_trial.sink = sink


def thread_trial() -> TrialSink | None:
    """The trial the calling thread runs in the controller's process, if any."""
    return getattr(_thread_trial, "sink", None)


def report_metrics(metrics: Mapping[str, Any]) -> None:
    """Record metric values for the current trial; call it as often as you like (each call is one observation).

    Values must be numbers (strings are accepted for non-numeric metrics such as a DARTS genotype).
    """
    sink = thread_trial()
    path, url = os.environ.get(METRICS_FILE_ENV), os.environ.get(PUSH_URL_ENV)
    if sink is None and (not os.environ.get(TRIAL_NAME_ENV) or not (path or url)):
        raise RuntimeError(
            "katibx.report_metrics() must be called inside a katibx trial "
            f"(environment variables {TRIAL_NAME_ENV} and {METRICS_FILE_ENV} or {PUSH_URL_ENV} are not set; with "
            "isolation none, only from the thread that runs the trial)"
        )
    record: dict[str, Any] = {}
    for name, value in metrics.items():
        if str(name) == "timestamp":
            raise ValueError("metric name 'timestamp' is reserved for the time of the report")
        record[str(name)] = _metric_value(str(name), value)
    record["timestamp"] = time.time()
    if sink is not None:
        sink.report(record)
        return
    if url:
        _post(url, record)
        return
    assert path is not None
    line = json.dumps(record) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


class TrialPruned(Exception):
    """Raised by a function trial to end early when :func:`should_prune` says so (Optuna's ``TrialPruned``): the
    trial ends cleanly, EarlyStopped, keeping what it reported, and its worker process runs the next trial. Raised
    without being asked, the trial ends as if the function had returned (early stopping decides, not the trial)."""


def should_prune() -> bool:
    """Whether the experiment's early-stopping rule (``medianstop``...) has decided that this trial should stop:
    report intermediate values with :func:`report_metrics`, ask this after each, and return (or raise
    :class:`TrialPruned`) when it says True. A trial that asks is given a grace period to end by itself; one that
    never asks is stopped at once, as in Katib."""
    sink = thread_trial()
    if sink is not None:
        return sink.should_prune()
    if not os.environ.get(TRIAL_NAME_ENV):
        raise RuntimeError(f"katibx.should_prune() must be called inside a katibx trial ({TRIAL_NAME_ENV} is not set)")
    folder = os.environ.get(TRIAL_DIR_ENV)
    if not folder:
        return False
    if _prunable.get("trial") != os.environ[TRIAL_NAME_ENV]:  # first call of this trial: it asks, so it is asked
        open(os.path.join(folder, PRUNABLE_FILE), "a").close()
        _prunable["trial"] = os.environ[TRIAL_NAME_ENV]
    return os.path.exists(os.path.join(folder, STOP_FILE))


_prunable: dict[str, str] = {}  # the trial of this process that has called should_prune (a worker runs several)


def _post(url: str, record: dict[str, Any]) -> None:
    """Send one record to the controller's push endpoint, retrying transient failures; RuntimeError if it fails."""
    body = json.dumps(record).encode()
    headers = {"Content-Type": "application/json", PUSH_TRIAL_HEADER: os.environ[TRIAL_NAME_ENV],
               "Authorization": f"Bearer {os.environ.get(PUSH_TOKEN_ENV, '')}"}
    delay, problem = 0.2, ""
    for attempt in range(PUSH_ATTEMPTS):
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=PUSH_TIMEOUT_SECONDS):
                return
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}: {exc.read().decode(errors='replace').strip()}"
            if exc.code < 500:
                break  # refused (unknown or finished trial, bad token, bad record): retrying cannot help
        except (urllib.error.URLError, OSError) as exc:
            problem = str(getattr(exc, "reason", exc))
        if attempt + 1 < PUSH_ATTEMPTS:
            time.sleep(delay)
            delay *= 2
    raise RuntimeError(f"katibx.report_metrics(): the controller at {url} did not take the metrics ({problem})")


def returned_metrics(result: Any, objectives: Sequence[str]) -> dict[str, Any] | None:
    """The metrics an objective function's return value stands for, as Optuna reads it: a dict of metrics, a
    number for the objective metric, or one number per objective (a tuple or list, in the experiment's order); None
    for None (the function reported with :func:`report_metrics`). TypeError naming what was returned otherwise."""
    if result is None or isinstance(result, Mapping):
        return None if result is None else dict(result)
    names = ", ".join(objectives)
    if isinstance(result, (tuple, list)):
        if len(result) != len(objectives):
            raise TypeError(f"the objective returned {len(result)} values for {len(objectives)} objectives ({names})")
        values = list(result)
    else:
        if len(objectives) != 1:
            raise TypeError(f"the objective returned one value for {len(objectives)} objectives ({names}); return "
                            "one value per objective, in that order, or a dict of metrics")
        values = [result]
    metrics = {}
    for name, value in zip(objectives, values):
        try:  # what report_metrics takes as a number: NumPy scalars, 0-d arrays and tensors too
            metrics[name] = None if isinstance(value, str) else _metric_value(name, value)
        except ValueError:
            metrics[name] = None
        if metrics[name] is None:
            raise TypeError(f"the objective returned {type(value).__name__}; return a number (the value of "
                            f"{names}), one number per objective, a dict of metrics, or None after report_metrics()")
    return metrics
