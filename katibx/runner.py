"""Run and resume experiments: the single entry point behind the CLI and the Python API."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from katibx import plugins
from katibx.backend import Backend
from katibx.controller import Controller, TrialListener
from katibx.functions import function_reference, import_function
from katibx.lease import ExperimentLease, new_lease
from katibx.loader import experiment_from_dict
from katibx.mlflow_logging import logged_to_mlflow
from katibx.preparation import DEFAULT_BACKEND, PreparedExperiment, backend_class, create_backend, prepare
from katibx.spec import Experiment
from katibx.status import CREATED, REASON_CREATED, forget_chosen_algorithm, set_condition
from katibx.store import ExperimentRecord, Store
from katibx.tracking import mlflow_target
from katibx.validation import ValidationError


def run_experiment(
    experiment: Experiment,
    *,
    store: Store | None = None,
    backend: Backend | str = DEFAULT_BACKEND,
    workdir: str | os.PathLike[str] | None = None,
    function: Callable[..., Any] | None = None,
    kill_running_on_completion: bool = False,
    listener: TrialListener | None = None,
    prepared: PreparedExperiment | None = None,
    timeout: float | None = None,
    mlflow: bool | str | None = None,
) -> ExperimentRecord:
    """Store a new experiment and run it to completion (or for ``timeout`` seconds: then it succeeds with the trials
    it has, starting no more); ValidationError before anything is stored. ``mlflow`` logs it into MLflow as it runs
    (True or "": at MLflow's default tracking URI; a URI; None: as the experiment's ``katibx.io/mlflow`` annotation
    says; False: not).

    Trials run in ``workdir``: by default the folder of the YAML file the experiment was loaded from, else cwd.
    The store records the backend and its options, so ``resume``, ``logs`` and ``delete`` find it again.
    """
    workdir = Path(workdir or experiment.source_dir or ".").absolute()
    store = store or Store()
    backend = create_backend(backend) if isinstance(backend, str) else backend
    if prepared is None:  # (a caller that prepared it made it new: the CLI, the clients, the pipeline step)
        forget_chosen_algorithm(experiment)
    prepared = prepared or prepare(experiment, backend, mlflow)  # the caller may have prepared it with this backend
    reference = function_reference(experiment)
    if function is None and reference is not None:
        function = import_function(reference, str(workdir))
    conditions: list[dict[str, Any]] = []
    set_condition(conditions, CREATED, True, REASON_CREATED, "Experiment is created")
    deadline = deadline_after(timeout)  # a wrong timeout before anything is stored
    target = mlflow_target(mlflow, experiment)
    held = new_lease()
    record = store.create_experiment(experiment, conditions, str(workdir), backend=backend.name,
                                     backend_options=backend.settings(), lease=held)
    with ExperimentLease(store, record, held=held) as lease, logged_to_mlflow(store, target, listener) as listener:
        return Controller(store, record, backend, prepared=prepared, function=function, lease=lease,
                          kill_running_on_completion=kill_running_on_completion, listener=listener,
                          deadline=deadline).run()


def deadline_after(timeout: float | None) -> float | None:
    """A monotonic deadline ``timeout`` seconds from now; ValidationError for a timeout that is not positive."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValidationError([f"timeout: must be a positive number of seconds, got {timeout!r}"])
    return time.monotonic() + float(timeout)


def resume_experiment(
    name: str,
    *,
    store: Store | None = None,
    namespace: str | None = None,
    backend: Backend | str | None = None,
    max_trial_count: int | None = None,
    function: Callable[..., Any] | None = None,
    kill_running_on_completion: bool = False,
    listener: TrialListener | None = None,
    timeout: float | None = None,
    parallel_trial_count: int | None = None,
    max_failed_trial_count: int | None = None,
    mlflow: bool | str | None = None,
) -> ExperimentRecord:
    """Continue a stored experiment after a crash or with a larger budget (for at most ``timeout`` seconds); trials
    in flight are re-run or re-attached. ``parallel_trial_count`` and ``max_failed_trial_count`` replace the
    stored ones (the Katib SDK's ``edit_experiment_budget``); ``mlflow`` as for :func:`run_experiment`.

    It runs on the backend that ran it (with the options stored then); another backend is refused, because the
    trials the crashed controller left behind live on the first one.
    """
    store = store or Store()
    record = store.get_experiment(name, namespace)
    deadline = deadline_after(timeout)
    budget = {"max_trial_count": max_trial_count, "parallel_trial_count": parallel_trial_count,
              "max_failed_trial_count": max_failed_trial_count}
    with ExperimentLease(store, record) as lease:  # before anything is changed: one controller at a time
        return _resume(store, record, backend, budget, function, kill_running_on_completion, listener, lease,
                       deadline, mlflow)


