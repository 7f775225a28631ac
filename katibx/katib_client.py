"""``katibx.KatibClient``: the Katib SDK's ``KatibClient`` on this machine, with its method and argument names.

As in Katib, ``create_experiment`` and ``tune`` return once the experiment is stored and a controller runs it: here a
thread of this process (Katib's runs in the cluster), so ``wait_for_experiment_condition`` and the reads work as
they do there. A process that ends waits for the experiments it started (Ctrl-C stops them; ``katibx resume``
continues them). ``kubeflow.katib`` model objects are accepted wherever the SDK takes them, without depending on it.
"""

from __future__ import annotations

import atexit
import copy
import logging
import os
import secrets
import signal
import string
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from katibx.backend import Backend
from katibx.client import KatibxClient, trial_object
from katibx.display import ProgressDisplay, progress_display
from katibx.katib_object import KatibObject, katib_object
from katibx.lease import controller_alive, stop_holder
from katibx.loader import experiment_from_dict
from katibx.preparation import DEFAULT_BACKEND, create_backend, prepare
from katibx.runner import resume_experiment, run_experiment
from katibx.sdk_objects import plain_data
from katibx.spec import Experiment
from katibx.status import FAILED, SUCCEEDED, forget_chosen_algorithm, is_completed
from katibx.store import ExperimentRecord, Store, StoreError
from katibx.tracking import mlflow_target
from katibx.trial import TrialRecord
from katibx.tuning import function_experiment
from katibx.validation import ValidationError

log = logging.getLogger(__name__)

# The Katib SDK's defaults for arguments that have no meaning for trials run in this Python environment: accepted
# when left as they are, refused with the reason when set.
SDK_BASE_IMAGE = "docker.io/pytorch/pytorch:2.2.1-cuda12.1-cudnn8-runtime"
SDK_PIP_INDEX_URLS = ["https://pypi.org/simple"]
# How often wait_for_experiment_condition reads an experiment another process runs (at most; Katib's default is 15 s).
_POLL_SECONDS = 0.5


