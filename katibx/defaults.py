"""Katib's mutating-webhook defaults (experiment_defaults.go), applied to a parsed Experiment."""

from __future__ import annotations

from katibx.spec import Collector, Experiment, FileSystemPath, MetricsCollectorSpec, MetricsSource, MetricStrategy

DEFAULT_PARALLEL_TRIAL_COUNT = 3
DEFAULT_RESUME_POLICY = "Never"

_JOB_SUCCESS = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
_JOB_FAILURE = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
_KUBEFLOW_SUCCESS = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
_MASTER_POD = {"training.kubeflow.org/job-role": "master"}

# kind -> (successCondition, failureCondition, primaryPodLabels)
WORKER_DEFAULTS: dict[str, tuple[str, str, dict[str, str] | None]] = {
    "Job": (_JOB_SUCCESS, _JOB_FAILURE, None),
    "TFJob": (_KUBEFLOW_SUCCESS, _JOB_FAILURE, _MASTER_POD),
    "PyTorchJob": (_KUBEFLOW_SUCCESS, _JOB_FAILURE, _MASTER_POD),
    "XGBoostJob": (_KUBEFLOW_SUCCESS, _JOB_FAILURE, _MASTER_POD),
    "MPIJob": (_KUBEFLOW_SUCCESS, _JOB_FAILURE, _MASTER_POD),
    "TrainJob": (
        _JOB_SUCCESS,
        _JOB_FAILURE,
        {"jobset.sigs.k8s.io/replicatedjob-name": "node", "batch.kubernetes.io/job-completion-index": "0"},
    ),
}


def apply_defaults(experiment: Experiment) -> Experiment:
    """Return a copy of ``experiment`` with Katib's defaults filled in."""
    exp = experiment.model_copy(deep=True)
    spec = exp.spec
    if spec.parallel_trial_count is None:
        spec.parallel_trial_count = DEFAULT_PARALLEL_TRIAL_COUNT
    if not spec.resume_policy:
        spec.resume_policy = DEFAULT_RESUME_POLICY
    _default_metric_strategies(exp)
    _default_trial_template(exp)
    _default_metrics_collector(exp)
    for param in spec.parameters:
        if not param.feasible_space.distribution:
            param.feasible_space.distribution = "uniform"
    return exp


def _default_metric_strategies(exp: Experiment) -> None:
    """Objective and additional metrics without a strategy follow the objective direction (Katib's code);
    each additional objective follows its own direction."""
    objective = exp.spec.objective
    if objective is None or not objective.objective_metric_name:
        return
    by_type = {"minimize": "min", "maximize": "max"}
    strategy = by_type.get(objective.type or "", "latest")
    have = {s.name for s in objective.metric_strategies}
    wanted = [(name, by_type.get(kind, "latest")) for name, kind in objective.objectives()]
    wanted += [(name, strategy) for name in objective.additional_metric_names]
    for name, value in wanted:
        if name and name not in have:
            have.add(name)
            objective.metric_strategies.append(MetricStrategy(name=name, value=value))


def _default_trial_template(exp: Experiment) -> None:
    """Success/failure conditions and primary pod labels of known worker kinds (inline trialSpec only)."""
    template = exp.spec.trial_template
    if template is None or template.trial_spec is None:
        return
    defaults = WORKER_DEFAULTS.get(str(template.trial_spec.get("kind", "")))
    if defaults is None:
        return
    success, failure, pod_labels = defaults
    if not template.success_condition:
        template.success_condition = success
    if not template.failure_condition:
        template.failure_condition = failure
    if template.primary_pod_labels is None and pod_labels is not None:
        template.primary_pod_labels = dict(pod_labels)


def _default_metrics_collector(exp: Experiment) -> None:
    """StdOut when unset; default source paths and format for File, TensorFlowEvent and PrometheusMetric."""
    spec = exp.spec
    if spec.metrics_collector_spec is None:
        spec.metrics_collector_spec = MetricsCollectorSpec()
    mc = spec.metrics_collector_spec
    if mc.collector is None:
        mc.collector = Collector(kind="StdOut")
    elif not mc.collector.kind and not mc.collector.custom_collector:
        mc.collector.kind = "StdOut"
    kind = mc.collector.kind
    if kind == "File":
        mc.source = mc.source or MetricsSource()
        fsp = mc.source.file_system_path = mc.source.file_system_path or FileSystemPath()
        fsp.kind = fsp.kind or "File"
        fsp.path = fsp.path or "/var/log/katib/metrics.log"
        fsp.format = fsp.format or "TEXT"
    elif kind == "TensorFlowEvent":
        mc.source = mc.source or MetricsSource()
        fsp = mc.source.file_system_path = mc.source.file_system_path or FileSystemPath()
        fsp.kind = fsp.kind or "Directory"
        fsp.path = fsp.path or "/var/log/katib/tfevent/"
    elif kind == "PrometheusMetric":
        mc.source = mc.source or MetricsSource()
        mc.source.http_get = mc.source.http_get or {"path": "/metrics", "port": 8080}
