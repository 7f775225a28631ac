"""A ``requirements.txt`` as a layer of pure-Python packages for the image's Python, installed by pip.

pip installs them into a folder for the image's Python version, taking only wheels that run on any platform
(``py3-none-any``); a package that exists only with compiled parts is refused by name (it belongs in the base
image, built for its platform). The layer puts them in :data:`PACKAGES_DIR`, which the image's ``PYTHONPATH`` names;
it is reproducible (no byte-code), so a rebuild with the same requirements uploads nothing new.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGES_DIR = "/opt/katibx/python"


class RequirementsError(ValueError):
    """Requirements that cannot be installed for the image (one line naming the package)."""


def requirement_files(requirements: Path, python_version: str) -> dict[str, bytes]:
    """The files pip installs for ``requirements`` (path in the image -> content) for Python ``python_version``,
    without what names this machine (console scripts, whose first line is this Python's path; ``direct_url.json``,
    a local wheel's path here)."""
    this = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python_version != this and ";" in requirements.read_text():
        log.warning("%s: environment markers are judged by pip for this Python (%s), not the image's (%s)",
                    requirements, this, python_version)
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
                   "--no-warn-conflicts", "--target", folder, "--only-binary=:all:", "--implementation", "py",
                   "--abi", "none", "--platform", "any", "--python-version", python_version, "-r",
                   str(requirements.resolve())]
        try:
            done = subprocess.run(command, capture_output=True, text=True, cwd=requirements.parent, timeout=1800)
        except subprocess.TimeoutExpired:
            raise RequirementsError(f"{requirements}: pip did not finish in 30 minutes") from None
        if done.returncode != 0:
            raise RequirementsError(f"{requirements}: {_why(done.stderr, python_version)}")
        root = Path(folder)
        files = {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*"))
                 if path.is_file() and "__pycache__" not in path.parts}
    kept = {name: data for name, data in files.items()
            if not name.startswith("bin/") and not name.endswith(".dist-info/direct_url.json")}
    for name in [n for n in kept if n.endswith(".dist-info/RECORD")]:  # without the files left out
        kept[name] = b"".join(line for line in kept[name].splitlines(keepends=True)
                              if line.split(b",")[0].decode(errors="replace") in kept)
    return {f"{PACKAGES_DIR}/{name}": data for name, data in kept.items()}


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
