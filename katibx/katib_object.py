"""Katib objects as plain data that also answer the Katib SDK's attribute names."""

from __future__ import annotations

import functools
import json
from typing import Any

import yaml
from pydantic.alias_generators import to_camel

# The status, trial and metadata fields of Katib's objects that may be unset (the spec's come from its models): an
# unset one answers None, as the SDK's models do; any other name is an AttributeError, so a typo is not None.
_STATUS_FIELDS = frozenset({
    "start_time", "completion_time", "last_reconcile_time", "conditions", "current_optimal_trial", "best_trial_name",
    "parameter_assignments", "observation", "metrics", "trials", "trials_succeeded", "trials_failed",
    "trials_killed", "trials_pending", "trials_running", "trials_early_stopped", "trial_metrics_unavailable",
    "pending_trial_list", "running_trial_list", "succeeded_trial_list", "failed_trial_list", "killed_trial_list",
    "early_stopped_trial_list", "metrics_unavailable_trial_list", "suggestion_count", "suggestions", "labels",
    "annotations", "creation_timestamp", "generate_name", "namespace", "name", "uid", "resource_version",
    "last_transition_time", "last_update_time", "reason", "message", "type", "status", "min", "max", "latest",
    "value", "time_stamp", "metric", "requests", "algorithm", "early_stopping", "api_version", "kind", "metadata",
    "spec",
})


@functools.cache
def _known_fields() -> frozenset[str]:
    """Every field name of Katib's objects, in the SDK's snake_case."""
    from katibx import spec

    names = set(_STATUS_FIELDS)
    for model in vars(spec).values():
        if isinstance(model, type) and issubclass(model, spec.KatibModel):
            names.update(model.model_fields)
    return frozenset(names)


class KatibObject(dict):  # type: ignore[type-arg]
    """A Katib object as plain data (``obj["status"]["currentOptimalTrial"]``) that also answers the Katib SDK's
    attribute names (``obj.status.current_optimal_trial``), so code written against ``kubeflow.katib`` models runs."""

    def __getattr__(self, name: str) -> Any:
        for key in (name, to_camel(name)):
            if key in self:
                return katib_object(self[key])
        if name not in _known_fields():  # a typo, __deepcopy__, _repr_html_...: not a field
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        return None  # an unset field, as the SDK's models answer it

    def to_dict(self) -> dict[str, Any]:
        """This object as a plain dict (for ``yaml.safe_dump`` and ``type(x) is dict`` checks)."""
        return json.loads(json.dumps(self))


def katib_object(value: Any) -> Any:
    """``value`` with its mappings answering attribute names too (see :class:`KatibObject`)."""
    if isinstance(value, dict) and not isinstance(value, KatibObject):
        return KatibObject(value)
    if isinstance(value, list):
        return [katib_object(item) for item in value]
    return value


# yaml.safe_dump(client.get_experiment(...)) writes the mapping, as for any dict.
for _dumper in (yaml.SafeDumper, getattr(yaml, "CSafeDumper", None)):
    if _dumper is not None:
        _dumper.add_multi_representer(KatibObject, yaml.representer.SafeRepresenter.represent_dict)
