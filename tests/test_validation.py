"""Tests for katibx.validation and katibx.loader: every Katib webhook rule, the checks Katib misses, clear errors."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from katibx.loader import experiment_from_dict, load_experiment, load_experiments
from katibx.search_space import SearchSpace
from katibx.validation import ValidationError

INVALID = Path(__file__).parent / "data" / "invalid"
DELETE = object()

BASE = yaml.safe_load("""
apiVersion: kubeflow.org/v1beta1
kind: Experiment
metadata: {name: base}
spec:
  maxTrialCount: 6
  objective: {type: minimize, objectiveMetricName: loss}
  algorithm: {algorithmName: random}
  parameters:
    - name: lr
      parameterType: double
      feasibleSpace: {min: "0.01", max: "0.1"}
    - name: layers
      parameterType: int
      feasibleSpace: {min: "1", max: "4"}
  trialTemplate:
    primaryContainerName: main
    trialParameters:
      - {name: learningRate, reference: lr}
      - {name: layers, reference: layers}
    trialSpec:
      apiVersion: batch/v1
      kind: Job
      spec:
        template:
          spec:
            restartPolicy: Never
            containers:
              - name: main
                image: python
                command: [python, train.py, "--lr=${trialParameters.learningRate}", "--layers=${trialParameters.layers}"]
""")


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set (or with DELETE remove) ``a.b[0].c`` in ``doc``."""
    parts: list[Any] = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    target = doc
    for part in parts[:-1]:
        target = target[part]
    if value is DELETE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value


def errors_of(**changes: Any) -> list[str]:
    """Errors for BASE with ``changes`` (keys are paths with ``__`` for ``.``); [] when it validates."""
    doc = copy.deepcopy(BASE)
    for path, value in changes.items():
        _set(doc, path.replace("__", "."), value)
    try:
        experiment_from_dict(doc)
    except ValidationError as exc:
        assert all(": " in line and "\n" not in line for line in exc.errors)
        return exc.errors
    return []


PARAM0 = "spec__parameters[0]__feasibleSpace"
PARAM1 = "spec__parameters[1]__feasibleSpace"
TP = "spec__trialTemplate__trialParameters"
MC = "spec__metricsCollectorSpec"
SPEC = "spec__trialTemplate__trialSpec"

