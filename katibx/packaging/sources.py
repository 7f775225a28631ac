"""Preprocessors: what of a source goes into the code layer (a file, or a folder's files)."""

from __future__ import annotations

from pathlib import Path

# Never packaged from a folder: caches, version control, katibx's own store and virtual environments.
SKIPPED = {"__pycache__", ".git", ".hg", ".svn", ".katibx", ".venv", "venv", ".mypy_cache", ".pytest_cache",
           ".ipynb_checkpoints", "mlruns"}


def source_files(source: Path) -> dict[str, Path]:
    """The files of ``source`` by their path in the layer (relative, posix): a file alone, or a folder's files
    (without :data:`SKIPPED` folders). FileNotFoundError naming a source that does not exist or is empty."""
    if source.is_file():
        return {source.name: source}
    if not source.is_dir():
        raise FileNotFoundError(f"source {source}: no such file or folder")
    files = {}
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_file() and not SKIPPED.intersection(relative.parts) and not path.name.endswith(".pyc"):
            files[relative.as_posix()] = path
    if not files:
        raise FileNotFoundError(f"source {source}: the folder holds no files to package")
    return files
