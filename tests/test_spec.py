"""Tests for katibx.spec and katibx.defaults: Katib's field names survive a round trip, Katib's defaults are applied."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from katibx.defaults import apply_defaults
from katibx.spec import Experiment

# Every v1beta1 field, written as Katib stores it (feasibleSpace and settings values are strings).
FULL = """
apiVersion: kubeflow.org/v1beta1
kind: Experiment
metadata:
  name: full
  namespace: team
  labels: {team: ml}
  annotations: {note: every field}
spec:
  parallelTrialCount: 2
  maxTrialCount: 10
  maxFailedTrialCount: 1
  resumePolicy: LongRunning
  objective:
    type: maximize
    goal: 0.99
    objectiveMetricName: accuracy
    additionalMetricNames: [loss]
    metricStrategies:
      - {name: accuracy, value: latest}
      - {name: loss, value: min}
  algorithm:
    algorithmName: random
    algorithmSettings:
      - {name: random_state, value: "7"}
  earlyStopping:
    algorithmName: medianstop
    algorithmSettings:
      - {name: min_trials_required, value: "2"}
  parameters:
    - name: lr
      parameterType: double
      feasibleSpace: {min: "0.001", max: "0.1", step: "0.001", distribution: logUniform}
    - name: layers
      parameterType: int
      feasibleSpace: {min: "1", max: "8", distribution: normal}
    - name: units
      parameterType: int
      feasibleSpace: {min: "16", max: "256", distribution: logNormal}
    - name: batch
      parameterType: discrete
      feasibleSpace: {list: ["16", "32", "64"], distribution: uniform}
    - name: optimizer
      parameterType: categorical
      feasibleSpace: {list: [sgd, adam], distribution: uniform}
  metricsCollectorSpec:
    collector: {kind: File}
    source:
      fileSystemPath: {path: /tmp/metrics.log, kind: File, format: TEXT}
      filter:
        metricsFormat: ["([\\\\w-]+)=([0-9.]+)"]
  trialTemplate:
    retain: true
    primaryContainerName: main
    primaryPodLabels: {role: main}
    successCondition: status.conditions.#(type=="Complete")#|#(status=="True")#
    failureCondition: status.conditions.#(type=="Failed")#|#(status=="True")#
    trialParameters:
      - {name: lr, description: learning rate, reference: lr}
    trialSpec:
      apiVersion: batch/v1
      kind: Job
      spec: {template: {spec: {containers: [{name: main, image: python, command: [python, "--lr=${trialParameters.lr}"]}]}}}
"""

NAS = """
apiVersion: kubeflow.org/v1beta1
kind: Experiment
metadata: {name: nas}
spec:
  objective: {type: maximize, objectiveMetricName: accuracy}
  algorithm: {algorithmName: enas}
  nasConfig:
    graphConfig: {numLayers: 2, inputSizes: [32, 32, 3], outputSizes: [10]}
    operations:
      - operationType: convolution
        parameters:
          - name: filter_size
            parameterType: categorical
            feasibleSpace: {list: ["3", "5"]}
  trialTemplate:
    configMap: {configMapName: trial-templates, configMapNamespace: kubeflow, templatePath: enas.yaml}
    trialParameters:
      - {name: architecture, reference: architecture}
"""


def doc(text: str = FULL) -> dict[str, Any]:
    return yaml.safe_load(text)


def defaulted(**spec: Any) -> Experiment:
    """A minimal experiment with ``spec`` keys replaced, after Katib's defaults."""
    data = doc(NAS)
    data["spec"].update(spec)
    return apply_defaults(Experiment.model_validate(data))


# --- round trip of Katib's field names -----------------------------------------------


@pytest.mark.parametrize("text", [FULL, NAS], ids=["full", "nas-configmap"])
def test_katib_documents_round_trip_unchanged(text: str) -> None:
    data = doc(text)
    assert Experiment.model_validate(data).to_dict() == data


