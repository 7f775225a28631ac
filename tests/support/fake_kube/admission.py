"""Admission: strict schema validation with kubernetes-validate's official schemas plus the server's own checks.

Every create or update of a built-in kind (Job, Pod, ConfigMap, ...) is validated against the OpenAPI schema that
the `kubernetes-validate` package ships for SCHEMA_VERSION, in its strict variant (unknown fields refused), and
against a few rules the real server enforces outside the schema (names, labels, container name and image, a Job's
restartPolicy). Failures become 422 Invalid with a `Status` listing each cause, like the real server.

kubernetes_validate.validate() reloads the schema files on every call (~25 ms); the validators are built once per
kind from the same files here, which keeps admission under a millisecond.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

from .errors import ApiError
from .resources import ResourceType

SCHEMA_VERSION = "1.33.0"
"""The Kubernetes version whose schemas admission uses (kubernetes-validate ships 1.25 to 1.37)."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

_validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
_validators_lock = threading.Lock()


def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """The strict validator of one kind, built once from kubernetes-validate's schema files."""
    key = (api_version, kind)
    with _validators_lock:
        if key not in _validators:
            folder = f"kubernetes-json-schema/v{SCHEMA_VERSION}-local-strict"
            file_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
            try:
                schema = schema_contents(f"{folder}/{kind.lower()}-{file_version}.json", SCHEMA_VERSION)
            except FileNotFoundError as error:
                raise kubernetes_validate.SchemaNotFoundError(kind, SCHEMA_VERSION, api_version) from error
            definitions = schema_contents(f"{folder}/_definitions.json", SCHEMA_VERSION)
            registry: Registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
            _validators[key] = jsonschema.validators.Draft202012Validator(schema, registry=registry)
        return _validators[key]