# (changes, one expected error line: exact, or a prefix ending in "...")
CASES: list[tuple[dict[str, Any], str]] = [
    # metadata
    ({"metadata__name": DELETE}, "metadata.name: Required value"),
    ({"metadata__name": "Bad_Name"}, "metadata.name: 'Bad_Name' must consist of lower case alphanumeric characters or '-', ..."),
    ({"metadata__name": "1abc"}, "metadata.name: '1abc' must consist of ..."),
    ({"metadata__namespace": "../../etc"}, "metadata.namespace: '../../etc' must be a DNS label: ..."),  # a folder
    ({"metadata__namespace": "C:/runs"}, "metadata.namespace: 'C:/runs' must be a DNS label: ..."),
    ({"metadata__namespace": "n" * 64}, "metadata.namespace: '" + "n" * 64 + "' must be a DNS label: ..."),
    ({"metadata__name": "a" * 41}, "metadata.name: must be no more than 40 characters (got 41)"),
    ({"apiVersion": "kubeflow.org/v1"}, "apiVersion: must be kubeflow.org/v1beta1 (got 'kubeflow.org/v1')"),
    ({"kind": "Trial"}, "(document): this is a Trial (kubeflow.org/v1beta1), not a Katib Experiment ..."),
    # counts
    ({"spec__maxFailedTrialCount": -1}, "spec.maxFailedTrialCount: should not be less than 0"),
    ({"spec__maxTrialCount": 0}, "spec.maxTrialCount: must be greater than 0"),
    ({"spec__parallelTrialCount": 0}, "spec.parallelTrialCount: must be greater than 0"),
    ({"spec__maxFailedTrialCount": 7}, "spec.maxFailedTrialCount: should be less than or equal to spec.maxTrialCount"),
    ({"spec__parallelTrialCount": 7}, "spec.parallelTrialCount: should be less than or equal to spec.maxTrialCount"),
    ({"spec__maxTrialCount": 2}, "spec.parallelTrialCount: should be less than or equal to spec.maxTrialCount"),  # default 3
    # objective
    ({"spec__objective": DELETE}, "spec.objective: Required value"),
    ({"spec__objective__type": "max"}, "spec.objective.type: must be minimize or maximize (got 'max')"),
    ({"spec__objective__objectiveMetricName": DELETE}, "spec.objective.objectiveMetricName: Required value"),
    ({"spec__objective__additionalMetricNames": ["acc", "loss"]},
     "spec.objective.additionalMetricNames: should not contain spec.objective.objectiveMetricName"),
    ({"spec__objective__metricStrategies": [{"name": "loss", "value": "avg"}]},
     "spec.objective.metricStrategies[0].value: must be min, max or latest (got 'avg')"),
    # algorithm and early stopping
    ({"spec__algorithm": DELETE}, "spec.algorithm: Required value"),
    ({"spec__algorithm__algorithmName": ""}, "spec.algorithm.algorithmName: Required value"),
    ({"spec__algorithm__algorithmName": "no-such-algorithm"},
     "spec.algorithm.algorithmName: unknown algorithm 'no-such-algorithm'; available: ..."),
    ({"spec__earlyStopping": {"algorithmSettings": []}}, "spec.earlyStopping.algorithmName: Required value"),
    ({"spec__earlyStopping": {"algorithmName": "no-such-rule"}},
     "spec.earlyStopping.algorithmName: unknown early stopping algorithm 'no-such-rule'; available: ..."),
    # resume policy
    ({"spec__resumePolicy": "Always"}, "spec.resumePolicy: invalid ResumePolicyType 'Always'; must be one of Never, LongRunning, FromVolume"),
    # trial template
    ({"spec__trialTemplate": DELETE}, "spec.trialTemplate: Required value"),
    ({"spec__trialTemplate__primaryContainerName": DELETE}, "spec.trialTemplate.primaryContainerName: Required value"),
    ({f"{SPEC}__kind": "Workflow"}, "spec.trialTemplate: successCondition and failureCondition must be specified"),
    ({"spec__trialTemplate__successCondition": "", f"{SPEC}__kind": "PipelineRun"},
     "spec.trialTemplate: successCondition and failureCondition must be specified"),
    ({TP: DELETE}, "spec.trialTemplate.trialParameters: Required value"),
    ({SPEC: DELETE}, "spec.trialTemplate: trialSpec or configMap must be specified"),
    ({"spec__trialTemplate__configMap": {"configMapName": "t", "configMapNamespace": "kubeflow", "templatePath": "t.yaml"}},
     "spec.trialTemplate: only one of trialSpec or configMap can be specified"),
    ({SPEC: DELETE, "spec__trialTemplate__configMap": {"configMapName": "t"}},
     "spec.trialTemplate.configMap.configMapNamespace: Required value"),
    ({SPEC: DELETE, "spec__trialTemplate__configMap": {"configMapName": "t"}},
     "spec.trialTemplate.configMap.templatePath: Required value"),
    ({f"{TP}[0]__name": ""}, "spec.trialTemplate.trialParameters[0]: name and reference must be specified"),
    ({f"{TP}[0]__reference": DELETE}, "spec.trialTemplate.trialParameters[0]: name and reference must be specified"),
    ({f"{TP}[0]__name": "{lr}"}, "spec.trialTemplate.trialParameters[0].name: must not contain '{' or '}' (got '{lr}')"),
    ({f"{TP}[1]__name": "learningRate"}, "spec.trialTemplate.trialParameters[1].name: duplicate trial parameter name 'learningRate'"),
    ({f"{TP}[1]__reference": "lr"}, "spec.trialTemplate.trialParameters[1].reference: duplicate trial parameter reference 'lr'"),
    ({f"{TP}[1]__reference": "momentum"}, "spec.trialTemplate.trialParameters[1].reference: 'momentum' is not a parameter in spec.parameters"),
    ({f"{TP}[0]__reference": "${trialSpec.Uid}"}, "spec.trialTemplate.trialParameters[0].reference: '${trialSpec.Uid}' is not a parameter ..."),
    ({f"{TP}[0]__name": "rate"},
     "spec.trialTemplate.trialParameters[0]: parameter 'rate' is not used in spec.trialTemplate as ${trialParameters.rate}"),
    ({f"{TP}[0]__name": "rate"},
     "spec.trialTemplate: ${trialParameters.learningRate} is used but not declared in spec.trialTemplate.trialParameters"),
    ({f"{SPEC}__metadata": {"name": "fixed"}}, "spec.trialTemplate.trialSpec.metadata.name: must be omitted"),
    ({f"{SPEC}__metadata": {"namespace": "other"}}, "spec.trialTemplate.trialSpec.metadata.namespace: must be omitted"),
    ({f"{SPEC}__metadata": ["x"]}, "spec.trialTemplate.trialSpec.metadata: must be a mapping"),
    ({f"{SPEC}__apiVersion": DELETE}, "spec.trialTemplate.trialSpec.apiVersion: Required value"),
    # parameters vs nasConfig
    ({"spec__parameters": []}, "spec: spec.parameters or spec.nasConfig must be specified"),
    ({"spec__nasConfig": {"graphConfig": {"numLayers": 1}}}, "spec: only one of spec.parameters or spec.nasConfig can be specified"),
    # parameter rules (webhook)
    ({"spec__parameters[0]__parameterType": "float"},
     "spec.parameters[0].parameterType: 'float' is not supported; must be one of double, int, discrete, categorical"),
    ({f"{PARAM0}__distribution": "gaussian"},
     "spec.parameters[0].feasibleSpace.distribution: 'gaussian' is not supported; must be one of uniform, logUniform, normal, logNormal"),
    ({PARAM0: {}}, "spec.parameters[0].feasibleSpace: feasibleSpace must be specified"),
    ({PARAM0: {"list": ["0.1", "0.2"]}}, "spec.parameters[0].feasibleSpace.list: is not supported for parameterType double"),
    ({PARAM0: {"min": "0.1"}}, "spec.parameters[0].feasibleSpace: min and max must be specified for parameterType double"),
    ({PARAM1: {"max": "3", "min": ""}}, "spec.parameters[1].feasibleSpace: min and max must be specified for parameterType int"),
    ({"spec__parameters[1]__parameterType": "categorical"},
     "spec.parameters[1].feasibleSpace: min, max and step are not supported for parameterType categorical; use list"),
    # parameter checks Katib misses
    ({f"{PARAM0}__min": "abc"}, "spec.parameters[0].feasibleSpace.min: 'abc' is not a number"),
    ({f"{PARAM0}__max": "inf"}, "spec.parameters[0].feasibleSpace.max: 'inf' must be a finite number"),
    ({f"{PARAM1}__max": "4.5"}, "spec.parameters[1].feasibleSpace.max: '4.5' is not an integer"),
    ({f"{PARAM0}__min": "0.5"}, "spec.parameters[0].feasibleSpace: min (0.5) must not be greater than max (0.1)"),
    ({f"{PARAM0}__step": "0"}, "spec.parameters[0].feasibleSpace.step: must be greater than 0"),
    ({f"{PARAM1}__step": "-1"}, "spec.parameters[1].feasibleSpace.step: must be greater than 0"),
    ({f"{PARAM0}__min": "0", f"{PARAM0}__distribution": "logUniform"},
     "spec.parameters[0].feasibleSpace.min: must be greater than 0 for distribution logUniform"),
    ({"spec__parameters[1]__parameterType": "categorical", PARAM1: {"list": []}},
     "spec.parameters[1].feasibleSpace.list: must not be empty"),
    ({"spec__parameters[1]__parameterType": "categorical", PARAM1: {"list": ["a", "a"]}},
     "spec.parameters[1].feasibleSpace.list: contains duplicate values"),
    ({"spec__parameters[1]__parameterType": "discrete", PARAM1: {"list": ["1", "x"]}},
     "spec.parameters[1].feasibleSpace.list[1]: 'x' is not a number"),
    ({"spec__parameters[1]__name": "lr"}, "spec.parameters[1].name: duplicate parameter name 'lr'"),
    ({"spec__parameters[1]__name": ""}, "spec.parameters[1].name: Required value"),
    ({f"{TP}": [{"name": "learningRate", "reference": "lr"}],
      f"{SPEC}__spec__template__spec__containers[0]__command": ["python", "${trialParameters.learningRate}"]},
     "spec.parameters: parameter 'layers' is not referenced by any spec.trialTemplate.trialParameters"),
    # metrics collector
    ({MC: {"collector": {"kind": "Bogus"}}},
     "spec.metricsCollectorSpec.collector.kind: invalid metrics collector kind 'Bogus'; must be one of ..."),
    ({MC: {"collector": {"kind": "File"}, "source": {"fileSystemPath": {"kind": "File", "path": "metrics.log"}}}},
     "spec.metricsCollectorSpec.source.fileSystemPath: file path where metrics file exists is required (kind File, absolute path)"),
    ({MC: {"collector": {"kind": "File"}, "source": {"fileSystemPath": {"kind": "Directory", "path": "/out"}}}},
     "spec.metricsCollectorSpec.source.fileSystemPath: file path where metrics file exists is required ..."),
    ({MC: {"collector": {"kind": "File"}, "source": {"fileSystemPath": {"kind": "File", "path": "/m", "format": "XML"}}}},
     "spec.metricsCollectorSpec.source.fileSystemPath.format: format of metrics file is required and must be TEXT or JSON"),
    ({MC: {"collector": {"kind": "File"}, "source": {"fileSystemPath": {"kind": "File", "path": "/m", "format": "JSON"},
                                                     "filter": {"metricsFormat": ["(a)=(b)"]}}}},
     "spec.metricsCollectorSpec.source.filter: filter must be nil when format of metrics file is json"),
    ({MC: {"collector": {"kind": "TensorFlowEvent"}, "source": {"fileSystemPath": {"kind": "File", "path": "/logs"}}}},
     "spec.metricsCollectorSpec.source.fileSystemPath: directory path where tensorflow event files exist is required ..."),
    ({MC: {"collector": {"kind": "TensorFlowEvent"}, "source": {"fileSystemPath": {"kind": "Directory", "path": "logs"}}}},
     "spec.metricsCollectorSpec.source.fileSystemPath: directory path where tensorflow event files exist is required ..."),
    ({MC: {"collector": {"kind": "TensorFlowEvent"},
           "source": {"fileSystemPath": {"kind": "Directory", "path": "/logs", "format": "TEXT"}}}},
     "spec.metricsCollectorSpec.source.fileSystemPath.format: must be empty for TensorFlowEvent"),
    ({MC: {"collector": {"kind": "PrometheusMetric"}, "source": {"httpGet": {"port": 0}}}},
     "spec.metricsCollectorSpec.source.httpGet.port: must be a positive integer"),
    ({MC: {"collector": {"kind": "PrometheusMetric"}, "source": {"httpGet": {"port": 80, "path": "metrics"}}}},
     "spec.metricsCollectorSpec.source.httpGet.path: must start with '/'"),
    ({MC: {"collector": {"kind": "Custom"}}}, "spec.metricsCollectorSpec.collector.customCollector: Required value for kind Custom"),
    ({MC: {"collector": {"kind": "Custom", "customCollector": {"name": "c"}},
           "source": {"fileSystemPath": {"kind": "File", "path": "m.log"}}}},
     "spec.metricsCollectorSpec.source.fileSystemPath: must be an absolute path with kind File or Directory"),
    ({MC: {"source": {"filter": {"metricsFormat": ["loss=([0-9.]+)"]}}}},
     "spec.metricsCollectorSpec.source.filter.metricsFormat[0]: two top subexpressions are required (metric name and value)"),
    ({MC: {"source": {"filter": {"metricsFormat": ["(a)=(b"]}}}},
     "spec.metricsCollectorSpec.source.filter.metricsFormat[0]: invalid regular expression ..."),
]


