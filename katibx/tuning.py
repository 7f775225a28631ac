"""``katibx.tune``: Katib's ``KatibClient.tune`` for a Python function, run here with typed arguments."""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any, Callable, Mapping, Sequence

from katibx.backend import Backend
from katibx.client import KatibxClient, experiment_object, log_tail
from katibx.controller import combined_listener
from katibx.display import progress_display
from katibx.loader import experiment_from_dict
from katibx.packaging.build import BuildError
from katibx.packaging.registry import RegistryError
from katibx.packaging.trial_image import FUNCTION_CONTAINER, build_trial_image, function_job
from katibx.preparation import DEFAULT_BACKEND, PreparedExperiment, create_backend, prepare
from katibx.results import TrialResult, TuneResult
from katibx.runner import deadline_after, resume_experiment, run_experiment
from katibx.sdk_objects import sdk_domain
from katibx.search import Domain
from katibx.search_space import TYPED_VALUES_ANNOTATION
from katibx.spec import API_VERSION, KIND, Experiment
from katibx.status import CHOSEN_ALGORITHM_ANNOTATION, CHOSEN_REASON_ANNOTATION, ExperimentSummary
from katibx.store import ExperimentNotFound, ExperimentRecord, Store, StoreError, resolve_store_path
from katibx.template import FUNCTION_KIND, format_value
from katibx.trial import TrialRecord, TrialState
from katibx.trial_book import TrialBook
from katibx.validation import ValidationError

# Experiment field path -> the ``tune`` argument it comes from, named in error messages.
_ARGUMENTS = {
    "metadata.name": "name", "metadata.namespace": "namespace", "spec.parameters": "parameters",
    "spec.objective.type": "objective_type", "spec.objective.goal": "objective_goal",
    "spec.objective.objectiveMetricName": "objective_metric_name",
    "spec.objective.additionalMetricNames": "additional_metric_names",
    "spec.objective.additionalObjectives": "additional_objectives",
    "spec.algorithm.algorithmName": "algorithm_name", "spec.algorithm.algorithmSettings": "algorithm_settings",
    "spec.maxTrialCount": "max_trial_count", "spec.parallelTrialCount": "parallel_trial_count",
    "spec.maxFailedTrialCount": "max_failed_trial_count",
    "spec.earlyStopping.algorithmName": "early_stopping_algorithm_name",
    "spec.earlyStopping.algorithmSettings": "early_stopping_settings",
    "spec.trialTemplate.trialSpec.spec.isolation": "isolation", "spec.trialTemplate.trialSpec.spec.env": "env_per_trial",
    "spec.trialTemplate.trialSpec.spec.reuseProcesses": "reuse_processes",
}


def _with_argument(line: str) -> str:
    """``spec.objective.type: ...`` -> ``spec.objective.type (objective_type): ...``."""
    path, sep, rest = line.partition(": ")
    for prefix, argument in _ARGUMENTS.items():
        if path == prefix or path.startswith((prefix + ".", prefix + "[")):
            return f"{path} ({argument}){sep}{rest}"
    return line


def _check_objective(objective: Any) -> list[str]:
    if not callable(objective):
        return [f"objective: must be a callable taking one dict argument, got {type(objective).__name__}"]
    try:
        inspect.signature(objective).bind({})
    except TypeError:
        return ["objective: must accept exactly one positional argument (the dict of parameter values)"]
    except ValueError:  # no signature (some builtins): let the trial tell
        pass
    return []


