"""Pydantic models of Katib's ``kubeflow.org/v1beta1`` Experiment, with Katib's field names.

Models are strict about unknown fields (a typo is an error, not a silently ignored key) and keep
Katib's string-typed ``feasibleSpace`` values. Defaults are applied by :mod:`katibx.defaults`.
"""

from __future__ import annotations

from typing import Any, Optional, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)
from pydantic.alias_generators import to_camel

_StrList = list[str]
API_VERSION = "kubeflow.org/v1beta1"
KIND = "Experiment"


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class inside an annotation such as ``Optional[list[Model]]``; None for plain values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


class KatibModel(BaseModel):
    """Base: camelCase field names as in Katib's YAML, unknown keys refused, no lossy coercion ("3" is not 3)."""

    # defer_build: validators are built when a spec is first validated (katibx run, validate), not when the module is
    # imported: the reading commands build experiments from stored specs without validating them (katibx.store)
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True,
                              defer_build=True)

    @model_serializer(mode="wrap")
    def _drop_empty_defaults(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        """Leave out empty lists and maps that only stand for "not given", so output mirrors the input."""
        data = handler(self)
        if isinstance(data, dict):
            for name, field in type(self).model_fields.items():
                key = field.alias if info.by_alias and field.alias else name
                if field.default_factory is not None and data.get(key) in ([], {}):
                    del data[key]
        return data

    def to_dict(self) -> dict[str, Any]:
        """Katib-shaped plain data (camelCase, unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _as_string(value: Any) -> Any:
    """Katib stores feasibleSpace values as strings; accept YAML numbers and keep them textual."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return value


class MetricStrategy(KatibModel):
    """Which aggregate of a metric's series is the trial's value: min, max or latest."""

    name: str
    value: str  # min | max | latest


class AdditionalObjective(KatibModel):
    """A further objective of a multi-objective experiment, with its own direction (katibx extension)."""

    objective_metric_name: Optional[str] = None
    type: Optional[str] = None


class Objective(KatibModel):
    """What to optimise: direction, optional goal, objective and additional metrics.

    ``additionalObjectives`` (katibx extension) makes the experiment multi-objective; Katib YAML without it
    is unchanged.
    """

    type: Optional[str] = None
    goal: Optional[float] = None
    objective_metric_name: Optional[str] = None
    additional_metric_names: list[str] = Field(default_factory=list)
    metric_strategies: list[MetricStrategy] = Field(default_factory=list)
    additional_objectives: list[AdditionalObjective] = Field(default_factory=list)

    def objectives(self) -> list[tuple[str, str]]:
        """(metric name, minimize|maximize) of every objective, the primary one first."""
        first = [(self.objective_metric_name or "", self.type or "")]
        return first + [(o.objective_metric_name or "", o.type or "") for o in self.additional_objectives]


class AlgorithmSetting(KatibModel):
    """One algorithm setting; Katib keeps values as strings."""

    name: str
    value: str

    _coerce = field_validator("value", mode="before")(_as_string)


class Algorithm(KatibModel):
    """An algorithm name and its settings (the shape of both algorithm and earlyStopping)."""

    algorithm_name: Optional[str] = None
    algorithm_settings: list[AlgorithmSetting] = Field(default_factory=list)

    def settings_dict(self) -> dict[str, str]:
        """Settings as a name -> value mapping."""
        return {s.name: s.value for s in self.algorithm_settings}


class FeasibleSpace(KatibModel):
    """Range (min/max/step) or list of a parameter, all strings, plus the distribution."""

    min: Optional[str] = None
    max: Optional[str] = None
    step: Optional[str] = None
    list: Optional[_StrList] = None  # Katib's field name shadows the builtin inside this class
    distribution: Optional[str] = None

    _coerce = field_validator("min", "max", "step", mode="before")(_as_string)

    @field_validator("list", mode="before")
    @classmethod
    def _coerce_list(cls, value: Any) -> Any:
        """Keep list items textual, as Katib does."""
        if isinstance(value, (list, tuple)):
            return [_as_string(v) for v in value]
        return value


class ParameterSpec(KatibModel):
    """One search-space parameter."""

    name: str = ""
    parameter_type: str = ""
    feasible_space: FeasibleSpace = Field(default_factory=FeasibleSpace)


class TrialParameter(KatibModel):
    """A ``${trialParameters.<name>}`` placeholder and the parameter or metadata it takes its value from."""

    name: str = ""
    description: Optional[str] = None
    reference: str = ""


class ConfigMapSource(KatibModel):
    """Where a trial template stored in a ConfigMap lives."""

    config_map_name: Optional[str] = None
    config_map_namespace: Optional[str] = None
    template_path: Optional[str] = None


class TrialTemplate(KatibModel):
    """How a trial's worker is made and judged: inline trialSpec or a ConfigMap, plus placeholders."""

    retain: Optional[bool] = None
    trial_spec: Optional[dict[str, Any]] = None
    config_map: Optional[ConfigMapSource] = None
    trial_parameters: Optional[list[TrialParameter]] = None
    primary_pod_labels: Optional[dict[str, str]] = None
    primary_container_name: Optional[str] = None
    success_condition: Optional[str] = None
    failure_condition: Optional[str] = None


class FileSystemPath(KatibModel):
    """A metrics file or directory: path, kind (File | Directory) and format (TEXT | JSON)."""

    path: Optional[str] = None
    kind: Optional[str] = None  # File | Directory
    format: Optional[str] = None  # TEXT | JSON


class MetricsFilter(KatibModel):
    """Regular expressions with two groups (metric name and value) for TEXT metrics."""

    metrics_format: list[str] = Field(default_factory=list)


class MetricsSource(KatibModel):
    """Where metrics come from: an HTTP endpoint, a file or directory, and line filters."""

    http_get: Optional[dict[str, Any]] = None
    file_system_path: Optional[FileSystemPath] = None
    filter: Optional[MetricsFilter] = None


class Collector(KatibModel):
    """The metrics collector kind, and its container for kind Custom."""

    kind: Optional[str] = None
    custom_collector: Optional[dict[str, Any]] = None


class MetricsCollectorSpec(KatibModel):
    """How trial metrics are collected."""

    collector: Optional[Collector] = None
    source: Optional[MetricsSource] = None


class GraphConfig(KatibModel):
    """NAS network shape: number of layers, input and output sizes."""

    num_layers: Optional[int] = None
    input_sizes: Optional[list[int]] = None
    output_sizes: Optional[list[int]] = None


class Operation(KatibModel):
    """One NAS operation type and its parameters."""

    operation_type: Optional[str] = None
    parameters: list[ParameterSpec] = Field(default_factory=list)


class NasConfig(KatibModel):
    """The NAS search space: graph shape and candidate operations."""

    graph_config: Optional[GraphConfig] = None
    operations: list[Operation] = Field(default_factory=list)


class ExperimentSpec(KatibModel):
    """The whole ``spec`` of a v1beta1 Experiment."""

    parameters: list[ParameterSpec] = Field(default_factory=list)
    objective: Optional[Objective] = None
    algorithm: Optional[Algorithm] = None
    early_stopping: Optional[Algorithm] = None
    trial_template: Optional[TrialTemplate] = None
    parallel_trial_count: Optional[int] = None
    max_trial_count: Optional[int] = None
    max_failed_trial_count: Optional[int] = None
    metrics_collector_spec: Optional[MetricsCollectorSpec] = None
    nas_config: Optional[NasConfig] = None
    resume_policy: Optional[str] = None


class ObjectMeta(KatibModel):
    """The subset of Kubernetes ObjectMeta an Experiment carries; other keys are kept as given."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", strict=True,
                              defer_build=True)

    name: Optional[str] = None
    namespace: Optional[str] = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Experiment(KatibModel):
    """A Katib Experiment: metadata plus spec. Status lives in the store, not here."""

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ExperimentSpec = Field(default_factory=ExperimentSpec)
    status: Optional[dict[str, Any]] = None  # accepted (kubectl get -o yaml output) and ignored

    # Folder of the file the experiment was loaded from: the default working directory of its trials.
    _source_dir: Optional[str] = PrivateAttr(default=None)

    @property
    def source_dir(self) -> str | None:
        """The folder of the YAML file this experiment came from, if any."""
        return self._source_dir

    @property
    def name(self) -> str:
        """``metadata.name``, or an empty string."""
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        """``metadata.namespace``, ``default`` when unset."""
        return self.metadata.namespace or "default"