def _matches(line: str, expected: str) -> bool:
    return line.startswith(expected[:-3]) if expected.endswith("...") else line == expected


@pytest.mark.parametrize("changes, expected", CASES, ids=[f"{i}-{e.split(':')[0]}" for i, (_, e) in enumerate(CASES)])
def test_rule(changes: dict[str, Any], expected: str) -> None:
    errors = errors_of(**changes)
    assert any(_matches(line, expected) for line in errors), errors


def test_base_experiment_is_valid() -> None:
    assert errors_of() == []


@pytest.mark.parametrize("changes", [
    {"metadata__name": "a" * 40},
    {f"{PARAM1}__min": "4"},  # min == max: a fixed value (Katib's hyperband example pins its resource this way)
    {f"{PARAM0}": {"min": "1e-4", "max": "1", "step": "0.5", "distribution": "logNormal"}},
    {f"{PARAM1}__distribution": "normal"},
    {"spec__parameters[1]__parameterType": "discrete", PARAM1: {"list": [1, 2.5, "4"]}},
    {"spec__parameters[1]__parameterType": "categorical", PARAM1: {"list": ["sgd", True, 3]}},
    {"spec__maxTrialCount": DELETE, "spec__parallelTrialCount": 8},
    {"spec__resumePolicy": "FromVolume", "spec__maxFailedTrialCount": 0},
    {MC: {"collector": {"kind": "File"}}},  # defaults fill in the path and format
    {MC: {"collector": {"kind": "File"}, "source": {"fileSystemPath": {"kind": "File", "path": "/m.json", "format": "JSON"}}}},
    {MC: {"collector": {"kind": "PrometheusMetric"}}},
    {MC: {"collector": {"kind": "Push"}}},
    {MC: {"source": {"filter": {"metricsFormat": ["{metricName: ([\\w|-]+), metricValue: ((-?\\d+)(\\.\\d+)?)}"]}}}},
    {f"{TP}[1]__reference": "${trialSpec.Labels[team]}", "spec__parameters": [BASE["spec"]["parameters"][0]]},
    {"spec__trialTemplate__trialParameters": [
        {"name": "learningRate", "reference": "lr"}, {"name": "layers", "reference": "layers"},
        *[{"name": f"m{i}", "reference": f"${{trialSpec.{ref}}}"} for i, ref in
          enumerate(["Name", "Namespace", "Kind", "APIVersion", "Labels[a]", "Annotations[b]"])]],
     f"{SPEC}__spec__template__spec__containers[0]__args": [f"${{trialParameters.m{i}}}" for i in range(6)]},
], ids=lambda c: ",".join(c)[:60])
def test_accepted(changes: dict[str, Any]) -> None:
    assert errors_of(**changes) == []


