"""Processes a trial started that left its process group (``setsid``, a daemon's double fork): found and stopped
by a token in their environment, which every process of the trial inherits (Jenkins' process-tree killer uses the
same idea). Portable: psutil reads environments on Linux and macOS. Two escapes are left: a process that
clears its environment, and one that a function trial forks without exec and that then calls setsid (what the
system shows of a process's environment is what it was exec'd with, the worker's; on Linux the worker is a child
subreaper, so such a process is at least re-parented to it rather than to init).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import psutil

from katibx import capabilities

TOKEN_ENV = "KATIBX_TRIAL_RUN"


def new_token() -> str:
    """A token unique to one run of one trial."""
    return uuid.uuid4().hex


# A trial longer than this gets the full scan: over a long run the process ids may have wrapped around entirely
# (pid_max may be 32,768), and the scan's cost (a few ms) no longer matters.
NARROW_SCAN_SECONDS = 10.0


def last_pid() -> int | None:
    """The id of the newest process on this machine (Linux's /proc/loadavg), or None where the system does not
    say (macOS, the portable path)."""
    if not capabilities.proc_fs():
        return None
    try:
        with open("/proc/loadavg", "rb") as f:
            return int(f.read().split()[4])
    except (OSError, ValueError, IndexError):
        return None


def kill_marked(token: str, since: float, *, spare: frozenset[int] = frozenset(), first_pid: int | None = None
                ) -> list[int]:
    """SIGKILL every process of this user that started at or after ``since`` (epoch seconds, as psutil reports
    start times) and carries ``token``, except the pids in ``spare``; returns the pids killed. Only processes younger
    than the trial are read. With ``first_pid`` (:func:`last_pid` when the trial started) and Linux's process ids
    not having wrapped around since, only the processes with ids created since then are looked at (a few, instead
    of every process: a scan of all cost a short command trial about 3 ms)."""
    uid = os.getuid()
    killed = []
    for proc in _younger(since, first_pid):
        try:
            with proc.oneshot():
                started, uids = proc.create_time(), proc.uids()
            if started < since - 1.0 or uids.real != uid or proc.pid in spare:
                continue
            if proc.environ().get(TOKEN_ENV) != token:
                continue
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        killed.append(proc.pid)
    return killed


def _proc_is_ours() -> bool:
    """Whether /proc lists the processes of this process's pid namespace (its /proc/self is this process)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def _younger(since: float, first_pid: int | None) -> Iterator[psutil.Process]:
    """The processes that may have started since ``since``: those whose ids came after ``first_pid`` when the ids
    have not wrapped around since, else every process."""
    pids = _pids_since(since, first_pid)
    if pids is None:
        yield from psutil.process_iter()
        return
    for pid in pids:
        try:
            yield psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue


def _pids_since(since: float, first_pid: int | None) -> list[int] | None:
    """The ids of the processes created after ``first_pid``, or None when that cannot be told: no note, no process
    since (or a /proc that never says: gVisor's reports 0), wrapped ids, a long trial, or a /proc of another pid
    namespace than the one /proc/loadavg counts in."""
    now = last_pid() if first_pid is not None else None
    if first_pid is None or now is None or now <= first_pid or time.time() - since > NARROW_SCAN_SECONDS \
            or not _proc_is_ours():
        return None
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit() and first_pid < int(name) <= now]
    except OSError:
        return None