def function_experiment(
    name: str,
    objective: Callable[[dict[str, Any]], Any],
    parameters: Mapping[str, Any],
    *,
    namespace: str | None = None,
    algorithm_name: str = "auto",
    algorithm_settings: Mapping[str, Any] | None = None,
    early_stopping_algorithm_name: str | None = None,
    early_stopping_settings: Mapping[str, Any] | None = None,
    objective_metric_name: str | None = None,
    additional_metric_names: list[str] | None = None,
    additional_objectives: Mapping[str, str] | None = None,
    objective_type: str = "maximize",
    objective_goal: float | None = None,
    max_trial_count: int | None = None,
    parallel_trial_count: int | None = None,
    max_failed_trial_count: int | None = None,
    env_per_trial: Mapping[str, Any] | None = None,
    trial_active_deadline_seconds: float | None = None,
    resources_per_trial: Mapping[str, Any] | None = None,
    reuse_processes: bool = True,
    isolation: str = "process",
    image: str | None = None,
) -> Experiment:
    """The Experiment ``tune`` runs: search domains become parameters, other values are passed through unchanged.
    With ``image`` the trials are Jobs running the objective in that image (see :func:`tune`'s ``build``).

    Raises ValidationError, one ``field.path (argument): message`` line per problem.
    """
    errors = _check_objective(objective)
    for argument, value in (("parameters", parameters), ("algorithm_settings", algorithm_settings),
                            ("early_stopping_settings", early_stopping_settings),
                            ("env_per_trial", env_per_trial), ("additional_objectives", additional_objectives),
                            ("resources_per_trial", resources_per_trial)):
        if value is not None and not isinstance(value, Mapping):
            errors.append(f"{argument}: must be a dict, got {type(value).__name__}")
    if image is not None and (not isinstance(image, str) or not image):
        errors.append(f"image: must be an image reference (registry/repository:tag), got {image!r}")
    if not isinstance(reuse_processes, bool):
        errors.append(f"reuse_processes: must be True or False, got {type(reuse_processes).__name__}")
    if isolation not in ("process", "none"):
        errors.append(f"isolation: must be 'process' or 'none', got {isolation!r}")
    elif isolation == "none" and image is not None:
        errors.append("isolation: 'none' runs trials in this process, image= in a container; choose one")
    if errors:
        raise ValidationError(errors)
    parameters = {k: sdk_domain(v) or v for k, v in parameters.items()}  # katib.search objects too
    domains = {str(k): v for k, v in parameters.items() if isinstance(v, Domain)}
    fixed = {str(k): v for k, v in parameters.items() if not isinstance(v, Domain)}
    try:
        json.dumps(fixed)
    except (TypeError, ValueError) as exc:
        raise ValidationError([f"parameters: values that are not katibx.search domains must be JSON data ({exc})"]) from None
    typed = {k: list(d.values) for k, d in domains.items() if d.values is not None}
    function_spec: dict[str, Any] = {"function": f"{getattr(objective, '__module__', '')}:{getattr(objective, '__qualname__', '')}",
                                     "fixedParameters": fixed}
    if env_per_trial:
        function_spec["env"] = [{"name": str(k), "value": str(v)} for k, v in env_per_trial.items()]
    if trial_active_deadline_seconds is not None:
        function_spec["activeDeadlineSeconds"] = trial_active_deadline_seconds
    if not reuse_processes:  # every trial in a freshly forked process: nothing a trial leaves in memory reaches the next
        function_spec["reuseProcesses"] = False
    if isolation == "none":  # trials on threads of the controller's process (workers/_thread_trials.py)
        function_spec["isolation"] = "none"
    if resources_per_trial:  # Katib SDK's name; a Kubernetes container's quantities: {"cpu": 2, "memory": "1Gi", "gpu": 1}
        function_spec["resources"] = {str(k): v for k, v in resources_per_trial.items()}
    objective_spec: dict[str, Any] = {"type": objective_type, "goal": objective_goal, "objectiveMetricName": objective_metric_name,
                      "additionalMetricNames": list(additional_metric_names or [])}
    if additional_objectives:  # multi-objective: metric name -> minimize | maximize
        objective_spec["additionalObjectives"] = [{"objectiveMetricName": str(k), "type": v}
                                                  for k, v in additional_objectives.items()]
    doc: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace,
                     "annotations": {TYPED_VALUES_ANNOTATION: json.dumps(typed)} if typed else {}},
        "spec": {
            "parameters": [d.to_spec(k).to_dict() for k, d in domains.items()],
            "objective": {k: v for k, v in objective_spec.items() if v is not None},
            "algorithm": {"algorithmName": algorithm_name, "algorithmSettings": [
                {"name": str(k), "value": str(v)} for k, v in (algorithm_settings or {}).items()]},
            "earlyStopping": {"algorithmName": early_stopping_algorithm_name, "algorithmSettings": [
                {"name": str(k), "value": str(v)} for k, v in (early_stopping_settings or {}).items()]}
            if early_stopping_algorithm_name else None,
            "trialTemplate": {
                "primaryContainerName": "function",
                "trialParameters": [{"name": k, "reference": k} for k in domains],
                "trialSpec": {"apiVersion": "katibx.io/v1alpha1", "kind": FUNCTION_KIND, "spec": function_spec},
            } if image is None else {
                "primaryContainerName": FUNCTION_CONTAINER,
                "trialParameters": [{"name": k, "reference": k} for k in domains],
                "trialSpec": function_job(image, {k: _entry_type(d) for k, d in domains.items()}, fixed,
                                          env=function_spec.get("env"),
                                          resources=function_spec.get("resources"),
                                          deadline=trial_active_deadline_seconds),
            },
            "parallelTrialCount": parallel_trial_count,
            "maxTrialCount": max_trial_count,
            "maxFailedTrialCount": max_failed_trial_count,
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
        },
    }
    doc["metadata"] = {k: v for k, v in doc["metadata"].items() if v is not None}
    doc["spec"] = {k: v for k, v in doc["spec"].items() if v is not None}
    try:
        return experiment_from_dict(doc)
    except ValidationError as exc:
        raise ValidationError([_with_argument(e) for e in exc.errors]) from None