def test_configmap_template_keeps_name_and_reference_rules() -> None:
    tp = [{"name": "a", "reference": "lr"}, {"name": "a", "reference": "lr"}]
    cm = {"configMapName": "t", "configMapNamespace": "kubeflow", "templatePath": "t.yaml"}
    errors = errors_of(**{SPEC: DELETE, "spec__trialTemplate__configMap": cm, TP: tp,
                          "spec__trialTemplate__successCondition": "s", "spec__trialTemplate__failureCondition": "f"})
    assert errors == [
        "spec.trialTemplate.trialParameters[1].name: duplicate trial parameter name 'a'",
        "spec.trialTemplate.trialParameters[1].reference: duplicate trial parameter reference 'lr'",
        "spec.parameters: parameter 'layers' is not referenced by any spec.trialTemplate.trialParameters",
    ]


def test_nas_experiment_needs_no_parameter_references() -> None:
    nas = {"graphConfig": {"numLayers": 1}, "operations": [
        {"operationType": "convolution", "parameters": [
            {"name": "filter_size", "parameterType": "categorical", "feasibleSpace": {"list": ["3"]}}]}]}
    errors = errors_of(**{"spec__parameters": DELETE, "spec__nasConfig": nas, "spec__algorithm__algorithmName": "my-nas",
                          TP: [{"name": "learningRate", "reference": "architecture"}, {"name": "layers", "reference": "nn_config"}]})
    assert len(errors) == 1 and errors[0].startswith("spec.algorithm.algorithmName: unknown algorithm 'my-nas'")


