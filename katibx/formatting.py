"""How values are shown to people in tables and progress lines (kept free of imports: the CLI's reading verbs
start with it)."""

from __future__ import annotations

from typing import Any


def short(value: Any) -> str:
    """A parameter value as tables show it: floats to 6 significant digits (0.276849, not 0.27684889992771194);
    anything else as it is (a categorical "1e3" stays "1e3"). -o json|yaml keep full precision."""
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def short_metric(text: str | None) -> str:
    """A metric value (Katib keeps them as text) as tables show it: a number to 6 significant digits, an integer or
    any other text (a genotype) as it is."""
    if text is None:
        return ""
    try:
        number = float(text)
    except ValueError:
        return text
    return text if text.lstrip("-").isdigit() else f"{number:.6g}"
