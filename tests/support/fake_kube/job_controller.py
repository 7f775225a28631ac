"""The fake Job controller (batch/v1): pods from the template, retries, deadlines and Kubernetes 1.31+ conditions.

Per Job it keeps `min(parallelism, completions - succeeded)` pods active, counts Succeeded/Failed pods (and, for
restartPolicy OnFailure, container restarts as failures), fails the Job with BackoffLimitExceeded when failures
pass `backoffLimit` or DeadlineExceeded after `activeDeadlineSeconds` (deleting its active pods), and completes it
when enough pods succeeded. As the real controller, it first adds the interim condition (`FailureTarget` or
`SuccessCriteriaMet`) in one update and then the terminal one (`Failed` or `Complete`) in the next.
`suspend` and `ttlSecondsAfterFinished` are honoured. Failed pods are replaced at once (no back-off delay).
"""

from __future__ import annotations

import copy
import sys
import time
from typing import Any, Hashable

from .clock import now_rfc3339, parse_rfc3339
from .conditions import has_condition, set_condition
from .errors import ApiError
from .loop import ControllerLoop
from .store import Event

TERMINAL = ("Succeeded", "Failed")


class JobController:
    """Reconciles batch/v1 Jobs."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.store = api.store
        self.jobs = self.store.registry.get("batch", "v1", "jobs")
        self.pods = self.store.registry.get("", "v1", "pods")
        self.loop = ControllerLoop("fake-job-controller", self.store, self._keys_of, self._reconcile)

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()

    def _keys_of(self, event: Event) -> list[Hashable]:
        if event.rtype is self.jobs:
            return [(event.obj["metadata"]["namespace"], event.obj["metadata"]["name"])]
        if event.rtype is self.pods:
            return [(event.obj["metadata"]["namespace"], ref["name"])
                    for ref in event.obj["metadata"].get("ownerReferences") or []
                    if ref.get("kind") == "Job" and ref.get("controller")]
        return []

    def _reconcile(self, key: Hashable) -> None:
        namespace, name = key  # type: ignore[misc]
        job = self.store.find(self.jobs, namespace, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        spec, status = job.get("spec", {}), copy.deepcopy(job.get("status") or {})
        if has_condition(status, "Complete") or has_condition(status, "Failed"):
            self._expire_finished(job)
            return
        uid = job["metadata"]["uid"]
        pods = [pod for rtype, pod in self.store.owned(uid) if rtype is self.pods and any(
            ref.get("uid") == uid and ref.get("controller") for ref in pod["metadata"].get("ownerReferences", []))]
        active = [pod for pod in pods if pod.get("status", {}).get("phase") not in TERMINAL]
        succeeded = sum(1 for pod in pods if pod.get("status", {}).get("phase") == "Succeeded")
        failed = sum(1 for pod in pods if pod.get("status", {}).get("phase") == "Failed")
        if spec.get("template", {}).get("spec", {}).get("restartPolicy") == "OnFailure":
            failed += sum(c.get("restartCount", 0) for pod in active
                          for c in pod.get("status", {}).get("containerStatuses") or [])
        suspended = bool(spec.get("suspend"))
        if not suspended and not status.get("startTime"):
            status["startTime"] = now_rfc3339()
        completions = spec.get("completions") or spec.get("parallelism", 1)
        failure = None
        if failed > int(spec.get("backoffLimit", 6)):
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        deadline = spec.get("activeDeadlineSeconds")
        if failure is None and deadline is not None and status.get("startTime") and not suspended:
            remaining = parse_rfc3339(status["startTime"]) + int(deadline) - time.time()
            if remaining <= 0:
                failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
            else:
                self.loop.after(remaining + 0.01, key)
        counts = {"succeeded": succeeded, "failed": failed}
        if failure is not None:
            for pod in active:
                self._delete_pod(pod)
            self._finish(namespace, name, status, counts, "FailureTarget", "Failed", *failure)
        elif succeeded >= completions:
            self._finish(namespace, name, status, counts, "SuccessCriteriaMet", "Complete", "CompletionsReached",
                         "Reached expected number of succeeded pods")
        else:
            if suspended:
                for pod in active:
                    self._delete_pod(pod)
                active = []
            else:
                wanted = min(int(spec.get("parallelism", 1)), completions - succeeded)
                for _ in range(wanted - len(active)):
                    created = self._create_pod(job)
                    if created is not None:
                        active.append(created)
            self._write(namespace, name, status, dict(counts, active=len(active), ready=sum(
                1 for pod in active if pod.get("status", {}).get("phase") == "Running")))

    def _write(self, namespace: str, name: str, status: dict[str, Any], counts: dict[str, int]) -> None:
        """Store the Job's status with its pod counters (zero counters omitted, as the server does)."""
        for field in ("active", "succeeded", "failed"):
            if counts.get(field):
                status[field] = counts[field]
            else:
                status.pop(field, None)
        status["ready"] = counts.get("ready", 0)
        status["terminating"] = 0
        status["uncountedTerminatedPods"] = {}

        def mutate(job: dict[str, Any]) -> None:
            job["status"] = status

        try:
            self.store.update(self.jobs, namespace, name, mutate, subresource="status")
        except ApiError:
            pass

    def _finish(self, namespace: str, name: str, status: dict[str, Any], counts: dict[str, int], interim: str,
                terminal: str, reason: str, message: str) -> None:
        """The interim condition, then (in a second update) the terminal one with completionTime for success."""
        set_condition(status, interim, "True", reason, message)
        self._write(namespace, name, status, dict(counts, active=0))
        status = copy.deepcopy(status)
        set_condition(status, terminal, "True", reason, message)
        if terminal == "Complete":
            status["completionTime"] = now_rfc3339()
        self._write(namespace, name, status, dict(counts, active=0))
        job = self.store.find(self.jobs, namespace, name)
        if job is not None:
            self._expire_finished(job)

    def _expire_finished(self, job: dict[str, Any]) -> None:
        """Delete a finished Job once ttlSecondsAfterFinished has passed."""
        ttl = job.get("spec", {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        finished = [c.get("lastTransitionTime") for c in job.get("status", {}).get("conditions", [])
                    if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"]
        if not finished:
            return
        meta = job["metadata"]
        remaining = parse_rfc3339(finished[0]) + int(ttl) - time.time()
        if remaining > 0:
            self.loop.after(remaining + 0.01, (meta["namespace"], meta["name"]))
            return
        try:
            self.store.delete(self.jobs, meta["namespace"], meta["name"], "Background")
        except ApiError:
            pass

    def _create_pod(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """A pod `<job>-<random5>` from the template, owned by the Job."""
        meta, template = job["metadata"], job["spec"].get("template", {})
        template_meta = template.get("metadata") or {}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": f"{meta['name']}-", "labels": dict(template_meta.get("labels") or {}),
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                                 "uid": meta["uid"], "controller": True,
                                                 "blockOwnerDeletion": True}]},
               "spec": copy.deepcopy(template.get("spec") or {})}
        if template_meta.get("annotations"):
            pod["metadata"]["annotations"] = dict(template_meta["annotations"])
        try:
            return self.api.create_object(self.pods, meta["namespace"], pod)
        except ApiError as error:
            print(f"fake job controller: cannot create a pod for Job {meta['name']}: {error.message}",
                  file=sys.stderr)
            return None

    def _delete_pod(self, pod: dict[str, Any]) -> None:
        try:
            self.store.delete(self.pods, pod["metadata"]["namespace"], pod["metadata"]["name"], "Background")
        except ApiError:
            pass