def _entry_type(domain: Domain) -> Any:
    """How the entry script of a containerised objective types a parameter's text back (see
    :func:`katibx.packaging.trial_image.function_job`): its choices by their text, else its numeric type."""
    if domain.values is not None:
        return {format_value(value): value for value in domain.values}
    return {"int": "int", "double": "double", "discrete": "number"}.get(domain.parameter_type, "text")


def tune(
    name: str,
    objective: Callable[[dict[str, Any]], Any],
    parameters: Mapping[str, Any],
    *,
    store: Store | str | None = None,
    backend: str = DEFAULT_BACKEND,
    kill_running_on_completion: bool = False,
    timeout: float | None = None,
    callbacks: Sequence[Callable[[TuneResult, TrialResult], Any]] = (),
    load_if_exists: bool = False,
    progress: bool | None = None,
    mlflow: bool | str | None = None,
    build: str | None = None,
    **experiment_options: Any,
) -> TuneResult:
    """Run ``objective`` over the search space and return the finished Experiment: a :class:`TuneResult`, the
    Katib-shaped dict (with status) that also answers ``best_params``, ``best_value``, ``best_trial``, ``trials``...

    The objective gets one dict of typed values and returns a number (the objective metric's value), one number per
    objective (multi-objective), or a dict of metrics, or calls :func:`katibx.report_metrics`; printing
    ``name=value`` lines works too. When no trial produced the objective metric, :class:`TuneError` quotes the first
    failing trial's last output lines. Trials run in worker processes forked
    from this one; a worker runs trial after trial unless a trial fails to end cleanly (``reuse_processes=False``
    gives every trial a fresh process). ``isolation="none"`` runs them on threads of this process instead, for
    objectives so cheap that a process's costs dominate: they then share its environment, working directory and
    state, a crash of the interpreter ends the run, and a trial stopped without asking :func:`katibx.should_prune`
    is abandoned (its thread runs on, its result dropped).

    With no ``algorithm_name``, ``auto`` chooses the algorithm from the search space and budget (recorded in the
    result's ``status.chosenAlgorithm``).

    As in Optuna: ``timeout`` seconds end the experiment with the trials it has (running ones finish; the
    condition's reason is ExperimentTimeLimitReached); each of ``callbacks`` is called as ``callback(result, trial)``
    once per finished trial, ``result`` the experiment so far; with ``load_if_exists`` an experiment of this name
    in the store goes on with ``max_trial_count`` more trials (its search space, objective and algorithm must be
    the same; with no algorithm named, the stored one's is taken). With ``early_stopping_algorithm_name`` (``medianstop``), an objective that reports intermediate
    values with :func:`katibx.report_metrics` asks :func:`katibx.should_prune` after each and returns (or raises
    :class:`katibx.TrialPruned`) when it says True: the trial ends EarlyStopped. ``progress`` draws the trial counts and best value as they change (on stderr, or in the notebook):
    by default where someone watches (a terminal, a notebook), not into a pipe or a log; False never, True always.
    ``mlflow`` logs the experiment into MLflow as it runs (True: at ``MLFLOW_TRACKING_URI`` or MLflow's default;
    a string: that tracking URI; None: as the ``katibx.io/mlflow`` annotation says), off the trials' path.
    With a backend that runs container images (``backend="kubernetes"``), ``image`` (a base image with Python and
    what the objective imports) and ``build`` (``REGISTRY/REPOSITORY[:TAG]``) package the objective's module onto
    ``image``, push it to ``build`` and run each trial as a Job on the pushed digest: the objective gets its
    values typed as the search space says and returns a number or a dict of numbers (printed, read from the log).
    Invalid arguments raise :class:`katibx.ValidationError` before anything is stored.
    """
    image = experiment_options.get("image")
    if (image is None) != (build is None):
        raise ValidationError(["image, build: give both to run the objective in a container image (image: the "
                               "base, build: where to push it), or neither"])
    experiment = function_experiment(name, objective, parameters, **experiment_options)
    errors = [f"{argument}: must be True or False, got {type(value).__name__}" for argument, value in
              (("load_if_exists", load_if_exists), ("progress", progress))
              if not isinstance(value, bool) and not (argument == "progress" and value is None)]
    try:
        callbacks = list(callbacks)  # a generator is read once, here
    except TypeError:
        callbacks = [None]
    if callable(callbacks) or not all(callable(c) for c in callbacks):
        errors.append("callbacks: must be a list of functions called as callback(result, trial)")
    try:
        deadline_after(timeout)  # checked here: a wrong one leaves no store file behind
    except ValidationError as exc:
        errors += exc.errors
    if errors:
        raise ValidationError(errors)
    stored = _stored(store, experiment) if load_if_exists else None
    if stored is not None and not {"algorithm_name", "algorithm_settings"} & set(experiment_options):
        experiment = _with_stored_algorithm(experiment, stored)
    worker = create_backend(backend)
    try:
        prepared = prepare(experiment, worker, mlflow)  # before the store is opened: a mistake leaves no file behind
    except ValidationError as exc:
        raise ValidationError([_with_argument(e) for e in exc.errors]) from None
    if build is not None and stored is None:  # a stored one keeps its image
        prepared = _with_built_image(prepared, worker, build, objective, store)
        experiment = prepared.experiment
    st = store if isinstance(store, Store) else Store(store)
    display = progress_display(progress)
    try:
        existing = _existing(st, experiment) if load_if_exists else None
        listener = combined_listener(_TrialCallbacks(callbacks, st, st.trials(existing.id) if existing else [])
                                     if callbacks else None, display)
        if existing is not None:
            more = experiment.spec.max_trial_count or 0
            record = resume_experiment(existing.name, store=st, namespace=existing.namespace, backend=worker,
                                       max_trial_count=st.trial_counts(existing.id).trials + more if more else None,
                                       function=objective, kill_running_on_completion=kill_running_on_completion,
                                       listener=listener, timeout=timeout, mlflow=mlflow)
        else:
            record = run_experiment(experiment, store=st, backend=worker, function=objective, prepared=prepared,
                                    kill_running_on_completion=kill_running_on_completion, listener=listener,
                                    timeout=timeout, mlflow=mlflow)
        if display is not None:
            display.close()  # before the result (or the error) is shown
            display = None
        client = KatibxClient(st)
        result = client.get_experiment(record.name, record.namespace)
        if result.best_trial is None:
            raise TuneError(why_no_result(client, result), result)
        return result
    finally:
        if display is not None:
            display.close()
        if st is not store:
            st.close()


