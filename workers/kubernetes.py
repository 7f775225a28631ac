"""The ``kubernetes`` backend: each trial is a Kubernetes object (a Job, a training-operator job, any custom resource).

Design (issue 6):

- ``start`` creates the trial's worker object from the trial template (:mod:`workers._manifests`): a ``batch/v1``
  Job through BatchV1Api, any other kind through CustomObjectsApi (a table of known kinds, else API discovery).
  Every object references the experiment's owner ConfigMap (``<experiment>-katibx``): deleting it deletes them all.
- Status comes from watches, never from polling objects: one list+watch per worker kind and one for pods, on the
  namespace with the selector ``katib.kubeflow.org/experiment=<name>``. A watch that expires (410) is replaced by a
  fresh list and a watch from its resourceVersion; 409/429/5xx and connection errors are retried with backoff
  (honouring ``Retry-After``). A trial whose object vanished while nobody watched ends ``Failed`` (reason
  ``Deleted``), so no trial is ever lost.
- ``successCondition`` / ``failureCondition`` are evaluated with :mod:`workers._gjson` (failure first, as Katib).
- Metrics: StdOut from the logs of the trial's primary pods (``primaryPodLabels``, container
  ``primaryContainerName``), followed while they run (up to ``max_log_streams`` at once; the others are read every
  ``log_poll_seconds``), so early stopping works; the text is kept as the trial's ``stdout.log`` for ``katibx logs``.
  File: the primary container's command is wrapped to print the metrics file between markers when it ends
  (:func:`workers._manifests.wrap_file_metrics`), and that section of the log is parsed once the trial ends, so
  early stopping cannot act on File metrics. TensorFlowEvent, PrometheusMetric and Custom need a sidecar: refused.
  Push: ``katibx.report_metrics`` in the pod POSTs to a small HTTP endpoint this backend serves
  (``push_host``/``push_port``, advertised to pods as ``push_url``), authenticated by a per-experiment token;
  accepted records are kept in the trial's ``pushed.jsonl`` and read again when a resumed controller re-attaches.
- A finished trial's object is deleted unless ``retain``; ``kill`` deletes it (``propagation_policy``).
  After a controller crash ``attach`` re-adopts objects that still exist instead of creating new ones.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from katibx.backend import Backend, BackendOption, TrialEvent, TrialExited, TrialJob, TrialMetrics, TrialStartError
from katibx.defaults import WORKER_DEFAULTS
from katibx.metric_parsers import LineParser, MetricsFormatError
from katibx.metrics_collector import collector_kind, metric_names
from katibx.spec import Experiment
from katibx.template import FUNCTION_KIND, active_deadline_seconds, primary_container
from katibx.trial import TrialRecord
from katibx.trial_dir import PUSH_TOKEN_ENV, PUSH_URL_ENV, PUSHED_FILE, STDOUT_LOG
from katibx.workers import _gjson
from katibx.workers._kube_api import (
    KubeApi,
    KubernetesClusterError,
    api_message,
    json_body,
    list_and_watch,
    stop_watches,
)
from katibx.workers._manifests import (
    EXPERIMENT_LABEL,
    TRIAL_LABEL,
    Resource,
    build_worker,
    known_resource,
    owner_config_map,
    owner_name,
    pod_selector,
    render_workers,
)
from katibx.workers._pod_logs import PodLogs, read_pod_logs, write_log
from katibx.workers._push import PushServer, append_record, parse_record, read_records
from katibx.workers._tracked import TrackedTrial

log = logging.getLogger(__name__)

__all__ = ["KubernetesBackend", "KubernetesClusterError"]

# Why the other collectors are refused (Katib runs them in a sidecar, which katibx does not inject).
_REFUSED_COLLECTORS = {
    "TensorFlowEvent": "event files stay inside the pod and need a reader there; print the scalars, write them to a "
                       "File or push them with katibx.report_metrics",
    "PrometheusMetric": "scraping the pod needs Katib's sidecar; print the metrics or push them with "
                        "katibx.report_metrics",
    "Custom": "a custom collector container is a sidecar; print the metrics or push them with katibx.report_metrics",
}
TOKEN_KEY = "pushToken"  # in the owner ConfigMap's data
# Retries of the one-shot API calls of `katibx delete` before the cluster counts as unreachable.
DELETE_RETRY_SECONDS = 5.0


def _push_address(text: str) -> dict[str, Any]:
    """``--push-address HOST:PORT`` as the constructor's push_host and push_port."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return {"push_host": host.strip("[]"), "push_port": int(port)}


