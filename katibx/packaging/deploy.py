"""Deployers (fairing's job deployers): a pushed image run once on a Kubernetes cluster, as a ``batch/v1`` Job or a
Kubeflow ``PyTorchJob``, pinned to its digest; the primary pod's log is followed until the job ends. Through the
official ``kubernetes`` client (``pip install 'katibx[kubernetes]'``), from a kubeconfig or inside a cluster."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

KINDS = ("job", "pytorchjob")
CONTAINERS = {"Job": "main", "PyTorchJob": "pytorch"}  # the container that runs the image (the operator's name)
DEPLOYMENT_LABEL = "katibx.io/deployment"  # on every pod template: the deployment's name (found by its pods)
PRIMARY_LABEL = "katibx.io/primary"  # on the pod template whose log is followed (a PyTorchJob's Master)
# Waiting reasons of a container that will never start, and those the kubelet retries (failed after start_timeout).
NEVER_STARTS = frozenset({"InvalidImageName", "ErrImageNeverPull"})
CANNOT_START = NEVER_STARTS | {"ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError",
                               "CreateContainerError", "FailedCreate"}  # the last: its pod cannot be created
WATCH_SECONDS = 5  # a pod watch's length: the object's own end is looked at between two
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class DeployError(RuntimeError):
    """A deployment that could not be made or followed: the cluster, the API's refusal, its configuration."""


@dataclass
class Deployment:
    """What ran: the object and how it ended (``reason``: its condition's, or why its pod could not start);
    ``deleted`` when it is gone (it succeeded, or its pod could not start), else kept for inspection."""

    kind: str
    name: str
    namespace: str
    succeeded: bool
    reason: str = ""
    deleted: bool = False