def test_objective_error_does_not_hide_the_others() -> None:
    errors = errors_of(spec__objective__type="up", spec__maxTrialCount=0, spec__resumePolicy="x",
                       **{f"{PARAM0}__min": "abc", MC: {"collector": {"kind": "Bogus"}}})
    assert [line.split(":")[0] for line in errors] == [
        "spec.maxTrialCount", "spec.objective.type", "spec.resumePolicy",
        "spec.parameters[0].feasibleSpace.min", "spec.metricsCollectorSpec.collector.kind"]


def test_validated_parameters_parse_into_a_search_space() -> None:
    doc = copy.deepcopy(BASE)
    doc["spec"]["parameters"][0]["feasibleSpace"] = {"min": 0.01, "max": 0.1, "step": 0.01}
    space = SearchSpace.from_experiment(experiment_from_dict(doc))
    lr, layers = space.parameters
    assert (lr.min, lr.max, lr.step, lr.distribution) == (0.01, 0.1, 0.01, "uniform")
    assert (layers.type, layers.min, layers.max) == ("int", 1.0, 4.0)


# --- files: YAML errors, wrong shapes, several problems at once ------------------------

FILES: dict[str, list[str]] = {
    "malformed.yaml": ["(yaml): line 8, column 4: expected <block end>, but found '<block mapping start>'"],
    "not-a-mapping.yaml": ["(document): must be a mapping with apiVersion, kind, metadata and spec (got a list)"],
    "empty.yaml": ["(document): the file holds no Experiment"],
    "duplicate-key.yaml": ["(yaml): line 7, column 3: duplicate key 'maxTrialCount'"],
    "unknown-fields.yaml": [
        "spec.parallelTrialcount: unknown field (did you mean 'parallelTrialCount'?)",
        "spec.objective.goals: unknown field (did you mean 'goal'?)",
        "spec.parameters[0].feasibleSpace.stepSize: unknown field (did you mean 'step'?)",
    ],
    "wrong-types.yaml": [
        "spec.maxTrialCount: must be an integer (got 'abc')",
        "spec.parallelTrialCount: must be an integer (got '3')",
        "spec.objective.goal: must be a number (got 'low')",
        "spec.objective.additionalMetricNames: must be a list (got 'accuracy')",
        "spec.parameters[0].feasibleSpace: must be a mapping (got a list)",
        "spec.trialTemplate.retain: must be true or false (got 'maybe')",
        "spec.trialTemplate.trialSpec: must be a mapping (got a list)",
    ],
    "several-problems.yaml": [
        "metadata.name: 'Several_Problems' must consist of lower case alphanumeric characters or '-', "
        "start with a letter and end with an alphanumeric character",
        "spec.parallelTrialCount: must be greater than 0",
        "spec.objective.type: must be minimize or maximize (got 'max')",
        "spec.resumePolicy: invalid ResumePolicyType 'Always'; must be one of Never, LongRunning, FromVolume",
        "spec.trialTemplate.trialParameters[0]: parameter 'rate' is not used in spec.trialTemplate as ${trialParameters.rate}",
        "spec.trialTemplate: ${trialParameters.learningRate} is used but not declared in spec.trialTemplate.trialParameters",
        "spec.trialTemplate.trialSpec.metadata.name: must be omitted",
        "spec.parameters[0].feasibleSpace: min (0.1) must not be greater than max (0.01)",
        "spec.parameters[1].name: duplicate parameter name 'lr'",
        "spec.parameters[1].feasibleSpace.list: must not be empty",
        "spec.metricsCollectorSpec.source.fileSystemPath: file path where metrics file exists is required (kind File, absolute path)",
    ],
}


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(p.name for p in INVALID.glob("*.yaml")) == sorted(FILES)


