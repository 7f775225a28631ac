"""The trial template of the kubernetes backend: its checks, reading it from a ConfigMap, and where its kind lives.

A ConfigMap template is read from the cluster once and checked like an inline one (Katib's webhook cannot see it);
a kind outside the known table (:func:`workers._manifests.known_resource`) is found once by API discovery.
"""

from __future__ import annotations

from typing import Any, Callable

from katibx.backend import TrialStartError
from katibx.defaults import WORKER_DEFAULTS
from katibx.metrics_collector import collector_kind
from katibx.spec import Experiment
from katibx.template import FUNCTION_KIND, active_deadline_seconds, primary_container
from katibx.workers import _gjson
from katibx.workers._kube_api import KubeApi, api_message, json_body
from katibx.workers._manifests import Resource, known_resource


def check_trial_template(experiment: Experiment) -> list[str]:
    """The trial template's problems seen without a cluster: its conditions' syntax and an inline template."""
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
    errors.extend(check_template(experiment, spec, "spec.trialTemplate.trialSpec"))
    return errors


def check_template(experiment: Experiment, spec: dict[str, Any], path: str) -> list[str]:
    """The problems of one worker template (found at ``path``, for the messages) as this backend would run it."""
    tt = experiment.spec.trial_template
    assert tt is not None
    errors: list[str] = []
    kind, api_version = spec.get("kind"), spec.get("apiVersion")
    if kind == FUNCTION_KIND:
        return [f"{path}.kind: Function trials run in this process; use the local or ray backend, or "
                f"katibx.tune's image= and build= to run the objective in a container image"]
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


class TrialTemplates:
    """The trial templates read from ConfigMaps and the discovered API resources, each fetched once per controller."""

    def __init__(self, kube: KubeApi, namespace: Callable[[Experiment], str]) -> None:
        self._kube = kube
        self._namespace = namespace  # the experiment's namespace, for a ConfigMap reference without one
        self._templates: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._discovered: dict[tuple[str, str], Resource] = {}

    def template(self, experiment: Experiment) -> dict[str, Any]:
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

            _batch, core, _custom = self._kube.apis()
            where = f"spec.trialTemplate.configMap: ConfigMap {namespace}/{cm.config_map_name}"
            try:
                data = json_body(self._kube.call("get template", core.read_namespaced_config_map, cm.config_map_name,
                                                 namespace, _preload_content=False)).get("data") or {}
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
            problems = check_template(experiment, template, f"{where} key {cm.template_path}")
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

    def resource(self, worker: dict[str, Any]) -> Resource:
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
        _batch, _core, custom = self._kube.apis()
        try:
            listing = json_body(self._kube.call("discovery", custom.get_api_resources, group, version,
                                                _preload_content=False))
        except ApiException as exc:
            raise TrialStartError(f"spec.trialTemplate.trialSpec.kind: the cluster does not serve {api_version} "
                                  f"({api_message(exc)}); is the {kind} CRD installed?") from None
        for item in listing.get("resources") or []:
            if item.get("kind") == kind and "/" not in str(item.get("name")) and item.get("namespaced", True):
                self._discovered[(api_version, kind)] = Resource(group, version, str(item["name"]), kind)
                return self._discovered[(api_version, kind)]
        raise TrialStartError(f"spec.trialTemplate.trialSpec.kind: the cluster serves no {kind} in {api_version}")
