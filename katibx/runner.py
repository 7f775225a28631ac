"""Run and resume experiments: the single entry point behind the CLI and the Python API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from katibx.algorithms.base import AlgorithmSettingsError
from katibx import plugins
from katibx.controller import Controller, TrialListener, create_algorithm, create_early_stopping
from katibx.functions import function_reference, import_function
from katibx.status import CREATED, REASON_CREATED, set_condition
from katibx.store import ExperimentRecord, Store
from katibx.spec import Experiment
from katibx.validation import ValidationError
from katibx.workers.base import Backend

DEFAULT_BACKEND = "local"


def create_backend(name: str = DEFAULT_BACKEND, **options: Any) -> Backend:
    """Instantiate a worker backend plugin by name."""
    try:
        cls = plugins.load(plugins.WORKERS, name)
    except KeyError as exc:
        raise ValidationError([f"--backend: {exc.args[0]}"]) from None
    return cls(**options)


def check_experiment(experiment: Experiment, backend: Backend) -> list[str]:
    """Problems found before anything runs: algorithm settings and what the backend cannot do."""
    errors = list(backend.check(experiment))
    for create in (create_algorithm, create_early_stopping):
        try:
            create(experiment)
        except AlgorithmSettingsError as exc:
            errors.extend(exc.errors)
        except KeyError as exc:  # plugin not installed (validation reports it first with the field path)
            errors.append(f"spec.algorithm: {exc.args[0]}")
    return errors


def run_experiment(
    experiment: Experiment,
    *,
    store: Store | None = None,
    backend: Backend | str = DEFAULT_BACKEND,
    workdir: str | os.PathLike[str] | None = None,
    function: Callable[..., Any] | None = None,
    kill_running_on_completion: bool = False,
    listener: TrialListener | None = None,
) -> ExperimentRecord:
    """Store a new experiment and run it to completion; ValidationError before anything is stored.

    Trials run in ``workdir``: by default the folder of the YAML file the experiment was loaded from, else cwd.
    """
    workdir = Path(workdir or experiment.source_dir or ".").absolute()
    store = store or Store()
    backend = create_backend(backend) if isinstance(backend, str) else backend
    errors = check_experiment(experiment, backend)
    if errors:
        raise ValidationError(errors)
    reference = function_reference(experiment)
    if function is None and reference is not None:
        function = import_function(reference, str(workdir))
    conditions: list[dict[str, Any]] = []
    set_condition(conditions, CREATED, True, REASON_CREATED, "Experiment is created")
    record = store.create_experiment(experiment, conditions, str(workdir))
    return Controller(store, record, backend, function=function, kill_running_on_completion=kill_running_on_completion,
                      listener=listener).run()


def resume_experiment(
    name: str,
    *,
    store: Store | None = None,
    namespace: str | None = None,
    backend: Backend | str = DEFAULT_BACKEND,
    max_trial_count: int | None = None,
    function: Callable[..., Any] | None = None,
    kill_running_on_completion: bool = False,
    listener: TrialListener | None = None,
) -> ExperimentRecord:
    """Continue a stored experiment after a crash or with a larger budget; trials in flight are re-run."""
    store = store or Store()
    backend = create_backend(backend) if isinstance(backend, str) else backend
    record = store.get_experiment(name, namespace)
    if max_trial_count is not None:
        spec = record.experiment.spec
        trials = len(store.trials(record.id))
        if max_trial_count <= trials:
            raise ValidationError([f"--max-trial-count: must be greater than status.trials count ({trials})"])
        if spec.parallel_trial_count and spec.parallel_trial_count > max_trial_count:
            raise ValidationError(["--max-trial-count: must be at least spec.parallelTrialCount"])
        spec.max_trial_count = max_trial_count
    errors = check_experiment(record.experiment, backend)
    if errors:
        raise ValidationError(errors)
    reference = function_reference(record.experiment)
    if function is None and reference is not None:
        function = import_function(reference, record.workdir)
    store.save_experiment(record)
    return Controller(store, record, backend, function=function, kill_running_on_completion=kill_running_on_completion,
                      listener=listener).run()
