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

# Where a trial's interpreter scripts are, inside its trial directory.
BIN_DIR = ".katibx-bin"
NAMES = ("python", "python3")


def with_python_on_path(trial_dir: Path, env: dict[str, str]) -> None:
    """Write the trial's ``python``/``python3`` scripts and put their folder first on ``env``'s PATH."""
    folder = trial_dir / BIN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    script = f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n"
    for name in NAMES:
        path = folder / name
        if not path.exists() or path.read_text() != script:
            path.write_text(script)
            path.chmod(0o755)
    env["PATH"] = os.pathsep.join([str(folder), env.get("PATH") or os.defpath])
