"""A minimal fake Kubeflow training operator for PyTorchJob, TFJob, XGBoostJob, MPIJob (v1), PaddleJob and JAXJob.

Only the primary replica runs: Master, Chief or Launcher, else Worker, one pod `<job>-<type>-0` with the
operator's labels (`training.kubeflow.org/job-name`, `replica-type`, `replica-index`, `job-role: master`) and, for
PyTorch, MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK. Its pod always gets restartPolicy Never, so a failing primary
fails the job at once. Conditions follow the operator: `Created`, `Running`, then `Succeeded` (Running turns
False) or `Failed`; `replicaStatuses`, `startTime`, `completionTime`; `runPolicy.activeDeadlineSeconds` fails the
job with reason DeadlineExceeded. A spec without replica specs, or whose pod is refused by admission, fails.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Hashable

from .clock import now_rfc3339, parse_rfc3339
from .conditions import has_condition, set_condition
from .errors import ApiError
from .loop import Controller, ControllerLoop
from .resources import ResourceType
from .store import Event

REPLICA_FIELDS = {"PyTorchJob": "pytorchReplicaSpecs", "TFJob": "tfReplicaSpecs", "XGBoostJob": "xgbReplicaSpecs",
                  "MPIJob": "mpiReplicaSpecs", "PaddleJob": "paddleReplicaSpecs", "JAXJob": "jaxReplicaSpecs"}
PRIMARY_ORDER = ("Master", "Chief", "Launcher", "Worker")


class TrainingOperator(Controller):
    """Reconciles kubeflow.org/v1 training jobs."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.store = api.store
        self.pods = self.store.registry.get("", "v1", "pods")
        self.types: dict[str, ResourceType] = {}
        for kind in REPLICA_FIELDS:
            rtype = self.store.registry.by_kind("kubeflow.org/v1", kind)
            if rtype is not None:
                self.types[kind] = rtype
        self.loop = ControllerLoop("fake-training-operator", self.store, self._keys_of, self._reconcile)

    def _keys_of(self, event: Event) -> list[Hashable]:
        meta = event.obj["metadata"]
        if event.rtype.group == "kubeflow.org" and self.types.get(event.rtype.kind) is event.rtype:
            return [(event.rtype.kind, meta["namespace"], meta["name"])]
        if event.rtype is self.pods:
            return [(ref["kind"], meta["namespace"], ref["name"]) for ref in meta.get("ownerReferences") or []
                    if ref.get("controller") and ref.get("kind") in self.types
                    and ref.get("apiVersion") == "kubeflow.org/v1"]
        return []

    def _reconcile(self, key: Hashable) -> None:
        kind, namespace, name = key  # type: ignore[misc]
        rtype = self.types[kind]
        job = self.store.find(rtype, namespace, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        status = copy.deepcopy(job.get("status") or {})
        if has_condition(status, "Succeeded") or has_condition(status, "Failed"):
            return
        specs = (job.get("spec") or {}).get(REPLICA_FIELDS[kind]) or {}
        primary = next((r for r in PRIMARY_ORDER if r in specs), next(iter(specs), None))
        if not has_condition(status, "Created"):
            set_condition(status, "Created", "True", f"{kind}Created", f"{kind} {name} is created.", True)
        if primary is None or not isinstance(specs[primary], dict) or "template" not in specs[primary]:
            self._fail(rtype, job, status, f"{kind}Failed", f"{kind} {name} has no replica specs to run")
            return
        status.setdefault("startTime", now_rfc3339())
        deadline = ((job.get("spec") or {}).get("runPolicy") or {}).get("activeDeadlineSeconds")
        if deadline is not None:
            remaining = parse_rfc3339(status["startTime"]) + int(deadline) - time.time()
            if remaining <= 0:
                self._fail(rtype, job, status, "DeadlineExceeded",
                           f"{kind} {name} has failed because it has reached the specified deadline")
                return
            self.loop.after(remaining + 0.01, key)
        uid = job["metadata"]["uid"]
        pods = [pod for pod_type, pod in self.store.owned(uid) if pod_type is self.pods]
        if not pods:
            try:
                pods = [self.api.create_object(self.pods, namespace, self._pod(job, kind, primary, specs[primary]))]
            except ApiError as error:
                self._fail(rtype, job, status, f"{kind}Failed", f"{kind} {name} cannot create its pod: "
                           f"{error.message}")
                return
        phase = pods[0].get("status", {}).get("phase", "Pending")
        counts = {"active": int(phase in ("Pending", "Running")), "succeeded": int(phase == "Succeeded"),
                  "failed": int(phase == "Failed")}
        status["replicaStatuses"] = {replica: ({k: v for k, v in counts.items() if v} if replica == primary else {})
                                     for replica in specs}
        if phase == "Running":
            set_condition(status, "Running", "True", f"{kind}Running", f"{kind} {name} is running.", True)
        elif phase == "Succeeded":
            set_condition(status, "Running", "False", f"{kind}Running", f"{kind} {name} is running.", True)
            set_condition(status, "Succeeded", "True", f"{kind}Succeeded",
                          f"{kind} {name} is successfully completed.", True)
            status["completionTime"] = now_rfc3339()
        elif phase == "Failed":
            self._fail(rtype, job, status, f"{kind}Failed",
                       f"{kind} {name} is failed because 1 {primary} replica(s) failed.")
            return
        self._write(rtype, job, status)

    def _fail(self, rtype: ResourceType, job: dict[str, Any], status: dict[str, Any], reason: str,
              message: str) -> None:
        """Failed condition (Running turns False), completion time, and the job's pods deleted."""
        if any(c.get("type") == "Running" for c in status.get("conditions", [])):
            set_condition(status, "Running", "False", reason, message, True)
        set_condition(status, "Failed", "True", reason, message, True)
        status["completionTime"] = now_rfc3339()
        if reason == "DeadlineExceeded":
            for pod_type, pod in self.store.owned(job["metadata"]["uid"]):
                if pod_type is self.pods and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                    try:
                        self.store.delete(pod_type, pod["metadata"]["namespace"], pod["metadata"]["name"])
                    except ApiError:
                        pass
        self._write(rtype, job, status)

    def _write(self, rtype: ResourceType, job: dict[str, Any], status: dict[str, Any]) -> None:
        status["lastReconcileTime"] = status.get("lastReconcileTime") or now_rfc3339()

        def mutate(obj: dict[str, Any]) -> None:
            obj["status"] = status

        try:
            self.store.update(rtype, job["metadata"]["namespace"], job["metadata"]["name"], mutate,
                              subresource="status")
        except ApiError:
            pass

    def _pod(self, job: dict[str, Any], kind: str, replica: str, spec: dict[str, Any]) -> dict[str, Any]:
        """The primary replica's pod, from its template."""
        meta, template = job["metadata"], copy.deepcopy(spec.get("template") or {})
        template_meta = template.get("metadata") or {}
        labels = dict(template_meta.get("labels") or {})
        labels.update({"training.kubeflow.org/job-name": meta["name"],
                       "training.kubeflow.org/operator-name": f"{kind.lower()}-controller",
                       "training.kubeflow.org/replica-type": replica.lower(),
                       "training.kubeflow.org/replica-index": "0",
                       "training.kubeflow.org/job-role": "master"})
        pod_spec = template.get("spec") or {}
        pod_spec["restartPolicy"] = "Never"
        if kind == "PyTorchJob":
            for container in pod_spec.get("containers") or []:
                env = container.setdefault("env", [])
                names = {entry.get("name") for entry in env}
                for env_name, value in (("MASTER_ADDR", "localhost"), ("MASTER_PORT", "23456"),
                                        ("WORLD_SIZE", "1"), ("RANK", "0"), ("PYTHONUNBUFFERED", "1")):
                    if env_name not in names:
                        env.append({"name": env_name, "value": value})
        pod: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{meta['name']}-{replica.lower()}-0", "labels": labels,
                         "ownerReferences": [{"apiVersion": "kubeflow.org/v1", "kind": kind, "name": meta["name"],
                                              "uid": meta["uid"], "controller": True,
                                              "blockOwnerDeletion": True}]},
            "spec": pod_spec}
        if template_meta.get("annotations"):
            pod["metadata"]["annotations"] = dict(template_meta["annotations"])
        return pod
