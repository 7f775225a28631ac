"""How the CLI prints Katib objects, as kubectl does: ``-o table|wide|json|yaml|name|jsonpath=TEMPLATE``,
``--sort-by=FIELD`` and ``-l`` label selectors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import click

T = TypeVar("T")
FORMATS = ("table", "wide", "json", "yaml", "name")
GROUP = "kubeflow.org"


def _check_output(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if value in FORMATS:
        return value
    if value.startswith("jsonpath="):
        jsonpath_text(value.partition("=")[2], {})  # a malformed template is a usage error now, not later
        return value
    raise click.BadParameter(f"{value!r} is not one of {', '.join(FORMATS)} or jsonpath=TEMPLATE")


def output_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("-o", "--output", default=default, show_default=True, callback=_check_output,
                        metavar="table|wide|json|yaml|name|jsonpath=TEMPLATE",
                        help="table (wide: more columns), Katib objects as json or yaml (several in a List), "
                             "kind/name lines, or kubectl's jsonpath template, e.g. "
                             "jsonpath='{.items[*].metadata.name}'.")


sort_option = click.option("--sort-by", default=None, metavar="FIELD",
                           help="Sort by a field of the objects, as kubectl's (e.g. .status.startTime), or by a "
                                "table column (a parameter or metric name).")


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Several objects as kubectl prints them: a ``List`` with ``items``."""
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def emit(data: Any, output: str) -> None:
    """One object, or a List of them, as json, yaml, name lines or a jsonpath template's text."""
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    elif output == "yaml":
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
    elif output == "name":
        for item in data.get("items", [data]):
            click.echo(f"{item['kind'].lower()}.{GROUP}/{item['metadata']['name']}")
    else:
        click.echo(jsonpath_text(output.partition("=")[2], data))


def _expressions(template: str) -> list[tuple[str, bool]]:
    """A kubectl template split into (literal text, False) and (JSONPath expression, True) parts; a template with no
    braces is one expression (``.metadata.name``)."""
    if "{" not in template and "}" not in template:
        return [(template, True)]
    depth = 0
    for char in template:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth not in (0, 1):
            raise click.BadParameter(f"jsonpath: unbalanced braces in {template!r}")
    if depth:
        raise click.BadParameter(f"jsonpath: unclosed action in {template!r}")
    parts: list[tuple[str, bool]] = []
    for literal, expression in re.findall(r"([^{]*)(?:\{([^}]*)\})?", template):
        if literal:
            parts.append((literal.replace("\\n", "\n").replace("\\t", "\t"), False))
        if expression:
            parts.append((expression, True))
    return parts


def _compiled(expression: str) -> Any:
    text = expression.strip()
    if text.startswith("{") and text.endswith("}"):  # --sort-by '{.metadata.name}', as kubectl's help writes it
        text = text[1:-1].strip()
    if text.startswith(("range", "end")):
        raise click.BadParameter(f"jsonpath: {{{text}}} is not supported; use {{.items[*].field}}")
    from jsonpath_ng.ext import parse  # (here only: most output never needs it)

    try:
        return parse("$" + text if text.startswith((".", "[")) else text)
    except Exception as exc:  # noqa: BLE001 - its lexer and parser errors, and plain Exception too
        raise click.BadParameter(f"jsonpath: cannot parse {{{text}}}: {exc}") from None


def _found(expression: Any, data: Any, text: str) -> list[Any]:
    """The values ``expression`` finds in ``data``; a usage error (not a traceback) when it cannot be evaluated
    there, such as a filter comparing Katib's text values with numbers."""
    try:
        return [m.value for m in expression.find(data)]
    except Exception as exc:  # noqa: BLE001 - jsonpath-ng raises whatever the comparison raises
        raise click.BadParameter(f"jsonpath: cannot evaluate {{{text}}}: {exc}") from None


def jsonpath_text(template: str, data: Any) -> str:
    """kubectl's ``-o jsonpath=`` output: each ``{expression}``'s values joined by spaces (mappings and lists as
    JSON), the text between them as it is."""
    out = []
    for text, is_expression in _expressions(template):
        if not is_expression:
            out.append(text)
            continue
        values = _found(_compiled(text), data, text)
        out.append(" ".join(json.dumps(v) if isinstance(v, (dict, list)) else "" if v is None else str(v)
                            for v in values))
    return "".join(out)


def sort_key(field: str, columns: Mapping[str, Callable[[T], Any]],
             as_object: Callable[[T], dict[str, Any]]) -> Callable[[T], tuple[int, Any]]:
    """A sort key for table entries: a column by name, else a JSONPath field of the entry's Katib object; numbers
    (Katib keeps metric values as strings) sort as numbers, before text, and missing values last."""
    column = columns.get(field) or next((c for name, c in columns.items() if name.upper() == field), None)  # as shown
    expression = None if column else _compiled(field)

    def key(item: T) -> tuple[int, Any]:
        if column is not None:
            value = column(item)
        else:
            found = _found(expression, as_object(item), field)
            value = found[0] if found else None
        if value is None or value == "":
            return (2, "")
        try:
            return (0, float(value))
        except (TypeError, ValueError):
            return (1, str(value))

    return key


def _requirement(text: str) -> Callable[[Mapping[str, str]], bool]:
    """One clause of a kubectl equality-based selector: ``k=v``, ``k==v``, ``k!=v``, ``k`` or ``!k``."""
    match = re.fullmatch(r"\s*(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w./-]*))?\s*", text)
    if match is None:
        raise click.BadParameter(f"{text!r}: expected key=value, key!=value, key or !key", param_hint="'-l'")
    negated, key, operator, value = match.groups()
    if operator is None:
        return (lambda labels: key not in labels) if negated else (lambda labels: key in labels)
    if negated:
        raise click.BadParameter(f"{text!r}: '!' only goes before a bare key", param_hint="'-l'")
    if operator == "!=":
        return lambda labels: labels.get(key) != value
    return lambda labels: labels.get(key) == value


def label_filter(selector: str | None) -> Callable[[Mapping[str, str]], bool]:
    """Whether labels match a kubectl selector (clauses separated by commas, all of which must hold)."""
    if not selector:
        return lambda _labels: True
    clauses = [_requirement(part) for part in selector.split(",")]
    return lambda labels: all(clause(labels) for clause in clauses)


selector_option = click.option("-l", "--selector", default=None, metavar="SELECTOR",
                               help="Only trials whose labels match, as kubectl's: key=value, key!=value, key, !key "
                                    "(comma-separated, all must hold).")


def table_text(columns: Sequence[str], rows: Iterable[list[str]], own: Collection[str] = ()) -> str:
    """A table as kubectl prints one: a header line (the table's ``own`` columns in capitals; a parameter's or
    metric's name as the experiment writes it), then a line per row, columns padded to line up, nothing cut."""
    return rows_text([[column.upper() if column in own else column for column in columns], *rows])


def rows_text(rows: Iterable[list[str]]) -> str:
    """Rows as plain lines, columns padded to line up (what -w prints after the table)."""
    rows = list(rows)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    return "\n".join("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
