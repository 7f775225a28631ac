"""Load Experiment YAML/JSON into validated, defaulted models, turning every mistake into ``path: message`` lines."""

from __future__ import annotations

import copy
import difflib
import logging
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from katibx.defaults import apply_defaults
from katibx.sdk_objects import camel_case_keys
from katibx.spec import Experiment, model_in
from katibx.validation import ValidationError, validate

log = logging.getLogger(__name__)
# How many of the snake_case keys read as camelCase the note names.
_NOTED_KEYS = 8
# pydantic error type -> Katib-style message
_MESSAGES = {
    "missing": "Required value",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
}


class _Loader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys, which PyYAML would otherwise silently overwrite."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    """A mapping, after checking that no key appears twice."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        if isinstance(key, Hashable):
            seen.add(key)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _loc(loc: tuple[Any, ...]) -> str:
    """Katib's path notation: ``spec.parameters[0].name``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(document)"


def _field_names(loc: tuple[Any, ...]) -> list[str]:
    """Katib's field names of the object at ``loc`` (empty when it is not one of our models)."""
    model: type[BaseModel] = Experiment
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        found = model_in(fields[part].annotation) if part in fields else None
        if found is None:
            return []
        model = found
    return [f.alias or n for n, f in model.model_fields.items()]


def _unknown_field(loc: tuple[Any, ...]) -> str:
    """The unknown-field line, with the closest Katib field name when there is one."""
    names = _field_names(loc[:-1])
    key = str(loc[-1])
    close = [n for n in names if n.lower() == key.lower()] or difflib.get_close_matches(key, names, n=1)
    return f"{_loc(loc)}: unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")


