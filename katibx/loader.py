"""Load Experiment YAML/JSON into validated, defaulted models, turning every mistake into ``path: message`` lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError as PydanticValidationError

from katibx.defaults import apply_defaults
from katibx.spec import Experiment
from katibx.validation import ValidationError, validate


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(document)"


def pydantic_errors(exc: PydanticValidationError) -> list[str]:
    """One ``path: message`` line per pydantic error, with Katib's camelCase paths."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        if err["type"] == "extra_forbidden":
            lines.append(f"{_loc(loc)}: unknown field")
        else:
            given = err.get("input")
            shown = f" (got {given!r})" if isinstance(given, (str, int, float, bool)) or given is None else ""
            lines.append(f"{_loc(loc)}: {err['msg']}{shown}")
    return lines


def experiment_from_dict(data: Any, source: str | None = None) -> Experiment:
    """Parse, default and validate one Experiment document; raise ValidationError listing every problem."""
    if not isinstance(data, dict):
        raise ValidationError([f"(document): must be a mapping with apiVersion, kind, metadata and spec (got {type(data).__name__})"], source)
    try:
        experiment = Experiment.model_validate(data)
    except PydanticValidationError as exc:
        raise ValidationError(pydantic_errors(exc), source) from None
    experiment = apply_defaults(experiment)
    errors = validate(experiment)
    if errors:
        raise ValidationError(errors, source)
    return experiment


def load_documents(path: str | Path) -> list[Any]:
    """Read every non-empty YAML document of a file; syntax errors become a ValidationError with the position."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError([f"{path}: cannot read file ({exc.strerror or exc})"], str(path)) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationError([f"(yaml): {where}{problem}"], str(path)) from None
    if not docs:
        raise ValidationError(["(document): the file holds no Experiment"], str(path))
    return docs


def load_experiments(path: str | Path) -> list[Experiment]:
    """All Experiments in a file, each validated; errors of every document are reported together."""
    experiments, errors = [], []
    docs = load_documents(path)
    for i, doc in enumerate(docs):
        try:
            experiments.append(experiment_from_dict(doc, str(path)))
        except ValidationError as exc:
            prefix = f"document {i + 1}: " if len(docs) > 1 else ""
            errors.extend(prefix + e for e in exc.errors)
    if errors:
        raise ValidationError(errors, str(path))
    return experiments


def load_experiment(path: str | Path) -> Experiment:
    """The single Experiment in a YAML file, defaulted and validated."""
    experiments = load_experiments(path)
    if len(experiments) != 1:
        raise ValidationError([f"(document): expected one Experiment, found {len(experiments)}"], str(path))
    return experiments[0]
