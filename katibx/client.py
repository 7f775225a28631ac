"""Read experiments back from the store as Katib-shaped objects (the shape of ``KatibClient``'s answers)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from katibx.lease import stop_for_deletion
from katibx.status import experiment_status, optimal_trial_status, timestamp
from katibx.store import ExperimentNotFound, ExperimentRecord, Store
from katibx.template import format_value
from katibx.trial import TrialRecord, TrialState
from katibx.trial_dir import STDOUT_LOG


def experiment_object(record: ExperimentRecord, trials: list[TrialRecord]) -> dict[str, Any]:
    """The Experiment as ``kubectl get experiment -o yaml`` would show it: spec plus status."""
    body = record.experiment.to_dict()
    body.pop("status", None)
    body["metadata"] = {**body.get("metadata", {}), "name": record.name, "namespace": record.namespace,
                        "creationTimestamp": timestamp(record.created)}
    body["status"] = experiment_status(record, trials)
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


class KatibxClient:
    """Query and manage stored experiments, in the vocabulary of Katib's ``KatibClient``."""

    def __init__(self, store: Store | str | os.PathLike[str] | None = None) -> None:
        self.store = store if isinstance(store, Store) else Store(store)

    def _record(self, name: str, namespace: str | None) -> tuple[ExperimentRecord, list[TrialRecord]]:
        record = self.store.get_experiment(name, namespace)
        return record, self.store.trials(record.id)

    def get_experiment(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        return experiment_object(*self._record(name, namespace))

    def list_experiments(self) -> list[dict[str, Any]]:
        return [experiment_object(r, self.store.trials(r.id)) for r in self.store.list_experiments()]

    def list_trials(self, name: str, namespace: str | None = None) -> list[dict[str, Any]]:
        record, trials = self._record(name, namespace)
        return [trial_object(record, t) for t in trials]

    def get_success_trial_details(self, name: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Succeeded trials as Katib lists them: name, parameter_assignments and metrics."""
        record, trials = self._record(name, namespace)
        return [{"name": t.name,
                 "parameter_assignments": [{"name": k, "value": format_value(v)} for k, v in t.assignments.items()],
                 "metrics": [m.to_dict() for m in t.observation.values()]}
                for t in trials if t.state is TrialState.SUCCEEDED]

    def get_optimal_hyperparameters(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """``status.currentOptimalTrial``, or None while no trial has the objective metric."""
        record, trials = self._record(name, namespace)
        best = optimal_trial_status(record.experiment, trials)
        return best if best["bestTrialName"] else None

    def get_experiment_conditions(self, name: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.store.get_experiment(name, namespace).conditions

    def _has_condition(self, name: str, namespace: str | None, ctype: str) -> bool:
        """Katib's ``has_condition``: a condition of this type with status True."""
        return any(c["type"] == ctype and c["status"] == "True" for c in self.get_experiment_conditions(name, namespace))

    def is_experiment_created(self, name: str, namespace: str | None = None) -> bool:
        return self._has_condition(name, namespace, "Created")

    def is_experiment_restarting(self, name: str, namespace: str | None = None) -> bool:
        return self._has_condition(name, namespace, "Restarting")

    def is_experiment_succeeded(self, name: str, namespace: str | None = None) -> bool:
        return self._has_condition(name, namespace, "Succeeded")

    def is_experiment_failed(self, name: str, namespace: str | None = None) -> bool:
        return self._has_condition(name, namespace, "Failed")

    def is_experiment_running(self, name: str, namespace: str | None = None) -> bool:
        return self._has_condition(name, namespace, "Running")

    def get_trial_logs(self, name: str, trial_name: str, namespace: str | None = None) -> str:
        """The trial's combined stdout and stderr."""
        path = self.trial_log_path(name, trial_name, namespace)
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def trial_log_path(self, name: str, trial_name: str, namespace: str | None = None) -> Path:
        """Where the trial's combined stdout and stderr are kept on this machine (to stream a large log)."""
        record, trials = self._record(name, namespace)
        if trial_name not in {t.name for t in trials}:
            raise ExperimentNotFound(f"trial {trial_name!r} not found in experiment {name!r}")
        return self.store.trial_dir(record, trial_name) / STDOUT_LOG

    def delete_experiment(self, name: str, namespace: str | None = None, *, force: bool = False) -> None:
        """Remove the experiment, its trials, observations and trial directories. One that a controller is running
        is refused (ExperimentBusy) unless ``force``, which stops that controller first."""
        record = self.store.get_experiment(name, namespace)
        stop_for_deletion(self.store, record, force=force)
        self.store.delete_experiment(record)
        shutil.rmtree(self.store.experiment_dir(record), ignore_errors=True)
KatibClient = KatibxClient  # Katib's name, for code ported from kubeflow.katib
