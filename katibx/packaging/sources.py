"""Preprocessors: what of a source goes into the code layer, and the command that runs it.

A file or a folder goes in as it is; a notebook (``.ipynb``) as a script of its code cells in order (shell and magic
lines are refused with their cell's number: they would not run outside Jupyter); a function (``file.py:function``)
with the module it lives in and a small entry script that calls it with the ``--name=value`` arguments a trial gets
and prints what it returns as ``name=value`` lines, which Katib's StdOut collector reads.
"""

from __future__ import annotations

import ast
import json
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Collection

# Never packaged from a folder: caches, version control, katibx's own store and virtual environments.
SKIPPED = {"__pycache__", ".git", ".hg", ".svn", ".katibx", ".venv", "venv", ".mypy_cache", ".pytest_cache",
           ".ipynb_checkpoints", "mlruns"}
DEFAULT_WORKDIR = "/app"  # where the code goes in the image unless told otherwise (its working folder)
ENTRY = "katibx_main.py"  # the entry script of a function source
IGNORE_FILE = ".dockerignore"  # a folder's patterns of files not to package (Docker's syntax)
PARAMETERS_ENV = "KATIBX_PARAMETERS"  # the entry script's parameter types and fixed values (JSON), set by tune
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


def read_source(text: str | Path, workdir: str = DEFAULT_WORKDIR, metric: str = "objective",
                exclude: Collection[Path] = ()) -> Source:
    """The source named by ``text``: ``file.py:function``, a notebook, a file or a folder (without the files in
    ``exclude``: the store of the run that packages it)."""
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
    return Source(_folder_files(path, exclude))


def _folder_files(folder: Path, exclude: Collection[Path] = ()) -> dict[str, Path | bytes]:
    """A folder's files, without :data:`SKIPPED` ones, ``exclude`` (files or folders, however their path is
    spelled) and what its ``.dockerignore`` names; a link is followed only within the folder."""
    root = folder.resolve()
    excluded = {Path(path).resolve() for path in exclude}
    ignored = _ignore_patterns(folder / IGNORE_FILE)
    prune = not any(negated for negated, _ in ignored)  # an ignored folder may hold a file a "!" takes back
    files: dict[str, Path | bytes] = {}
    for here, folders, names in os.walk(folder):
        base = Path(here)
        inside = root / base.relative_to(folder)  # where it is, links above the folder resolved
        folders[:] = sorted(f for f in folders if f not in SKIPPED and inside / f not in excluded
                            and not (prune and _ignored((base / f).relative_to(folder).as_posix(), ignored)))
        for name in sorted(names):
            found = base / name
            relative = found.relative_to(folder).as_posix()
            if name.endswith(".pyc") or inside / name in excluded or _ignored(relative, ignored):
                continue
            if found.is_symlink():
                try:
                    target = found.resolve(strict=True)
                except (OSError, RuntimeError) as exc:
                    raise SourceError(f"source {folder}: {relative} is a broken link ({exc})") from None
                if not target.is_relative_to(root):
                    raise SourceError(f"source {folder}: {relative} links outside it (to {target}); copy what it "
                                      "needs in")
                if target.is_dir():
                    raise SourceError(f"source {folder}: {relative} links to a folder, which is not packaged; copy "
                                      "it in")
            if found.is_file():
                files[relative] = found
        for name in folders:  # links to folders are not walked into: refuse them as above
            if (base / name).is_symlink():
                raise SourceError(f"source {folder}: {(base / name).relative_to(folder).as_posix()} links to a "
                                  "folder, which is not packaged; copy it in")
    if not files:
        raise SourceError(f"source {folder}: the folder holds no files to package")
    return dict(sorted(files.items()))


def _ignore_patterns(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """``.dockerignore`` lines as (negated, pattern) the way Docker reads them: ``#`` comments and blank lines
    skipped, ``!`` re-includes, each pattern cleaned (``./``, ``/`` and ``..`` resolved) and matched as Go's
    ``filepath.Match`` plus ``**`` (any number of folders): ``*`` never crosses a ``/``."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first pattern
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        cleaned = posixpath.normpath("/" + line.removeprefix("!").strip()).lstrip("/")
        if cleaned and cleaned != ".":
            patterns.append((negated, re.compile(_pattern_regex(cleaned))))
    return patterns


def _pattern_regex(pattern: str) -> str:
    parts, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1:end]
            parts.append("[" + ("^" + body[1:] if body.startswith("^") else body).replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return "".join(parts)


def _ignored(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the last ``.dockerignore`` pattern that matches ``relative`` (or a folder above it) excludes it."""
    verdict = False
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for negated, pattern in patterns:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            verdict = not negated
    return verdict


def _notebook(path: Path, workdir: str) -> Source:
    """The notebook's code cells, in order, as ``<name>.py``; a cell that is not Python (a shell or magic line,
    ``x?``) is refused with its number."""
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
        try:
            ast.parse(code)
        except SyntaxError as exc:
            line = code.splitlines()[(exc.lineno or 1) - 1].strip() if code.splitlines() else ""
            if re.match(r"(\w+\s*=\s*)?[!%]", line) or line.endswith("?"):
                raise SourceError(f"notebook {path}: cell {number}: {line!r} is a shell or magic line, which runs only "
                                  "in Jupyter; remove it (dependencies go in the image, not the notebook)") from None
            raise SourceError(f"notebook {path}: cell {number}: line {exc.lineno}: {exc.msg}") from None
        parts.append(f"# cell {number}\n{code.rstrip()}\n")
    if not parts:
        raise SourceError(f"notebook {path}: it has no code cells")
    script = path.with_suffix(".py").name
    return Source({script: "\n".join(parts).encode()}, ["python3", str(PurePosixPath(workdir) / script)], "notebook")


def _function(module: Path, name: str, workdir: str, metric: str) -> Source:
    """The module and an entry script that calls ``name`` with the trial's ``--name=value`` arguments (only the
    module goes in: a module that imports its neighbours needs its folder packaged, with ``--cmd``)."""
    if module.name == ENTRY:
        raise SourceError(f"source {module}: {ENTRY} is the name of the entry script katibx build writes; rename it")
    entry = f'''"""Made by katibx build: calls {name} of {module.name} with the --name=value arguments and prints
what it returns as name=value lines (a number: {metric}=value). A value is typed as ${PARAMETERS_ENV} says
({{"types": {{name: "int" | "double" | "number" | "text" | {{text: value}}}}, "fixed": {{name: value}}}}, katibx.tune's search
space), else read as a Python literal where it is one."""
import ast
import importlib
import json
import os
import sys

objective = getattr(importlib.import_module({module.stem!r}), {name!r})
given = json.loads(os.environ.get({PARAMETERS_ENV!r}) or "{{}}")
types = given.get("types", {{}})


def value(name, text):
    kind = types.get(name)
    if isinstance(kind, dict):
        return kind.get(text, text)
    if kind in ("int", "double", "number"):
        return int(text) if kind == "int" or kind == "number" and text.lstrip("+-").isdigit() else float(text)
    if kind == "text":
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


params = dict((arg.lstrip("-").partition("=")[0], value(arg.lstrip("-").partition("=")[0], arg.partition("=")[2]))
              for arg in sys.argv[1:])
params.update(given.get("fixed", {{}}))
result = objective(params)
for key, number in (result.items() if isinstance(result, dict) else [({metric!r}, result)] if result is not None
                    else []):
    print(f"{{key}}={{number}}", flush=True)
'''
    return Source({module.name: module, ENTRY: entry.encode()}, ["python3", str(PurePosixPath(workdir) / ENTRY)],
                  "function")
