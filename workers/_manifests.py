"""Worker objects for the Kubernetes backend: one per trial, built from the trial template, and the API to reach them.

A trial's object is the rendered template (``${trialParameters.x}`` / ``${trialSpec.*}`` substituted as by the
local backend) with ``metadata.name`` = trial name, the namespace, the labels ``katib.kubeflow.org/experiment`` and
``katib.kubeflow.org/trial`` (also on every pod template, so the trial's pods can be selected), the trial's own
labels, ``KATIB_TRIAL_NAME`` (and the push address, when there is one) in the primary container's env, and an owner
reference to the experiment's owner ConfigMap, so deleting that ConfigMap garbage-collects every trial object.

With a ``File`` metrics collector the primary container's command is wrapped (no sidecar, as Katib wraps it too):
a POSIX ``sh`` runs the original command + args as ``"$@"`` (never re-parsed by a shell), forwards SIGTERM to it,
then prints the metrics file between two markers unique to the trial and exits with the command's exit code, so
the backend finds the file in the pod's log (:func:`file_section`).
"""

from __future__ import annotations

import copy
import hashlib
import shlex
from dataclasses import dataclass
from typing import Any

from katibx.metrics_collector import collector_kind, source_path
from katibx.spec import Experiment
from katibx.template import primary_container, render_trial_spec
from katibx.trial import EXPERIMENT_LABEL, TRIAL_LABEL, TrialRecord
from katibx.trial_dir import TRIAL_NAME_ENV
from katibx.validation import ValidationError

OWNER_LABEL = "katibx.io/owner"  # on the experiment's owner ConfigMap


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API: ``group`` ("" for the core group), ``version`` and ``plural``."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def is_job(self) -> bool:
        """A ``batch/v1`` Job (served by BatchV1Api); everything else goes through CustomObjectsApi."""
        return self.group == "batch" and self.kind == "Job"


# Worker kinds Katib's examples and default install use; other kinds are found by API discovery.
KNOWN_RESOURCES: dict[tuple[str, str], Resource] = {
    (r.api_version, r.kind): r
    for r in (
        Resource("batch", "v1", "jobs", "Job"),
        Resource("kubeflow.org", "v1", "tfjobs", "TFJob"),
        Resource("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"),
        Resource("kubeflow.org", "v1", "xgboostjobs", "XGBoostJob"),
        Resource("kubeflow.org", "v1", "mpijobs", "MPIJob"),
        Resource("kubeflow.org", "v1", "paddlejobs", "PaddleJob"),
        Resource("kubeflow.org", "v2beta1", "mpijobs", "MPIJob"),
        Resource("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"),
        Resource("jobset.x-k8s.io", "v1alpha2", "jobsets", "JobSet"),
        Resource("argoproj.io", "v1alpha1", "workflows", "Workflow"),
        Resource("tekton.dev", "v1beta1", "pipelineruns", "PipelineRun"),
        Resource("tekton.dev", "v1", "pipelineruns", "PipelineRun"),
        Resource("ray.io", "v1", "rayjobs", "RayJob"),
    )
}

# Labels the operators of kinds whose pod templates cannot carry ours put on the pods (``{name}`` = trial name).
OPERATOR_POD_SELECTORS: dict[str, str] = {
    "TrainJob": "jobset.sigs.k8s.io/jobset-name={name}",
    "JobSet": "jobset.sigs.k8s.io/jobset-name={name}",
    "Workflow": "workflows.argoproj.io/workflow={name}",
    "PipelineRun": "tekton.dev/pipelineRun={name}",
}


def known_resource(api_version: str, kind: str) -> Resource | None:
    """The table entry for ``apiVersion``/``kind``, or None."""
    return KNOWN_RESOURCES.get((api_version, kind))