@pytest.mark.parametrize("name", sorted(FILES))
def test_invalid_file(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_experiment(INVALID / name)
    assert info.value.errors == FILES[name]
    assert info.value.source == str(INVALID / name)


def test_missing_file_and_binary_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        load_experiment(tmp_path / "nope.yaml")
    assert info.value.errors == ["(file): cannot read (No such file or directory)"]
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00spec")
    with pytest.raises(ValidationError) as info:
        load_experiment(tmp_path / "bin.yaml")
    assert info.value.errors == ["(file): not UTF-8 text"]


def test_errors_of_each_document_are_prefixed(tmp_path: Path) -> None:
    good = yaml.safe_dump(BASE)
    path = tmp_path / "two.yaml"
    path.write_text(good + "---\n" + good.replace("maxTrialCount: 6", "maxTrialCount: 0"))
    with pytest.raises(ValidationError) as info:
        load_experiments(path)
    assert info.value.errors == ["document 2: spec.maxTrialCount: must be greater than 0"]
    path.write_text(good + "---\n" + good)
    assert len(load_experiments(path)) == 2
    with pytest.raises(ValidationError, match="expected one Experiment, found 2"):
        load_experiment(path)


@pytest.mark.parametrize("text", [
    "42", "just text", "spec: 5", "metadata: []", "spec: {parameters: [5]}", "spec: {parameters: [{feasibleSpace: 3}]}",
    "spec: {trialTemplate: {trialSpec: {metadata: 7}}}", "spec: {objective: {metricStrategies: [{name: 1}]}}",
    "? [a, b]\n: 1\n", "spec:\n\t- tab", "{{{", "spec: !!python/object:os.system x", "1: 2", "spec: {nasConfig: {graphConfig: {numLayers: x}}}",
    "spec: {trialTemplate: {trialParameters: [{name: a, reference: a}], trialSpec: {kind: Job}}, parameters: [{}]}",
])
def test_garbage_never_raises_anything_but_validation_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ValidationError) as info:
        load_experiment(path)
    assert info.value.errors and all(": " in line and "\n" not in line for line in info.value.errors)


