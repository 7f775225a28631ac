"""One preparation path for run, resume, render, validate and ``tune()``: every check an experiment needs before
anything runs, and its plugins built once.

The spec itself (schema and Katib's webhook rules) is validated when it is loaded (:mod:`katibx.loader`); this adds
what needs the plugins: algorithm and early-stopping settings, the metrics collector and what the backend can run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from katibx import plugins
from katibx.backend import Backend
from katibx.early_stopping import EarlyStoppingAlgorithm
from katibx.loader import load_documents, parse_experiment
from katibx.metrics_collector import collector_kind
from katibx.search_algorithm import AlgorithmSettingsError, SearchAlgorithm
from katibx.search_space import SearchSpace
from katibx.spec import Experiment
from katibx.tracking import mlflow_target
from katibx.trial import EXPERIMENT_LABEL, TrialRecord
from katibx.validation import ValidationError

DEFAULT_BACKEND = "local"


@dataclass
class PreparedExperiment:
    """An experiment whose every check passed, with the plugins that will serve it."""

    experiment: Experiment
    algorithm: SearchAlgorithm
    early_stopping: EarlyStoppingAlgorithm | None


def backend_class(name: str) -> type[Backend]:
    """The worker-backend plugin registered as ``name``; ValidationError naming the installed ones."""
    try:
        return plugins.load(plugins.WORKERS, name)  # type: ignore[no-any-return]
    except KeyError as exc:
        raise ValidationError([f"--backend: {exc.args[0]}"]) from None


def create_backend(name: str = DEFAULT_BACKEND, **options: Any) -> Backend:
    """Instantiate a worker backend plugin by name with its constructor options."""
    return backend_class(name)(**options)


def prepare(experiment: Experiment, backend: Backend | None = None,
            mlflow: bool | str | None = None) -> PreparedExperiment:
    """Check everything the plugins decide and build them once; ValidationError listing every problem. ``mlflow``
    is the run's MLflow setting (see :func:`katibx.tracking.mlflow_target`; False for a command that runs nothing)."""
    errors: list[str] = []
    if backend is not None:
        errors.extend(collector_errors(experiment, backend))
        errors.extend(backend.check(experiment))
    algorithm: Any = _build(lambda: create_algorithm(experiment), errors)
    early_stopping: Any = _build(lambda: create_early_stopping(experiment), errors)
    _build(lambda: mlflow_target(mlflow, experiment), errors)  # the setting, or its katibx.io/mlflow annotation
    if errors:
        raise ValidationError(errors)
    return PreparedExperiment(experiment, algorithm, early_stopping)


def planned_trials(prepared: PreparedExperiment, count: int) -> list[TrialRecord]:
    """The first ``count`` trials the experiment would create, named ``<experiment>-<index>`` (``katibx render``)."""
    experiment = prepared.experiment
    space = SearchSpace.from_experiment(experiment)
    return [TrialRecord(name=s.name or f"{experiment.name}-{i:08d}", index=i, assignments=space.cast(s.assignments),
                        labels={EXPERIMENT_LABEL: experiment.name, **s.labels})
            for i, s in enumerate(prepared.algorithm.suggest([], count)[:count])]


def check_experiment(experiment: Experiment, backend: Backend | None = None) -> list[str]:
    """Every problem :func:`prepare` would refuse the experiment for, one ``path: message`` line each."""
    try:
        prepare(experiment, backend)
    except ValidationError as exc:
        return exc.errors
    return []


def file_problems(path: str, backend: Backend | None = None) -> list[str]:
    """Every problem of every Experiment in a file (``katibx validate``): schema, Katib's rules and the plugin and
    backend checks, in one pass; one ``path: message`` line each (``document N:`` first when the file has several)."""
    try:
        documents = load_documents(path)
    except ValidationError as exc:
        return exc.errors
    problems: list[str] = []
    for i, document in enumerate(documents):
        experiment, found = parse_experiment(document)
        if experiment is not None:
            try:
                found.extend(check_experiment(experiment, backend))
            except Exception:  # noqa: BLE001 - a plugin may choke on what a broken rule already reports
                if not found:
                    raise
        prefix = f"document {i + 1}: " if len(documents) > 1 else ""
        problems.extend(prefix + line for line in found)
    return problems


def collector_errors(experiment: Experiment, backend: Backend) -> list[str]:
    """The metrics collector the experiment asks for, when the backend does not collect it."""
    kind = collector_kind(experiment)
    if kind in backend.metrics_collectors:
        return []
    reason = backend.collector_refusals.get(kind, "print the metrics or push them with katibx.report_metrics")
    return [f"spec.metricsCollectorSpec.collector.kind: the {backend.name} backend collects "
            f"{', '.join(backend.metrics_collectors)} metrics, not {kind}: {reason}"]


def _build(create: Any, errors: list[str]) -> Any:
    try:
        return create()
    except (AlgorithmSettingsError, ValidationError) as exc:
        errors.extend(exc.errors)
    except KeyError as exc:  # the plugin is not installed
        errors.append(f"spec.algorithm: {exc.args[0]}")
    return None


def create_algorithm(experiment: Experiment) -> SearchAlgorithm:
    """The experiment's search-algorithm plugin (its constructor validates the settings)."""
    assert experiment.spec.algorithm and experiment.spec.algorithm.algorithm_name
    cls = plugins.load(plugins.ALGORITHMS, experiment.spec.algorithm.algorithm_name)
    return cls(experiment, SearchSpace.from_experiment(experiment))  # type: ignore[no-any-return]


def create_early_stopping(experiment: Experiment) -> EarlyStoppingAlgorithm | None:
    """The experiment's early-stopping plugin, if it names one (its constructor validates the settings)."""
    spec = experiment.spec.early_stopping
    if spec is None or not spec.algorithm_name:
        return None
    return plugins.load(plugins.EARLY_STOPPING, spec.algorithm_name)(experiment)  # type: ignore[no-any-return]
