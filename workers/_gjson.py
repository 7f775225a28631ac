"""The subset of GJSON (github.com/tidwall/gjson) that Katib's success and failure conditions use.

Katib evaluates ``trialTemplate.successCondition`` / ``failureCondition`` as GJSON paths on the worker object's
JSON. Supported here, with GJSON's meaning:

- keys separated by ``.`` (``\\`` escapes a ``.``, ``|``, ``#``, ``@`` or ``\\`` inside a key); a number picks an
  array element (``conditions.0``);
- ``#``: the length of an array; ``#.key``: ``key`` of every element, as an array;
- queries on arrays: ``#(path op value)`` (the first matching element) and ``#(path op value)#`` (all of them, an
  array, possibly empty), with ``op`` one of ``==  !=  <  <=  >  >=  %  !%`` (``%`` is a ``*``/``?`` pattern) and a
  JSON value (``"text"``, a number, ``true``, ``false``, ``null``); ``#(path)`` keeps elements where ``path``
  exists; an empty ``path`` compares the element itself (``#(=="a")``);
- after ``#(...)#`` or ``#``, a ``.``-separated rest is applied to every element (GJSON's "map"); ``|`` applies the
  rest to the whole result instead (``status.conditions.#(type=="Complete")#|#(status=="True")#``);
- the ``@this`` modifier and multipaths ``[path,path]`` (an array of the values that exist), as in Argo's
  ``status.[@this].#(phase=="Succeeded")#``.

Not supported (:class:`GJSONSyntaxError`): key wildcards ``*``/``?``, other modifiers, ``{...}`` object
multipaths, literal ``!`` values and nested queries inside query values.

:func:`condition_match` is Katib's test: a condition holds when its result is an object or a non-empty array.
"""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING", "__bool__": lambda self: False})()


class GJSONSyntaxError(ValueError):
    """A path outside the supported GJSON subset, or malformed."""


_QUERY = re.compile(r"^#\((.*)\)(#?)$", re.S)
_OPS = ("==", "!=", "<=", ">=", "!%", "<", ">", "%")


def _split_top_level(text: str, separators: str) -> list[tuple[str, str]]:
    """Parts of ``text`` at ``separators`` outside (), [], {}, quotes and escapes, as (separator before, part)."""
    parts: list[tuple[str, str]] = []
    sep, buf, depth, quoted, i = "", [], 0, False, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            buf.append(text[i:i + 2])
            i += 2
            continue
        if quoted:
            quoted = ch != '"'
        elif ch == '"':
            quoted = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch in separators and depth == 0:
            parts.append((sep, "".join(buf)))
            sep, buf = ch, []
            i += 1
            continue
        buf.append(ch)
        i += 1
    if quoted or depth:
        raise GJSONSyntaxError(f"unbalanced brackets or quotes in {text!r}")
    parts.append((sep, "".join(buf)))
    return parts


def _split(path: str) -> list[tuple[str, str]]:
    """Components of ``path`` as (separator before it, raw text)."""
    return _split_top_level(path, ".|")


def _unescape(key: str) -> str:
    return re.sub(r"\\(.)", r"\1", key)


def get(value: Any, path: str) -> Any:
    """The result of GJSON ``path`` on the decoded JSON ``value``; :data:`MISSING` when nothing is there."""
    if not path:
        return MISSING
    return _apply(value, _split(path))


def _apply(value: Any, parts: list[tuple[str, str]]) -> Any:
    for index, (_sep, raw) in enumerate(parts):
        if value is MISSING:
            return MISSING
        rest = parts[index + 1:]
        mapped = raw == "#" or (raw.startswith("#(") and raw.endswith(")#"))
        if raw != "#" or not (rest and rest[0][0] == "."):  # ``#.key`` maps over the array itself
            value = _component(value, raw)
        if mapped and rest and rest[0][0] == "." and isinstance(value, list):
            # GJSON applies a dotted rest to every element of a ``#`` / ``#(...)#`` result.
            results = [_apply(item, [("", rest[0][1]), *rest[1:]]) for item in value]
            return [r for r in results if r is not MISSING]
    return value