class KatibClient(KatibxClient):
    """The Katib SDK's client: ``KatibClient(namespace=...)`` as in ``kubeflow.katib``, plus where it runs trials
    (``backend``, with that backend's options), which ``store`` keeps the experiments, and whether they are logged
    into MLflow as they run (``mlflow``: True or a tracking URI; None: as each experiment's ``katibx.io/mlflow``
    annotation says)."""

    def __init__(
        self,
        config_file: str | None = None,
        context: str | None = None,
        client_configuration: Any = None,
        namespace: str | None = None,
        *,
        store: Store | str | None = None,
        backend: str = DEFAULT_BACKEND,
        mlflow: bool | str | None = None,
        **backend_options: Any,
    ) -> None:
        errors = []
        try:
            mlflow_target(mlflow)
        except ValidationError as exc:
            errors += exc.errors
        if client_configuration is not None:
            errors.append("client_configuration: not used by katibx; give backend='kubernetes' with config_file and "
                          "context (the kube-config of the cluster that runs the trials)")
        if (config_file is not None or context is not None) and backend != "kubernetes":
            errors.append(f"config_file, context: the kube-config of backend='kubernetes'; this client runs trials on "
                          f"the {backend} backend")
        if store is not None and not isinstance(store, (Store, str, os.PathLike)):
            errors.append(f"store: must be a path, a sqlite:/// URL or a katibx.Store, got {type(store).__name__}")
        if errors:
            raise ValidationError(errors)
        if backend == "kubernetes":
            backend_options = {**{k: v for k, v in (("kubeconfig", config_file), ("context", context)) if v}, **backend_options}
        try:
            create_backend(backend, **backend_options).close()  # a wrong backend or option now, not at the first tune
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ValidationError):
                raise
            raise ValidationError([f"backend options for {backend!r}: {exc}"]) from None
        super().__init__(store, namespace=namespace)
        self.backend = backend
        self.backend_options = backend_options
        self.mlflow = mlflow
        self._runs: dict[tuple[str, str], _BackgroundRun] = {}
        self._functions: dict[tuple[str, str], Callable[..., Any]] = {}  # the objectives of the experiments it tuned

    def _new_backend(self) -> Backend:
        return create_backend(self.backend, **self.backend_options)

    # creating and running -------------------------------------------------------------------------------------
    def create_experiment(self, experiment: Any, namespace: str | None = None) -> KatibObject:
        """Store the Experiment (a ``V1beta1Experiment``, a dict as in YAML, or a katibx Experiment) and start
        running it; returns it as stored. ``metadata.generateName`` gets a random suffix, as on the API server."""
        data = experiment.to_dict() if isinstance(experiment, Experiment) else plain_data(experiment)
        if not isinstance(data, dict):
            raise ValidationError([f"experiment: must be a V1beta1Experiment or a mapping, got {type(experiment).__name__}"])
        data = copy.deepcopy(data)
        metadata = data.setdefault("metadata", {}) if isinstance(data.get("metadata", {}), dict) else {}
        if namespace or self.namespace:
            metadata["namespace"] = namespace or self.namespace
        prefix = metadata.pop("generateName", None) or metadata.pop("generate_name", None)
        if not metadata.get("name") and isinstance(prefix, str):
            metadata["name"] = prefix + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
        return self._start(forget_chosen_algorithm(experiment_from_dict(data)), None)  # new: auto chooses afresh

    def tune(
        self,
        name: str,
        objective: Callable[[dict[str, Any]], Any] | None = None,
        parameters: Mapping[str, Any] | None = None,
        base_image: str = SDK_BASE_IMAGE,
        namespace: str | None = None,
        env_per_trial: Any = None,
        algorithm_name: str = "random",
        algorithm_settings: Any = None,
        objective_metric_name: str | None = None,
        additional_metric_names: list[str] | None = None,
        objective_type: str = "maximize",
        objective_goal: float | None = None,
        max_trial_count: int | None = None,
        parallel_trial_count: int | None = None,
        max_failed_trial_count: int | None = None,
        resources_per_trial: Any = None,
        retain_trials: bool = False,
        packages_to_install: list[str] | None = None,
        pip_index_urls: list[str] | None = None,
        metrics_collector_config: Mapping[str, Any] | None = None,
        trial_active_deadline_seconds: float | None = None,
        model_provider_parameters: Any = None,
        dataset_provider_parameters: Any = None,
        trainer_parameters: Any = None,
        storage_config: Any = None,
    ) -> None:
        """Katib's ``tune``: an Experiment of ``objective`` over ``parameters`` (``katib.search`` or
        ``katibx.search`` domains), started as ``create_experiment`` starts one. The objective gets typed values
        (Katib's gets strings: ``float(...)`` and ``int(...)`` of them still work) and prints ``name=value`` lines,
        returns its metrics or calls ``report_metrics``. Arguments about images, pip and Kubernetes objects that
        mean nothing for a function run in this Python environment are refused with the reason."""
        errors = _unsupported(model_provider_parameters=model_provider_parameters,
                              dataset_provider_parameters=dataset_provider_parameters,
                              trainer_parameters=trainer_parameters, storage_config=storage_config,
                              base_image=base_image, packages_to_install=packages_to_install,
                              pip_index_urls=pip_index_urls, metrics_collector_config=metrics_collector_config)
        if objective is None or parameters is None:
            errors.append("objective, parameters: both are required (the function to tune and its search space)")
        settings = _settings(algorithm_settings, errors)
        environment = _environment(env_per_trial, errors)
        resources = _resources(resources_per_trial, errors)
        if errors:
            raise ValidationError(errors)
        assert objective is not None and parameters is not None
        experiment = function_experiment(
            name, objective, parameters, namespace=namespace or self.namespace, algorithm_name=algorithm_name,
            algorithm_settings=settings, objective_metric_name=objective_metric_name,
            additional_metric_names=additional_metric_names, objective_type=objective_type,
            objective_goal=objective_goal, max_trial_count=max_trial_count, parallel_trial_count=parallel_trial_count,
            max_failed_trial_count=max_failed_trial_count, env_per_trial=environment,
            trial_active_deadline_seconds=trial_active_deadline_seconds, resources_per_trial=resources)
        if retain_trials:
            assert experiment.spec.trial_template is not None
            experiment.spec.trial_template.retain = True
        self._start(experiment, objective)

    def _start(self, experiment: Experiment, function: Callable[..., Any] | None) -> KatibObject:
        """Check the experiment with the backend, then run it on a controller thread once it is stored."""
        worker = self._new_backend()
        try:
            prepared = prepare(experiment, worker, self.mlflow)
        except BaseException:
            worker.close()
            raise
        def controller(store: Store, listener: Any) -> ExperimentRecord:
            try:
                return run_experiment(prepared.experiment, store=store, backend=worker, prepared=prepared,
                                      function=function, listener=listener, workdir=Path.cwd(), mlflow=self.mlflow)
            finally:
                worker.close()  # also when it ends before its controller starts (the name exists already)

        if function is not None:
            self._functions[(experiment.namespace, experiment.name)] = function
        run = _BackgroundRun(experiment.namespace, experiment.name, self.store.path, controller)
        run.start()
        self._keep(run)
        return self.get_experiment(experiment.name, experiment.namespace)

    def _keep(self, run: _BackgroundRun) -> None:
        """Remember the run of an experiment (its last one), forgetting the runs of this client that are done."""
        self._runs = {key: r for key, r in self._runs.items() if not r.done.is_set()}
        self._runs[(run.namespace, run.name)] = run

    def edit_experiment_budget(self, name: str, namespace: str | None = None, max_trial_count: int | None = None,
                               parallel_trial_count: int | None = None, max_failed_trial_count: int | None = None,
                               timeout: Any = None) -> None:
        """Katib's budget edit: a completed (or interrupted) experiment goes on with the new budget on a controller
        thread, as Katib restarts it; one that a controller is running is refused until it completes."""
        if max_trial_count is None and parallel_trial_count is None and max_failed_trial_count is None:
            raise ValidationError(["edit_experiment_budget: set max_trial_count, parallel_trial_count or "
                                   "max_failed_trial_count"])
        record = self.store.get_experiment(name, self._namespace(namespace))
        mine = self._runs.get((record.namespace, name))
        if mine is not None and is_completed(record.conditions):
            # completed: its controller is only letting the last trials end and giving up its lease
            mine.done.wait(timeout if isinstance(timeout, (int, float)) and timeout > 0 else None)
        if controller_alive(self.store, record):
            raise StoreError(f"experiment {name!r} is running; edit its budget once it has completed")
        mlflow_target(self.mlflow, record.experiment)  # its annotation checked here, not on the controller thread
        function = self._functions.get((record.namespace, name))  # a notebook's objective cannot be imported again
        run = _BackgroundRun(record.namespace, name, self.store.path, lambda store, listener: resume_experiment(
            name, store=store, namespace=record.namespace, max_trial_count=max_trial_count,
            parallel_trial_count=parallel_trial_count, max_failed_trial_count=max_failed_trial_count,
            function=function, listener=listener, mlflow=self.mlflow))
        run.start()
        self._keep(run)

    # waiting ------------------------------------------------------------------------------------------------------
    def wait_for_experiment_condition(self, name: str, namespace: str | None = None,
                                      expected_condition: str = SUCCEEDED, timeout: float = 600,
                                      polling_interval: float = 15, apiserver_timeout: Any = None, *,
                                      progress: bool | None = None) -> KatibObject:
        """Katib's wait: the experiment once it has ``expected_condition``; RuntimeError when it Failed instead (or
        its controller here stopped), TimeoutError after ``timeout`` seconds. Meanwhile the trial counts and best
        value are drawn as they change (``progress``: by default in a terminal or a notebook, as ``tune``'s)."""
        display = progress_display(progress)
        try:
            return self._wait(name, self._namespace(namespace), expected_condition, timeout, polling_interval, display)
        finally:
            if display is not None:
                display.close()

    def _wait(self, name: str, namespace: str | None, expected_condition: str, timeout: float,
              polling_interval: float, display: ProgressDisplay | None) -> KatibObject:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValidationError([f"timeout: must be a positive number of seconds, got {timeout!r}"])
        deadline = time.monotonic() + timeout
        while True:
            record = self.store.get_experiment(name, namespace)
            run = self._runs.get((record.namespace, name))
            seen = run.changes if run is not None else 0  # before reading: a change after the read wakes the wait
            if display is not None:
                display.show(record, self.store.summary(record, names=False))
            conditions = record.conditions
            if self._has(conditions, expected_condition):
                return self._result(record, self.store.trials(record.id))
            if expected_condition != FAILED and self._has(conditions, FAILED):
                raise RuntimeError(f"Experiment: {record.namespace}/{name} is Failed. Experiment conditions: "
                                   f"{conditions}")
            if run is not None and run.done.is_set() and run.error is not None:
                raise RuntimeError(f"Experiment: {name}: its controller stopped: {run.error}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"Timeout waiting for Experiment: {record.namespace}/{name} to reach "
                                   f"{expected_condition} state")
            if run is not None and not run.done.is_set():
                run.wait_change(seen, min(left, polling_interval))
            else:  # run by another process (katibx run, another notebook): read the store again
                time.sleep(min(left, polling_interval, _POLL_SECONDS))

    def delete_experiment(self, name: str, namespace: str | None = None, delete_options: Any = None, *,
                          force: bool = False, make_backend: Any = None) -> str:
        """Delete the experiment with its trials and what they created on a cluster; one this client's controller
        runs is stopped first."""
        record = self.store.get_experiment(name, self._namespace(namespace))
        run = self._runs.pop((record.namespace, name), None)
        if run is not None and not run.done.is_set():
            run.stop()
        self._functions.pop((record.namespace, name), None)
        return super().delete_experiment(name, record.namespace, force=force, make_backend=make_backend)

    # reads in the SDK's vocabulary --------------------------------------------------------------------------------
    def get_suggestion(self, name: str, namespace: str | None = None, timeout: Any = None) -> KatibObject:
        """The experiment's Suggestion: its algorithm and every suggestion made so far (a trial each)."""
        record, trials = self._record(name, namespace)
        return katib_object(_suggestion(record, trials))

    def list_suggestions(self, namespace: str | None = None, timeout: Any = None) -> list[KatibObject]:
        return [katib_object(_suggestion(r, self.store.trials(r.id))) for r in self.records(namespace)]

    def get_job_logs(self, name: str, trial_name: str, follow: bool = False,
                     namespace: str | None = None) -> Iterator[str]:
        """The trial's output lines; with ``follow`` new lines as the trial writes them, until it has ended."""
        yield from self.trial_log_lines(name, trial_name, namespace, follow=follow)


