"""``python`` and ``python3`` on a trial's PATH are katibx's own interpreter, wherever the trial's command calls them.

A command trial written for a container (``python train.py``, or ``bash -c "cd src && python3 -u train.py"`` as the
Katib SDK writes them) finds the Python environment katibx runs in, with its packages, even with no virtualenv
active or no ``python`` on the machine's PATH. The entries are small scripts that exec ``sys.executable`` (a symlink
would lose the virtualenv, which Python finds next to the path it was started by).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

# Where the interpreter scripts are, in the folder of an experiment's trial folders (one set for all its trials).
BIN_DIR = ".katibx-bin"
NAMES = ("python", "python3")
_written: dict[Path, list[tuple[int, int]]] = {}  # folder -> (inode, mtime) of each script as this process left it


def with_python_on_path(trials_folder: Path, env: dict[str, str]) -> None:
    """Have the ``python``/``python3`` scripts in ``trials_folder`` and put their folder first on ``env``'s PATH.
    They are checked (and rewritten, each whole at once) when this process has not written them or they changed
    since (another interpreter's katibx resumed the experiment): else a trial costs two stat calls."""
    folder = trials_folder / BIN_DIR
    found = _identities(folder)
    if found is None or found != _written.get(folder):
        folder.mkdir(parents=True, exist_ok=True)
        script = f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n"
        for name in NAMES:
            path = folder / name
            if not path.exists() or path.read_text() != script:
                partial = path.with_name(f".{name}.{os.getpid()}")
                partial.write_text(script)
                partial.chmod(0o755)
                os.replace(partial, path)  # a trial running the script meanwhile sees the old one or the new one
        _written[folder] = _identities(folder) or []
    env["PATH"] = os.pathsep.join([str(folder), env.get("PATH") or os.defpath])


def _identities(folder: Path) -> list[tuple[int, int]] | None:
    """Each script's (inode, modification time), or None when one is missing."""
    try:
        return [(st.st_ino, st.st_mtime_ns) for st in (os.stat(folder / name) for name in NAMES)]
    except OSError:
        return None
