"""PATCH bodies: JSON merge patch (RFC 7386; strategic merge and apply are treated as merge) and JSON patch (RFC 6902)."""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    """The tokens of a JSON pointer."""
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer {path!r}", "Invalid")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str]) -> Any:
    """The container that holds the last token of a pointer."""
    current = doc
    for token in tokens[:-1]:
        if isinstance(current, list):
            current = current[int(token)]
        elif isinstance(current, dict) and token in current:
            current = current[token]
        else:
            raise ApiError(422, f"the server rejected our request due to an error in our request: missing path "
                           f"/{'/'.join(tokens)}", "Invalid")
    return current


def json_patch(doc: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply JSON patch operations (add, remove, replace, test, copy, move)."""
    doc = copy.deepcopy(doc)
    for operation in operations:
        op, tokens = operation.get("op"), _pointer(operation.get("path", ""))
        try:
            if op in ("copy", "move"):
                source = _pointer(operation["from"])
                container = _parent(doc, source)
                value = copy.deepcopy(container[int(source[-1])] if isinstance(container, list)
                                      else container[source[-1]])
                if op == "move":
                    json_patch_remove(container, source[-1])
                op, operation = "add", {"value": value}
            if op == "test":
                container = _parent(doc, tokens)
                actual = container[int(tokens[-1])] if isinstance(container, list) else container.get(tokens[-1])
                if actual != operation.get("value"):
                    raise ApiError(422, f"testing value /{'/'.join(tokens)} failed", "Invalid")
            elif op in ("add", "replace"):
                container = _parent(doc, tokens)
                value = copy.deepcopy(operation.get("value"))
                if isinstance(container, list):
                    if tokens[-1] == "-":
                        container.append(value)
                    elif op == "add":
                        container.insert(int(tokens[-1]), value)
                    else:
                        container[int(tokens[-1])] = value
                else:
                    if op == "replace" and tokens[-1] not in container:
                        raise ApiError(422, f"replace operation does not apply: doc is missing key: "
                                       f"/{'/'.join(tokens)}", "Invalid")
                    container[tokens[-1]] = value
            elif op == "remove":
                json_patch_remove(_parent(doc, tokens), tokens[-1])
            else:
                raise ApiError(422, f"unexpected JSON patch operation {op!r}", "Invalid")
        except (KeyError, IndexError, ValueError, TypeError) as error:
            raise ApiError(422, f"the JSON patch could not be applied: {error}", "Invalid") from error
    return doc


def json_patch_remove(container: Any, token: str) -> None:
    """Remove one member of an object or list."""
    if isinstance(container, list):
        del container[int(token)]
    else:
        del container[token]
