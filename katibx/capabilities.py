"""What this system offers for running trials as local processes, detected rather than assumed from its name.

Linux has process descriptors (``pidfd_open``), the child subreaper (``prctl``) and ``/proc``; katibx uses them where
they exist, because they are faster or exact, and a portable POSIX path everywhere else (macOS, the BSDs): a waiter
thread per child, process groups plus the trial token for descendants, psutil for process facts. Setting
``KATIBX_PORTABLE=1`` makes katibx behave as on a system without the Linux interfaces: that is how the portable
path is tested on Linux. Windows has no fork and no process groups: the local backend refuses to start there.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

PORTABLE_ENV = "KATIBX_PORTABLE"
_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h: orphaned descendants are re-parented to the calling process
_PR_GET_CHILD_SUBREAPER = 37


def portable() -> bool:
    """Whether the portable path is forced (``KATIBX_PORTABLE`` set to anything but 0)."""
    return os.environ.get(PORTABLE_ENV, "").strip() not in ("", "0")


def pidfd() -> bool:
    """Whether process descriptors can be used (Linux 5.3+): a descriptor that becomes readable when a process
    exits, and signals that cannot reach a process that reused the pid."""
    return not portable() and _pidfd_works()


def subreaper() -> bool:
    """Whether a process can make itself a child subreaper (Linux 3.4+): orphans of its descendants come to it."""
    return not portable() and _prctl_works()


def proc_fs() -> bool:
    """Whether /proc describes processes as on Linux (start times in clock ticks, namespaces, the boot id)."""
    return not portable() and _proc_exists()


@functools.lru_cache(maxsize=1)
def _proc_exists() -> bool:
    return os.path.exists("/proc/self/stat")


def local_processes_unsupported() -> str | None:
    """Why trials cannot run as local processes here (no fork, no process groups: Windows), else None."""
    missing = [name for name in ("fork", "setsid", "killpg") if not hasattr(os, name)]
    if not missing:
        return None
    return (f"the local backend runs trials as POSIX processes and {sys.platform} lacks os.{', os.'.join(missing)}; "
            "on Windows run katibx inside WSL (https://learn.microsoft.com/windows/wsl), or run the trials "
            "elsewhere with --backend kubernetes or --backend ray")


@functools.lru_cache(maxsize=1)
def _pidfd_works() -> bool:
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # an older kernel, or a sandbox that forbids the call
        return False
    return True


@functools.lru_cache(maxsize=1)
def _prctl_works() -> bool:
    try:
        value = ctypes.c_int()
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) == 0
    except (OSError, AttributeError, TypeError):  # no prctl: not Linux
        return False


def become_subreaper() -> None:
    """Make this process the child subreaper of its descendants (call only where :func:`subreaper` is True)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
