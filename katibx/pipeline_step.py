"""What katibx's tune step does inside a Kubeflow Pipelines task (the component is :mod:`katibx.pipelines`), and the
helper that turns its best parameters into a training step's arguments. Free of kfp: the step runs it in any image
that has katibx.

The step runs the Experiment YAML it is given to completion on the backend it is told, in the store it is told,
and returns the best trial's parameters and metrics and the experiment as Katib's JSON. Re-running the pipeline
reuses the stored experiment when one of the same name and spec is there (a completed one is not run again: a
failed one fails the step again, saying how to delete it; an interrupted one is resumed); another spec under that
name is refused.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import yaml

from katibx.backend import BackendUnavailable, ClusterError
from katibx.client import KatibxClient
from katibx.loader import experiment_from_dict
from katibx.metric_parsers import MetricsCollectorUnavailable
from katibx.preparation import DEFAULT_BACKEND, create_backend, prepare
from katibx.runner import resume_experiment, run_experiment
from katibx.spec import Experiment
from katibx.status import current_condition, forget_chosen_algorithm, is_completed
from katibx.store import ExperimentNotFound, Store, StoreError
from katibx.tracking import PIPELINE_RUN_ANNOTATION
from katibx.tuning import why_no_result
from katibx.validation import ValidationError

log = logging.getLogger(__name__)

DATA_ENV = "KATIBX_DATA"  # the path of the step's data input, for the trials (local and Ray backends)


class StepFailed(RuntimeError):
    """The step cannot give a result: ``lines`` say why (one line each), ``exit_code`` 2 for invalid input."""

    def __init__(self, lines: list[str], exit_code: int = 1) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
        self.exit_code = exit_code


@dataclass
class StepResult:
    best_parameters: dict[str, Any]
    best_metrics: dict[str, Any]
    experiment: dict[str, Any]  # Katib's Experiment, with its status, as JSON
    reused: bool


def run_tune_step(experiment_yaml: str, *, data_path: str | None = None, backend: str = DEFAULT_BACKEND,
                  backend_options: Mapping[str, Any] | None = None, store: str | None = None,
                  mlflow: str | None = None, pipeline_run: str | None = None) -> StepResult:
    """Run (or reuse) the experiment; StepFailed when the input is invalid or the cluster cannot be used (exit code
    2), or when the experiment did not succeed with a best trial (its reason, and the failing trial's last lines)."""
    experiment = forget_chosen_algorithm(_experiment(experiment_yaml, pipeline_run))  # auto chooses afresh
    with _data_for_trials(data_path):  # before the backend starts anything (a local Ray cluster copies the env)
        worker: Any = None
        try:
            worker = _backend(backend, backend_options)
            prepared = prepare(experiment, worker, mlflow or None)  # every problem before anything is stored
            with Store(store or None) as st:
                reused = _run_or_reuse(st, experiment, prepared, worker, mlflow or None)
                client = KatibxClient(st)
                result = client.get_experiment(experiment.name, experiment.metadata.namespace)
                condition = current_condition(result["status"].get("conditions", [])) or {}
                best = result.best_trial
                if condition.get("type") != "Succeeded" or best is None:
                    why = f"{condition.get('reason', '')}: {condition.get('message', '')}".strip(": ")
                    lines = [f"experiment {experiment.name}: {condition.get('type', 'not completed')}"
                             + (f" ({why})" if why else "")]
                    lines += why_no_result(client, result).splitlines() if best is None else []
                    if reused:
                        lines.append(f"it is the stored result of an earlier run; to run it again: katibx delete "
                                     f"{experiment.name} --store {st.path}")
                    raise StepFailed(lines)
        except ValidationError as exc:
            raise StepFailed(exc.errors, 2) from None
        except (StoreError, ClusterError, MetricsCollectorUnavailable, BackendUnavailable) as exc:
            raise StepFailed([str(exc)], 2) from None
        finally:
            if worker is not None:
                worker.close()
    metrics = {name: value for name, value in best.metrics.items() if value is not None}
    return StepResult(dict(best.params), metrics, json.loads(json.dumps(dict(result), default=str)), reused)


@contextmanager
def _data_for_trials(data_path: str | None) -> Iterator[None]:
    """``$KATIBX_DATA`` set to the step's data input (unset without one) while the step runs, then as it was."""
    before = os.environ.pop(DATA_ENV, None)
    if data_path:
        os.environ[DATA_ENV] = data_path
    try:
        yield
    finally:
        os.environ.pop(DATA_ENV, None)
        if before is not None:
            os.environ[DATA_ENV] = before


def _backend(name: str, options: Mapping[str, Any] | None) -> Any:
    """The backend, its options as given (a whole number that travelled through the pipeline as a JSON float,
    8080.0, given back as the int it was)."""
    given = {key: int(value) if isinstance(value, float) and value.is_integer() else value
             for key, value in dict(options or {}).items()}
    try:
        return create_backend(name, **given)
    except TypeError as exc:
        raise ValidationError([f"backend_options for {name!r}: {exc}"]) from None


def _experiment(text: str, pipeline_run: str | None) -> Experiment:
    if not text.strip():
        raise StepFailed(["experiment: give the Experiment YAML (experiment), or a file of it (experiment_file)"], 2)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StepFailed([f"experiment: not YAML: {str(exc).splitlines()[0]}"], 2) from None
    try:
        experiment = experiment_from_dict(data)
    except ValidationError as exc:
        raise StepFailed(exc.errors, 2) from None
    if pipeline_run:
        annotations = dict(experiment.metadata.annotations or {})
        annotations[PIPELINE_RUN_ANNOTATION] = pipeline_run
        experiment.metadata.annotations = annotations
    return experiment


def _run_or_reuse(store: Store, experiment: Experiment, prepared: Any, worker: Any, mlflow: str | None) -> bool:
    """Run the experiment, or resume or reuse the stored one of the same name and spec; True when it was reused."""
    try:
        record = store.get_experiment(experiment.name, experiment.metadata.namespace)
    except ExperimentNotFound:
        run_experiment(experiment, store=store, backend=worker, prepared=prepared, mlflow=mlflow)
        return False
    if record.experiment.to_dict()["spec"] != experiment.to_dict()["spec"]:
        raise StepFailed([f"experiment {experiment.name!r} is stored in {store.path} with another spec; give the step "
                          f"another name, or delete it: katibx delete {experiment.name} --store {store.path}"], 2)
    if is_completed(record.conditions):  # (a failed one too: run_tune_step says how to run it again)
        log.info("experiment %s is stored in %s with the same spec and has completed: reused, not run again",
                 experiment.name, store.path)
        return True
    log.info("experiment %s is stored in %s with the same spec but did not complete: resumed", experiment.name,
             store.path)
    resume_experiment(experiment.name, store=store, namespace=record.namespace, backend=worker, mlflow=mlflow)
    return False


def best_arguments(best_parameters: Mapping[str, Any], template: str = "--{name}={value}") -> list[str]:
    """The best parameters as command-line arguments of a training program, one per parameter in ``template``
    (``--lr=0.01``). A whole number that travelled through the pipeline as a JSON float (3.0) is written as 3."""
    def text(value: Any) -> str:
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    return [template.format(name=name, value=text(value)) for name, value in best_parameters.items()]