class KubernetesBackend(Backend):
    """Runs trials as objects in a Kubernetes cluster, through the official client."""

    name = "kubernetes"
    options = (
        BackendOption("--kubeconfig", "kubeconfig", envvar="KUBECONFIG", metavar="FILE",
                      help="With --backend kubernetes: the kubeconfig file (env KUBECONFIG; default ~/.kube/config or "
                           "in-cluster).", commands=frozenset({"run", "resume", "logs", "delete"})),
        BackendOption("--context", "context", metavar="NAME", help="With --backend kubernetes: the kubeconfig context.",
                      commands=frozenset({"run", "resume", "logs", "delete"})),
        BackendOption("--push-address", "push_address", metavar="HOST:PORT", parse=_push_address,
                      help="With --backend kubernetes: where the push-metrics endpoint listens (default 127.0.0.1, "
                           "any free port)."),
        BackendOption("--push-url", "push_url", metavar="URL",
                      help="With --backend kubernetes: the push endpoint's URL as pods reach it (default: from "
                           "--push-address)."),
    )
    metrics_collectors = ("StdOut", "File", "Push")
    collector_refusals = _REFUSED_COLLECTORS

    def __init__(
        self,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
        *,
        push_host: str = "127.0.0.1",
        push_port: int = 0,
        push_url: str | None = None,
        propagation_policy: str = "Background",
        watch_timeout: int = 60,
        max_log_streams: int = 64,
        log_poll_seconds: float = 5.0,
        retry_seconds: float = 30.0,
        api_client: Any = None,
    ) -> None:
        self.kubeconfig, self.context, self.namespace = kubeconfig, context, namespace
        self.push_host, self.push_port, self.push_url = push_host, push_port, push_url
        self.propagation_policy = propagation_policy
        self.watch_timeout = watch_timeout
        self.max_log_streams = max_log_streams
        self.retry_seconds = retry_seconds
        self._stop = threading.Event()
        self._kube = KubeApi(kubeconfig, context, max_connections=max(max_log_streams, 0) + 32,
                             retry_seconds=retry_seconds, stop=self._stop, api_client=api_client)
        self._events: queue.Queue[TrialEvent] = queue.Queue()
        self._logs = PodLogs(self._kube, self._events, max_log_streams, log_poll_seconds)
        self._trials: dict[str, TrackedTrial] = {}
        self._pods: dict[str, dict[str, dict[str, Any]]] = {}  # trial name -> pod name -> pod
        self._lock = threading.RLock()
        self._watchers: dict[tuple[str, ...], threading.Thread] = {}
        self._watches: list[Any] = []
        self._pool: ThreadPoolExecutor | None = None
        self._owners: dict[tuple[str, str], dict[str, Any]] = {}  # (namespace, experiment) -> owner ConfigMap
        self._templates: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._discovered: dict[tuple[str, str], Resource] = {}
        self._push_server: PushServer | None = None
        self._error: BaseException | None = None

    # connection --------------------------------------------------------------------------
    def _apis(self) -> tuple[Any, Any, Any]:
        return self._kube.apis()

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, retried on 429/5xx and connection errors (:meth:`KubeApi.call`)."""
        return self._kube.call(what, fn, *args, **kwargs)

    def _namespace(self, experiment: Experiment) -> str:
        """--namespace, else the experiment's metadata.namespace, else the kubeconfig context's, else default."""
        self._kube.client()
        return self.namespace or experiment.metadata.namespace or self._kube.context_namespace or "default"

    # checks ------------------------------------------------------------------------------
    def check(self, experiment: Experiment) -> list[str]:
        tt = experiment.spec.trial_template
        errors: list[str] = []
        if tt is None:
            return errors
        for field_name, value in (("successCondition", tt.success_condition), ("failureCondition", tt.failure_condition)):
            if value:
                try:
                    _gjson.check(value)
                except _gjson.GJSONSyntaxError as exc:
                    errors.append(f"spec.trialTemplate.{field_name}: {exc}")
        spec = tt.trial_spec
        if spec is None:
            return errors  # a ConfigMap template is checked when it is read from the cluster
        errors.extend(self._check_template(experiment, spec, "spec.trialTemplate.trialSpec"))
        return errors

    @staticmethod
    def _check_template(experiment: Experiment, spec: dict[str, Any], path: str) -> list[str]:
        tt = experiment.spec.trial_template
        assert tt is not None
        errors: list[str] = []
        kind, api_version = spec.get("kind"), spec.get("apiVersion")
        if kind == FUNCTION_KIND:
            return [f"{path}.kind: Function trials run in this process; use the local or ray backend"]
        if not isinstance(kind, str) or not isinstance(api_version, str) or not kind or not api_version:
            return [f"{path}: apiVersion and kind are required"]
        if kind not in WORKER_DEFAULTS and not (tt.success_condition and tt.failure_condition):
            errors.append(f"spec.trialTemplate.successCondition: {kind} has no default success and failure "
                          "conditions; set successCondition and failureCondition")
        try:
            active_deadline_seconds(spec)
        except (TypeError, ValueError) as exc:
            if "${trialParameters." not in str(exc):
                errors.append(f"{path}.spec: {exc}")
        container = primary_container(spec, tt.primary_container_name)
        if kind in WORKER_DEFAULTS and kind != "TrainJob" and container is None:
            errors.append(f"spec.trialTemplate.primaryContainerName: no container named {tt.primary_container_name!r} "
                          f"in the {kind} template")
        elif collector_kind(experiment) == "File" and not (container or {}).get("command"):
            errors.append(f"spec.metricsCollectorSpec.collector.kind: File metrics are printed by wrapping the primary "
                          f"container's command; set {path}'s {tt.primary_container_name!r} container command (the "
                          "image's entrypoint is not known without pulling it)")
        return errors

    # lifecycle ---------------------------------------------------------------------------
    def start(self, job: TrialJob) -> dict[str, Any]:
        self._raise_background_error()
        experiment = job.experiment
        namespace = self._namespace(experiment)
        owner = self._owner(experiment, namespace)
        template = self._template(experiment)
        resource = self._resource(template)
        env = {PUSH_URL_ENV: self._push_endpoint(), PUSH_TOKEN_ENV: owner["data"][TOKEN_KEY]}
        owner_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],
                     "uid": owner["metadata"]["uid"]}
        try:
            worker = build_worker(experiment, job.trial.name, job.trial.assignments, namespace=namespace,
                                  template=template if experiment.spec.trial_template.trial_spec is None else None,  # type: ignore[union-attr]
                                  trial_labels=job.trial.labels, owner=owner_ref, env=env)
        except (TypeError, ValueError) as exc:
            raise TrialStartError(f"invalid trial template: {exc}") from None
        trial = self._track(job, worker, resource, namespace, replay=False)
        created = self._create(trial, worker)
        trial.uid = created["metadata"].get("uid")
        trial.created_at = time.monotonic()
        assert self._push_server is not None
        return {"backend": self.name, "namespace": namespace, "apiVersion": resource.api_version,
                "kind": resource.kind, "name": trial.name, "uid": trial.uid, "pushPort": self._push_server.port}

    def _track(self, job: TrialJob, worker: dict[str, Any], resource: Resource, namespace: str, *,
               replay: bool) -> TrackedTrial:
        """Register a trial before its object exists, so no watch event about it is missed.

        ``replay``: the trial is being re-attached, its pushed records are kept for :meth:`_replay_pushed`; else they
        are dropped with the old log.
        """
        experiment = job.experiment
        tt = experiment.spec.trial_template
        assert tt is not None
        defaults = WORKER_DEFAULTS.get(resource.kind, ("", "", None))
        mc = experiment.spec.metrics_collector_spec
        src = mc.source if mc else None
        formats = src.filter.metrics_format if src and src.filter else None
        names = metric_names(experiment)
        primary = tt.primary_pod_labels if tt.primary_pod_labels is not None else (defaults[2] or {})
        fsp = src.file_system_path if src else None
        file_format = ((fsp.format if fsp else None) or "TEXT") if collector_kind(experiment) == "File" else None
        trial = TrackedTrial(
            name=job.trial.name, namespace=namespace, resource=resource, experiment=experiment.name,
            selector=pod_selector(worker, job.trial.name), primary_labels=dict(primary),
            container=tt.primary_container_name, success=tt.success_condition or defaults[0],
            failure=tt.failure_condition or defaults[1], retain=bool(tt.retain),
            stdout=collector_kind(experiment) == "StdOut", parser=lambda: LineParser(names, formats),
            file_parser=(lambda: LineParser(names, formats, file_format)) if file_format else None,
            push_parser=LineParser(names, file_format="JSON"), trial_dir=job.trial_dir, attaching=replay,
        )
        job.trial_dir.mkdir(parents=True, exist_ok=True)
        (job.trial_dir / STDOUT_LOG).unlink(missing_ok=True)
        if not replay:
            (job.trial_dir / PUSHED_FILE).unlink(missing_ok=True)
        with self._lock:
            self._trials[trial.name] = trial
        self._ensure_push_server()
        self._watch(namespace, experiment.name, resource)
        if trial.selector.startswith(TRIAL_LABEL + "="):
            self._watch(namespace, experiment.name, None)
        return trial

    def _create(self, trial: TrackedTrial, worker: dict[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        batch, _core, custom = self._apis()
        r = trial.resource
        what = f"create {r.kind} {trial.namespace}/{trial.name}"
        try:
            if r.is_job:
                return json_body(self._call(what, batch.create_namespaced_job, trial.namespace, worker, _preload_content=False))
            return json_body(self._call(what, custom.create_namespaced_custom_object, r.group, r.version, trial.namespace,
                                    r.plural, worker, _preload_content=False))
        except ApiException as exc:
            if exc.status == 409:  # created by an earlier attempt whose answer was lost, or someone else's
                existing = self._get(trial)
                labels = ((existing or {}).get("metadata") or {}).get("labels") or {}
                if existing and labels.get(TRIAL_LABEL) == trial.name and labels.get(EXPERIMENT_LABEL) == trial.experiment:
                    return existing
            with self._lock:
                self._trials.pop(trial.name, None)
            raise TrialStartError(f"the API server refused {r.kind} {trial.namespace}/{trial.name}: "
                                  f"{api_message(exc)}") from None

    def _get(self, trial: TrackedTrial) -> dict[str, Any] | None:
        """The trial's object, or None when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        batch, _core, custom = self._apis()
        r = trial.resource
        try:
            if r.is_job:
                return json_body(self._call("get", batch.read_namespaced_job, trial.name, trial.namespace, _preload_content=False))
            return json_body(self._call("get", custom.get_namespaced_custom_object, r.group, r.version, trial.namespace,
                                    r.plural, trial.name, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _delete(self, trial: TrackedTrial) -> None:
        """Delete the trial's object (its pods follow, by ``propagation_policy``); a missing object is fine."""
        from kubernetes.client.exceptions import ApiException

        batch, _core, custom = self._apis()
        r = trial.resource
        try:
            if r.is_job:
                self._call("delete", batch.delete_namespaced_job, trial.name, trial.namespace,
                           propagation_policy=self.propagation_policy, _preload_content=False)
            else:
                self._call("delete", custom.delete_namespaced_custom_object, r.group, r.version, trial.namespace,
                           r.plural, trial.name, propagation_policy=self.propagation_policy, _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_experiment(self, experiment: Experiment, handles: list[dict[str, Any]]) -> str:
        """Delete the experiment's owner ConfigMap in each namespace its trials used, with Background propagation, so
        the API server's garbage collector deletes every trial object (and their pods).

        Raises :class:`KubernetesClusterError` when the cluster cannot be reached or refuses the deletion.
        """
        from kubernetes.client.exceptions import ApiException

        namespaces = sorted({str(h.get("namespace") or "default") for h in handles})
        if not namespaces:
            return ""
        self._kube.retry_seconds = min(self.retry_seconds, DELETE_RETRY_SECONDS)  # one-shot calls: fail fast
        _batch, core, _custom = self._apis()
        name, deleted = owner_name(experiment.name), []
        for namespace in namespaces:
            try:
                self._call(f"delete ConfigMap {namespace}/{name}", core.delete_namespaced_config_map, name, namespace,
                           propagation_policy="Background", _preload_content=False)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise KubernetesClusterError(f"cannot delete ConfigMap {namespace}/{name}: {api_message(exc)}") from None
            deleted.append(namespace)
        if not deleted:
            return ""
        return f"its Kubernetes objects in namespace {', '.join(deleted)} are being garbage-collected"

    def _owner(self, experiment: Experiment, namespace: str) -> dict[str, Any]:
        """The experiment's owner ConfigMap (created on first use), holding the push token."""
        from kubernetes.client.exceptions import ApiException

        key = (namespace, experiment.name)
        if key in self._owners:
            return self._owners[key]
        _batch, core, _custom = self._apis()
        name = owner_name(experiment.name)
        try:
            owner = json_body(self._call("get owner", core.read_namespaced_config_map, name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status != 404:
                raise KubernetesClusterError(f"cannot read ConfigMap {namespace}/{name}: {api_message(exc)}") from None
            body = owner_config_map(experiment, namespace)
            body["data"][TOKEN_KEY] = secrets.token_urlsafe(24)
            try:
                owner = json_body(self._call("create owner", core.create_namespaced_config_map, namespace, body,
                                         _preload_content=False))
            except ApiException as exc2:
                if exc2.status != 409:
                    raise KubernetesClusterError(f"cannot create ConfigMap {namespace}/{name}: {api_message(exc2)}") from None
                owner = json_body(self._call("get owner", core.read_namespaced_config_map, name, namespace, _preload_content=False))
        owner.setdefault("data", {}).setdefault(TOKEN_KEY, "")
        self._owners[key] = owner
        return owner

    def _template(self, experiment: Experiment) -> dict[str, Any]:
        """The trial template: inline, or read (once) from the ConfigMap the experiment names."""
        from kubernetes.client.exceptions import ApiException

        tt = experiment.spec.trial_template
        assert tt is not None
        if tt.trial_spec is not None:
            return tt.trial_spec
        cm = tt.config_map
        assert cm is not None
        namespace = cm.config_map_namespace or self._namespace(experiment)
        key = (namespace, str(cm.config_map_name), str(cm.template_path))
        if key not in self._templates:
            import yaml

            _batch, core, _custom = self._apis()
            where = f"spec.trialTemplate.configMap: ConfigMap {namespace}/{cm.config_map_name}"
            try:
                data = json_body(self._call("get template", core.read_namespaced_config_map, cm.config_map_name, namespace,
                                        _preload_content=False)).get("data") or {}
            except ApiException as exc:
                raise TrialStartError(f"{where}: {api_message(exc)}") from None
            if cm.template_path not in data:
                raise TrialStartError(f"{where} has no key {cm.template_path!r}")
            try:
                template = yaml.safe_load(data[cm.template_path])
            except yaml.YAMLError as exc:
                raise TrialStartError(f"{where} key {cm.template_path!r}: not YAML: {exc}") from None
            if not isinstance(template, dict):
                raise TrialStartError(f"{where} key {cm.template_path!r}: not a Kubernetes object")
            problems = self._check_template(experiment, template, f"{where} key {cm.template_path}")
            if problems:
                raise TrialStartError("; ".join(problems))
            defaults = WORKER_DEFAULTS.get(str(template.get("kind")))
            if defaults is not None:  # Katib's webhook defaults only inline templates; the controller needs them
                tt.success_condition = tt.success_condition or defaults[0]
                tt.failure_condition = tt.failure_condition or defaults[1]
                if tt.primary_pod_labels is None and defaults[2] is not None:
                    tt.primary_pod_labels = dict(defaults[2])
            self._templates[key] = template
        return self._templates[key]

    def _resource(self, worker: dict[str, Any]) -> Resource:
        """Where the worker's kind lives: the known table, else API discovery; TrialStartError when nowhere."""
        from kubernetes.client.exceptions import ApiException

        api_version, kind = str(worker.get("apiVersion")), str(worker.get("kind"))
        found = known_resource(api_version, kind) or self._discovered.get((api_version, kind))
        if found is not None:
            return found
        group, _, version = api_version.rpartition("/")
        if not group:
            raise TrialStartError(f"spec.trialTemplate.trialSpec.kind: {kind} ({api_version}) is not a kind the "
                                  "kubernetes backend can create (core-group objects are not trial workers)")
        _batch, _core, custom = self._apis()
        try:
            listing = json_body(self._call("discovery", custom.get_api_resources, group, version, _preload_content=False))
        except ApiException as exc:
            raise TrialStartError(f"spec.trialTemplate.trialSpec.kind: the cluster does not serve {api_version} "
                                  f"({api_message(exc)}); is the {kind} CRD installed?") from None
        for item in listing.get("resources") or []:
            if item.get("kind") == kind and "/" not in str(item.get("name")) and item.get("namespaced", True):
                self._discovered[(api_version, kind)] = Resource(group, version, str(item["name"]), kind)
                return self._discovered[(api_version, kind)]
        raise TrialStartError(f"spec.trialTemplate.trialSpec.kind: the cluster serves no {kind} in {api_version}")

    # watching ----------------------------------------------------------------------------
    def _watch(self, namespace: str, experiment: str, resource: Resource | None) -> None:
        """Start (once) the list+watch thread for a worker kind, or for pods when ``resource`` is None."""
        key = (namespace, experiment, resource.api_version if resource else "v1", resource.kind if resource else "Pod")
        with self._lock:
            if key in self._watchers:
                return
            thread = threading.Thread(target=self._watch_loop, args=(namespace, experiment, resource),
                                      name=f"katibx-watch-{key[3]}", daemon=True)
            self._watchers[key] = thread
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="katibx-k8s")
        thread.start()

    def _list_function(self, resource: Resource | None) -> Callable[..., Any]:
        """A list function for Watch.stream; without a docstring, so events carry plain dicts."""
        batch, core, custom = self._apis()
        if resource is None:
            def list_pods(namespace: str, **kwargs: Any) -> Any:
                return core.list_namespaced_pod(namespace, **kwargs)
            return list_pods
        if resource.is_job:
            def list_jobs(namespace: str, **kwargs: Any) -> Any:
                return batch.list_namespaced_job(namespace, **kwargs)
            return list_jobs

        def list_custom(namespace: str, **kwargs: Any) -> Any:
            return custom.list_namespaced_custom_object(resource.group, resource.version, namespace, resource.plural,
                                                        **kwargs)
        return list_custom

    def _watch_loop(self, namespace: str, experiment: str, resource: Resource | None) -> None:
        """List and watch one worker kind (or pods) of the experiment until the backend closes."""
        selector = f"{EXPERIMENT_LABEL}={experiment}"
        what = f"watch {'Pod' if resource is None else resource.kind} {namespace} {selector}"

        def listed(names: set[str], listed_at: float) -> None:
            assert resource is not None
            self._vanished(resource, namespace, names, listed_at)

        def on_error(exc: BaseException) -> None:
            self._error = exc

        list_and_watch(self._kube, what, self._list_function(resource), namespace, selector,
                       handle=self._on_pod if resource is None else self._on_object,
                       listed=None if resource is None else listed, on_error=on_error, watches=self._watches,
                       watch_timeout=self.watch_timeout)

    def _vanished(self, resource: Resource, namespace: str, names: set[str], listed_at: float) -> None:
        """Trials whose object was created before a list that does not show it were deleted unseen."""
        with self._lock:
            gone = [t for t in self._trials.values() if t.resource == resource and t.namespace == namespace
                    and t.uid is not None and t.created_at < listed_at and t.name not in names]
        for trial in gone:
            self._on_object("DELETED", {"metadata": {"name": trial.name, "uid": trial.uid}})

    def _on_object(self, kind: str, obj: dict[str, Any]) -> None:
        """A worker object changed: finish its trial once a condition holds or it is gone."""
        meta = obj.get("metadata") or {}
        with self._lock:
            trial = self._trials.get(str(meta.get("name")))
            if trial is None or trial.finishing or (trial.uid is not None and meta.get("uid") not in (None, trial.uid)):
                return
            if trial.uid is None:
                trial.uid = meta.get("uid")
            if kind == "DELETED":
                trial.finishing = True
                outcome: tuple[bool, dict[str, Any]] | None = (False, {"reason": "Killed" if trial.killed else "Deleted",
                                                                      "message": f"{trial.resource.kind} was deleted"})
            else:
                outcome = None
                failed = _gjson.condition_match(obj, trial.failure) if trial.failure else None
                if failed is not None:
                    outcome = (False, failed)
                else:
                    succeeded = _gjson.condition_match(obj, trial.success) if trial.success else None
                    if succeeded is not None:
                        outcome = (True, succeeded)
                if outcome is None:
                    return
                trial.finishing = True
        assert self._pool is not None and outcome is not None
        self._pool.submit(self._finish, trial, outcome[0], outcome[1], kind == "DELETED")

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        """A trial pod changed: follow a primary pod's log once it runs."""
        meta = pod.get("metadata") or {}
        name = (meta.get("labels") or {}).get(TRIAL_LABEL)
        if not name:
            return
        with self._lock:
            trial = self._trials.get(name)
            if trial is None:
                return
            pods = self._pods.setdefault(name, {})
            if kind == "DELETED":
                pods.pop(str(meta.get("name")), None)
            else:
                pods[meta["name"]] = pod
        if kind != "DELETED":
            self._logs.maybe_follow(trial, pod)

    def _finish(self, trial: TrackedTrial, succeeded: bool, condition: dict[str, Any], deleted: bool) -> None:
        """Collect the last metrics, delete the object unless retained, then report the exit."""
        reason = str(condition.get("reason") or ("Completed" if succeeded else "Failed"))
        message = str(condition.get("message") or condition.get("type") or condition.get("phase") or reason)
        try:
            if not deleted and (trial.stdout or trial.file_parser):
                with self._lock:
                    pods = list(self._pods.get(trial.name, {}).values())
                self._logs.read_remaining(trial, pods)
            if not deleted and not trial.retain:
                self._delete(trial)
        except Exception as exc:  # noqa: BLE001 - the trial's exit must be reported whatever happens
            log.warning("trial %s: %s", trial.name, exc)
            if isinstance(exc, KubernetesClusterError):
                self._error = exc
        write_log(trial)
        if succeeded and trial.errors:
            succeeded, reason, message = False, "MetricsCollectorError", f"metrics collection failed: {trial.errors[0]}"
        with self._lock:
            self._trials.pop(trial.name, None)
            self._pods.pop(trial.name, None)
        self._events.put(TrialExited(trial.name, succeeded, reason, message))

    # push endpoint -----------------------------------------------------------------------
    def _ensure_push_server(self, previous_port: int | None = None) -> None:
        """Start the endpoint; on any free port unless one is configured, or the port a crashed controller used
        (``previous_port``, from a trial's handle), so that re-attached pods can still reach it."""
        if self._push_server is not None:
            return
        if not self.push_port and previous_port:
            try:
                self._push_server = PushServer(self.push_host, previous_port, self._pushed)
                return
            except OSError as exc:
                log.warning("cannot listen for pushed metrics on port %s again (%s): re-attached trials cannot "
                            "push any more; fix the port with --push-address", previous_port, exc)
        self._push_server = PushServer(self.push_host, self.push_port, self._pushed)

    def _push_endpoint(self) -> str:
        """The URL pods POST metrics to (``push_url``, else the address the endpoint listens on)."""
        self._ensure_push_server()
        assert self._push_server is not None
        return self._push_server.url(self.push_url)

    def _pushed(self, body: bytes) -> tuple[int, str]:
        """Take one pushed record: (HTTP status, message)."""
        try:
            name, token, metrics = parse_record(body)
        except (ValueError, KeyError, TypeError) as exc:
            return 400, f"expected JSON {{trial, token, metrics}}: {exc}"
        with self._lock:
            trial = self._trials.get(name)
        if trial is None:
            return 404, f"trial {name!r} is not running under this controller"
        if trial.attaching:
            return 503, f"trial {name!r} is being re-attached; retry"
        owner = self._owners.get((trial.namespace, trial.experiment)) or {}
        if not secrets.compare_digest(token, str((owner.get("data") or {}).get(TOKEN_KEY, ""))):
            return 403, "wrong token"
        metrics.setdefault("timestamp", time.time())  # kept with the record, so a replay keeps the time too
        line = json.dumps(metrics) + "\n"
        try:
            with trial.lock:
                logs = trial.push_parser.feed(line)
                append_record(trial.trial_dir, line)
        except MetricsFormatError as exc:
            return 400, str(exc)
        except OSError as exc:  # the value still counts; only a resume after a crash would miss it
            log.warning("trial %s: cannot keep a pushed record: %s", name, exc)
        if logs:
            self._events.put(TrialMetrics(name, logs))
        return 200, "ok"

    def _replay_pushed(self, trial: TrackedTrial) -> None:
        """Queue again the records a re-attached trial pushed to the crashed controller, then take new pushes."""
        with trial.lock:
            try:
                text = read_records(trial.trial_dir)
                logs = trial.push_parser.feed(text)
            except (OSError, MetricsFormatError) as exc:
                log.warning("trial %s: cannot read the metrics it pushed before: %s", trial.name, exc)
                logs = []
            trial.attaching = False
        if logs:
            self._events.put(TrialMetrics(trial.name, logs))

    # contract ----------------------------------------------------------------------------
    def poll(self, timeout: float) -> list[TrialEvent]:
        self._raise_background_error()
        events: list[TrialEvent] = []
        try:
            events.append(self._events.get(timeout=max(timeout, 0)))
        except queue.Empty:
            return events
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def _raise_background_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def kill(self, trial_name: str) -> None:
        with self._lock:
            trial = self._trials.get(trial_name)
        if trial is None or trial.killed:
            return
        trial.killed = True
        assert self._pool is not None
        self._pool.submit(self._kill, trial)

    def _kill(self, trial: TrackedTrial) -> None:
        try:
            self._delete(trial)
        except Exception as exc:  # noqa: BLE001 - reported as the trial's exit below
            log.warning("trial %s: cannot delete its %s: %s", trial.name, trial.resource.kind, exc)
        else:
            if self._get(trial) is not None:
                return  # the watch reports the deletion once the object is gone
        self._on_object("DELETED", {"metadata": {"name": trial.name}})

    def attach(self, job: TrialJob, handle: dict[str, Any]) -> bool:
        if handle.get("kind") is None or handle.get("name") != job.trial.name:
            return False
        namespace = str(handle.get("namespace") or self._namespace(job.experiment))
        self._owner(job.experiment, namespace)
        template = self._template(job.experiment)
        resource = self._resource(template)
        if (resource.api_version, resource.kind) != (handle.get("apiVersion"), handle.get("kind")):
            return False
        worker = build_worker(job.experiment, job.trial.name, job.trial.assignments, namespace=namespace,
                              template=template if job.experiment.spec.trial_template.trial_spec is None else None)  # type: ignore[union-attr]
        port = handle.get("pushPort")
        self._ensure_push_server(port if isinstance(port, int) else None)
        trial = self._track(job, worker, resource, namespace, replay=True)
        existing = self._get(trial)
        if existing is None or (handle.get("uid") and existing["metadata"].get("uid") != handle["uid"]):
            with self._lock:
                self._trials.pop(trial.name, None)
            return False
        trial.uid = existing["metadata"].get("uid")
        trial.created_at = 0.0
        self._replay_pushed(trial)
        self._on_object("MODIFIED", existing)
        return True

    def release(self, handle: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        if not handle.get("kind") or not handle.get("name"):
            return
        resource = known_resource(str(handle.get("apiVersion")), str(handle["kind"])) or self._discovered.get(
            (str(handle.get("apiVersion")), str(handle["kind"])))
        if resource is None:
            resource = self._resource({"apiVersion": handle.get("apiVersion"), "kind": handle["kind"]})
        stub = TrackedTrial(name=str(handle["name"]), namespace=str(handle.get("namespace") or "default"), resource=resource,
                      experiment="", selector="", primary_labels={}, container=None, success="", failure="",
                      retain=False, stdout=False, parser=lambda: LineParser([]), push_parser=LineParser([]),
                            file_parser=None, trial_dir=None)
        try:
            existing = self._get(stub)
            if existing is not None and (not handle.get("uid") or existing["metadata"].get("uid") == handle["uid"]):
                self._delete(stub)
        except ApiException as exc:
            log.warning("cannot delete %s %s: %s", resource.kind, stub.name, api_message(exc))

    def trial_logs(self, handle: dict[str, Any]) -> str:
        """The current logs of a trial's pods, from its stored handle (for ``katibx logs`` while it runs)."""
        return read_pod_logs(self._kube, handle)

    def render(self, experiment: Experiment, trials: list[TrialRecord], namespace: str | None) -> list[dict[str, Any]]:
        """The worker objects these trials would get (no cluster: no owner reference, no push address)."""
        return render_workers(experiment, trials, namespace)

    def settings(self) -> dict[str, Any]:
        kept = {"kubeconfig": self.kubeconfig, "context": self.context, "namespace": self.namespace,
                "push_url": self.push_url}
        if self.push_host != "127.0.0.1":
            kept["push_host"] = self.push_host
        return {k: v for k, v in kept.items() if v is not None}

    def close(self) -> None:
        with self._lock:
            running = [t for t in self._trials.values() if not t.finishing]
        for trial in running:
            trial.killed = True
            try:
                self._delete(trial)
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                log.warning("trial %s: cannot delete its %s: %s", trial.name, trial.resource.kind, exc)
        self._stop.set()
        self._logs.close()
        stop_watches(self._watches)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._push_server is not None:
            self._push_server.close()
            self._push_server = None

