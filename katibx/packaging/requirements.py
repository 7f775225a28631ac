"""A ``requirements.txt`` as a layer of pure-Python packages for the image's Python, installed by pip.

pip installs them into a folder for the image's Python version, taking only wheels that run on any platform
(``py3-none-any``); a package that exists only with compiled parts is refused by name (it belongs in the base
image, built for its platform). The layer puts them in :data:`PACKAGES_DIR`, which the image's ``PYTHONPATH`` names;
it is reproducible (no byte-code), so a rebuild with the same requirements uploads nothing new.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES_DIR = "/opt/katibx/python"


class RequirementsError(ValueError):
    """Requirements that cannot be installed for the image (one line naming the package)."""


def requirement_files(requirements: Path, python_version: str) -> dict[str, bytes]:
    """The files pip installs for ``requirements`` (path in the image -> content) for Python ``python_version``."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
                   "--no-warn-conflicts", "--target", folder, "--only-binary=:all:", "--implementation", "py",
                   "--abi", "none", "--platform", "any", "--python-version", python_version, "-r",
                   str(requirements.resolve())]
        done = subprocess.run(command, capture_output=True, text=True, cwd=requirements.parent, timeout=1800)
        if done.returncode != 0:
            raise RequirementsError(f"{requirements}: {_why(done.stderr, python_version)}")
        root = Path(folder)
        return {f"{PACKAGES_DIR}/{path.relative_to(root).as_posix()}": path.read_bytes()
                for path in sorted(root.rglob("*")) if path.is_file() and "__pycache__" not in path.parts}


def _why(stderr: str, python_version: str) -> str:
    """pip's reason, in one line naming the package."""
    missing = re.search(r"No matching distribution found for ([^\s]+)", stderr)
    if missing:
        return (f"{missing[1]} has no pure-Python wheel for Python {python_version} (a package with compiled parts "
                "belongs in the base image, built for its platform)")
    unsupported = re.search(r"([^\s/]+?)-[^-\s]+-[^\s]+\.whl is not a supported wheel", stderr)
    if unsupported:
        return (f"{unsupported[1]} is a wheel with compiled parts for another platform (a package with compiled "
                "parts belongs in the base image, built for its platform)")
    lines = [line.strip() for line in stderr.splitlines() if line.strip().startswith("ERROR:")]
    return (lines[-1] if lines else stderr.strip().splitlines()[-1] if stderr.strip() else "pip failed")
