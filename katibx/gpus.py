"""GPUs of this machine for the local backend: which devices there are, and which trial holds which.

The devices are ``$KATIBX_GPUS`` (``0,1,2``: to choose them, or to simulate them on a machine without any; empty:
none), else the controller's own ``$CUDA_VISIBLE_DEVICES`` (a controller restricted to some GPUs shares only
those), else what ``nvidia-smi`` lists. A trial that asks for ``nvidia.com/gpu: N`` gets N free devices in its
``CUDA_VISIBLE_DEVICES`` and waits (Created) while they are taken, as Kubernetes and Ray schedule them.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

log = logging.getLogger(__name__)

GPUS_ENV = "KATIBX_GPUS"
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


def discover_gpus() -> list[str]:
    """The device ids trials may be given (see the module's docstring for where they come from)."""
    for name in (GPUS_ENV, VISIBLE_ENV):
        text = os.environ.get(name)
        if text is not None:
            return [device.strip() for device in text.split(",") if device.strip()]
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        listed = subprocess.run([tool, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed (%s): trials get no GPU; set %s=0,1,... to name the devices", exc, GPUS_ENV)
        return []
    if listed.returncode != 0:
        log.warning("nvidia-smi failed (%s): trials get no GPU; set %s=0,1,... to name the devices",
                    listed.stderr.strip()[-200:], GPUS_ENV)
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


class GpuPool:
    """Which of the devices are free; trials take whole devices and give them back when they end."""

    def __init__(self, devices: list[str]) -> None:
        self.devices = list(devices)
        self._free = list(devices)
        self._held: dict[str, list[str]] = {}

    def can_take(self, count: int) -> bool:
        return count <= len(self._free)

    def take(self, holder: str, count: int) -> list[str]:
        """``count`` free devices for ``holder`` (lowest ids first); ValueError when not that many are free."""
        if count > len(self._free):
            raise ValueError(f"{count} GPUs asked, {len(self._free)} free")
        taken, self._free = self._free[:count], self._free[count:]
        self._held[holder] = self._held.get(holder, []) + taken
        return taken

    def give_back(self, holder: str) -> None:
        returned = self._held.pop(holder, [])
        self._free = [d for d in self.devices if d in self._free or d in returned]


__all__ = ["GPUS_ENV", "GpuPool", "VISIBLE_ENV", "discover_gpus"]
