"""Defaulting the real server applies on create: Job spec defaults and selector labels, Pod spec defaults and status."""

from __future__ import annotations

from typing import Any

NODE_NAME = "fake-node"


def _container_defaults(container: dict[str, Any]) -> None:
    """terminationMessagePath/Policy and imagePullPolicy, as the server sets them."""
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = str(container.get("image", ""))
    tag = image.rsplit("/", 1)[-1]
    pull = "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent"
    container.setdefault("imagePullPolicy", pull)


def pod_spec_defaults(spec: dict[str, Any]) -> None:
    """Defaults of a PodSpec."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("terminationGracePeriodSeconds", 30)
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            _container_defaults(container)


def job_defaults(job: dict[str, Any], uid: str) -> None:
    """A Job's spec defaults, its selector on the controller uid and the pod template's labels."""
    spec = job.setdefault("spec", {})
    spec.setdefault("backoffLimit", 6)
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    name = job["metadata"].get("name", "")
    if not spec.get("manualSelector"):
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
    labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                   "controller-uid": uid, "job-name": name})
    pod_spec_defaults(spec["template"].setdefault("spec", {}))


def pod_defaults(pod: dict[str, Any]) -> None:
    """A Pod's spec defaults, a node (the fake has one) and the initial Pending status."""
    spec = pod.setdefault("spec", {})
    pod_spec_defaults(spec)
    spec.setdefault("nodeName", NODE_NAME)
    pod["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