def pod_templates(worker: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod templates (``{metadata, spec}``) inside a worker object, to be labelled in place."""
    spec = worker.get("spec") or {}
    templates: list[dict[str, Any]] = []
    if isinstance(spec.get("template"), dict):
        templates.append(spec["template"])
    for key, replicas in spec.items():
        if key.endswith("ReplicaSpecs") and isinstance(replicas, dict):
            templates.extend(r["template"] for r in replicas.values() if isinstance(r, dict) and isinstance(r.get("template"), dict))
    if worker.get("kind") == "Workflow":  # Argo: each template's metadata goes to the pod that runs it
        templates.extend(t for t in spec.get("templates") or [] if isinstance(t, dict) and ("container" in t or "script" in t))
    return templates


def pod_selector(worker: dict[str, Any], trial_name: str) -> str:
    """Label selector of a trial's pods: our trial label where we could put it on the pod templates."""
    operator = OPERATOR_POD_SELECTORS.get(str(worker.get("kind")))
    if operator is not None and not pod_templates(worker):
        return operator.format(name=trial_name)
    return f"{TRIAL_LABEL}={trial_name}"


_WRAPPER_NAME = "katibx-metrics-file"  # $0 of the wrapper script
# Runs "$@" (the original argv), forwarding SIGTERM/SIGINT; then prints the metrics file between the markers.
# No $(NAME): Kubernetes would expand it in command/args.
_WRAPPER = """\
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
while :; do wait "$child"; rc=$?; kill -0 "$child" 2>/dev/null || break; done
printf '\\n%s\\n' {begin}
cat -- {path} 2>/dev/null
printf '\\n%s\\n' {end}
exit "$rc"
"""


def file_markers(trial_name: str) -> tuple[str, str]:
    """The lines around a trial's metrics file in its pod log."""
    tag = hashlib.sha256(f"katibx-metrics-file:{trial_name}".encode()).hexdigest()[:16]
    return f"KATIBX-METRICS-FILE-{tag}-BEGIN", f"KATIBX-METRICS-FILE-{tag}-END"


def wrap_file_metrics(container: dict[str, Any], path: str, trial_name: str) -> None:
    """Wrap the container's command so its metrics file at ``path`` is printed to stdout when the command ends.

    ValueError when the container has no ``command`` (the image's entrypoint is unknown without pulling it).
    """
    command = container.get("command")
    if not command:
        raise ValueError("a File metrics collector needs the primary container's command (it is wrapped to print "
                         "the metrics file when the command ends)")
    begin, end = file_markers(trial_name)
    script = _WRAPPER.format(begin=shlex.quote(begin), end=shlex.quote(end), path=shlex.quote(path))
    container["args"] = [*command, *(container.get("args") or [])]
    container["command"] = ["sh", "-c", script, _WRAPPER_NAME]


def file_section(log_text: str, trial_name: str) -> str | None:
    """The metrics file the wrapped command printed at the end of ``log_text``, or None when it printed none."""
    begin, end = file_markers(trial_name)
    start = log_text.rfind(begin + "\n")
    if start < 0:
        return None
    body = log_text[start + len(begin) + 1:]
    stop = body.rfind("\n" + end)
    return body if stop < 0 else body[:stop]


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    env = [e for e in container.get("env") or [] if not (isinstance(e, dict) and e.get("name") == name)]
    container["env"] = [*env, {"name": name, "value": value}]


def build_worker(
    experiment: Experiment,
    trial_name: str,
    assignments: dict[str, Any],
    *,
    namespace: str,
    template: dict[str, Any] | None = None,
    trial_labels: dict[str, str] | None = None,
    owner: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The worker object of one trial; ``template`` replaces the inline trialSpec (a ConfigMap template).

    ``owner`` is an ownerReference (``apiVersion``, ``kind``, ``name``, ``uid``); ``env`` goes into the primary
    container after ``KATIB_TRIAL_NAME``.
    """
    exp = experiment
    if template is not None or experiment.namespace != namespace:
        exp = experiment.model_copy(deep=True)
        exp.metadata.namespace = namespace
        assert exp.spec.trial_template is not None
        if template is not None:
            exp.spec.trial_template.trial_spec = copy.deepcopy(template)
    worker = render_trial_spec(exp, trial_name, assignments)
    ours = {EXPERIMENT_LABEL: experiment.name, TRIAL_LABEL: trial_name}
    meta = worker["metadata"]
    meta["labels"] = {**(meta.get("labels") or {}), **(trial_labels or {}), **ours}
    if owner is not None:
        meta["ownerReferences"] = [*(meta.get("ownerReferences") or []), owner]
    for pod in pod_templates(worker):
        pod_meta = pod.setdefault("metadata", {})
        pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **ours}
    tt = experiment.spec.trial_template
    container = primary_container(worker, tt.primary_container_name if tt else None)
    if container is not None:
        for key, value in {TRIAL_NAME_ENV: trial_name, **(env or {})}.items():
            _set_env(container, key, value)
    path = source_path(experiment)
    if collector_kind(experiment) == "File" and path:
        if container is None:
            raise ValueError(f"a File metrics collector needs the primary container {tt.primary_container_name if tt else None!r}")
        wrap_file_metrics(container, path, trial_name)
    return _ordered(worker)


def _ordered(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with apiVersion, kind, metadata first (as people write manifests), pod templates likewise."""
    for pod in pod_templates(obj):
        if "metadata" in pod:
            ordered = {"metadata": pod["metadata"], **pod}
            pod.clear()
            pod.update(ordered)
    head: dict[str, Any] = {k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}
    return {**head, **obj}


def owner_config_map(experiment: Experiment, namespace: str) -> dict[str, Any]:
    """The experiment's owner ConfigMap: every trial object references it, so deleting it deletes them all."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": owner_name(experiment.name),
            "namespace": namespace,
            "labels": {EXPERIMENT_LABEL: experiment.name, OWNER_LABEL: "true"},
            "annotations": {"katibx.io/description": "owner of this katibx experiment's trial objects; "
                                                     "deleting it deletes them"},
        },
        "data": {},
    }


def owner_name(experiment_name: str) -> str:
    """Name of an experiment's owner ConfigMap."""
    return f"{experiment_name}-katibx"[:253]


def render_workers(experiment: Experiment, trials: list[TrialRecord], namespace: str | None = None) -> list[dict[str, Any]]:
    """The worker objects these trials would get (no cluster: no owner reference, no push address)."""
    tt = experiment.spec.trial_template
    if tt is None or tt.trial_spec is None:
        where = "spec.trialTemplate.configMap" if tt is not None and tt.config_map is not None else "spec.trialTemplate"
        raise ValidationError([f"{where}: render needs an inline trialSpec (a ConfigMap template is read from the cluster)"])
    try:
        return [build_worker(experiment, t.name, t.assignments, namespace=namespace or experiment.namespace,
                             trial_labels=t.labels) for t in trials]
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError([f"spec.trialTemplate.trialSpec: {exc}"]) from None
