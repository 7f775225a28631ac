"""The Katib SDK's objects, and what its serializer writes, as Katib YAML data.

``kubeflow-katib`` model objects (``V1beta1Experiment``...) and the Kubernetes client's (``V1Job``...) become the
camelCase data a YAML file holds, without importing either package. Files the SDK wrote through the Kubernetes
client 37 serializer hold snake_case keys and explicit nulls: a null is unset, as on the API server, and snake_case
keys are renamed after the model that defines them (a label or an annotation key is never renamed).
"""

from __future__ import annotations

import datetime
import functools
import importlib
import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from katibx.search import Domain, categorical
from katibx.spec import Experiment, FeasibleSpace, ObjectMeta, model_in

# Katib fields holding Kubernetes objects: the client's model that names their keys (trialSpec's comes from its kind).
_KUBERNETES_FIELDS = {("MetricsSource", "http_get"): "V1HTTPGetAction", ("Collector", "custom_collector"): "V1Container"}
# Where the model classes of a Kubernetes object are looked up, in order: the client's, then Kubeflow training jobs'.
_MODEL_MODULES = ("kubernetes.client", "kubeflow.training.models", "kubeflow.katib.models")
_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")


def is_model_object(value: Any) -> bool:
    """Whether ``value`` is an OpenAPI-generated model object (Katib SDK, Kubernetes or Kubeflow training client)."""
    return isinstance(getattr(type(value), "attribute_map", None), dict) and hasattr(value, "openapi_types")


def plain_data(value: Any) -> Any:
    """Model objects (at any depth) as the camelCase data their API server accepts, unset (None) fields left out."""
    if is_model_object(value):
        return {value.attribute_map[name]: plain_data(getattr(value, name))
                for name in value.attribute_map if getattr(value, name, None) is not None}
    if isinstance(value, dict):  # user data (labels, a function's fixed parameters): nulls kept, as in YAML
        return {key: plain_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(item) for item in value]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def camel_case_keys(document: dict[Any, Any]) -> tuple[dict[Any, Any], list[str]]:
    """An Experiment document as the API server reads what the Katib SDK sends: its serializer's snake_case keys
    renamed to Katib's and Kubernetes' names and its nulls left out (a null field is unset); and the snake_case keys
    that were renamed, each once, in document order. User data (labels, a function's fixed parameters, objects of
    unknown kinds) is kept as given, nulls included."""
    renamed: list[str] = []
    return _katib(document, Experiment, renamed), list(dict.fromkeys(renamed))


