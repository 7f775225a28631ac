"""The worker-backend plugin contract: start trials, report their metrics and exits, stop them on request."""

from __future__ import annotations

import abc
import contextlib
import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from katibx.metrics import MetricLog
from katibx.spec import Experiment
from katibx.trial import TrialRecord
from katibx.validation import ValidationError


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


class BackendUnavailable(RuntimeError):
    """The backend cannot run on this system; one line saying what to use instead (the CLI exits 2)."""


class WorkspaceError(RuntimeError):
    """The trial folders cannot be written (a full disk, a read-only file system); one line naming the folder.

    The controller stops (the store is intact, so ``katibx resume`` continues once there is room); the CLI prints
    the line, exit 2."""


# What a file system says when it has no room or takes no writes: the run stops, rather than fail trial after trial.
WORKSPACE_FAULTS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


@contextlib.contextmanager
def workspace(folder: Path) -> Iterator[None]:
    """WorkspaceError naming ``folder`` for a file system fault (:data:`WORKSPACE_FAULTS`) while a trial is set up
    there; other errors pass as they are."""
    try:
        yield
    except OSError as exc:
        if exc.errno in WORKSPACE_FAULTS:
            raise WorkspaceError(f"trial folder {folder}: {exc.strerror}") from None
        raise


class ClusterError(RuntimeError):
    """The backend's cluster cannot be reached or refuses a request; one line naming the address or object.

    The controller stops (the store is intact, so ``katibx resume`` continues); the CLI prints the line, exit 2."""


@dataclass(frozen=True)
class BackendOption:
    """A command-line option of a backend (``--ray-address``), handed to its constructor as ``keyword``.

    ``parse`` turns the option's text into constructor keywords (default ``{keyword: text}``) and raises
    ValueError with a message for a bad value; ``commands`` are the CLI verbs that offer it. ``help`` says what it
    sets, not for which backend: the CLI says that in the words each command needs."""

    flag: str
    keyword: str
    help: str
    envvar: str | None = None
    metavar: str | None = None
    parse: Callable[[str], dict[str, Any]] | None = None
    commands: frozenset[str] = frozenset({"run", "resume"})

    @property
    def param(self) -> str:
        """The Python name click gives the option (``--ray-address`` -> ``ray_address``)."""
        return self.flag.lstrip("-").replace("-", "_")

    def keywords(self, text: str) -> dict[str, Any]:
        return self.parse(text) if self.parse is not None else {self.keyword: text}


class Backend(abc.ABC):
    """Base of every ``katibx.workers`` plugin. Configured in the constructor; one per controller run.

    Besides running trials, a backend may serve the CLI: its own :attr:`options`, :meth:`render` (the objects
    trials would create), :meth:`trial_logs` (a running trial's output) and :meth:`delete_experiment` (what it
    created outside the store)."""

    name: ClassVar[str]
    #: Command-line options, passed to the constructor (``katibx run --backend NAME --flag VALUE``).
    options: ClassVar[tuple[BackendOption, ...]] = ()
    #: Katib metrics-collector kinds this backend collects.
    metrics_collectors: ClassVar[tuple[str, ...]] = ("StdOut", "File", "TensorFlowEvent", "Push")
    #: Why a collector kind it does not collect is refused, by kind (what the user can do instead).
    collector_refusals: ClassVar[dict[str, str]] = {}
    #: Whether its trials run the container image their trial template names (``katibx run --build`` needs it).
    runs_images: ClassVar[bool] = False

    def check(self, experiment: Experiment) -> list[str]:
        """Reasons (``path: message``) why this backend cannot run the experiment; empty when it can.

        The collector kind is checked by the core against :attr:`metrics_collectors` before this is called."""
        return []

    def can_start(self, job: TrialJob) -> bool:
        """Whether what the trial asks for (its GPUs) is free now; False leaves it Created, asked again at the
        controller's next step (a backend that places trials itself, as Kubernetes and Ray do, always says True)."""
        return True

    @abc.abstractmethod
    def start(self, job: TrialJob) -> dict[str, Any]:
        """Start a trial and return a JSON-able handle, stored so a later controller can find its worker; an empty
        one when nothing of the trial can outlive this process (its Running state is then stored lazily)."""

    @abc.abstractmethod
    def poll(self, timeout: float) -> list[TrialEvent]:
        """Events since the last call, waiting up to ``timeout`` seconds for the first one."""

    @abc.abstractmethod
    def kill(self, trial_name: str) -> None:
        """Stop a running trial; its TrialExited event follows from ``poll``."""

    def ask_to_stop(self, trial_name: str) -> bool:
        """Tell a running trial that early stopping wants it to stop, so that it can end by itself
        (:func:`katibx.should_prune` answers True in it); False when this backend cannot tell it, and the trial is
        then killed at once. One that does not end within the grace period is killed."""
        return False

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

    @classmethod
    def merge_settings(cls, stored: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """Constructor options for a later run of an experiment: the stored ``settings()`` with the options given
        now replacing them (a backend whose options depend on each other overrides this)."""
        return {**stored, **given}

    def settings(self) -> dict[str, Any]:
        """The constructor options worth keeping (JSON-able): the store records them, so ``resume``, ``logs`` and
        ``delete`` re-create this backend as the run had it (``--ray-address``, ``--kubeconfig``...)."""
        return {}

    # services to the CLI -----------------------------------------------------------------------
    def render(self, experiment: Experiment, trials: list[TrialRecord], namespace: str | None) -> list[dict[str, Any]]:
        """The objects these (not yet started) trials would create, without contacting any cluster; a backend that
        creates none (its trials are processes) refuses with the reason."""
        raise ValidationError([f"--backend: the {self.name} backend runs trials as processes and creates no objects "
                               "to render; use --backend kubernetes"])

    def trial_logs(self, handle: dict[str, Any]) -> str:
        """A running trial's output read from where it runs, when the trial folder has none yet."""
        return ""

    def delete_experiment(self, experiment: Experiment, handles: list[dict[str, Any]]) -> str:
        """Delete what the experiment created outside the store (cluster objects); a phrase saying what, or "".

        Raises :class:`ClusterError` when that cannot be done (the experiment then stays in the store)."""
        return ""
