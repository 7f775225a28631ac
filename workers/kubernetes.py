"""The ``kubernetes`` backend: each trial is a Kubernetes object (a Job, a training-operator job, any custom resource).

Design (issue 6):

- ``start`` creates the trial's worker object from the trial template (:mod:`workers._manifests`,
  :mod:`workers._templates`): a ``batch/v1`` Job through BatchV1Api, any other kind through CustomObjectsApi (a table
  of known kinds, else API discovery). Every object references the experiment's owner ConfigMap
  (``<experiment>-katibx``): deleting it deletes them all (:mod:`workers._objects`).
- Status comes from watches (:mod:`workers._watches`), never from polling objects: one list+watch per worker kind and
  one for pods, on the namespace with the selector ``katib.kubeflow.org/experiment=<name>``. A watch that expires
  (410) is replaced by a fresh list and a watch from its resourceVersion; 409/429/5xx and connection errors are
  retried with backoff (honouring ``Retry-After``). A trial whose object vanished while nobody watched ends
  ``Failed`` (reason ``Deleted``), so no trial is ever lost.
- ``successCondition`` / ``failureCondition`` are evaluated with :mod:`workers._gjson` (failure first, as Katib).
- Metrics: StdOut from the logs of the trial's primary pods (``primaryPodLabels``, container
  ``primaryContainerName``), followed while they run (up to ``max_log_streams`` at once; the others are read every
  ``log_poll_seconds``), so early stopping works; the text is kept as the trial's ``stdout.log`` for ``katibx logs``.
  File: the primary container's command is wrapped to print the metrics file between markers when it ends
  (:func:`workers._manifests.wrap_file_metrics`), and that section of the log is parsed once the trial ends, so
  early stopping cannot act on File metrics. TensorFlowEvent, PrometheusMetric and Custom need a sidecar: refused.
  Push: ``katibx.report_metrics`` in the pod POSTs to a small HTTP endpoint this backend serves (:mod:`workers._push`,
  ``push_host``/``push_port``, advertised to pods as ``push_url``), authenticated by a per-experiment token;
  accepted records are kept in the trial's ``pushed.jsonl`` and read again when a resumed controller re-attaches.
- A pod that cannot start (a container waiting in ErrImagePull/ImagePullBackOff/CreateContainerConfigError/
  CreateContainerError, which the kubelet retries for ever) fails its trial after ``container_start_timeout``
  seconds, a malformed image name (InvalidImageName) or ErrImageNeverPull at once; the reason is the container's
  waiting reason. Its object is deleted even with ``retain`` (the kubelet would go on retrying, and a trial recorded
  as Failed could start training later).
- A finished trial's object is deleted unless ``retain``; ``kill`` deletes it (``propagation_policy``).
  After a controller crash ``attach`` re-adopts objects that still exist instead of creating new ones.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from katibx.backend import Backend, BackendOption, TrialEvent, TrialExited, TrialJob, TrialStartError
from katibx.spec import Experiment
from katibx.trial import TrialRecord
from katibx.trial_dir import PUSH_TOKEN_ENV, PUSH_URL_ENV, PUSHED_FILE, STDOUT_LOG
from katibx.workers import _gjson
from katibx.workers._kube_api import KubeApi, KubernetesClusterError, api_message, current_context
from katibx.workers._manifests import TRIAL_LABEL, Resource, build_worker, render_workers
from katibx.workers._objects import ClusterObjects, WorkerRef
from katibx.workers._pod_logs import PodLogs, read_pod_logs, write_log
from katibx.workers._push import PushEndpoint
from katibx.workers._templates import TrialTemplates, check_trial_template
from katibx.workers._tracked import TrackedTrial
from katibx.workers._watches import Watches

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
# Retries of the one-shot API calls of `katibx delete` before the cluster counts as unreachable.
DELETE_RETRY_SECONDS = 5.0
# Waiting reasons of a container that cannot start: the kubelet retries them for ever, so a trial would never end.
CANNOT_START = frozenset({"ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "CreateContainerError",
                          "InvalidImageName", "ErrImageNeverPull"})
NEVER_STARTS = frozenset({"InvalidImageName", "ErrImageNeverPull"})  # no retry can help: fail at once


def _seconds(text: str) -> dict[str, Any]:
    """``--container-start-timeout SECONDS`` as the constructor's container_start_timeout."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"expected a positive number of seconds, got {text!r}")
    return {"container_start_timeout": value}


