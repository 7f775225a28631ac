"""Trial templates: ``${trialParameters.x}`` / ``${trialSpec.*}`` substitution and finding the primary container.

Substitution is done per string inside the parsed template, never on serialized text, so a value can
neither break the document's structure nor reach a shell.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

from katibx.quantities import quantity

if TYPE_CHECKING:
    from katibx.spec import Experiment

PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]*)\}")
_META = re.compile(r"^\$\{trialSpec\.(Name|Namespace|Kind|APIVersion|Labels\[([^\]]+)\]|Annotations\[([^\]]+)\])\}$")
FUNCTION_KIND = "Function"
# Replica keys whose pod runs the trial's main process, by preference.
_PRIMARY_REPLICAS = ("Master", "Chief", "Launcher", "Worker")


def format_value(value: Any) -> str:
    """How a typed assignment value is written into a template (Katib's string form; bools as YAML writes them)."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def trial_parameter_values(experiment: Experiment, trial_name: str, assignments: dict[str, Any]) -> dict[str, str]:
    """Value of every trialParameter for one trial: a parameter assignment or trial metadata."""
    template = experiment.spec.trial_template
    assert template is not None
    trial_spec = template.trial_spec or {}
    meta = trial_spec.get("metadata") or {}
    values: dict[str, str] = {}
    for tp in template.trial_parameters or []:
        match = _META.match(tp.reference)
        if match is None:
            if tp.reference in assignments:
                values[tp.name] = format_value(assignments[tp.reference])
            continue
        field, label, annotation = match.groups()
        if label is not None:
            values[tp.name] = str((meta.get("labels") or {}).get(label, ""))
        elif annotation is not None:
            values[tp.name] = str((meta.get("annotations") or {}).get(annotation, ""))
        else:
            values[tp.name] = {
                "Name": trial_name, "Namespace": experiment.namespace,
                "Kind": str(trial_spec.get("kind", "")), "APIVersion": str(trial_spec.get("apiVersion", "")),
            }[field]
    return values


def substitute(obj: Any, values: dict[str, str]) -> Any:
    """A copy of ``obj`` with placeholders in every string replaced (unknown names are left as they are)."""
    if isinstance(obj, str):
        return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), obj)
    if isinstance(obj, list):
        return [substitute(v, values) for v in obj]
    if isinstance(obj, dict):
        return {k: substitute(v, values) for k, v in obj.items()}
    return obj


def render_trial_spec(experiment: Experiment, trial_name: str, assignments: dict[str, Any]) -> dict[str, Any]:
    """The worker object for one trial: the template with its values substituted, named after the trial."""
    template = experiment.spec.trial_template
    assert template is not None and template.trial_spec is not None
    rendered = substitute(template.trial_spec, trial_parameter_values(experiment, trial_name, assignments))
    rendered.setdefault("metadata", {})
    rendered["metadata"] = {**rendered["metadata"], "name": trial_name, "namespace": experiment.namespace}
    return rendered


def pod_specs(worker: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(replica, pod spec) pairs of a Job or a Kubeflow training job, primary replicas first."""
    spec = worker.get("spec") or {}
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        return [("", template["spec"])]
    found: list[tuple[str, dict[str, Any]]] = []
    for key, replicas in spec.items():
        if key.endswith("ReplicaSpecs") and isinstance(replicas, dict):
            for role, replica in replicas.items():
                pod = ((replica or {}).get("template") or {}).get("spec")
                if isinstance(pod, dict):
                    found.append((role, pod))
    rank = {r: i for i, r in enumerate(_PRIMARY_REPLICAS)}
    return sorted(found, key=lambda item: rank.get(item[0], len(rank)))


def primary_container(worker: dict[str, Any], name: str | None) -> dict[str, Any] | None:
    """The container named ``name`` in the primary replica's pod (TrainJob: the trainer section)."""
    if worker.get("kind") == "TrainJob":
        trainer = (worker.get("spec") or {}).get("trainer")
        return trainer if isinstance(trainer, dict) else None
    for _, pod in pod_specs(worker):
        for container in pod.get("containers") or []:
            if isinstance(container, dict) and container.get("name") == name:
                return container
    return None


def active_deadline_seconds(worker: dict[str, Any]) -> float | None:
    """Job ``spec.activeDeadlineSeconds`` or a training job's ``spec.runPolicy.activeDeadlineSeconds``."""
    spec = worker.get("spec") or {}
    if not isinstance(spec, dict):
        raise TypeError(f"must be a mapping, got {type(spec).__name__}")
    value = spec.get("activeDeadlineSeconds", (spec.get("runPolicy") or {}).get("activeDeadlineSeconds"))
    if value is None:
        return None
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"activeDeadlineSeconds must be a positive number of seconds (got {value!r})")
    return seconds


# resources ------------------------------------------------------------------------------------------------------
# Kubernetes resources no backend that places trials itself accounts for.
_IGNORED_RESOURCES = ("ephemeral-storage", "storage", "pods")


def trial_resources(worker: dict[str, Any], container_name: str | None) -> dict[str, float]:
    """Resources of one rendered trial, as Ray names them: ``CPU`` (default 1), ``GPU``, ``memory`` (bytes) and custom ones.

    From the primary container's ``resources`` (requests, else limits; ``nvidia.com/gpu`` or ``gpu`` is GPUs), or a
    Function trial's ``spec.resources`` (Katib's ``resources_per_trial``: ``{"cpu": 2, "memory": "1Gi", "gpu": 1}``).
    """
    if worker.get("kind") == FUNCTION_KIND:
        section = (worker.get("spec") or {}).get("resources") or {}
    else:
        section = (primary_container(worker, container_name) or {}).get("resources") or {}
    if not isinstance(section, dict) or not all(isinstance(section.get(k) or {}, dict) for k in ("limits", "requests")):
        raise ValueError("resources (and its limits and requests) must be a mapping")
    if "requests" in section or "limits" in section:
        flat = {**(section.get("limits") or {}), **(section.get("requests") or {})}
    else:
        flat = dict(section)
    result: dict[str, float] = {"CPU": 1.0}
    for name, value in flat.items():
        if name in _IGNORED_RESOURCES or str(name).startswith("hugepages-"):
            continue
        try:
            amount = quantity(value)
        except ValueError as exc:
            raise ValueError(f"resources {name}: {exc}") from None
        key = {"cpu": "CPU", "memory": "memory", "gpu": "GPU", "nvidia.com/gpu": "GPU"}.get(str(name), str(name))
        result[key] = amount
    return {k: v for k, v in result.items() if v > 0 or k == "CPU"}


def template_resources(spec: dict[str, Any], container_name: str | None) -> dict[str, float]:
    """:func:`trial_resources` of a trial template before its values are known (a placeholder counts as 1): what
    every trial will ask for, checked before any runs; ValueError naming a malformed quantity."""
    if "${trialParameters." in json.dumps(spec):
        spec = json.loads(PLACEHOLDER.sub("1", json.dumps(spec)))
    return trial_resources(spec, container_name)


def gpu_count(resources: dict[str, float]) -> int:
    """Whole GPUs of :func:`trial_resources`: a fraction takes a device of its own on a machine (Ray may share one)."""
    return math.ceil(resources.get("GPU", 0.0))