def _component(value: Any, raw: str) -> Any:
    """One path component applied to ``value``."""
    if raw == "@this":
        return value
    if raw.startswith("@"):
        raise GJSONSyntaxError(f"modifier {raw!r} is not supported (only @this)")
    if raw.startswith("[") and raw.endswith("]"):
        inner = raw[1:-1]
        results = [get(value, p.strip()) for p in _split_commas(inner)] if inner.strip() else []
        return [r for r in results if r is not MISSING]
    if raw.startswith("{"):
        raise GJSONSyntaxError(f"object multipaths are not supported: {raw!r}")
    if raw == "#":
        return len(value) if isinstance(value, list) else MISSING
    match = _QUERY.match(raw)
    if match is not None:
        if not isinstance(value, list):
            return MISSING
        test = _query(match.group(1))
        if match.group(2):
            return [item for item in value if test(item)]
        return next((item for item in value if test(item)), MISSING)
    if raw.startswith("#"):
        raise GJSONSyntaxError(f"malformed query {raw!r}")
    key = _unescape(raw)
    if any(c in raw.replace("\\*", "").replace("\\?", "") for c in "*?"):
        raise GJSONSyntaxError(f"key wildcards are not supported: {raw!r}")
    if isinstance(value, dict):
        return value.get(key, MISSING)
    if isinstance(value, list) and key.isdigit():
        i = int(key)
        return value[i] if i < len(value) else MISSING
    return MISSING


def _split_commas(text: str) -> list[str]:
    """Top-level comma-separated parts of a multipath."""
    return [part for _, part in _split_top_level(text, ",")]


def _query(expr: str) -> Any:
    """A predicate for one ``#(...)`` query expression."""
    quoted, depth = False, 0
    for i, ch in enumerate(expr):
        if quoted:
            quoted = ch != '"' or expr[i - 1] == "\\"
            continue
        if ch == '"':
            quoted = True
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif depth == 0:
            op = next((o for o in _OPS if expr.startswith(o, i)), None)
            if op is not None:
                return _comparison(expr[:i].strip(), op, expr[i + len(op):].strip())
    path = expr.strip()
    if not path:
        raise GJSONSyntaxError("empty query #()")
    return lambda item: get(item, path) is not MISSING


def _comparison(path: str, op: str, literal: str) -> Any:
    try:
        expected = json.loads(literal)
    except json.JSONDecodeError:
        raise GJSONSyntaxError(f"query value {literal!r} is not a JSON value") from None
    if isinstance(expected, (dict, list)):
        raise GJSONSyntaxError(f"query value {literal!r} must be a string, number, true, false or null")

    def test(item: Any) -> bool:
        actual = item if not path else get(item, path)
        if actual is MISSING:
            return False
        if op in ("%", "!%"):
            like = isinstance(actual, str) and isinstance(expected, str) and fnmatch.fnmatchcase(actual, expected)
            return like if op == "%" else (isinstance(actual, str) and not like)
        same_kind = (isinstance(actual, str) and isinstance(expected, str)) or (
            _is_number(actual) and _is_number(expected)) or (
            isinstance(actual, bool) and isinstance(expected, bool)) or (actual is None and expected is None)
        if op == "==":
            return same_kind and actual == expected
        if op == "!=":
            return not (same_kind and actual == expected)
        if not same_kind or isinstance(actual, bool) or actual is None:
            return False
        return {"<": actual < expected, "<=": actual <= expected, ">": actual > expected, ">=": actual >= expected}[op]

    return test


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def condition_match(obj: dict[str, Any], condition: str) -> dict[str, Any] | None:
    """Katib's test of a success/failure condition: the matched condition object (``{}`` when the match is not an
    object) if the result is an object or a non-empty array, else None."""
    result = get(obj, condition)
    if isinstance(result, dict):
        return result
    if isinstance(result, list) and result:
        return result[0] if isinstance(result[0], dict) else {}
    return None


def check(path: str) -> None:
    """Raise :class:`GJSONSyntaxError` (naming the problem) if ``path`` is outside the supported subset."""
    if not path.strip():
        raise GJSONSyntaxError("empty path")
    for _sep, raw in _split(path):
        if raw == "@this" or raw == "#":
            continue
        if raw.startswith("[") and raw.endswith("]"):
            for part in _split_commas(raw[1:-1]):
                check(part.strip())
            continue
        match = _QUERY.match(raw)
        if match is not None:
            _query(match.group(1))
            continue
        if not raw:
            raise GJSONSyntaxError(f"empty key in {path!r}")
        _component({}, raw)  # raises for modifiers, object multipaths, wildcards and malformed queries