def _suggestion(record: ExperimentRecord, trials: list[TrialRecord]) -> dict[str, Any]:
    """A Katib Suggestion object: the algorithm, how many suggestions were requested and each one's assignments."""
    spec = record.experiment.spec
    return {"apiVersion": "kubeflow.org/v1beta1", "kind": "Suggestion",
            "metadata": {"name": record.name, "namespace": record.namespace},
            "spec": {"algorithm": spec.algorithm.to_dict() if spec.algorithm else {}, "requests": len(trials)},
            "status": {"suggestionCount": len(trials),
                       "suggestions": [{"name": t.name, "parameterAssignments": trial_object(record, t)["spec"]
                                        ["parameterAssignments"], "labels": t.labels} for t in trials]}}


def _unsupported(**arguments: Any) -> list[str]:
    """One line for each SDK argument set to something that has no meaning for a function trial here."""
    reasons = {
        "model_provider_parameters": "Katib's LLM fine-tuning mode (Hugging Face models and datasets) is not "
                                     "supported; give objective and parameters",
        "dataset_provider_parameters": "Katib's LLM fine-tuning mode is not supported; give objective and parameters",
        "trainer_parameters": "Katib's LLM fine-tuning mode is not supported; give objective and parameters",
        "storage_config": "only used by Katib's LLM fine-tuning mode, which is not supported",
        "base_image": "trials of a function run in this Python environment, not in an image; install what the "
                      "objective needs here",
        "packages_to_install": "trials of a function run in this Python environment; pip install the packages "
                               "into it",
        "pip_index_urls": "only used with packages_to_install, which is not supported",
    }
    lines = [f"{name}: {reasons[name]}" for name, value in arguments.items() if name in reasons
             and value is not None and not (name == "base_image" and value == SDK_BASE_IMAGE)
             and not (name == "pip_index_urls" and value == SDK_PIP_INDEX_URLS)]
    collector = arguments.get("metrics_collector_config")
    if collector is not None and (not isinstance(collector, Mapping) or collector.get("kind") not in ("StdOut", "Push")):
        lines.append("metrics_collector_config: kind must be StdOut (name=value lines) or Push (report_metrics)")
    return lines