def test_to_dict_keeps_camel_case_and_string_feasible_space() -> None:
    out = Experiment.model_validate(doc()).to_dict()
    assert set(out["spec"]) >= {"parallelTrialCount", "maxTrialCount", "maxFailedTrialCount", "resumePolicy",
                                "metricsCollectorSpec", "trialTemplate", "earlyStopping"}
    assert out["spec"]["parameters"][0]["feasibleSpace"] == {
        "min": "0.001", "max": "0.1", "step": "0.001", "distribution": "logUniform"}
    assert out["spec"]["trialTemplate"]["trialParameters"][0]["reference"] == "lr"


def test_snake_case_attributes_mirror_katib_fields() -> None:
    exp = Experiment.model_validate(doc())
    assert exp.spec.objective is not None and exp.spec.objective.additional_metric_names == ["loss"]
    assert exp.spec.objective.goal == 0.99
    assert exp.spec.trial_template is not None and exp.spec.trial_template.retain is True
    assert exp.spec.early_stopping is not None and exp.spec.early_stopping.settings_dict() == {"min_trials_required": "2"}
    assert [p.parameter_type for p in exp.spec.parameters] == ["double", "int", "int", "discrete", "categorical"]
    nas = Experiment.model_validate(doc(NAS)).spec.nas_config
    assert nas is not None and nas.graph_config is not None and nas.graph_config.input_sizes == [32, 32, 3]
    assert (exp.name, exp.namespace, Experiment.model_validate(doc(NAS)).namespace) == ("full", "team", "default")


def test_yaml_numbers_are_kept_as_katib_strings() -> None:
    data = doc()
    data["spec"]["parameters"][0]["feasibleSpace"] = {"min": 0.01, "max": 1, "step": 0.01}
    data["spec"]["parameters"][3]["feasibleSpace"] = {"list": [16, 32.5]}
    data["spec"]["parameters"][4]["feasibleSpace"] = {"list": [True, "adam"]}
    data["spec"]["algorithm"]["algorithmSettings"] = [{"name": "random_state", "value": 7}]
    out = Experiment.model_validate(data).to_dict()["spec"]
    assert out["parameters"][0]["feasibleSpace"] == {"min": "0.01", "max": "1", "step": "0.01"}
    assert out["parameters"][3]["feasibleSpace"]["list"] == ["16", "32.5"]
    assert out["parameters"][4]["feasibleSpace"]["list"] == ["true", "adam"]
    assert out["algorithm"]["algorithmSettings"] == [{"name": "random_state", "value": "7"}]


def test_status_from_kubectl_output_is_accepted() -> None:
    data = doc()
    data["status"] = {"conditions": [{"type": "Created", "status": "True"}]}
    assert Experiment.model_validate(data).spec.max_trial_count == 10


# --- defaults (experiment_defaults.go) -------------------------------------------------


def test_counts_resume_policy_and_collector_defaults() -> None:
    exp = defaulted()
    assert exp.spec.parallel_trial_count == 3
    assert exp.spec.resume_policy == "Never"
    assert exp.spec.max_trial_count is None and exp.spec.max_failed_trial_count is None
    assert exp.spec.metrics_collector_spec is not None
    assert exp.spec.metrics_collector_spec.to_dict() == {"collector": {"kind": "StdOut"}}


def test_given_values_are_not_overridden() -> None:
    exp = apply_defaults(Experiment.model_validate(doc()))
    assert (exp.spec.parallel_trial_count, exp.spec.resume_policy) == (2, "LongRunning")
    assert [p.feasible_space.distribution for p in exp.spec.parameters] == [
        "logUniform", "normal", "logNormal", "uniform", "uniform"]
    assert exp.spec.objective is not None
    assert [s.to_dict() for s in exp.spec.objective.metric_strategies] == [
        {"name": "accuracy", "value": "latest"}, {"name": "loss", "value": "min"}]


def test_apply_defaults_returns_a_copy() -> None:
    exp = Experiment.model_validate(doc(NAS))
    apply_defaults(exp)
    assert exp.spec.parallel_trial_count is None and exp.spec.metrics_collector_spec is None


@pytest.mark.parametrize("direction, strategy", [("minimize", "min"), ("maximize", "max")])
def test_metric_strategies_follow_objective_direction_for_additional_metrics_too(direction: str, strategy: str) -> None:
    exp = defaulted(objective={"type": direction, "objectiveMetricName": "loss",
                               "additionalMetricNames": ["acc", "f1"], "metricStrategies": [{"name": "f1", "value": "latest"}]})
    assert exp.spec.objective is not None
    assert {s.name: s.value for s in exp.spec.objective.metric_strategies} == {
        "loss": strategy, "acc": strategy, "f1": "latest"}


