"""Plugin discovery through entry points: the core never imports a specific algorithm or worker backend.

Groups: ``katibx.algorithms`` (search algorithms), ``katibx.early_stopping`` and ``katibx.workers`` (backends).
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import Any

ALGORITHMS = "katibx.algorithms"
EARLY_STOPPING = "katibx.early_stopping"
WORKERS = "katibx.workers"


@functools.lru_cache(maxsize=None)
def _group(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def algorithm_names() -> set[str]:
    return set(_group(ALGORITHMS))


def early_stopping_names() -> set[str]:
    return set(_group(EARLY_STOPPING))


def backend_names() -> set[str]:
    return set(_group(WORKERS))


def load(group: str, name: str) -> Any:
    """The class registered under ``name`` in ``group``; KeyError naming the choices when absent."""
    plugins = _group(group)
    if name not in plugins:
        raise KeyError(f"{name!r} is not installed in {group} (available: {', '.join(sorted(plugins)) or 'none'})")
    return plugins[name].load()