def _settings(settings: Any, errors: list[str]) -> dict[str, Any] | None:
    """``algorithm_settings`` as a dict: the SDK also takes a list of ``V1beta1AlgorithmSetting``."""
    if settings is None or isinstance(settings, Mapping):
        return settings
    if isinstance(settings, list):
        items = [plain_data(s) for s in settings]
        if all(isinstance(i, dict) and "name" in i for i in items):
            return {i["name"]: i.get("value") for i in items}
    errors.append("algorithm_settings: must be a dict or a list of V1beta1AlgorithmSetting")
    return None


def _environment(env: Any, errors: list[str]) -> dict[str, Any] | None:
    """``env_per_trial`` as a dict: the SDK also takes a list of ``V1EnvVar`` (``V1EnvFromSource`` reads
    Kubernetes ConfigMaps and Secrets, which trials here do not have)."""
    if env is None or isinstance(env, Mapping):
        return env
    if isinstance(env, list):
        items = [plain_data(e) for e in env]
        if all(isinstance(i, dict) and "name" in i and "valueFrom" not in i for i in items):
            return {i["name"]: i.get("value", "") for i in items}
    errors.append("env_per_trial: must be a dict or a list of V1EnvVar with values (V1EnvFromSource and valueFrom "
                  "read Kubernetes objects, which function trials here do not have)")
    return None


