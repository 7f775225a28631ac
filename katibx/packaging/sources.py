"""Preprocessors: what of a source goes into the code layer, and the command that runs it.

A file or a folder goes in as it is; a notebook (``.ipynb``) as a script of its code cells in order (shell and magic
lines are refused with their cell's number: they would not run outside Jupyter); a function (``file.py:function``)
with the module it lives in and a small entry script that calls it with the ``--name=value`` arguments a trial gets
and prints what it returns as ``name=value`` lines, which Katib's StdOut collector reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# Never packaged from a folder: caches, version control, katibx's own store and virtual environments.
SKIPPED = {"__pycache__", ".git", ".hg", ".svn", ".katibx", ".venv", "venv", ".mypy_cache", ".pytest_cache",
           ".ipynb_checkpoints", "mlruns"}
ENTRY = "katibx_main.py"  # the entry script of a function source
FUNCTION = re.compile(r"(?P<file>.+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)")


class SourceError(ValueError):
    """A source that cannot be packaged: missing, empty, or a notebook that does not parse or cannot run (one line)."""


@dataclass
class Source:
    """The files of the code layer (path under the working folder -> a file here, or generated content) and the
    command that runs the source (None: the base image's)."""

    files: dict[str, Path | bytes]
    command: list[str] | None = None
    kind: str = "folder"
    notes: list[str] = field(default_factory=list)


def read_source(text: str | Path, workdir: str = "/app", metric: str = "objective") -> Source:
    """The source named by ``text``: ``file.py:function``, a notebook, a file or a folder."""
    match = FUNCTION.fullmatch(str(text))
    if match and Path(match["file"]).is_file():
        return _function(Path(match["file"]), match["name"], workdir, metric)
    path = Path(text)
    if path.is_file() and path.suffix == ".ipynb":
        return _notebook(path, workdir)
    if path.is_file():
        return Source({path.name: path}, None, "file")
    if not path.is_dir():
        raise SourceError(f"source {path}: no such file or folder")
    files: dict[str, Path | bytes] = {}
    for found in sorted(path.rglob("*")):
        relative = found.relative_to(path)
        if found.is_file() and not SKIPPED.intersection(relative.parts) and not found.name.endswith(".pyc"):
            files[relative.as_posix()] = found
    if not files:
        raise SourceError(f"source {path}: the folder holds no files to package")
    return Source(files)


def _notebook(path: Path, workdir: str) -> Source:
    """The notebook's code cells, in order, as ``<name>.py``; a shell or magic line is refused with its cell."""
    try:
        cells = json.loads(path.read_text())["cells"]
        assert isinstance(cells, list)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
        raise SourceError(f"notebook {path}: not a Jupyter notebook ({exc})") from None
    parts = []
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        text = cell.get("source", "")
        code = "".join(text) if isinstance(text, list) else str(text)
        for line in code.splitlines():
            if line.lstrip().startswith(("!", "%")):
                raise SourceError(f"notebook {path}: cell {number}: {line.strip()!r} is a shell or magic line, which "
                                  "runs only in Jupyter; remove it (dependencies go in the image, not the notebook)")
        parts.append(f"# cell {number}\n{code.rstrip()}\n")
    if not parts:
        raise SourceError(f"notebook {path}: it has no code cells")
    script = path.with_suffix(".py").name
    return Source({script: "\n".join(parts).encode()}, ["python3", str(PurePosixPath(workdir) / script)], "notebook")


def _function(module: Path, name: str, workdir: str, metric: str) -> Source:
    """The module and an entry script that calls ``name`` with the trial's ``--name=value`` arguments."""
    entry = f'''"""Made by katibx build: calls {module.stem}.{name} with the --name=value arguments (values read as Python
literals where they are one) and prints what it returns as name=value lines (a number: {metric}=value)."""
import ast
import sys

from {module.stem} import {name} as objective


def value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


params = dict((arg.lstrip("-").partition("=")[0], value(arg.partition("=")[2])) for arg in sys.argv[1:])
result = objective(params)
for key, number in (result.items() if isinstance(result, dict) else [({metric!r}, result)] if result is not None
                    else []):
    print(f"{{key}}={{number}}", flush=True)
'''
    return Source({module.name: module, ENTRY: entry.encode()}, ["python3", str(PurePosixPath(workdir) / ENTRY)],
                  "function")