def _katib(data: Any, model: type[BaseModel], renamed: list[str]) -> Any:
    """Keys of one Katib model's data renamed by its fields' aliases; nested models and Kubernetes objects too."""
    if not isinstance(data, dict):
        return data
    fields = _fields(model)
    result: dict[Any, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        name = fields.get(key) if isinstance(key, str) else None
        alias = (model.model_fields[name].alias or name) if name else key
        if model is ObjectMeta and name is None and _SNAKE.match(str(key)):
            alias = to_camel(key)  # generate_name, owner_references: ObjectMeta's keys are plain camelCase
        if alias != key and alias not in data:
            renamed.append(key)
        else:
            alias = key
        result[alias] = _katib_value(value, model, name, renamed)
    return result


@functools.cache
def _fields(model: type[BaseModel]) -> dict[str, str]:
    """A Katib model's field names by both their spellings: ``trial_spec`` and ``trialSpec`` -> ``trial_spec``."""
    return {**{field.alias: name for name, field in model.model_fields.items() if field.alias},
            **{name: name for name in model.model_fields}}


def _katib_value(value: Any, model: type[BaseModel], name: str | None, renamed: list[str]) -> Any:
    if name is None:
        return value
    if (model.__name__, name) == ("TrialTemplate", "trial_spec") or (model.__name__, name) in _KUBERNETES_FIELDS:
        return _kubernetes_object(value, _KUBERNETES_FIELDS.get((model.__name__, name)), renamed)
    nested = model_in(model.model_fields[name].annotation)
    if nested is None:
        return value
    if isinstance(value, list):
        return [_katib(item, nested, renamed) for item in value]
    return _katib(value, nested, renamed)


def _kubernetes_object(value: Any, model_name: str | None, renamed: list[str]) -> Any:
    """A Kubernetes object in a Katib field (a trial's Job or PyTorchJob, a custom collector's container) with
    snake_case keys renamed after its client model (``model_name``, else found by its apiVersion and kind); as given
    when it has no snake_case key (no client is imported then) or no model of its kind is installed."""
    if not isinstance(value, dict) or not any(map(_SNAKE.match, _keys(value))):
        return value
    names = [model_name] if model_name else []
    api_version, kind = value.get("apiVersion", value.get("api_version")), value.get("kind")
    if not names and isinstance(api_version, str) and isinstance(kind, str):
        group, _, version = api_version.rpartition("/")
        version = version.capitalize()
        names = [version + kind, "".join(part.capitalize() for part in re.split(r"[.-]", group)) + version + kind]
    cls = next((c for c in map(_model_class, names) if c is not None), None)
    return _with_model(value, cls, renamed)


def _keys(data: Any) -> Iterator[str]:
    """Every string key at any depth of ``data``."""
    if isinstance(data, dict):
        for key, item in data.items():
            if isinstance(key, str):
                yield key
            yield from _keys(item)
    elif isinstance(data, list):
        for item in data:
            yield from _keys(item)


def _with_model(data: Any, cls: type | None, renamed: list[str]) -> Any:
    """Keys of a Kubernetes object renamed by its client model's ``attribute_map``, following ``openapi_types``
    into nested objects, lists and maps; without a model (``object`` fields, unknown kinds) data is kept as is."""
    if not isinstance(data, dict) or cls is None:
        return data
    attributes = _attributes(cls)
    result: dict[Any, Any] = {}
    for key, value in data.items():
        attribute = attributes.get(key) if isinstance(key, str) else None
        if value is None and attribute is not None:
            continue
        alias = cls.attribute_map[attribute] if attribute else key
        if alias != key and alias not in data:
            renamed.append(key)
        else:
            alias = key
        result[alias] = _typed(value, cls.openapi_types.get(attribute) if attribute else None, renamed)
    return result


@functools.cache
def _attributes(cls: type) -> dict[str, str]:
    """A client model's attribute names by both their spellings: ``restart_policy``, ``restartPolicy``."""
    return {**{key: attribute for attribute, key in cls.attribute_map.items()}, **{a: a for a in cls.attribute_map}}


def _typed(value: Any, type_name: str | None, renamed: list[str]) -> Any:
    """``value`` read as the OpenAPI type ``type_name``: ``V1Container``, ``List[V1Container]``, ``Dict[str, V1X]``
    (the Kubernetes client 37 spelling) or ``list[...]``/``dict(str, ...)`` (the older generator's)."""
    if type_name is None:
        return value
    inner = re.fullmatch(r"(?:List|list)\[(.+)\]", type_name)
    if inner and isinstance(value, list):
        return [_typed(item, inner.group(1), renamed) for item in value]
    inner = re.fullmatch(r"(?:Dict\[|dict\()str, (.+)[\])]", type_name)
    if inner and isinstance(value, dict):
        return {key: _typed(item, inner.group(1), renamed) for key, item in value.items()}
    if isinstance(value, dict) and re.fullmatch(r"[A-Z]\w*", type_name):
        return _with_model(value, _model_class(type_name), renamed)
    return value


@functools.cache
def _model_class(name: str) -> type | None:
    """The model class called ``name`` in the installed Kubernetes, Kubeflow training or Katib SDK clients."""
    for module_name in _MODEL_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cls = getattr(module, name, None)
        if isinstance(cls, type) and isinstance(getattr(cls, "attribute_map", None), dict):
            return cls
    return None


def sdk_domain(value: Any) -> Domain | None:
    """A ``katib.search`` parameter (a ``V1beta1ParameterSpec``) as a katibx search domain; None for other values.
    Its ``categorical`` puts the list into ``distribution`` (kubeflow/katib#2625): that list is read as the list."""
    if not is_model_object(value) or not hasattr(value, "parameter_type"):
        return None
    data = plain_data(value)
    space = dict(data.get("feasibleSpace") or {})
    if isinstance(space.get("distribution"), list) and "list" not in space:
        space["list"] = space.pop("distribution")
    if data.get("parameterType") == "categorical" and isinstance(space.get("list"), list):
        return categorical(space["list"])
    return Domain(str(data.get("parameterType", "")), FeasibleSpace.model_validate(space))
