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
_written: set[Path] = set()  # folders this process has written the scripts into


def with_python_on_path(trials_folder: Path, env: dict[str, str]) -> None:
    """Have the ``python``/``python3`` scripts in ``trials_folder`` (written once per process, and again when
    they are gone) and put their folder first on ``env``'s PATH."""
    folder = trials_folder / BIN_DIR
    if folder not in _written or not all((folder / name).exists() for name in NAMES):
        folder.mkdir(parents=True, exist_ok=True)
        script = f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n"
        for name in NAMES:
            path = folder / name
            if not path.exists() or path.read_text() != script:
                path.write_text(script)
                path.chmod(0o755)
        _written.add(folder)
    env["PATH"] = os.pathsep.join([str(folder), env.get("PATH") or os.defpath])