def test_distribution_defaults_to_uniform() -> None:
    exp = defaulted(nasConfig=None, parameters=[
        {"name": "a", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}},
        {"name": "b", "parameterType": "categorical", "feasibleSpace": {"list": ["x"]}}])
    assert [p.feasible_space.distribution for p in exp.spec.parameters] == ["uniform", "uniform"]


@pytest.mark.parametrize("kind, source", [
    ("File", {"fileSystemPath": {"kind": "File", "path": "/var/log/katib/metrics.log", "format": "TEXT"}}),
    ("TensorFlowEvent", {"fileSystemPath": {"kind": "Directory", "path": "/var/log/katib/tfevent/"}}),
    ("PrometheusMetric", {"httpGet": {"path": "/metrics", "port": 8080}}),
])
def test_collector_source_defaults(kind: str, source: dict[str, Any]) -> None:
    exp = defaulted(metricsCollectorSpec={"collector": {"kind": kind}})
    assert exp.spec.metrics_collector_spec is not None
    assert exp.spec.metrics_collector_spec.to_dict() == {"collector": {"kind": kind}, "source": source}


def test_file_collector_format_defaults_to_text_and_keeps_given_path() -> None:
    exp = defaulted(metricsCollectorSpec={"collector": {"kind": "File"},
                                          "source": {"fileSystemPath": {"kind": "File", "path": "/out/m.log"}}})
    assert exp.spec.metrics_collector_spec is not None
    assert exp.spec.metrics_collector_spec.to_dict()["source"]["fileSystemPath"] == {
        "kind": "File", "path": "/out/m.log", "format": "TEXT"}


def test_custom_collector_without_kind_is_not_replaced_by_stdout() -> None:
    exp = defaulted(metricsCollectorSpec={"collector": {"customCollector": {"name": "c", "image": "x"}}})
    assert exp.spec.metrics_collector_spec is not None and exp.spec.metrics_collector_spec.collector is not None
    assert exp.spec.metrics_collector_spec.collector.custom_collector == {"name": "c", "image": "x"}


JOB_OK = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
KF_OK = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
FAILED = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
MASTER = {"training.kubeflow.org/job-role": "master"}


@pytest.mark.parametrize("kind, success, labels", [
    ("Job", JOB_OK, None),
    ("TFJob", KF_OK, MASTER),
    ("PyTorchJob", KF_OK, MASTER),
    ("XGBoostJob", KF_OK, MASTER),
    ("MPIJob", KF_OK, MASTER),
    ("TrainJob", JOB_OK, {"jobset.sigs.k8s.io/replicatedjob-name": "node", "batch.kubernetes.io/job-completion-index": "0"}),
    ("Workflow", None, None),
])
def test_worker_kind_conditions_and_primary_pod_labels(kind: str, success: str | None, labels: dict[str, str] | None) -> None:
    exp = defaulted(trialTemplate={"primaryContainerName": "main", "trialParameters": [],
                                   "trialSpec": {"apiVersion": "x/v1", "kind": kind}})
    tt = exp.spec.trial_template
    assert tt is not None
    assert (tt.success_condition, tt.failure_condition, tt.primary_pod_labels) == (
        success, FAILED if success else None, labels)


def test_given_conditions_and_labels_are_kept_and_configmap_templates_get_none() -> None:
    exp = defaulted(trialTemplate={"primaryContainerName": "m", "successCondition": "ok", "failureCondition": "bad",
                                   "primaryPodLabels": {}, "trialSpec": {"apiVersion": "kubeflow.org/v1", "kind": "TFJob"}})
    assert exp.spec.trial_template is not None
    assert exp.spec.trial_template.to_dict()["successCondition"] == "ok"
    assert exp.spec.trial_template.primary_pod_labels == {}
    cm = defaulted().spec.trial_template
    assert cm is not None and cm.success_condition is None and cm.primary_pod_labels is None
