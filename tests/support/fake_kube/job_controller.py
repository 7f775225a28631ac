"""The fake Job controller (batch/v1): pods from the template, retries, deadlines and Kubernetes 1.31+ conditions.

Per Job it keeps `min(parallelism, completions - succeeded)` pods active. Like the real controller it puts the
`batch.kubernetes.io/job-tracking` finalizer on every pod it creates, counts a pod into `status.succeeded` or
`status.failed` once (a Terminating pod that has not succeeded counts as failed and is replaced at once, the default
`podReplacementPolicy: TerminatingOrFailed`) and then removes the finalizer, also from pods whose Job is gone. For
restartPolicy OnFailure, container restarts count as failures. It fails the Job with BackoffLimitExceeded when
failures pass `backoffLimit` or DeadlineExceeded after `activeDeadlineSeconds` (deleting its active pods, which
terminate gracefully), and completes it when enough pods succeeded. As the real controller, it first adds the
interim condition (`FailureTarget` or `SuccessCriteriaMet`), and the terminal one (`Failed` or `Complete`) only once
no pod of the Job is still running or terminating. `suspend` and `ttlSecondsAfterFinished` are honoured. Failed
pods are replaced at once (no back-off delay).
"""

from __future__ import annotations

import copy
import sys
import time
from typing import Any, Hashable

from .clock import now_rfc3339, parse_rfc3339
from .conditions import has_condition, set_condition
from .errors import ApiError
from .loop import Controller, ControllerLoop
from .store import Event

TERMINAL = ("Succeeded", "Failed")
TRACKING = "batch.kubernetes.io/job-tracking"
INTERIM = {"FailureTarget": "Failed", "SuccessCriteriaMet": "Complete"}