def _resources(resources: Any, errors: list[str]) -> dict[str, Any] | None:
    """``resources_per_trial`` as katibx's quantities ({"cpu": 2, "memory": "1Gi", "gpu": 1}): the SDK also takes a
    ``V1ResourceRequirements`` (its limits, else its requests; ``nvidia.com/gpu`` is ``gpu``)."""
    if resources is None or isinstance(resources, Mapping):
        return resources
    if type(resources).__name__ == "TrainerResources":
        errors.append("resources_per_trial: TrainerResources (a PyTorchJob per trial) is not supported for function "
                      "trials; give the resources of one trial")
        return None
    data = plain_data(resources)
    if isinstance(data, dict) and set(data) <= {"limits", "requests", "claims"}:
        quantities = data.get("limits") or data.get("requests") or {}
        return {("gpu" if key == "nvidia.com/gpu" else key): value for key, value in quantities.items()}
    errors.append("resources_per_trial: must be a dict of quantities or a V1ResourceRequirements")
    return None


class _BackgroundRun:
    """One experiment's controller on a thread of its own, with its own store connection; ``run`` is called with
    that store and a listener once the thread starts."""

    _all: list[_BackgroundRun] = []  # the runs not yet done, of every client of this process
    _lock = threading.Lock()

    def __init__(self, namespace: str, name: str, store_path: Path,
                 run: Callable[[Store, Any], ExperimentRecord]) -> None:
        self.namespace = namespace
        self.name = name
        self.store_path = store_path
        self._run = run
        self.stored = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.completed = False  # the experiment has completed (its controller may still be letting trials end)
        self.changes = 0  # how many changes the controller has saved: a waiter waits for this to move
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._main, name=f"katibx-experiment-{name}", daemon=True)

    def start(self) -> None:
        """Start the controller and return once the experiment is stored; what stops it before is raised here."""
        with _BackgroundRun._lock:
            if not _handlers_installed:
                _install_handlers()
            _BackgroundRun._all.append(self)
        self._thread.start()
        self.stored.wait()
        if self.error is not None:
            raise self.error

    def _main(self) -> None:
        try:
            with Store(self.store_path) as store:
                self._run(store, self._listener)
        except BaseException as exc:  # noqa: BLE001 - kept for wait_for_experiment_condition and start()
            self.error = exc
            if self.stored.is_set():
                log.error("experiment %s: its controller stopped: %s", self.name, exc)
        finally:
            with _BackgroundRun._lock:
                if self in _BackgroundRun._all:
                    _BackgroundRun._all.remove(self)
            self._run = _finished  # what it held (the prepared experiment, the backend, the objective) can go
            self.done.set()
            self.stored.set()
            with self._changed:
                self.changes += 1
                self._changed.notify_all()

    def _listener(self, record: ExperimentRecord, trials: Any) -> None:
        self.completed = is_completed(record.conditions)
        self.stored.set()
        with self._changed:
            self.changes += 1
            self._changed.notify_all()

    def wait_change(self, seen: int, timeout: float) -> None:
        """Until the controller has saved a change after the ``seen``-th (or ``timeout`` seconds)."""
        with self._changed:
            self._changed.wait_for(lambda: self.changes != seen or self.done.is_set(), timeout)

    def stop(self) -> None:
        """Ask the controller to stop (through its lease, as ``katibx delete --force`` does) and wait for it."""
        try:
            with Store(self.store_path) as store:
                stop_holder(store, store.get_experiment(self.name, self.namespace),
                            f"KatibClient in this process (pid {os.getpid()})")
        except StoreError as exc:
            log.warning("experiment %s: %s", self.name, exc)
        self.done.wait()


