"""Import direction: the core never imports a plugin, plugins import the core, and plugin families stay apart.

Reads every module's source (imports inside functions too), so a lazy import cannot hide a wrong-way edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Source folder -> the package it installs as (pyproject.toml's package-dir).
PACKAGES = {"katibx": "katibx", "algorithms": "katibx.algorithms", "workers": "katibx.workers", "nas": "katibx.nas"}
PLUGIN_PACKAGES = ("katibx.algorithms", "katibx.workers", "katibx.nas")
# Which plugin packages each package may import (besides the core, which every package may import).
ALLOWED = {
    "katibx": set(),                        # the core discovers plugins through entry points only
    "katibx.algorithms": {"katibx.nas"},    # the darts algorithm parses the NAS search space and settings
    "katibx.workers": set(),
    "katibx.nas": set(),
}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found.append((name, path))
    return found


def _imports(module: str, path: Path) -> set[str]:
    """Absolute names of every module ``module`` imports, wherever the import statement is."""
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # "from pkg import module"
    return names


def _package_of(module: str) -> str:
    return next((p for p in PLUGIN_PACKAGES if module == p or module.startswith(p + ".")), "katibx")


@pytest.mark.parametrize("module,path", _modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_point_the_right_way(module: str, path: Path) -> None:
    own = _package_of(module)
    wrong = []
    for name in sorted(_imports(module, path)):
        top = name.split(".")[0]
        if top in ("algorithms", "workers", "nas"):
            wrong.append(f"{name} (a top-level name: install it as katibx.{top})")
            continue
        target = _package_of(name) if top == "katibx" else None
        if target and target != "katibx" and target != own and target not in ALLOWED[own]:
            wrong.append(name)
    assert not wrong, f"{module} imports {', '.join(wrong)}"


def test_every_package_is_covered() -> None:
    """The walk sees every module of every package (a new folder must be added to PACKAGES and pyproject)."""
    seen = {_package_of(name) for name, _ in _modules()}
    assert seen == {"katibx", *PLUGIN_PACKAGES}
    assert len(_modules()) > 60


def test_a_wrong_way_import_is_caught(tmp_path: Path) -> None:
    """The checker itself: a core module importing a backend's private module, lazily, is reported."""
    module = tmp_path / "cli.py"
    module.write_text("def render():\n    from katibx.workers._manifests import render\n")
    assert "katibx.workers._manifests" in _imports("katibx.cli", module)
    assert _package_of("katibx.workers._manifests") == "katibx.workers"
