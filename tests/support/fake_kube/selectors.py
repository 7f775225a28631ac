"""Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`) and field selectors, parsed as the API server does."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import ApiError


@dataclass(frozen=True)
class Requirement:
    """One clause of a label selector."""

    key: str
    op: str  # "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a label map satisfies this clause."""
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "in":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values


_SET = re.compile(r"^\s*([A-Za-z0-9._/-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ = re.compile(r"^\s*([A-Za-z0-9._/-]+)\s*(==|!=|=)\s*([A-Za-z0-9._-]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([A-Za-z0-9._/-]+)\s*$")


def _split_clauses(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    clauses, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            clauses.append("".join(current))
            current = []
        else:
            current.append(char)
    clauses.append("".join(current))
    return [clause for clause in clauses if clause.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse a `labelSelector` query value; a malformed one is a 400 as on the real server."""
    if not text:
        return []
    requirements = []
    for clause in _split_clauses(text):
        if match := _SET.match(clause):
            values = frozenset(v.strip() for v in match.group(3).split(",") if v.strip())
            requirements.append(Requirement(match.group(1), match.group(2), values))
        elif match := _EQ.match(clause):
            op = "notin" if match.group(2) == "!=" else "in"
            requirements.append(Requirement(match.group(1), op, frozenset({match.group(3)})))
        elif match := _EXISTS.match(clause):
            requirements.append(Requirement(match.group(2), "!exists" if match.group(1) else "exists"))
        else:
            raise ApiError(400, f'unable to parse requirement: found \'{clause.strip()}\' in label selector "{text}"',
                           "BadRequest")
    return requirements


def labels_match(requirements: list[Requirement], obj: dict[str, Any]) -> bool:
    """Whether an object's labels satisfy every requirement."""
    if not requirements:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(req.matches(labels) for req in requirements)


_FIELDS: dict[str, tuple[str, ...]] = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "status.phase": ("status", "phase"),
    "spec.nodeName": ("spec", "nodeName"),
}


def parse_field_selector(text: str | None) -> list[tuple[str, bool, str]]:
    """Parse a `fieldSelector` into (field, equal, value) clauses; unsupported fields are a 400."""
    if not text:
        return []
    clauses = []
    for clause in _split_clauses(text):
        match = re.match(r"^\s*([A-Za-z.]+)\s*(==|!=|=)\s*(.*?)\s*$", clause)
        if not match or match.group(1) not in _FIELDS:
            raise ApiError(400, f'"{clause.strip()}" is not a known field selector: only "metadata.name", '
                           '"metadata.namespace"', "BadRequest")
        clauses.append((match.group(1), match.group(2) != "!=", match.group(3)))
    return clauses


def fields_match(clauses: list[tuple[str, bool, str]], obj: dict[str, Any]) -> bool:
    """Whether an object satisfies every field-selector clause."""
    for field, equal, value in clauses:
        current: Any = obj
        for part in _FIELDS[field]:
            current = (current or {}).get(part) if isinstance(current, dict) else None
        if ((current or "") == value) != equal:
            return False
    return True