def _finished(store: Store, listener: Any) -> ExperimentRecord:
    raise AssertionError("a finished run is not run again")


_handlers_installed = False


def _install_handlers() -> None:
    """Once per process, with its first run: wait for the runs at exit, and stop them on SIGTERM (from the main
    thread only, where Python lets signals be handled; the default action would leave their trials running)."""
    global _handlers_installed
    _handlers_installed = True
    atexit.register(_wait_for_runs_at_exit)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop_runs_on_sigterm)


def _stop_runs_on_sigterm(signum: int, _frame: Any) -> None:
    with _BackgroundRun._lock:
        running = any(not r.done.is_set() for r in _BackgroundRun._all)
    if not running:  # nothing of katibx's to stop: the signal does what it did before
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _stop_all(signal.Signals(signum).name)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stop_all(why: str) -> None:
    with _BackgroundRun._lock:
        running = [r for r in _BackgroundRun._all if not r.done.is_set()]
    for run in running:
        run.stop()
    if running:
        log.warning("%s: stopped experiment(s) %s and their trials; katibx resume NAME continues one", why,
                    ", ".join(r.name for r in running))


# Python 3.12.0 and 3.12.1 refuse new threads and forks once the main thread has ended (fixed in 3.12.2).
_CANNOT_RUN_AT_EXIT = sys.version_info[:3] in ((3, 12, 0), (3, 12, 1))


def _wait_for_runs_at_exit() -> None:
    """At interpreter exit: the experiments this process started run to completion (as they would in a cluster);
    Ctrl-C stops them (``katibx resume NAME`` continues one later)."""
    with _BackgroundRun._lock:
        running = [r for r in _BackgroundRun._all if not r.done.is_set()]
    if not running:
        return
    if _CANNOT_RUN_AT_EXIT:  # its trials could not start: stop them, and say how to go on
        _stop_all(f"Python {sys.version.split()[0]} cannot start trials once a script has ended (wait with "
                  "wait_for_experiment_condition before it ends, or use Python 3.12.2 or newer)")
        return
    waited = [r.name for r in running if not r.completed]
    if waited:
        log.warning("waiting for experiment(s) %s to complete (Ctrl-C stops them; katibx resume continues one)",
                    ", ".join(waited))
    try:
        for run in running:
            run.done.wait()
    except KeyboardInterrupt:
        _stop_all("interrupted")