def cannot_start(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when a container of the pod waits in a state that keeps it from starting, else None."""
    status = pod.get("status") or {}
    for entry in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (entry.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in CANNOT_START:
            image = f" (image {entry['image']})" if entry.get("image") else ""
            return str(waiting["reason"]), f"container {entry.get('name')}{image}: {waiting.get('message') or waiting['reason']}"
    return None


def _push_address(text: str) -> dict[str, Any]:
    """``--push-address HOST:PORT`` as the constructor's push_host and push_port."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return {"push_host": host.strip("[]"), "push_port": int(port)}


class KubernetesBackend(Backend):
    """Runs trials as objects in a Kubernetes cluster, through the official client."""

    name = "kubernetes"
    runs_images = True
    options = (
        BackendOption("--kubeconfig", "kubeconfig", envvar="KUBECONFIG", metavar="FILE",
                      help="The kubeconfig file (env KUBECONFIG; default ~/.kube/config or "
                           "in-cluster).", commands=frozenset({"run", "resume", "logs", "delete"})),
        BackendOption("--context", "context", metavar="NAME", help="The kubeconfig context.",
                      commands=frozenset({"run", "resume", "logs", "delete"})),
        BackendOption("--push-address", "push_address", metavar="HOST:PORT", parse=_push_address,
                      help="Where the push-metrics endpoint listens (default 127.0.0.1, "
                           "any free port)."),
        BackendOption("--push-url", "push_url", metavar="URL",
                      help="The push endpoint's URL as pods reach it (default: from "
                           "--push-address)."),
        BackendOption("--container-start-timeout", "container_start_timeout", metavar="SECONDS", parse=_seconds,
                      help="How long a trial's container may wait in ErrImagePull, "
                           "ImagePullBackOff, CreateContainerConfigError or CreateContainerError before the trial "
                           "fails (default 120)."),
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
        container_start_timeout: float = 120.0,
        api_client: Any = None,
    ) -> None:
        self.kubeconfig, self.context, self.namespace = kubeconfig, context, namespace
        self.push_host, self.push_port, self.push_url = push_host, push_port, push_url
        self.propagation_policy = propagation_policy
        self.watch_timeout = watch_timeout
        self.max_log_streams = max_log_streams
        self.retry_seconds = retry_seconds
        self.container_start_timeout = container_start_timeout
        self._stop = threading.Event()
        self._kube = KubeApi(kubeconfig, context, max_connections=max(max_log_streams, 0) + 32,
                             retry_seconds=retry_seconds, stop=self._stop, api_client=api_client)
        self._events: queue.Queue[TrialEvent] = queue.Queue()
        self._logs = PodLogs(self._kube, self._events, max_log_streams, log_poll_seconds, pod_of=self._watched_pod)
        self._trials: dict[str, TrackedTrial] = {}
        self._pods: dict[str, dict[str, dict[str, Any]]] = {}  # trial name -> pod name -> pod
        self._lock = threading.RLock()
        self._pool: ThreadPoolExecutor | None = None
        self._objects = ClusterObjects(self._kube, propagation_policy)
        self._templates = TrialTemplates(self._kube, self._namespace)
        self._watches = Watches(self._kube, watch_timeout, trials=self._trials, lock=self._lock,
                                on_object=self._on_object, on_pod=self._on_pod, on_error=self._fail)
        self._push = PushEndpoint(push_host, push_port, push_url, trials=self._trials, lock=self._lock,
                                  token=self._objects.token, events=self._events)
        self._error: BaseException | None = None

    def _namespace(self, experiment: Experiment) -> str:
        """--namespace, else the experiment's metadata.namespace, else the kubeconfig context's, else default."""
        self._kube.client()
        return self.namespace or experiment.metadata.namespace or self._kube.context_namespace or "default"

    def check(self, experiment: Experiment) -> list[str]:
        return check_trial_template(experiment)

    # lifecycle ---------------------------------------------------------------------------
    def start(self, job: TrialJob) -> dict[str, Any]:
        self._raise_background_error()
        experiment = job.experiment
        namespace = self._namespace(experiment)
        owner = self._objects.owner(experiment, namespace)
        template = self._templates.template(experiment)
        resource = self._templates.resource(template)
        env = {PUSH_URL_ENV: self._push.url(), PUSH_TOKEN_ENV: self._objects.token(namespace, experiment.name)}
        owner_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],
                     "uid": owner["metadata"]["uid"]}
        try:
            worker = build_worker(experiment, job.trial.name, job.trial.assignments, namespace=namespace,
                                  template=template if experiment.spec.trial_template.trial_spec is None else None,  # type: ignore[union-attr]
                                  trial_labels=job.trial.labels, owner=owner_ref, env=env)
        except (TypeError, ValueError) as exc:
            raise TrialStartError(f"invalid trial template: {exc}") from None
        trial = self._track(job, worker, resource, namespace, replay=False)
        try:
            created = self._objects.create(trial, worker)
        except TrialStartError:
            with self._lock:
                self._trials.pop(trial.name, None)
            raise
        trial.uid = created["metadata"].get("uid")
        trial.created_at = time.monotonic()
        return {"backend": self.name, "namespace": namespace, "apiVersion": resource.api_version,
                "kind": resource.kind, "name": trial.name, "uid": trial.uid, "pushPort": self._push.port}

    def _track(self, job: TrialJob, worker: dict[str, Any], resource: Resource, namespace: str, *,
               replay: bool) -> TrackedTrial:
        """Register a trial before its object exists, so no watch event about it is missed.

        ``replay``: the trial is being re-attached, its pushed records are kept for :meth:`PushEndpoint.replay`; else
        they are dropped with the old log.
        """
        trial = TrackedTrial.for_job(job, worker, resource, namespace, attaching=replay)
        job.trial_dir.mkdir(parents=True, exist_ok=True)
        (job.trial_dir / STDOUT_LOG).unlink(missing_ok=True)
        if not replay:
            (job.trial_dir / PUSHED_FILE).unlink(missing_ok=True)
        with self._lock:
            self._trials[trial.name] = trial
        self._push.start()
        if self._pool is None:  # before the first watch thread, whose events submit to it
            self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="katibx-k8s")
        self._watches.start(namespace, job.experiment.name, resource)
        if trial.selector.startswith(TRIAL_LABEL + "="):
            self._watches.start(namespace, job.experiment.name, None)
        return trial

    def delete_experiment(self, experiment: Experiment, handles: list[dict[str, Any]]) -> str:
        """Delete the experiment's owner ConfigMap in each namespace its trials used, with Background propagation, so
        the API server's garbage collector deletes every trial object (and their pods).

        Raises :class:`KubernetesClusterError` when the cluster cannot be reached or refuses the deletion.
        """
        namespaces = sorted({str(h.get("namespace") or "default") for h in handles})
        if not namespaces:
            return ""
        self._kube.retry_seconds = min(self.retry_seconds, DELETE_RETRY_SECONDS)  # one-shot calls: fail fast
        deleted = self._objects.delete_owners(experiment.name, namespaces)
        if not deleted:
            return ""
        return f"its Kubernetes objects in namespace {', '.join(deleted)} are being garbage-collected"

    # watch events ------------------------------------------------------------------------
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
            self._check_start(trial, pod)
            self._logs.maybe_follow(trial, pod)

    def _check_start(self, trial: TrackedTrial, pod: dict[str, Any]) -> None:
        """Fail a trial whose pod cannot start: at once for a malformed image name, else once a container has waited
        ``container_start_timeout`` seconds in ErrImagePull, ImagePullBackOff, CreateContainerConfigError or
        CreateContainerError (the kubelet retries those for ever; a registry may come back, a missing ConfigMap
        may be created). Its object is deleted even when retained: the kubelet would go on retrying."""
        pod_name = pod["metadata"]["name"]
        stuck = cannot_start(pod) if not (pod["metadata"].get("deletionTimestamp")) else None
        with trial.lock:
            if stuck is None:
                trial.stuck_since.pop(pod_name, None)
                timer = trial.start_timers.pop(pod_name, None)
                if timer is not None:
                    timer.cancel()
                return
            since = trial.stuck_since.setdefault(pod_name, time.monotonic())
            waited = time.monotonic() - since
            if stuck[0] not in NEVER_STARTS and waited < self.container_start_timeout:
                if pod_name not in trial.start_timers:
                    timer = threading.Timer(self.container_start_timeout - waited + 0.05, self._recheck_start,
                                            args=(trial, pod_name))
                    timer.daemon = True
                    trial.start_timers[pod_name] = timer
                    timer.start()
                return
        note = "" if stuck[0] in NEVER_STARTS else f" (waited {waited:.0f} s)"
        self._end(trial, False, {"reason": stuck[0], "message": f"pod {pod_name}: {stuck[1]}{note}"}, delete=True)

    def _recheck_start(self, trial: TrackedTrial, pod_name: str) -> None:
        """The start timeout of a waiting pod is over: judge it again as last watched."""
        with trial.lock:
            trial.start_timers.pop(pod_name, None)
        with self._lock:
            pod = self._pods.get(trial.name, {}).get(pod_name)
        if pod is not None and not self._stop.is_set():
            self._check_start(trial, pod)

    def _end(self, trial: TrackedTrial, succeeded: bool, condition: dict[str, Any], *, delete: bool = False) -> None:
        """Finish a trial for a reason its object does not show (once; a finishing trial is left alone); ``delete``
        its object even when the trial is retained."""
        with self._lock:
            if trial.finishing or trial.killed or self._stop.is_set() or self._trials.get(trial.name) is not trial:
                return  # (a killed trial ends as Killed once its object is gone)
            trial.finishing = True
            assert self._pool is not None
            self._pool.submit(self._finish, trial, succeeded, condition, False, delete)

    def _watched_pod(self, trial: TrackedTrial, pod_name: str) -> dict[str, Any] | None:
        """A trial's pod as last watched (None once deleted)."""
        with self._lock:
            return self._pods.get(trial.name, {}).get(pod_name)

    def _finish(self, trial: TrackedTrial, succeeded: bool, condition: dict[str, Any], deleted: bool,
                delete: bool = False) -> None:
        """Collect the last metrics, delete the object unless retained (or with ``delete``), then report the exit."""
        reason = str(condition.get("reason") or ("Completed" if succeeded else "Failed"))
        message = str(condition.get("message") or condition.get("type") or condition.get("phase") or reason)
        try:
            if not deleted and (trial.stdout or trial.file_parser):
                with self._lock:
                    pods = list(self._pods.get(trial.name, {}).values())
                self._logs.read_remaining(trial, pods)
            if not deleted and (delete or not trial.retain):
                self._objects.delete(trial)
        except Exception as exc:  # noqa: BLE001 - the trial's exit must be reported whatever happens
            log.warning("trial %s: %s", trial.name, exc)
            if isinstance(exc, KubernetesClusterError):
                self._fail(exc)
        trial.cancel_timers()
        write_log(trial)
        if succeeded and trial.errors:
            succeeded, reason, message = False, "MetricsCollectorError", f"metrics collection failed: {trial.errors[0]}"
        with self._lock:
            self._trials.pop(trial.name, None)
            self._pods.pop(trial.name, None)
        self._events.put(TrialExited(trial.name, succeeded, reason, message))

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

    def _fail(self, exc: BaseException) -> None:
        """Keep an error of a background thread (a watch, a finishing trial) for the next start or poll to raise."""
        self._error = exc

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
            self._objects.delete(trial)
        except Exception as exc:  # noqa: BLE001 - reported as the trial's exit below
            log.warning("trial %s: cannot delete its %s: %s", trial.name, trial.resource.kind, exc)
        else:
            if self._objects.get(trial) is not None:
                return  # the watch reports the deletion once the object is gone
        self._on_object("DELETED", {"metadata": {"name": trial.name}})

    def attach(self, job: TrialJob, handle: dict[str, Any]) -> bool:
        if handle.get("kind") is None or handle.get("name") != job.trial.name:
            return False
        namespace = str(handle.get("namespace") or self._namespace(job.experiment))
        self._objects.owner(job.experiment, namespace)
        template = self._templates.template(job.experiment)
        resource = self._templates.resource(template)
        if (resource.api_version, resource.kind) != (handle.get("apiVersion"), handle.get("kind")):
            return False
        worker = build_worker(job.experiment, job.trial.name, job.trial.assignments, namespace=namespace,
                              template=template if job.experiment.spec.trial_template.trial_spec is None else None)  # type: ignore[union-attr]
        port = handle.get("pushPort")
        self._push.start(port if isinstance(port, int) else None)
        trial = self._track(job, worker, resource, namespace, replay=True)
        existing = self._objects.get(trial)
        if existing is None or (handle.get("uid") and existing["metadata"].get("uid") != handle["uid"]):
            with self._lock:
                self._trials.pop(trial.name, None)
            return False
        trial.uid = existing["metadata"].get("uid")
        trial.created_at = 0.0
        self._push.replay(trial)
        self._on_object("MODIFIED", existing)
        return True

    def release(self, handle: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        if not handle.get("kind") or not handle.get("name"):
            return
        resource = self._templates.resource({"apiVersion": handle.get("apiVersion"), "kind": handle["kind"]})
        stub = WorkerRef(str(handle["name"]), str(handle.get("namespace") or "default"), resource)
        try:
            existing = self._objects.get(stub)
            if existing is not None and (not handle.get("uid") or existing["metadata"].get("uid") == handle["uid"]):
                self._objects.delete(stub)
        except ApiException as exc:
            log.warning("cannot delete %s %s: %s", resource.kind, stub.name, api_message(exc))

    def trial_logs(self, handle: dict[str, Any]) -> str:
        """The current logs of a trial's pods, from its stored handle (for ``katibx logs`` while it runs)."""
        return read_pod_logs(self._kube, handle)

    def render(self, experiment: Experiment, trials: list[TrialRecord], namespace: str | None) -> list[dict[str, Any]]:
        """The worker objects these trials would get (no cluster: no owner reference, no push address)."""
        return render_workers(experiment, trials, namespace)

    def settings(self) -> dict[str, Any]:
        """The cluster this run used, pinned: the kubeconfig as an absolute path and the context it was current in,
        so a resume from another folder or after ``kubectl config use-context`` reaches the same cluster."""
        kubeconfig = os.path.abspath(os.path.expanduser(self.kubeconfig)) if self.kubeconfig else None
        kept = {"kubeconfig": kubeconfig, "context": self.context or current_context(kubeconfig),
                "namespace": self.namespace, "push_url": self.push_url}
        if self.push_host != "127.0.0.1":
            kept["push_host"] = self.push_host
        return {k: v for k, v in kept.items() if v is not None}

    @classmethod
    def merge_settings(cls, stored: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """A kubeconfig given now comes with its own contexts: the stored context stays only if one is given too."""
        if "kubeconfig" in given and "context" not in given:
            stored = {k: v for k, v in stored.items() if k != "context"}
        return {**stored, **given}

    def close(self) -> None:
        with self._lock:
            running = [t for t in self._trials.values() if not t.finishing]
            for trial in self._trials.values():
                trial.cancel_timers()
        for trial in running:
            trial.killed = True
            try:
                self._objects.delete(trial)
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                log.warning("trial %s: cannot delete its %s: %s", trial.name, trial.resource.kind, exc)
        self._stop.set()
        self._logs.close()
        self._watches.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._push.close()

