"""GPUs of this machine for the local backend: which devices there are, and which trial holds which.

The devices are ``$KATIBX_GPUS`` (``0,1,2``: to choose them, or to simulate them on a machine without any; empty:
none), else the controller's own ``$CUDA_VISIBLE_DEVICES`` (a controller restricted to some GPUs shares only
those), else what ``nvidia-smi`` lists; looked for only when an experiment's trials ask for GPUs. A trial that
asks for ``nvidia.com/gpu: N`` gets N free devices in its ``CUDA_VISIBLE_DEVICES`` and waits (Created) while they
are taken, as Kubernetes and Ray schedule them.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading

log = logging.getLogger(__name__)

GPUS_ENV = "KATIBX_GPUS"
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


def discover_gpus() -> list[str]:
    """The device ids trials may be given (see the module's docstring for where they come from)."""
    for name in (GPUS_ENV, VISIBLE_ENV):
        text = os.environ.get(name)
        if text is not None:
            return _device_ids(text)
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


def _device_ids(text: str) -> list[str]:
    """The ids of a device list as CUDA reads it: up to the first that is not an index or a GPU-/MIG- UUID (``-1``
    hides every device), each once."""
    ids: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not re.fullmatch(r"\d+|(?:GPU|MIG)-[\w/-]+", item):
            break
        if item not in ids:
            ids.append(item)
    return ids


def shared_pool(devices: list[str]) -> GpuPool:
    """The one pool of these devices in this process: experiments run side by side (KatibClient's threads) share
    it; separate processes do not see each other's trials."""
    with _POOLS_LOCK:
        return _POOLS.setdefault(tuple(devices), GpuPool(devices))


class GpuPool:
    """Which of the devices are free; trials take whole devices and give them back when they end."""

    def __init__(self, devices: list[str]) -> None:
        self.devices = list(devices)
        self._free = list(devices)
        self._held: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def can_take(self, count: int) -> bool:
        with self._lock:
            return count <= len(self._free)

    def take(self, holder: str, count: int) -> list[str] | None:
        """``count`` free devices for ``holder`` (lowest ids first), or None when not that many are free."""
        with self._lock:
            if count > len(self._free):
                return None
            taken, self._free = self._free[:count], self._free[count:]
            self._held[holder] = self._held.get(holder, []) + taken
            return taken

    def give_back(self, holder: str) -> None:
        with self._lock:
            returned = self._held.pop(holder, [])
            self._free = [d for d in self.devices if d in self._free or d in returned]


_POOLS: dict[tuple[str, ...], GpuPool] = {}
_POOLS_LOCK = threading.Lock()


__all__ = ["GPUS_ENV", "GpuPool", "VISIBLE_ENV", "discover_gpus", "shared_pool"]