def _stored(store: Store | str | None, experiment: Experiment) -> ExperimentRecord | None:
    """The experiment of this name the store holds (None without one, or without a store yet)."""
    if isinstance(store, Store):
        opened = store
    elif resolve_store_path(store).exists():
        opened = Store(store, create=False)  # (migrated as the run would)
    else:
        return None
    try:
        return opened.get_experiment(experiment.name, experiment.metadata.namespace)  # (as _existing looks)
    except ExperimentNotFound:
        return None
    finally:
        if opened is not store:
            opened.close()


def _with_stored_algorithm(experiment: Experiment, stored: ExperimentRecord) -> Experiment:
    """``experiment`` going on with the stored one's algorithm (and the choice ``auto`` made for it), as a resume
    does: for a call that names no algorithm, whatever the default was when the experiment was stored."""
    spec = stored.experiment.spec
    if spec.algorithm is not None:
        experiment.spec.algorithm = spec.algorithm.model_copy(deep=True)
    kept = {k: v for k, v in stored.experiment.metadata.annotations.items()
            if k in (CHOSEN_ALGORITHM_ANNOTATION, CHOSEN_REASON_ANNOTATION)}
    experiment.metadata.annotations.update(kept)
    return experiment


def _with_built_image(prepared: PreparedExperiment, backend: Backend, build: str, objective: Callable[..., Any],
                      store: Store | str | None) -> PreparedExperiment:
    """The objective's module packaged onto the trial image, pushed to ``build``, the experiment pinned to it;
    ValidationError (one line) when the backend runs no images, the name is taken or the build fails."""
    if not backend.runs_images:
        raise ValidationError([f"build: the {backend.name} backend runs no container images; use "
                               "backend=\"kubernetes\""])
    if _stored(store, prepared.experiment):  # refused before anything is pushed
        raise ValidationError([f"name: experiment {prepared.experiment.name!r} is in the store: load_if_exists=True "
                               "continues it (on the image it was built with), or use another name"])
    try:
        experiment, _ = build_trial_image(prepared.experiment, build, source=objective)
    except (BuildError, RegistryError) as exc:
        raise ValidationError([str(exc).replace("--build: ", "build: ", 1)]) from None
    return dataclasses.replace(prepared, experiment=experiment)


