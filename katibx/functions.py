"""Function trials: the objective of a ``katibx.tune`` experiment is recorded as ``module:qualname``."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable

from katibx.spec import Experiment
from katibx.template import FUNCTION_KIND
from katibx.validation import ValidationError

FIELD = "spec.trialTemplate.trialSpec.spec.function"


def function_reference(experiment: Experiment) -> str | None:
    """``module:qualname`` of a function experiment's objective, None for command experiments."""
    template = experiment.spec.trial_template
    spec = template.trial_spec if template else None
    if not spec or spec.get("kind") != FUNCTION_KIND:
        return None
    return str((spec.get("spec") or {}).get("function", ""))


def import_function(reference: str, workdir: str | None = None) -> Callable[..., Any]:
    """Import ``module:qualname`` (the experiment's folder is importable); ValidationError when it cannot be found."""
    module_name, _, qualname = reference.partition(":")
    if not module_name or not qualname:
        raise ValidationError([f"{FIELD}: expected 'module:function', got {reference!r}"])
    if workdir and workdir not in sys.path:
        sys.path.insert(0, workdir)
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        parents = {module_name.rsplit(".", i)[0] for i in range(module_name.count(".") + 1)}
        if isinstance(exc, ModuleNotFoundError) and exc.name not in parents:  # something the module itself imports
            raise _import_failed(reference, exc) from None
        raise ValidationError([
            f"{FIELD}: cannot import the objective {reference!r} ({exc}); functions defined in a script's "
            "__main__ or inside another function can only be resumed from Python: "
            "katibx.resume_experiment(name, function=objective)"
        ]) from None
    except Exception as exc:  # noqa: BLE001 - the module's own code failed as it was imported
        raise _import_failed(reference, exc) from None
    if not callable(obj):
        raise ValidationError([f"{FIELD}: {reference!r} is not callable"])
    return obj


def _import_failed(reference: str, exc: Exception) -> ValidationError:
    """The objective's module was found, but importing it failed (its own code, or what it imports)."""
    return ValidationError([f"{FIELD}: importing the objective {reference!r} failed: {type(exc).__name__}: {exc}"])
