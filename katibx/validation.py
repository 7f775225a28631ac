"""Katib's validating-webhook rules (validator.go) plus the checks Katib misses.

Every problem is reported as ``field.path: message`` and all problems are collected at once.
Algorithm settings are checked by the algorithm plugin itself (see :mod:`katibx.plugins`).
"""

from __future__ import annotations

import json
import re

from katibx.search_space import DISTRIBUTIONS, PARAMETER_TYPES, parse_parameter
from katibx.spec import Experiment, FileSystemPath, TrialTemplate
from katibx.template import FUNCTION_KIND, PLACEHOLDER

_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_META_REF_RE = re.compile(r"^\$\{trialSpec\.(Name|Namespace|Kind|APIVersion|Labels\[[^\]]+\]|Annotations\[[^\]]+\])\}$")
RESUME_POLICIES = ("Never", "LongRunning", "FromVolume")
COLLECTOR_KINDS = ("StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "Push")


class ValidationError(ValueError):
    """An invalid experiment; ``errors`` holds one ``path: message`` line per problem."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        super().__init__("\n".join(errors))


def validate(experiment: Experiment) -> list[str]:
    """Every problem with a defaulted experiment, in Katib's check order, as ``path: message`` lines."""
    errors: list[str] = []
    _check_metadata(experiment, errors)
    _check_counts(experiment, errors)
    _check_objective(experiment, errors)  # Katib stops at an objective error; we go on to report everything
    _check_algorithm(experiment, errors)
    policy = experiment.spec.resume_policy
    if policy and policy not in RESUME_POLICIES:
        errors.append(f"spec.resumePolicy: invalid ResumePolicyType {policy!r}; must be one of {', '.join(RESUME_POLICIES)}")
    _check_trial_template(experiment, errors)
    _check_parameters(experiment, errors)
    _check_metrics_collector(experiment, errors)
    return errors


def _check_metadata(exp: Experiment, errors: list[str]) -> None:
    """metadata.name (DNS label, at most 40 characters), apiVersion and kind."""
    name = exp.metadata.name
    if not name:
        errors.append("metadata.name: Required value")
    elif not _NAME_RE.match(name):
        errors.append(
            f"metadata.name: {name!r} must consist of lower case alphanumeric characters or '-', "
            "start with a letter and end with an alphanumeric character"
        )
    if name and len(name) > 40:
        errors.append(f"metadata.name: must be no more than 40 characters (got {len(name)})")
    namespace = exp.metadata.namespace
    if namespace is not None and not (_NAMESPACE_RE.match(namespace) and len(namespace) <= 63):
        # a Kubernetes namespace name; it is also a folder of the trials' directories, so never a path
        errors.append(f"metadata.namespace: {namespace!r} must be a DNS label: at most 63 lower case alphanumeric "
                      "characters or '-', starting and ending with an alphanumeric character")
    if exp.api_version != "kubeflow.org/v1beta1":
        errors.append(f"apiVersion: must be kubeflow.org/v1beta1 (got {exp.api_version!r})")
    if exp.kind != "Experiment":
        errors.append(f"kind: must be Experiment (got {exp.kind!r})")


def _check_counts(exp: Experiment, errors: list[str]) -> None:
    """Trial counts: positive, and no larger than spec.maxTrialCount."""
    spec = exp.spec
    if spec.max_failed_trial_count is not None and spec.max_failed_trial_count < 0:
        errors.append("spec.maxFailedTrialCount: should not be less than 0")
    if spec.max_trial_count is not None and spec.max_trial_count <= 0:
        errors.append("spec.maxTrialCount: must be greater than 0")
    if spec.parallel_trial_count is not None and spec.parallel_trial_count <= 0:
        errors.append("spec.parallelTrialCount: must be greater than 0")
    if spec.max_trial_count is not None and spec.max_trial_count > 0:  # else the comparisons are noise
        if spec.max_failed_trial_count is not None and spec.max_failed_trial_count > spec.max_trial_count:
            errors.append("spec.maxFailedTrialCount: should be less than or equal to spec.maxTrialCount")
        if spec.parallel_trial_count is not None and spec.parallel_trial_count > spec.max_trial_count:
            errors.append("spec.parallelTrialCount: should be less than or equal to spec.maxTrialCount")


def _check_objective(exp: Experiment, errors: list[str]) -> None:
    """Objective type, metric names and metric strategies."""
    obj = exp.spec.objective
    if obj is None:
        errors.append("spec.objective: Required value")
        return
    if obj.type not in ("minimize", "maximize"):
        errors.append(f"spec.objective.type: must be minimize or maximize (got {obj.type!r})")
    if not obj.objective_metric_name:
        errors.append("spec.objective.objectiveMetricName: Required value")
    elif obj.objective_metric_name in obj.additional_metric_names:
        errors.append("spec.objective.additionalMetricNames: should not contain spec.objective.objectiveMetricName")
    for i, strategy in enumerate(obj.metric_strategies):
        if strategy.value not in ("min", "max", "latest"):
            errors.append(f"spec.objective.metricStrategies[{i}].value: must be min, max or latest (got {strategy.value!r})")
    seen = {obj.objective_metric_name}
    for i, extra in enumerate(obj.additional_objectives):
        path = f"spec.objective.additionalObjectives[{i}]"
        if not extra.objective_metric_name:
            errors.append(f"{path}.objectiveMetricName: Required value")
        elif extra.objective_metric_name in seen:
            errors.append(f"{path}.objectiveMetricName: {extra.objective_metric_name!r} is already an objective")
        elif extra.objective_metric_name in obj.additional_metric_names:
            errors.append(f"{path}.objectiveMetricName: {extra.objective_metric_name!r} is also in spec.objective.additionalMetricNames")
        seen.add(extra.objective_metric_name)
        if extra.type not in ("minimize", "maximize"):
            errors.append(f"{path}.type: must be minimize or maximize (got {extra.type!r})")


def _check_algorithm(exp: Experiment, errors: list[str]) -> None:
    """The search and early-stopping algorithms must be installed plugins."""
    from katibx.plugins import algorithm_names, early_stopping_names  # plugin discovery, lazily

    algo = exp.spec.algorithm
    if algo is None:
        errors.append("spec.algorithm: Required value")
    elif not algo.algorithm_name:
        errors.append("spec.algorithm.algorithmName: Required value")
    elif algo.algorithm_name not in algorithm_names():
        errors.append(
            f"spec.algorithm.algorithmName: unknown algorithm {algo.algorithm_name!r}; "
            f"available: {', '.join(sorted(algorithm_names()))}"
        )
    es = exp.spec.early_stopping
    if es is not None:
        if not es.algorithm_name:
            errors.append("spec.earlyStopping.algorithmName: Required value")
        elif es.algorithm_name not in early_stopping_names():
            known = ", ".join(sorted(early_stopping_names())) or "none installed"
            errors.append(f"spec.earlyStopping.algorithmName: unknown early stopping algorithm {es.algorithm_name!r}; available: {known}")


def _check_trial_template(exp: Experiment, errors: list[str]) -> None:
    """Katib's trialTemplate rules, in Katib's order."""
    tt = exp.spec.trial_template
    path = "spec.trialTemplate"
    if tt is None:
        errors.append(f"{path}: Required value")
        return
    if not tt.primary_container_name and not _is_function_template(tt):
        errors.append(f"{path}.primaryContainerName: Required value")
    if not tt.success_condition or not tt.failure_condition:
        if not _is_function_template(tt):
            errors.append(f"{path}: successCondition and failureCondition must be specified")
    if tt.trial_parameters is None:
        errors.append(f"{path}.trialParameters: Required value")
    if tt.trial_spec is None and tt.config_map is None:
        errors.append(f"{path}: trialSpec or configMap must be specified")
        return
    if tt.trial_spec is not None and tt.config_map is not None:
        errors.append(f"{path}: only one of trialSpec or configMap can be specified")
        return
    if tt.config_map is not None:
        cm = tt.config_map
        for field, value in (("configMapName", cm.config_map_name), ("configMapNamespace", cm.config_map_namespace), ("templatePath", cm.template_path)):
            if not value:
                errors.append(f"{path}.configMap.{field}: Required value")
        # the template itself is read by a backend that can reach ConfigMaps: placeholders are checked there
        _check_trial_parameters(exp, tt, None, errors)
        return
    _check_trial_parameters(exp, tt, None if _is_function_template(tt) else json.dumps(tt.trial_spec), errors)
    _check_trial_spec(tt.trial_spec or {}, errors)


def _is_function_template(tt: TrialTemplate) -> bool:
    """katibx's own ``kind: Function`` template (Python API): no containers, no placeholders."""
    return tt.trial_spec is not None and tt.trial_spec.get("kind") == FUNCTION_KIND


def _check_trial_parameters(exp: Experiment, tt: TrialTemplate, template_text: str | None, errors: list[str]) -> None:
    """Katib's trialParameters rules; placeholder use is checked only when the template text is known."""
    path = "spec.trialTemplate.trialParameters"
    params = tt.trial_parameters or []
    param_names = {p.name for p in exp.spec.parameters}
    placeholders = set(PLACEHOLDER.findall(template_text or ""))
    names: set[str] = set()
    references: set[str] = set()
    for i, tp in enumerate(params):
        ipath = f"{path}[{i}]"
        if not tp.name or not tp.reference:
            errors.append(f"{ipath}: name and reference must be specified")
            continue
        if "{" in tp.name or "}" in tp.name:
            errors.append(f"{ipath}.name: must not contain '{{' or '}}' (got {tp.name!r})")
        if tp.name in names:
            errors.append(f"{ipath}.name: duplicate trial parameter name {tp.name!r}")
        if tp.reference in references:
            errors.append(f"{ipath}.reference: duplicate trial parameter reference {tp.reference!r}")
        names.add(tp.name)
        references.add(tp.reference)
        is_meta = bool(_META_REF_RE.match(tp.reference))
        if not is_meta and param_names and tp.reference not in param_names:
            errors.append(f"{ipath}.reference: {tp.reference!r} is not a parameter in spec.parameters")
        if template_text is not None and tp.name not in placeholders:
            errors.append(f"{ipath}: parameter {tp.name!r} is not used in spec.trialTemplate as ${{trialParameters.{tp.name}}}")
    for name in sorted(placeholders - names):
        errors.append(f"spec.trialTemplate: ${{trialParameters.{name}}} is used but not declared in spec.trialTemplate.trialParameters")
    if exp.spec.nas_config is None:
        for name in sorted(param_names - references - {""}):
            errors.append(f"spec.parameters: parameter {name!r} is not referenced by any spec.trialTemplate.trialParameters")


def _check_trial_spec(trial_spec: dict[str, object], errors: list[str]) -> None:
    """The inline worker object: no name/namespace of its own, apiVersion and kind given."""
    path = "spec.trialTemplate.trialSpec"
    meta = trial_spec.get("metadata") or {}
    if not isinstance(meta, dict):
        errors.append(f"{path}.metadata: must be a mapping")
        meta = {}
    for field in ("name", "namespace"):
        if field in meta:
            errors.append(f"{path}.metadata.{field}: must be omitted")
    for field in ("apiVersion", "kind"):
        if not trial_spec.get(field):
            errors.append(f"{path}.{field}: Required value")


def _check_parameters(exp: Experiment, errors: list[str]) -> None:
    """spec.parameters vs spec.nasConfig, then each parameter's type and feasible space."""
    spec = exp.spec
    if not spec.parameters and spec.nas_config is None:
        errors.append("spec: spec.parameters or spec.nasConfig must be specified")
        return
    if spec.parameters and spec.nas_config is not None:
        errors.append("spec: only one of spec.parameters or spec.nasConfig can be specified")
        return
    seen: set[str] = set()
    for i, param in enumerate(spec.parameters):
        path = f"spec.parameters[{i}]"
        fs = param.feasible_space
        if not param.name:
            errors.append(f"{path}.name: Required value")
        elif param.name in seen:
            errors.append(f"{path}.name: duplicate parameter name {param.name!r}")
        seen.add(param.name)
        if param.parameter_type not in PARAMETER_TYPES:
            errors.extend(parse_parameter(param, path)[1])  # names the supported types
            continue
        if fs.distribution and fs.distribution not in DISTRIBUTIONS:
            errors.append(f"{path}.feasibleSpace.distribution: {fs.distribution!r} is not supported; must be one of {', '.join(DISTRIBUTIONS)}")
            continue
        if not (fs.min or fs.max or fs.step or fs.list is not None):
            errors.append(f"{path}.feasibleSpace: feasibleSpace must be specified")
            continue
        if param.parameter_type in ("double", "int"):
            if fs.list is not None:
                errors.append(f"{path}.feasibleSpace.list: is not supported for parameterType {param.parameter_type}")
                continue
        elif fs.min or fs.max or fs.step:
            errors.append(f"{path}.feasibleSpace: min, max and step are not supported for parameterType {param.parameter_type}; use list")
            continue
        errors.extend(parse_parameter(param, path)[1])


def _check_metrics_collector(exp: Experiment, errors: list[str]) -> None:
    """Collector kind and what each kind needs from its source."""
    mc = exp.spec.metrics_collector_spec
    if mc is None or mc.collector is None:
        return
    path = "spec.metricsCollectorSpec"
    kind = mc.collector.kind
    if kind not in COLLECTOR_KINDS:
        errors.append(f"{path}.collector.kind: invalid metrics collector kind {kind!r}; must be one of {', '.join(COLLECTOR_KINDS)}")
        return
    source = mc.source
    fsp = source.file_system_path if source else None
    fpath = f"{path}.source.fileSystemPath"
    if kind == "File":
        if not _is_absolute(fsp, "File"):
            errors.append(f"{fpath}: file path where metrics file exists is required (kind File, absolute path)")
        if fsp is not None and fsp.format not in ("TEXT", "JSON"):
            errors.append(f"{fpath}.format: format of metrics file is required and must be TEXT or JSON")
        if fsp is not None and fsp.format == "JSON" and source and source.filter and source.filter.metrics_format:
            errors.append(f"{path}.source.filter: filter must be nil when format of metrics file is json")
    elif kind == "TensorFlowEvent":
        if not _is_absolute(fsp, "Directory"):
            errors.append(f"{fpath}: directory path where tensorflow event files exist is required (kind Directory, absolute path)")
        elif fsp is not None and fsp.format:
            errors.append(f"{fpath}.format: must be empty for TensorFlowEvent")
    elif kind == "PrometheusMetric":
        http = (source.http_get if source else None) or {}
        port = http.get("port")
        if not isinstance(port, int) or port <= 0:
            errors.append(f"{path}.source.httpGet.port: must be a positive integer")
        if not str(http.get("path", "")).startswith("/"):
            errors.append(f"{path}.source.httpGet.path: must start with '/'")
    elif kind == "Custom":
        if not mc.collector.custom_collector:
            errors.append(f"{path}.collector.customCollector: Required value for kind Custom")
        if fsp is not None and not (_is_absolute(fsp, "File") or _is_absolute(fsp, "Directory")):
            errors.append(f"{fpath}: must be an absolute path with kind File or Directory")
    if source and source.filter:
        for i, fmt in enumerate(source.filter.metrics_format):
            rpath = f"{path}.source.filter.metricsFormat[{i}]"
            try:
                groups = re.compile(fmt).groups
            except re.error as exc:
                errors.append(f"{rpath}: invalid regular expression ({exc})")
                continue
            if groups < 2:
                errors.append(f"{rpath}: two top subexpressions are required (metric name and value)")


def _is_absolute(fsp: FileSystemPath | None, kind: str) -> bool:
    """Whether ``fsp`` names an absolute path of the given kind (File or Directory)."""
    return fsp is not None and fsp.kind == kind and bool(fsp.path) and str(fsp.path).startswith("/")