def _resume(store: Store, record: ExperimentRecord, backend: Backend | str | None, budget: dict[str, int | None],
            function: Callable[..., Any] | None, kill_running_on_completion: bool, listener: TrialListener | None,
            lease: ExperimentLease, deadline: float | None, mlflow: bool | str | None) -> ExperimentRecord:
    name = record.name
    try:  # the store reads specs without today's rules; one that runs again must pass them
        record.experiment = experiment_from_dict(record.experiment.to_dict())
    except ValidationError as exc:
        raise ValidationError([f"stored experiment {name!r}: {line}" for line in exc.errors]) from None
    backend = stored_backend(record, backend)
    target = mlflow_target(mlflow, record.experiment)
    _edit_budget(record, budget, store.trial_counts(record.id).trials)
    prepared = prepare(record.experiment, backend, mlflow)
    reference = function_reference(record.experiment)
    if function is None and reference is not None:
        function = import_function(reference, record.workdir)
    if record.backend is None:  # a store written before backends were recorded
        store.set_backend(record, backend.name, backend.settings())
    store.save_experiment(record)
    with logged_to_mlflow(store, target, listener) as listener:
        return Controller(store, record, backend, prepared=prepared, function=function, lease=lease,
                          kill_running_on_completion=kill_running_on_completion, listener=listener,
                          deadline=deadline).run()


def _edit_budget(record: ExperimentRecord, budget: dict[str, int | None], trials: int) -> None:
    """Put the new budget into the stored spec; ValidationError when it cannot run (Katib's webhook rules)."""
    spec = record.experiment.spec
    errors = [f"{name}: must be a positive integer, got {value!r}" for name, value in budget.items()
              if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1)]
    if errors:
        raise ValidationError(errors)
    max_trials, parallel = budget["max_trial_count"], budget["parallel_trial_count"]
    if max_trials is not None and max_trials <= trials:
        raise ValidationError([f"--max-trial-count: must be greater than status.trials count ({trials})"])
    max_trials = max_trials or spec.max_trial_count
    if max_trials and (parallel or spec.parallel_trial_count or 0) > max_trials:
        raise ValidationError([f"parallel_trial_count: must be at most spec.maxTrialCount ({max_trials})" if parallel
                               else "--max-trial-count: must be at least spec.parallelTrialCount"])
    for name, value in budget.items():
        if value is not None:
            setattr(spec, name, value)


def stored_backend(record: ExperimentRecord, backend: Backend | str | None = None, *,
                   given: dict[str, Any] | None = None, fallback: dict[str, Any] | None = None) -> Backend:
    """The backend that ran ``record``, re-created from its stored options: ``given`` ones replace them (the backend's
    ``merge_settings`` decides how), ``fallback`` ones only fill in what the store does not say.

    ``backend`` (a name or an instance) must be that same backend; ValidationError when it is another one."""
    recorded = record.backend
    wanted = backend if isinstance(backend, str) or backend is None else backend.name
    if recorded is not None and wanted is not None and wanted != recorded:
        raise ValidationError([f"--backend: experiment {record.name!r} ran on the {recorded} backend, not {wanted}; "
                               f"resume it with --backend {recorded} (or leave --backend out)"])
    if isinstance(backend, Backend):
        return backend
    name = recorded or wanted or DEFAULT_BACKEND
    if recorded is not None and recorded not in plugins.backend_names():
        raise ValidationError([f"experiment {record.name!r} ran on the {recorded} backend, which is not installed here "
                               f"(installed: {', '.join(sorted(plugins.backend_names()))})"])
    cls = backend_class(name)
    options = {**(fallback or {}), **cls.merge_settings(record.backend_options, given or {})}
    try:
        return cls(**options)
    except TypeError as exc:  # a stored option this version of the backend no longer takes
        raise ValidationError([f"experiment {record.name!r}: the {name} backend cannot be created with the options "
                               f"{sorted(options)} (stored with the experiment or given): {exc}"]) from None