def field_path(parts: Any) -> str:
    """`spec.template.spec.containers[0].name` from a jsonschema path."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _join(base: str, name: str) -> str:
    return f"{base}.{name}" if base else name


def schema_causes(obj: dict[str, Any]) -> list[dict[str, str]]:
    """The strict-schema violations of an object, as Status causes (reason, message, field)."""
    causes = []
    for error in _validator(obj["apiVersion"], obj["kind"]).iter_errors(obj):
        base = field_path(error.absolute_path)
        if error.validator == "additionalProperties":
            for name in re.findall(r"'([^']*)'", error.message.split("(", 1)[-1]):
                causes.append({"reason": "FieldValueInvalid", "message": f'unknown field "{_join(base, name)}"',
                               "field": _join(base, name)})
        elif error.validator == "required":
            name = re.findall(r"'([^']*)'", error.message)[0]
            causes.append({"reason": "FieldValueRequired", "message": "Required value", "field": _join(base, name)})
        elif error.validator == "type":
            causes.append({"reason": "FieldValueTypeInvalid", "message": f"Invalid value: {error.message}",
                           "field": base})
        elif error.validator == "enum":
            causes.append({"reason": "FieldValueNotSupported", "message": f"Unsupported value: {error.message}",
                           "field": base})
        else:
            causes.append({"reason": "FieldValueInvalid", "message": f"Invalid value: {error.message}",
                           "field": base})
    return causes


def _name_causes(field: str, name: str, label: bool = False, max_length: int = 253) -> list[dict[str, str]]:
    """DNS-1123 label/subdomain checks on a name."""
    pattern = _DNS_LABEL if label else _DNS_SUBDOMAIN
    causes = []
    if len(name) > max_length:
        causes.append({"reason": "FieldValueInvalid", "field": field,
                       "message": f'Invalid value: "{name}": must be no more than {max_length} characters'})
    if not pattern.match(name):
        kind = "RFC 1123 label" if label else "RFC 1123 subdomain"
        causes.append({"reason": "FieldValueInvalid", "field": field,
                       "message": f'Invalid value: "{name}": a lowercase {kind} must consist of lower case '
                                  "alphanumeric characters, '-' or '.', and must start and end with an "
                                  "alphanumeric character"})
    return causes


def _label_causes(field: str, labels: Any) -> list[dict[str, str]]:
    """Label key and value syntax, as the server checks it."""
    causes = []
    for key, value in (labels or {}).items() if isinstance(labels, dict) else ():
        prefix, _, name = key.rpartition("/")
        if not _LABEL_NAME.match(name) or len(name) > 63 or (prefix and not _DNS_SUBDOMAIN.match(prefix)):
            causes.append({"reason": "FieldValueInvalid", "field": field,
                           "message": f'Invalid value: "{key}": name part must consist of alphanumeric characters, '
                                      "'-', '_' or '.', and must start and end with an alphanumeric character"})
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            causes.append({"reason": "FieldValueInvalid", "field": field,
                           "message": f'Invalid value: "{value}": a valid label must be an empty string or consist '
                                      "of alphanumeric characters, '-', '_' or '.', must start and end with an "
                                      "alphanumeric character and be at most 63 characters"})
    return causes


def _pod_spec_causes(base: str, spec: Any) -> list[dict[str, str]]:
    """Container names (unique DNS labels) and images, which the schema does not require."""
    causes: list[dict[str, str]] = []
    if not isinstance(spec, dict):
        return causes
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(group) or []):
            if not isinstance(container, dict):
                continue
            field = f"{base}.{group}[{index}]"
            name = container.get("name")
            if isinstance(name, str):
                causes += _name_causes(f"{field}.name", name, label=True, max_length=63)
                if name in seen:
                    causes.append({"reason": "FieldValueDuplicate", "field": f"{field}.name",
                                   "message": f'Duplicate value: "{name}"'})
                seen.add(name)
            if not container.get("image"):
                causes.append({"reason": "FieldValueRequired", "field": f"{field}.image", "message": "Required value"})
    if "containers" in spec and not spec.get("containers"):
        causes.append({"reason": "FieldValueRequired", "field": f"{base}.containers", "message": "Required value"})
    return causes


def semantic_causes(rtype: ResourceType, obj: dict[str, Any]) -> list[dict[str, str]]:
    """Checks the real server makes beyond the schema."""
    meta = obj.get("metadata") or {}
    causes: list[dict[str, str]] = []
    name = meta.get("name") or (f"{meta['generateName']}xxxxx" if meta.get("generateName") else "")
    if not name:
        causes.append({"reason": "FieldValueRequired", "field": "metadata.name",
                       "message": "Required value: name or generateName is required"})
    elif rtype.kind == "Namespace":
        causes += _name_causes("metadata.name", name, label=True, max_length=63)
    else:
        causes += _name_causes("metadata.name", name, max_length=63 if rtype.kind == "Job" else 253)
    causes += _label_causes("metadata.labels", meta.get("labels"))
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if rtype.kind == "Pod":
        causes += _pod_spec_causes("spec", spec)
    elif rtype.kind == "Job":
        template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
        causes += _label_causes("spec.template.metadata.labels", (template.get("metadata") or {}).get("labels"))
        pod_spec = template.get("spec")
        causes += _pod_spec_causes("spec.template.spec", pod_spec)
        restart = (pod_spec or {}).get("restartPolicy") if isinstance(pod_spec, dict) else None
        if restart not in ("Never", "OnFailure"):
            causes.append({"reason": "FieldValueNotSupported" if restart else "FieldValueRequired",
                           "field": "spec.template.spec.restartPolicy",
                           "message": (f'Unsupported value: "{restart}": ' if restart else "Required value: ")
                           + 'supported values: "OnFailure", "Never"'})
    return causes


def admit(rtype: ResourceType, obj: dict[str, Any]) -> None:
    """Validate an object about to be stored; raise 422 Invalid listing every cause."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    causes = semantic_causes(rtype, obj)
    if rtype.schema:
        causes = schema_causes(obj) + causes
    if not causes:
        return
    name = meta.get("name") or meta.get("generateName") or ""
    qualified = f"{rtype.kind}.{rtype.group}" if rtype.group else rtype.kind
    texts = [f"{cause['field']}: {cause['message']}" for cause in causes]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details: dict[str, Any] = {"name": name, "kind": rtype.kind, "causes": causes}
    if rtype.group:
        details["group"] = rtype.group
    raise ApiError(422, f'{qualified} "{name}" is invalid: {summary}', "Invalid", details)
