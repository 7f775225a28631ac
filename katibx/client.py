"""Read experiments back from the store as Katib-shaped objects (the shape of ``KatibClient``'s answers)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from katibx.status import ExperimentSummary, experiment_status, optimal_trial_status, timestamp
from katibx.store import ExperimentNotFound, ExperimentRecord, Store
from katibx.template import format_value
from katibx.trial import TrialRecord, TrialState
from katibx.trial_dir import STDOUT_LOG

if TYPE_CHECKING:  # (the CLI's reading verbs need none of them: each is imported where it is used)
    from katibx.backend import Backend
    from katibx.katib_object import KatibObject
    from katibx.results import TuneResult


def katib_object(data: Any) -> Any:
    """:func:`katibx.katib_object.katib_object` (imported here on use: a table never wraps objects)."""
    from katibx.katib_object import katib_object as wrapped

    return wrapped(data)


def experiment_object(record: ExperimentRecord, summary: ExperimentSummary) -> dict[str, Any]:
    """The Experiment as ``kubectl get experiment -o yaml`` would show it: spec plus status (from the summary of its
    trials: :meth:`ExperimentSummary.of` trials in memory, or :meth:`Store.summary`)."""
    body = record.spec_dict()
    body.pop("status", None)
    body["metadata"] = {**body.get("metadata", {}), "name": record.name, "namespace": record.namespace,
                        "creationTimestamp": timestamp(record.created)}
    body["status"] = experiment_status(record, summary)
    return body


def trial_object(record: ExperimentRecord, trial: TrialRecord) -> dict[str, Any]:
    """A Katib Trial object: assignments in spec, conditions and observation in status."""
    status: dict[str, Any] = {"conditions": trial.conditions,
                              "observation": {"metrics": [m.to_dict() for m in trial.observation.values()]}}
    if trial.start_time:
        status["startTime"] = timestamp(trial.start_time)
    if trial.completion_time:
        status["completionTime"] = timestamp(trial.completion_time)
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Trial",
        "metadata": {"name": trial.name, "namespace": record.namespace, "labels": trial.labels},
        "spec": {"parameterAssignments": [{"name": k, "value": format_value(v)} for k, v in trial.assignments.items()]},
        "status": status,
    }


log = logging.getLogger(__name__)
# How much of a trial's log is read at a time (a log can be larger than memory).
_READ_BYTES = 1 << 20


def log_tail(path: Path, lines: int, limit: int = 1 << 20) -> list[str]:
    """The last ``lines`` lines of a log, reading at most its last ``limit`` bytes."""
    if lines <= 0 or not path.exists():
        return []
    with path.open("rb") as log:
        size = log.seek(0, 2)
        log.seek(max(0, size - limit))
        text = log.read().decode("utf-8", errors="replace").splitlines()
    return (text[1:] if size > limit else text)[-lines:]  # the first may have been cut


class KatibxClient:
    """Query and manage stored experiments, in the vocabulary of Katib's ``KatibClient``: its objects as
    :class:`KatibObject` (plain data that answers the SDK's attribute names too)."""

    def __init__(self, store: Store | str | os.PathLike[str] | None = None, *, namespace: str | None = None) -> None:
        self.store = store if isinstance(store, Store) else Store(store)
        self.namespace = namespace

    def _namespace(self, namespace: str | None) -> str | None:
        return namespace or self.namespace

    def _record(self, name: str, namespace: str | None) -> tuple[ExperimentRecord, list[TrialRecord]]:
        record = self.store.get_experiment(name, self._namespace(namespace))
        return record, self.store.trials(record.id)

    def records(self, namespace: str | None = None) -> list[ExperimentRecord]:
        """The stored experiments (of ``namespace``, or of the client's, or all)."""
        namespace = self._namespace(namespace)
        return [r for r in self.store.list_experiments() if namespace is None or r.namespace == namespace]

    def get_experiment(self, name: str, namespace: str | None = None, timeout: Any = None) -> TuneResult:
        """The Experiment with its status, and its trials Optuna-style (a :class:`TuneResult`)."""
        return self._result(*self._record(name, namespace))

    def _result(self, record: ExperimentRecord, trials: list[TrialRecord]) -> TuneResult:
        from katibx.results import TuneResult

        return TuneResult(experiment_object(record, ExperimentSummary.of(record.experiment, trials)), record, trials,
                          self.store.experiment_observation_logs(record.id))

    def list_experiments(self, namespace: str | None = None, timeout: Any = None) -> list[TuneResult]:
        return [self._result(r, self.store.trials(r.id)) for r in self.records(namespace)]

    def list_trials(self, experiment_name: str | None = None, namespace: str | None = None,
                    timeout: Any = None) -> list[KatibObject]:
        """The trials of one experiment, or of every experiment (in ``namespace``)."""
        records = [self._record(experiment_name, namespace)[0]] if experiment_name else self.records(namespace)
        return [katib_object(trial_object(r, t)) for r in records for t in self.store.trials(r.id)]

    def get_trial(self, name: str, namespace: str | None = None, timeout: Any = None) -> KatibObject:
        """The trial called ``name``, in whichever experiment it is."""
        record, trial = self.find_trial(name, namespace)
        return katib_object(trial_object(record, trial))

    def find_trial(self, name: str, namespace: str | None = None) -> tuple[ExperimentRecord, TrialRecord]:
        """The trial called ``name`` and its experiment, whichever experiment (of ``namespace``) it is in."""
        for record in self.records(namespace):
            trial = self.store.trial_named(record.id, name)
            if trial is not None:
                return record, trial
        raise ExperimentNotFound(f"trial {name!r} not found (store {self.store.path})")

    def get_trial_metrics(self, name: str, namespace: str | None = None, db_manager_address: Any = None,
                          timeout: Any = None) -> list[KatibObject]:
        """Every metric value the trial reported, in order (Katib's MetricLogs: ``timeStamp`` and ``metric``)."""
        record, trial = self.find_trial(name, namespace)
        return [katib_object({"timeStamp": timestamp(log.timestamp) if log.timestamp else None, "metric": {"name": log.name, "value": log.value}})
                for log in self.store.observation_logs(trial.id)]

    def get_success_trial_details(self, experiment_name: str | None = None, namespace: str | None = None,
                                  timeout: Any = None) -> list[dict[str, Any]]:
        """Succeeded trials as Katib lists them: name, parameter_assignments and metrics."""
        records = [self._record(experiment_name, namespace)[0]] if experiment_name else self.records(namespace)
        return [{"name": t.name,
                 "parameter_assignments": [{"name": k, "value": format_value(v)} for k, v in t.assignments.items()],
                 "metrics": [m.to_dict() for m in t.observation.values()]}
                for r in records for t in self.store.trials(r.id) if t.state is TrialState.SUCCEEDED]

    def get_optimal_hyperparameters(self, name: str, namespace: str | None = None,
                                    timeout: Any = None) -> KatibObject | None:
        """``status.currentOptimalTrial``, or None while no trial has the objective metric."""
        record = self.store.get_experiment(name, self._namespace(namespace))
        best = optimal_trial_status(self.store.optimal_trial(record))
        return katib_object(best) if best["bestTrialName"] else None

    def get_experiment_conditions(self, name: str, namespace: str | None = None,
                                  timeout: Any = None) -> list[KatibObject]:
        return katib_object(self.store.get_experiment(name, self._namespace(namespace)).conditions)

    def _has_condition(self, name: str, namespace: str | None, ctype: str) -> bool:
        return self._has(self.get_experiment_conditions(name, namespace), ctype)

    @staticmethod
    def _has(conditions: list[dict[str, Any]], ctype: str) -> bool:
        """Katib's ``has_condition``: a condition of this type with status True."""
        return any(c.get("type") == ctype and c.get("status") == "True" for c in conditions)

    def is_experiment_created(self, name: str, namespace: str | None = None, timeout: Any = None) -> bool:
        return self._has_condition(name, namespace, "Created")

    def is_experiment_restarting(self, name: str, namespace: str | None = None, timeout: Any = None) -> bool:
        return self._has_condition(name, namespace, "Restarting")

    def is_experiment_succeeded(self, name: str, namespace: str | None = None, timeout: Any = None) -> bool:
        return self._has_condition(name, namespace, "Succeeded")

    def is_experiment_failed(self, name: str, namespace: str | None = None, timeout: Any = None) -> bool:
        return self._has_condition(name, namespace, "Failed")

    def is_experiment_running(self, name: str, namespace: str | None = None, timeout: Any = None) -> bool:
        return self._has_condition(name, namespace, "Running")

    def get_trial_logs(self, name: str, trial_name: str, namespace: str | None = None) -> str:
        """The trial's combined stdout and stderr."""
        path = self.trial_log_path(name, trial_name, namespace)
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def trial_log_path(self, name: str, trial_name: str, namespace: str | None = None) -> Path:
        """Where the trial's combined stdout and stderr are kept on this machine (to stream a large log)."""
        record = self.store.get_experiment(name, self._namespace(namespace))
        if self.store.trial_named(record.id, trial_name) is None:
            raise ExperimentNotFound(f"trial {trial_name!r} not found in experiment {name!r}")
        return self.store.trial_dir(record, trial_name) / STDOUT_LOG

    def trial_log_lines(self, name: str, trial_name: str, namespace: str | None = None, *, follow: bool = False,
                        tail: int | None = None, poll_seconds: float = 0.2) -> Iterator[str]:
        """The trial's output lines (the last ``tail`` of them); with ``follow`` then each new one as it is written,
        until the trial has ended and its log is read to the end (``kubectl logs -f --tail``)."""
        path = self.trial_log_path(name, trial_name, namespace)
        record = self.store.get_experiment(name, self._namespace(namespace))
        offset = 0
        if tail is not None and path.exists():
            offset = path.stat().st_size
            yield from log_tail(path, tail)
        partial = b""
        while True:
            ended = not follow or self.trial_ended(record, trial_name)  # before reading: then nothing is missed
            if path.exists():
                with path.open("rb") as log_file:
                    log_file.seek(offset)
                    chunk = log_file.read(_READ_BYTES)
                offset += len(chunk)
                *lines, partial = (partial + chunk).split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", errors="replace")
                if len(chunk) == _READ_BYTES:
                    continue  # more is there already
            if ended:
                if partial:
                    yield partial.decode("utf-8", errors="replace")
                return
            time.sleep(poll_seconds)

    def trial_ended(self, record: ExperimentRecord, trial_name: str) -> bool:
        """Whether the trial has ended (or is gone)."""
        trial = self.store.trial_named(record.id, trial_name)
        return trial is None or trial.state.is_terminal

    def delete_experiment(self, name: str, namespace: str | None = None, *, force: bool = False,
                          make_backend: Callable[[ExperimentRecord], Backend] | None = None) -> str:
        """Remove the experiment, its trials, observations and trial directories, and what its backend created
        outside the store (a cluster's objects: ``make_backend(record)`` gives the backend, by default the one that
        ran it with its stored options); returns a phrase saying what that was. One that a controller is running is
        refused (ExperimentBusy) unless ``force``, which stops that controller first; a backend that cannot be made
        or reached keeps the experiment (ClusterError), unless ``force``, which deletes it from the store anyway
        (with a logged warning saying what was left, and why)."""
        from katibx.lease import stop_for_deletion
        from katibx.runner import stored_backend  # (deleting loads what running does; reading does not)

        record = self.store.get_experiment(name, self._namespace(namespace))
        stop_for_deletion(self.store, record, force=force)  # its controller would go on creating trials
        handles = [h for h in map(self.store.trial_handle, self.store.trials(record.id)) if h is not None]
        cleaned = self._delete_outside_store(record, handles, force, make_backend or stored_backend) if handles else ""
        self.store.delete_experiment(record)
        shutil.rmtree(self.store.experiment_dir(record), ignore_errors=True)
        return cleaned

    @staticmethod
    def _delete_outside_store(record: ExperimentRecord, handles: list[dict[str, Any]], force: bool,
                              make_backend: Callable[[ExperimentRecord], Backend]) -> str:
        from katibx.backend import ClusterError
        from katibx.preparation import DEFAULT_BACKEND
        from katibx.validation import ValidationError

        backend = record.backend or DEFAULT_BACKEND
        try:
            worker = make_backend(record)
            try:
                return worker.delete_experiment(record.experiment, handles)
            finally:
                worker.close()
        except (ClusterError, ValidationError) as exc:
            problem = "; ".join(exc.errors) if isinstance(exc, ValidationError) else str(exc)
            if not force:
                raise ClusterError(f"{problem}; experiment {record.name} is kept (katibx delete {record.name} --force "
                                   f"deletes it from the store anyway, leaving what its trials created on the "
                                   f"{backend} backend)") from None
            log.warning("%s; what its trials created on the %s backend is left", problem, backend)
            return ""
