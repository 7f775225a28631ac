"""Processes a trial started that left its process group (``setsid``, a daemon's double fork): found and stopped
by a token in their environment, which every process of the trial inherits (Jenkins' process-tree killer uses the
same idea). Portable: psutil reads environments on Linux and macOS. Two escapes are left: a process that
clears its environment, and one that a function trial forks without exec and that then calls setsid (what the
system shows of a process's environment is what it was exec'd with, the worker's; on Linux the worker is a child
subreaper, so such a process is at least re-parented to it rather than to init).
"""

from __future__ import annotations

import os
import uuid

import psutil

TOKEN_ENV = "KATIBX_TRIAL_RUN"


def new_token() -> str:
    """A token unique to one run of one trial."""
    return uuid.uuid4().hex


def kill_marked(token: str, since: float, *, spare: frozenset[int] = frozenset()) -> list[int]:
    """SIGKILL every process of this user that started at or after ``since`` (epoch seconds, as psutil reports
    start times) and carries ``token``, except the pids in ``spare``; returns the pids killed. Only processes younger
    than the trial are read, so the cost follows what started since then, not everything running."""
    uid = os.getuid()
    killed = []
    for proc in psutil.process_iter(["create_time", "uids"]):
        started, uids = proc.info["create_time"], proc.info["uids"]
        if started is None or started < since - 1.0 or uids is None or uids.real != uid or proc.pid in spare:
            continue
        try:
            if proc.environ().get(TOKEN_ENV) != token:
                continue
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        killed.append(proc.pid)
    return killed