class JobController(Controller):
    """Reconciles batch/v1 Jobs."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.store = api.store
        self.jobs = self.store.registry.get("batch", "v1", "jobs")
        self.pods = self.store.registry.get("", "v1", "pods")
        self.loop = ControllerLoop("fake-job-controller", self.store, self._keys_of, self._reconcile)

    def _keys_of(self, event: Event) -> list[Hashable]:
        meta = event.obj["metadata"]
        if event.rtype is self.jobs:
            return [("job", meta["namespace"], meta["name"])]
        if event.rtype is self.pods:
            keys: list[Hashable] = [("job", meta["namespace"], ref["name"])
                                    for ref in meta.get("ownerReferences") or []
                                    if ref.get("kind") == "Job" and ref.get("controller")]
            if event.type != "DELETED" and TRACKING in (meta.get("finalizers") or ()):
                keys.append(("pod", meta["namespace"], meta["name"]))
            return keys
        return []

    def _reconcile(self, key: Hashable) -> None:
        what, namespace, name = key  # type: ignore[misc]
        if what == "pod":
            self._release_orphan(namespace, name)
        else:
            self._reconcile_job(namespace, name)

    def _release_orphan(self, namespace: str, name: str) -> None:
        """Remove the tracking finalizer of a pod whose Job is gone (nobody else will count it)."""
        pod = self.store.find(self.pods, namespace, name)
        if pod is None or TRACKING not in (pod["metadata"].get("finalizers") or ()):
            return
        refs = [ref for ref in pod["metadata"].get("ownerReferences") or [] if ref.get("kind") == "Job"
                and ref.get("controller")]
        jobs = [self.store.by_uid(str(ref.get("uid"))) for ref in refs]
        if not any(found is not None for found in jobs):
            self._release(pod)

    def _reconcile_job(self, namespace: str, name: str) -> None:
        job = self.store.find(self.jobs, namespace, name)
        if job is None:
            return
        spec, status = job.get("spec", {}), copy.deepcopy(job.get("status") or {})
        uid = job["metadata"]["uid"]
        pods = [pod for rtype, pod in self.store.owned(uid) if rtype is self.pods and any(
            ref.get("uid") == uid and ref.get("controller") for ref in pod["metadata"].get("ownerReferences", []))]
        newly = [pod for pod in pods if TRACKING in (pod["metadata"].get("finalizers") or ()) and _finished(pod)]
        if newly:
            for pod in newly:
                field = "succeeded" if pod.get("status", {}).get("phase") == "Succeeded" else "failed"
                status[field] = int(status.get(field) or 0) + 1
        active = [pod for pod in pods if not _finished(pod)]
        running = [pod for pod in pods if pod.get("status", {}).get("phase") not in TERMINAL]  # incl. terminating
        counts = {"succeeded": int(status.get("succeeded") or 0), "failed": int(status.get("failed") or 0),
                  "terminating": len(running) - len(active)}
        if job["metadata"].get("deletionTimestamp") or any(
                has_condition(status, terminal) for terminal in INTERIM.values()):
            if newly:
                self._write(namespace, name, status, dict(counts, active=0))
            self._release_all(newly)
            if not job["metadata"].get("deletionTimestamp"):
                self._expire_finished(job)
            return
        failed = counts["failed"]
        if spec.get("template", {}).get("spec", {}).get("restartPolicy") == "OnFailure":
            failed += sum(c.get("restartCount", 0) for pod in active
                          for c in pod.get("status", {}).get("containerStatuses") or [])
        suspended = bool(spec.get("suspend"))
        if not suspended and not status.get("startTime"):
            status["startTime"] = now_rfc3339()
        completions = spec.get("completions") or spec.get("parallelism", 1)
        interim = next((kind for kind in INTERIM if has_condition(status, kind)), None)
        if interim is None:
            failure = None
            if failed > int(spec.get("backoffLimit", 6)):
                failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            deadline = spec.get("activeDeadlineSeconds")
            if failure is None and deadline is not None and status.get("startTime") and not suspended:
                remaining = parse_rfc3339(status["startTime"]) + int(deadline) - time.time()
                if remaining <= 0:
                    failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
                else:
                    self.loop.after(remaining + 0.01, ("job", namespace, name))
            if failure is not None:
                interim = "FailureTarget"
                set_condition(status, interim, "True", *failure)
            elif counts["succeeded"] >= completions:
                interim = "SuccessCriteriaMet"
                set_condition(status, interim, "True", "CompletionsReached", "Reached expected number of succeeded pods")
            if interim is not None:
                for pod in active:
                    self._delete_pod(pod)
                counts["terminating"] += len(active)
                active = []
        if interim is not None:
            self._write(namespace, name, status, dict(counts, active=0))
            self._release_all(newly)
            if not running:
                self._finish(namespace, name, status, counts, interim)
            return
        if suspended:
            for pod in active:
                self._delete_pod(pod)
            counts["terminating"] += len(active)
            active = []
        else:
            wanted = min(int(spec.get("parallelism", 1)), completions - counts["succeeded"])
            for _ in range(wanted - len(active)):
                created = self._create_pod(job)
                if created is not None:
                    active.append(created)
        self._write(namespace, name, status, dict(counts, active=len(active), ready=sum(
            1 for pod in active if pod.get("status", {}).get("phase") == "Running")))
        self._release_all(newly)

    def _write(self, namespace: str, name: str, status: dict[str, Any], counts: dict[str, int]) -> None:
        """Store the Job's status with its pod counters (zero counters omitted, as the server does)."""
        for field in ("active", "succeeded", "failed"):
            if counts.get(field):
                status[field] = counts[field]
            else:
                status.pop(field, None)
        status["ready"] = counts.get("ready", 0)
        status["terminating"] = counts.get("terminating", 0)
        status["uncountedTerminatedPods"] = {}

        def mutate(job: dict[str, Any]) -> None:
            job["status"] = status

        try:
            self.store.update(self.jobs, namespace, name, mutate, subresource="status")
        except ApiError:
            pass

    def _finish(self, namespace: str, name: str, status: dict[str, Any], counts: dict[str, int], interim: str) -> None:
        """The terminal condition after the interim one (no pod left running), with completionTime for success."""
        interim_condition = next(c for c in status.get("conditions", []) if c.get("type") == interim)
        status = copy.deepcopy(status)
        terminal = INTERIM[interim]
        set_condition(status, terminal, "True", interim_condition.get("reason", ""), interim_condition.get("message", ""))
        if terminal == "Complete":
            status["completionTime"] = now_rfc3339()
        self._write(namespace, name, status, dict(counts, active=0, terminating=0))
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
            self.loop.after(remaining + 0.01, ("job", meta["namespace"], meta["name"]))
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
                            "finalizers": [TRACKING],
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

    def _release_all(self, pods: list[dict[str, Any]]) -> None:
        """Remove the tracking finalizer of pods now counted in the Job's status."""
        for pod in pods:
            self._release(pod)

    def _release(self, pod: dict[str, Any]) -> None:
        try:
            self.store.remove_finalizer(self.pods, pod, TRACKING)
        except ApiError:
            pass

    def _delete_pod(self, pod: dict[str, Any]) -> None:
        try:
            self.store.delete(self.pods, pod["metadata"]["namespace"], pod["metadata"]["name"], "Background")
        except ApiError:
            pass


def _finished(pod: dict[str, Any]) -> bool:
    """Whether the controller counts a pod as done: terminal, or Terminating without having succeeded."""
    phase = pod.get("status", {}).get("phase")
    return phase in TERMINAL or bool(pod["metadata"].get("deletionTimestamp"))