def manifest(kind: str, image: str, *, name: str, namespace: str, command: Sequence[str] = (),
             args: Sequence[str] = (), workers: int = 0, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The object named ``name`` that runs ``image`` once: a Job (no retry) or a PyTorchJob with a Master and
    ``workers`` Workers. The container runs ``command`` (the image's: Kubernetes replaces an image's Cmd with
    ``args`` unless the command is given) followed by ``args``, or without either the image's own command. No
    service-mesh sidecar is injected (it would keep the job from ending, as Katib and fairing also say)."""
    if kind not in KINDS:
        raise DeployError(f"--deploy: {kind!r} is not a kind to deploy ({', '.join(KINDS)})")
    object_kind = "Job" if kind == "job" else "PyTorchJob"
    meta = {"name": name, "namespace": namespace}

    def pod(primary: bool) -> dict[str, Any]:
        container: dict[str, Any] = {"name": CONTAINERS[object_kind], "image": image}
        if args:
            if command:
                container["command"] = list(command)
            container["args"] = list(args)
        if env:
            container["env"] = [{"name": key, "value": value} for key, value in env.items()]
        labels = {DEPLOYMENT_LABEL: name, **({PRIMARY_LABEL: "true"} if primary else {})}
        return {"metadata": {"labels": labels, "annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": {"restartPolicy": "Never", "containers": [container]}}

    if object_kind == "Job":
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
                "spec": {"backoffLimit": 0, "template": pod(True)}}
    replicas: dict[str, Any] = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": pod(True)}}
    if workers:
        replicas["Worker"] = {"replicas": workers, "restartPolicy": "Never", "template": pod(False)}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": meta,
            "spec": {"pytorchReplicaSpecs": replicas}}


class Deployer:
    """Creates a deployment's object and follows it to its end; configured with the cluster to use (a kubeconfig
    and context, else ``$KUBECONFIG`` or ``~/.kube/config``, else the pod's service account inside a cluster) and
    how long a pod may wait for an image it cannot pull."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, start_timeout: float = 300.0) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.start_timeout = start_timeout
        self._client: Any = None

    def namespace(self) -> str:
        """The current context's namespace (in a cluster: the pod's), else ``default``, as kubectl."""
        from kubernetes import config

        if self._in_cluster():
            try:
                return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
            except OSError:
                return "default"
        try:
            contexts, active = config.list_kube_config_contexts(config_file=self._kubeconfig())
        except Exception as exc:  # noqa: BLE001 - the client raises anything for a malformed file (yaml, keys)
            raise DeployError(f"--kubeconfig: cannot load the Kubernetes configuration: {exc}") from None
        if self.context:
            active = next((c for c in contexts if c.get("name") == self.context), active)
        return str(((active or {}).get("context") or {}).get("namespace") or "default")

    def run(self, body: dict[str, Any], on_log: Callable[[str], None],
            on_created: Callable[[], None] = lambda: None) -> Deployment:
        """Create ``body`` (then call ``on_created``), pass each line its primary pod prints to ``on_log`` and wait
        for its end. One that succeeded is deleted (its log was shown), one whose pod cannot start or be created
        too (else the kubelet or the job controller would retry for ever), a failed one is kept for inspection."""
        created = self._call("create", lambda: self._create(body))
        on_created()
        meta = created["metadata"]
        kind, name, namespace = body["kind"], meta["name"], meta["namespace"]
        started = self._call("wait for", lambda: self._started_pod(kind, name, namespace, str(meta["uid"])))
        if isinstance(started, Deployment):
            deployment = started
        else:
            self._call("read the log of", lambda: self._follow(started, namespace, CONTAINERS[kind], on_log))
            deployment = self._call("wait for", lambda: self._finished(kind, name, namespace))
        if deployment.succeeded or deployment.reason.partition(":")[0] in CANNOT_START:
            self._call("delete", lambda: self._delete(kind, name, namespace))
            deployment.deleted = True
        return deployment

    # ------------------------------------------------------------------ the API
    def _kubeconfig(self) -> str | None:
        return self.kubeconfig or os.environ.get("KUBECONFIG") or None

    def _in_cluster(self) -> bool:
        """No kubeconfig named, none at ``~/.kube/config``, in a pod: its service account (a kubeconfig that is
        named but missing is an error, not a reason to take the pod's)."""
        return self._kubeconfig() is None and not os.path.exists(os.path.expanduser("~/.kube/config")) and \
            bool(os.environ.get("KUBERNETES_SERVICE_HOST"))

    def _api(self) -> Any:
        if self._client is None:
            from kubernetes import client, config

            try:
                if self._in_cluster():
                    config.load_incluster_config()
                    self._client = client.ApiClient()
                else:
                    self._client = config.new_client_from_config(config_file=self._kubeconfig(), context=self.context)
            except Exception as exc:  # noqa: BLE001 - the client raises anything for a malformed file (yaml, keys)
                raise DeployError(f"--kubeconfig: cannot load the Kubernetes configuration: {exc}") from None
        return self._client

    def _call(self, what: str, action: Callable[[], Any]) -> Any:
        """``action`` with the API's refusals and an unreachable cluster as one-line DeployErrors."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return action()
        except DeployError:
            raise
        except ApiException as exc:
            raise DeployError(f"cannot {what} the deployment: {exc.status} {exc.reason}: {_api_message(exc)}") from None
        except (HTTPError, OSError) as exc:
            host = self._api().configuration.host
            raise DeployError(f"the cluster at {host} cannot be reached: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the client's own faults (a cut watch line, a failed token refresh)
            raise DeployError(f"cannot {what} the deployment: {type(exc).__name__}: {exc}") from None

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        from kubernetes import client

        namespace = body["metadata"]["namespace"]
        if body["kind"] == "Job":
            created = client.BatchV1Api(self._api()).create_namespaced_job(namespace, body)
            return dict(self._api().sanitize_for_serialization(created))
        return dict(client.CustomObjectsApi(self._api()).create_namespaced_custom_object(
            "kubeflow.org", "v1", namespace, "pytorchjobs", body))

    def _started_pod(self, kind: str, name: str, namespace: str, uid: str) -> str | Deployment:
        """The primary pod's name once its container runs or ended; the object's end when it ended without one
        (a pod refused, an init container failed); a failed Deployment when the pod cannot start (at once for a
        reason no retry can mend, else after ``start_timeout`` seconds of such waiting). A pod that only waits
        (Pending for a node, a large image pulling) is waited for."""
        from kubernetes import client, watch

        pods = client.CoreV1Api(self._api())
        selector = f"{DEPLOYMENT_LABEL}={name},{PRIMARY_LABEL}=true"
        container_name = CONTAINERS[kind]
        waited_since: float | None = None
        no_pod_since, seen = time.monotonic(), False
        while True:
            ended = self._ended(kind, name, namespace)
            for event in watch.Watch().stream(pods.list_namespaced_pod, namespace, label_selector=selector,
                                              timeout_seconds=WATCH_SECONDS):
                pod = event["object"]
                if not any(ref.uid == uid for ref in (pod.metadata.owner_references or [])):
                    continue  # a pod of an earlier deployment of that name, still going away
                seen = True
                status = next((s for s in (pod.status.container_statuses or []) if s.name == container_name), None) \
                    if pod.status else None
                state = status.state if status is not None else None
                if state is not None and (state.running or state.terminated):
                    return str(pod.metadata.name)
                waiting = state.waiting if state is not None else None
                if waiting is not None and waiting.reason in CANNOT_START:
                    waited_since = waited_since or time.monotonic()
                    if waiting.reason in NEVER_STARTS or time.monotonic() - waited_since > self.start_timeout:
                        return Deployment(kind, name, namespace, False,
                                          f"{waiting.reason}: {waiting.message or waiting.reason}")
                else:
                    waited_since = None
            if ended is not None:
                return ended
            if not seen and time.monotonic() - no_pod_since > self.start_timeout:
                return Deployment(kind, name, namespace, False, f"FailedCreate: {self._why_no_pod(namespace, uid)}")

    def _why_no_pod(self, namespace: str, uid: str) -> str:
        """What the events of the object say about the pods it could not create (quota, admission...)."""
        from kubernetes import client

        try:
            events = client.CoreV1Api(self._api()).list_namespaced_event(
                namespace, field_selector=f"involvedObject.uid={uid}").items
        except Exception:  # noqa: BLE001 - the events are an explanation, not the verdict
            events = []
        found = [e.message for e in events if e.reason == "FailedCreate" and e.message]
        return found[-1] if found else f"no pod was created within {self.start_timeout:g} s"

    def _ended(self, kind: str, name: str, namespace: str) -> Deployment | None:
        """The object's end as its conditions say (Job: Complete/Failed; PyTorchJob: Succeeded/Failed), or None."""
        from kubernetes import client

        if kind == "Job":
            obj = client.BatchV1Api(self._api()).read_namespaced_job(name, namespace)
            status = self._api().sanitize_for_serialization(obj.status) or {}
        else:
            obj = client.CustomObjectsApi(self._api()).get_namespaced_custom_object(
                "kubeflow.org", "v1", namespace, "pytorchjobs", name)
            status = obj.get("status") or {}
        return _end_of(kind, name, namespace, status)

    def _follow(self, pod: str, namespace: str, container: str, on_log: Callable[[str], None]) -> None:
        from kubernetes import client

        response = client.CoreV1Api(self._api()).read_namespaced_pod_log(pod, namespace, container=container,
                                                                         follow=True, _preload_content=False)
        try:
            pending = b""
            for chunk in response.stream(4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    on_log(line.decode(errors="replace"))
            if pending:
                on_log(pending.decode(errors="replace"))
        finally:
            response.release_conn()

    def _finished(self, kind: str, name: str, namespace: str) -> Deployment:
        """Wait for the object's end (its log has ended: the end is near)."""
        from kubernetes import client, watch

        if kind == "Job":
            lister: Any = client.BatchV1Api(self._api()).list_namespaced_job
            args: tuple[Any, ...] = (namespace,)
        else:
            lister = client.CustomObjectsApi(self._api()).list_namespaced_custom_object
            args = ("kubeflow.org", "v1", namespace, "pytorchjobs")
        while True:
            ended = self._ended(kind, name, namespace)  # gone: a one-line 404
            if ended is not None:
                return ended
            for event in watch.Watch().stream(lister, *args, field_selector=f"metadata.name={name}",
                                              timeout_seconds=300):
                if event["type"] == "DELETED":
                    raise DeployError(f"{kind.lower()}/{name} was deleted before it ended")
                obj = event["object"]
                status = obj.get("status") if isinstance(obj, dict) else \
                    self._api().sanitize_for_serialization(obj.status)
                ended = _end_of(kind, name, namespace, status or {})
                if ended is not None:
                    return ended

    def _delete(self, kind: str, name: str, namespace: str) -> None:
        from kubernetes import client

        if kind == "Job":
            client.BatchV1Api(self._api()).delete_namespaced_job(name, namespace, propagation_policy="Background")
        else:
            client.CustomObjectsApi(self._api()).delete_namespaced_custom_object(
                "kubeflow.org", "v1", namespace, "pytorchjobs", name, propagation_policy="Background")


def _end_of(kind: str, name: str, namespace: str, status: dict[str, Any]) -> Deployment | None:
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "Succeeded"):
            return Deployment(kind, name, namespace, True, str(condition.get("reason") or ""))
        if condition.get("type") == "Failed":
            reason = ": ".join(str(part) for part in (condition.get("reason"), condition.get("message")) if part)
            return Deployment(kind, name, namespace, False, reason)
    return None


def _api_message(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message") or "")
    except (TypeError, ValueError, AttributeError):
        return str(exc.body or "")[:200]


__all__ = ["CONTAINERS", "DEPLOYMENT_LABEL", "KINDS", "Deployer", "DeployError", "Deployment", "manifest"]
