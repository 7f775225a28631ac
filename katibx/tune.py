"""``katibx.tune``: Katib's ``KatibClient.tune`` for a Python function, run here with typed arguments."""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from katibx.client import KatibxClient
from katibx.defaults import apply_defaults
from katibx.runner import DEFAULT_BACKEND, run_experiment
from katibx.search import Domain
from katibx.search_space import TYPED_VALUES_ANNOTATION
from katibx.spec import Algorithm, AlgorithmSetting, Collector, Experiment, ExperimentSpec, MetricsCollectorSpec, ObjectMeta, Objective, TrialParameter, TrialTemplate
from katibx.store import Store
from katibx.template import FUNCTION_KIND
from katibx.validation import ValidationError, validate


def function_experiment(
    name: str,
    objective: Callable[[dict[str, Any]], Any],
    parameters: Mapping[str, Any],
    *,
    namespace: str | None = None,
    algorithm_name: str = "random",
    algorithm_settings: Mapping[str, Any] | None = None,
    objective_metric_name: str | None = None,
    additional_metric_names: list[str] | None = None,
    objective_type: str = "maximize",
    objective_goal: float | None = None,
    max_trial_count: int | None = None,
    parallel_trial_count: int | None = None,
    max_failed_trial_count: int | None = None,
    env_per_trial: Mapping[str, str] | None = None,
    trial_active_deadline_seconds: float | None = None,
) -> Experiment:
    """The Experiment ``tune`` runs: search domains become parameters, other values are passed through unchanged."""
    if not callable(objective):
        raise ValidationError([f"objective: must be a callable taking one dict argument, got {type(objective).__name__}"])
    domains = {k: v for k, v in parameters.items() if isinstance(v, Domain)}
    fixed = {k: v for k, v in parameters.items() if not isinstance(v, Domain)}
    try:
        json.dumps(fixed)
    except TypeError as exc:
        raise ValidationError([f"parameters: fixed values must be JSON data ({exc})"]) from None
    typed = {k: list(d.values) for k, d in domains.items() if d.values is not None}
    function_spec: dict[str, Any] = {"function": f"{objective.__module__}:{objective.__qualname__}", "fixedParameters": fixed}
    if env_per_trial:
        function_spec["env"] = [{"name": k, "value": str(v)} for k, v in env_per_trial.items()]
    if trial_active_deadline_seconds is not None:
        function_spec["activeDeadlineSeconds"] = trial_active_deadline_seconds
    experiment = Experiment(
        metadata=ObjectMeta(name=name, namespace=namespace,
                            annotations={TYPED_VALUES_ANNOTATION: json.dumps(typed)} if typed else {}),
        spec=ExperimentSpec(
            parameters=[d.to_spec(k) for k, d in domains.items()],
            objective=Objective(type=objective_type, goal=objective_goal, objective_metric_name=objective_metric_name,
                                additional_metric_names=list(additional_metric_names or [])),
            algorithm=Algorithm(algorithm_name=algorithm_name, algorithm_settings=[
                AlgorithmSetting(name=str(k), value=str(v)) for k, v in (algorithm_settings or {}).items()]),
            trial_template=TrialTemplate(
                primary_container_name="function",
                trial_parameters=[TrialParameter(name=k, reference=k) for k in domains],
                trial_spec={"apiVersion": "katibx.io/v1alpha1", "kind": FUNCTION_KIND, "spec": function_spec},
            ),
            parallel_trial_count=parallel_trial_count,
            max_trial_count=max_trial_count,
            max_failed_trial_count=max_failed_trial_count,
            metrics_collector_spec=MetricsCollectorSpec(collector=Collector(kind="StdOut")),
        ),
    )
    experiment = apply_defaults(experiment)
    errors = validate(experiment)
    if errors:
        raise ValidationError(errors)
    return experiment


def tune(
    name: str,
    objective: Callable[[dict[str, Any]], Any],
    parameters: Mapping[str, Any],
    *,
    store: Store | str | None = None,
    backend: str = DEFAULT_BACKEND,
    kill_running_on_completion: bool = False,
    **experiment_options: Any,
) -> dict[str, Any]:
    """Run ``objective`` over the search space and return the finished Experiment (Katib-shaped, with status).

    The objective gets one dict of typed values and either returns a dict of metrics or calls
    :func:`katibx.report_metrics`; printing ``name=value`` lines works too. Each trial runs in its own process.
    """
    experiment = function_experiment(name, objective, parameters, **experiment_options)
    st = store if isinstance(store, Store) else Store(store)
    record = run_experiment(experiment, store=st, backend=backend, function=objective,
                            kill_running_on_completion=kill_running_on_completion)
    return KatibxClient(st).get_experiment(record.name, record.namespace)
