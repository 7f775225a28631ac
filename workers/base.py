"""The worker-backend plugin contract: start trials, report their metrics and exits, stop them on request."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from katibx.collectors import MetricLog
from katibx.spec import Experiment
from katibx.trial import TrialRecord


@dataclass
class TrialJob:
    """Everything a backend needs to run one trial."""

    experiment: Experiment
    trial: TrialRecord
    workdir: Path  # the experiment file's folder: the trial's cwd
    trial_dir: Path  # the trial's own folder: logs, pushed metrics, checkpoints
    function: Callable[..., Any] | None = None  # function trials from the Python API


@dataclass
class TrialMetrics:
    """Metric values observed for a running trial."""

    trial_name: str
    logs: list[MetricLog]


@dataclass
class TrialExited:
    """A trial's worker finished: ``succeeded`` by its exit status, with Katib-style reason and message."""

    trial_name: str
    succeeded: bool
    reason: str = ""
    message: str = ""
    logs: list[MetricLog] = field(default_factory=list)  # metrics found at exit (last lines, event files)


TrialEvent = TrialMetrics | TrialExited


class TrialStartError(RuntimeError):
    """A trial's worker could not be started (missing program, bad template); the trial fails with this message."""


class Backend(abc.ABC):
    """Base of every ``katibx.workers`` plugin. Configured in the constructor; one per controller run."""

    name: ClassVar[str]

    def check(self, experiment: Experiment) -> list[str]:
        """Reasons (``path: message``) why this backend cannot run the experiment; empty when it can."""
        return []

    @abc.abstractmethod
    def start(self, job: TrialJob) -> dict[str, Any]:
        """Start a trial and return a JSON-able handle, stored so a later controller can find its worker."""

    @abc.abstractmethod
    def poll(self, timeout: float) -> list[TrialEvent]:
        """Events since the last call, waiting up to ``timeout`` seconds for the first one."""

    @abc.abstractmethod
    def kill(self, trial_name: str) -> None:
        """Stop a running trial; its TrialExited event follows from ``poll``."""

    def attach(self, job: TrialJob, handle: dict[str, Any]) -> bool:
        """Take over a trial a crashed controller left running, from its stored handle; True if its worker is still
        there (its metrics are then collected again from the start and its exit reported by ``poll``), False to have
        the controller ``release`` it and run the trial again. The default never attaches."""
        return False

    @abc.abstractmethod
    def release(self, handle: dict[str, Any]) -> None:
        """Stop whatever a crashed controller left running for a trial (the trial is then re-run)."""

    def close(self) -> None:
        """Stop every trial still running and free resources."""