def test_schema_problems_and_webhook_rules_are_reported_in_one_pass() -> None:
    """A wrong type and a broken Katib rule in the same file: both lines at once, not one stage after the other."""
    errors = errors_of(spec__maxTrialCount="3", metadata__name="Bad_Name", spec__objective__goall=1)
    assert "spec.maxTrialCount: must be an integer (got '3')" in errors
    assert "spec.objective.goall: unknown field (did you mean 'goal'?)" in errors
    assert any(line.startswith("metadata.name: 'Bad_Name' must consist of") for line in errors)


@pytest.mark.parametrize("doc, what", [
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}, "ConfigMap (v1)"),
    ({"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {}}}, "Job (batch/v1)"),
])
def test_a_file_of_another_kind_is_told_so(tmp_path: Path, doc: dict[str, Any], what: str) -> None:
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValidationError) as caught:
        load_experiment(path)
    assert caught.value.errors == [f"(document): this is a {what}, not a Katib Experiment "
                                   "(apiVersion: kubeflow.org/v1beta1, kind: Experiment)"]


@pytest.mark.parametrize("changes, only", [
    ({"spec__algorithm__algorithmSettings": [{"name": "random_state", "value": [1]}]},
     "spec.algorithm.algorithmSettings[0].value: must be a string (got a list)"),
    ({"spec__trialTemplate__trialParameters": "x"}, "spec.trialTemplate.trialParameters: must be a list (got 'x')"),
])
def test_what_is_set_aside_adds_no_line_of_its_own(changes: dict[str, Any], only: str) -> None:
    """A part the schema refuses is reported once: not also as missing, nor through rules that refer to it."""
    assert errors_of(**changes) == [only]