def _clean(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` without pydantic's validator-function steps."""
    return tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))


def _got(value: Any) -> str:
    """`` (got …)`` showing a scalar input, or naming the kind of a container."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return f" (got {value!r})"
    return f" (got a {'mapping' if isinstance(value, dict) else 'list' if isinstance(value, list) else type(value).__name__})"


def _position(data: Any, loc: tuple[Any, ...]) -> tuple[int, ...]:
    """Where ``loc`` sits in the document (key and item indexes), to report errors top to bottom."""
    out = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            out.append(list(data).index(part))
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            out.append(part)
        else:
            return (*out, 1 << 30)  # a missing key: after what is there
        data = data[part]
    return tuple(out)


def pydantic_errors(exc: PydanticValidationError, data: Any = None) -> list[str]:
    """One ``path: message`` line per pydantic error, with Katib's camelCase paths, in document order."""
    lines = []
    errors = exc.errors(include_url=False)
    for err in sorted(errors, key=lambda e: _position(data, _clean(e["loc"]))):
        loc = _clean(err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(_unknown_field(loc))
        elif err["type"] == "missing":
            lines.append(f"{_loc(loc)}: Required value")
        elif err["type"] == "invalid_key":
            lines.append(f"{_loc(loc[:-1])}: keys must be strings (got {loc[-1]!r})")
        else:
            lines.append(f"{_loc(loc)}: {_MESSAGES.get(err['type'], err['msg'])}{_got(err.get('input'))}")
    return lines


def experiment_from_dict(data: Any, source: str | None = None) -> Experiment:
    """Parse, default and validate one Experiment document; raise ValidationError listing every problem.

    Schema problems and Katib's webhook rules are reported together: the parts the schema refuses are set aside,
    the rest is checked by the rules, and only rule lines about what was set aside are left out."""
    experiment, problems = parse_experiment(data)
    if problems or experiment is None:
        raise ValidationError(problems, source)
    return experiment


def parse_experiment(data: Any) -> tuple[Experiment | None, list[str]]:
    """(the defaulted experiment, every schema and rule problem): the experiment is None when the schema refused
    something, else it is built even when a rule is broken, so that plugin checks can still report theirs."""
    if not isinstance(data, dict):
        return None, [f"(document): must be a mapping with apiVersion, kind, metadata and spec{_got(data)}"]
    data, renamed = camel_case_keys(data)  # as the API server reads what the Katib SDK sends
    if renamed:
        shown = ", ".join(renamed[:_NOTED_KEYS]) + (f" and {len(renamed) - _NOTED_KEYS} more" if len(renamed) > _NOTED_KEYS else "")
        log.warning("read the snake_case keys of the Katib SDK's serializer as their camelCase names: %s", shown)
    other = _other_kind(data)
    if other:
        return None, [other]
    schema_errors, experiment, set_aside = _parse(data)
    if experiment is None:
        return None, schema_errors
    experiment = apply_defaults(experiment)
    rule_errors = [e for e in validate(experiment) if not any(_about(e, path) for path in set_aside)]
    if schema_errors:  # built from what the schema accepted: checked by the rules, too partial for plugins
        return None, schema_errors + rule_errors
    return experiment, rule_errors


def _other_kind(data: dict[Any, Any]) -> str | None:
    """A line saying what the document is when its kind says it is not a Katib Experiment."""
    kind, api_version = data.get("kind"), data.get("apiVersion")
    if not isinstance(kind, str) or kind.lower() == "experiment":  # a misspelt Experiment is told by the rules
        return None
    what = f"{kind} ({api_version})" if isinstance(api_version, str) else kind
    return f"(document): this is {'an' if what[:1].lower() in 'aeiou' else 'a'} {what}, not a Katib Experiment (apiVersion: kubeflow.org/v1beta1, kind: Experiment)"


# Rounds of setting refused parts aside before giving up on building an experiment from the rest.
_MAX_REPAIRS = 5


def _parse(data: dict[Any, Any]) -> tuple[list[str], Experiment | None, list[str]]:
    """(schema problems, the experiment built from the rest or None, the paths that were set aside)."""
    lines: list[str] = []
    set_aside: list[str] = []
    current = copy.deepcopy(data)
    for _ in range(_MAX_REPAIRS):
        try:
            return lines, Experiment.model_validate(current), set_aside
        except PydanticValidationError as exc:
            known = {*lines, *(f"{path}: Required value" for path in set_aside)}  # we removed those ourselves
            lines.extend(line for line in pydantic_errors(exc, current) if line not in known)
            errors = exc.errors(include_url=False)
            locs = [_clean(e["loc"]) for e in errors if e["type"] != "missing"]
            if len(locs) < len(errors) or not all(_remove(current, loc) for loc in locs):
                return lines, None, set_aside  # something required is missing, or a list item itself is wrong
            set_aside.extend(_loc(loc) for loc in locs)
    return lines, None, set_aside


def _remove(data: Any, loc: tuple[Any, ...]) -> bool:
    """Delete the mapping key at ``loc``; False when ``loc`` is a list item (removing it would shift the others)."""
    if not loc or isinstance(loc[-1], int):
        return False
    for part in loc[:-1]:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return False
    if not isinstance(data, dict) or loc[-1] not in data:
        return False
    del data[loc[-1]]
    return True


# Sections Katib's rules check against each other: with part of one set aside, a rule about any of them may be wrong.
_CROSS_CHECKED = ("spec.parameters", "spec.trialTemplate")


def _about(line: str, path: str) -> bool:
    """Whether a ``field: message`` line is about ``path``, something inside it, what holds it (a rule about
    ``spec.trialTemplate`` cannot judge a template whose ``trialSpec`` was set aside) or a section checked against
    it (parameters and trial parameters refer to each other)."""
    field = line.partition(": ")[0]
    if field == path or field.startswith((f"{path}.", f"{path}[")) or path.startswith((f"{field}.", f"{field}[")):
        return True
    return path.startswith(_CROSS_CHECKED) and field.startswith(_CROSS_CHECKED)


def load_documents(path: str | Path) -> list[Any]:
    """Read every non-empty YAML document of a file; syntax errors become a ValidationError with the position."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError([f"(file): cannot read ({exc.strerror or exc})"], str(path)) from None
    except UnicodeDecodeError:
        raise ValidationError(["(file): not UTF-8 text"], str(path)) from None
    try:
        docs = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationError([f"(yaml): {where}{problem}"], str(path)) from None
    if not docs:
        raise ValidationError(["(document): the file holds no Experiment"], str(path))
    return docs


def load_experiments(path: str | Path) -> list[Experiment]:
    """All Experiments in a file, each validated; errors of every document are reported together."""
    experiments: list[Experiment] = []
    errors: list[str] = []
    docs = load_documents(path)
    for i, doc in enumerate(docs):
        try:
            experiments.append(experiment_from_dict(doc, str(path)))
        except ValidationError as exc:
            prefix = f"document {i + 1}: " if len(docs) > 1 else ""
            errors.extend(prefix + e for e in exc.errors)
    if errors:
        raise ValidationError(errors, str(path))
    for experiment in experiments:
        experiment._source_dir = str(Path(path).absolute().parent)
    return experiments


def load_experiment(path: str | Path) -> Experiment:
    """The single Experiment in a YAML file, defaulted and validated."""
    experiments = load_experiments(path)
    if len(experiments) != 1:
        raise ValidationError([f"(document): expected one Experiment, found {len(experiments)}"], str(path))
    return experiments[0]