def _existing(store: Store, experiment: Experiment) -> ExperimentRecord | None:
    """The stored experiment ``load_if_exists`` continues (None when there is none); ValidationError when it searches
    another space, objective or algorithm."""
    try:
        record = store.get_experiment(experiment.name, experiment.metadata.namespace)
    except ExperimentNotFound:
        return None
    stored, given = record.experiment.to_dict()["spec"], experiment.to_dict()["spec"]
    differing = [key for key in ("parameters", "objective", "algorithm") if stored.get(key) != given.get(key)]
    if differing:
        raise ValidationError([f"load_if_exists: experiment {experiment.name!r} exists with other "
                               f"{', '.join(differing)}; use another name or delete it"])
    return record


class _TrialCallbacks:
    """The controller's listener that calls ``callback(result, trial)`` once for each trial as it finishes (not for
    the trials an experiment continued with ``load_if_exists`` had finished before)."""

    def __init__(self, callbacks: Sequence[Callable[[TuneResult, TrialResult], Any]], store: Store,
                 finished_before: Sequence[TrialRecord]) -> None:
        self.callbacks = list(callbacks)
        self.store = store  # the controller's: the listener runs on its thread
        self.seen: set[str] = {t.name for t in finished_before if t.state.is_terminal}
        # Finished trials' results, made once: each round reads only the logs of the trials that changed (reading
        # every trial's at every finished trial made a run with callbacks quadratic: 10 ms a trial at 1,000).
        self.results: dict[str, TrialResult] = {}
        self._completed = -1  # the book's count of completed trials at the last call

    def __call__(self, record: ExperimentRecord, book: TrialBook) -> None:
        completed = book.counts().completed
        if completed == self._completed:  # no trial has finished since the last call: nothing to walk
            return
        self._completed = completed
        trials = book.history()  # callbacks get the whole study (as Optuna's): it is read and kept
        finished = [t for t in trials if t.state.is_terminal and t.name not in self.seen]
        if not finished:
            return
        self.seen.update(t.name for t in finished)
        logs = {t.id: self.store.observation_logs(t.id) for t in trials
                if t.id is not None and (t.name not in self.results or not t.state.is_terminal)}
        result = TuneResult(experiment_object(record, ExperimentSummary.of(record.experiment, trials)), record, list(trials),
                            logs, self.results)
        by_name = {t.name: t for t in result.trials}
        self.results.update((t.name, by_name[t.name]) for t in trials if t.state.is_terminal)
        for trial in finished:
            for callback in self.callbacks:
                callback(result, by_name[trial.name])


class TuneError(RuntimeError):
    """``tune`` ended without any trial producing the objective metric; ``result`` holds what the experiment did."""

    def __init__(self, message: str, result: TuneResult | None = None) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its result (tune() in a process pool, a Ray task)
        return (type(self), (str(self), self.result))


# How much of the first failing trial's output a TuneError quotes.
QUOTED_LOG_LINES = 12


def why_no_result(client: KatibxClient, result: TuneResult) -> str:
    """Why no trial has an objective value, quoting the end of the first failing trial's output."""
    name = result["metadata"]["name"]
    metric = result["spec"]["objective"]["objectiveMetricName"]
    states: dict[str, int] = {}
    for trial in result.trials:
        states[trial.state.value] = states.get(trial.state.value, 0) + 1
    counts = ", ".join(f"{n} {state}" for state, n in states.items()) or "no trials"
    lines = [f"no trial of experiment {name} produced {metric} ({counts})"]
    first = next((t for t in result.trials if t.state is not TrialState.SUCCEEDED), None)
    if first is not None:
        lines.append(f"trial {first.name}: {first.reason}: {first.message}")
        try:
            tail = log_tail(client.trial_log_path(name, first.name, result["metadata"].get("namespace")),
                            QUOTED_LOG_LINES)
        except (StoreError, OSError):
            tail = []
        lines += [f"  | {line}" for line in tail]
    return "\n".join(lines)
