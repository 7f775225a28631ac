"""Katib objects as plain data that also answer the Katib SDK's attribute names."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from pydantic.alias_generators import to_camel

_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class KatibObject(dict):  # type: ignore[type-arg]
    """A Katib object as plain data (``obj["status"]["currentOptimalTrial"]``) that also answers the Katib SDK's
    attribute names (``obj.status.current_optimal_trial``), so code written against ``kubeflow.katib`` models runs."""

    def __getattr__(self, name: str) -> Any:
        for key in (name, to_camel(name)):
            if key in self:
                return katib_object(self[key])
        if not _FIELD_NAME.match(name):  # __deepcopy__, _repr_html_...: not a field
            raise AttributeError(name)
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
