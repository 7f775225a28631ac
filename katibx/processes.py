"""Which process is which, across pid reuse and reboots: the facts a lease, a Ray marker and a trial's stored handle
rely on to tell a live process from a later one that took its pid."""

from __future__ import annotations

import functools
import os
import signal
import socket

from katibx import capabilities


def this_host() -> str:
    """This host as a lease names it: its name, plus on Linux its pid namespace (containers sharing a host name
    cannot see each other's processes, so each is a host of its own to the others) and its boot (start times count
    from the boot, so a lease from before a reboot is another host's, judged by its heartbeat)."""
    return _linux_host() if capabilities.proc_fs() else socket.gethostname()


@functools.lru_cache(maxsize=1)
def _linux_host() -> str:
    """Fixed for the life of the process: read once (``katibx list`` asks once per experiment)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        return f"{socket.gethostname()}/pidns:{os.stat('/proc/self/ns/pid').st_ino}/boot:{boot}"
    except OSError:
        return socket.gethostname()


def process_started(pid: int, *, use_proc: bool | None = None, zombies: bool = False) -> float | None:
    """When process ``pid`` started (to tell it from a later process with its pid), in a form that does not move
    with the wall clock (None when there is no such process, or only its zombie unless ``zombies``; -1 when it is
    another user's). Linux: clock ticks since boot (/proc/PID/stat);
    psutil's start time there is recomputed from the boot time, which an NTP step moves. Elsewhere psutil's start
    time, which the system records once."""
    if capabilities.proc_fs() if use_proc is None else use_proc:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            return None
        except PermissionError:
            return -1.0
        return None if fields[0] in ("Z", "X") and not zombies else float(fields[19])  # state, starttime: 3, 22
    import psutil  # (the portable path only: on Linux a reading command starts without it)

    try:
        process = psutil.Process(pid)
        return None if not zombies and process.status() == psutil.STATUS_ZOMBIE else process.create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return -1.0


def same_process_alive(pid: int, started: float) -> bool:
    """Whether process ``pid`` runs and is the one that started at ``started`` (a :func:`process_started` value),
    not a later process that reused its pid; another user's live process counts as alive."""
    now = process_started(pid)
    return now is not None and (now < 0 or now == started)


def pid_reused(pid: int, started: float) -> bool:
    """Whether ``pid`` now belongs to another process than the one that started at ``started`` (a
    :func:`process_started` value; another user's process is another one); False when no process has it (its
    process group may still hold what it left)."""
    now = process_started(pid)
    return now is not None and (now < 0 or now != started)


def kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads, ignoring one that is gone."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
