"""Imported at start-up (PYTHONPATH) by the test runs of the portable path: with ``KATIBX_PORTABLE=1`` it takes away
what macOS lacks (process descriptors, epoll) and fails any read of /proc made by katibx's own code, so a Linux-only call
that bypasses :mod:`katibx.capabilities` breaks the run instead of passing unnoticed. Test support only."""

from __future__ import annotations

import builtins
import io
import os
import select
import signal
import sys
from typing import Any

if os.environ.get("KATIBX_PORTABLE", "").strip() not in ("", "0"):
    for module, name in ((os, "pidfd_open"), (signal, "pidfd_send_signal"), (select, "epoll")):
        if hasattr(module, name):
            delattr(module, name)

    def _guard(real: Any) -> Any:
        def guarded(path: Any, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if str(path).startswith("/proc/") and caller.split(".")[0] == "katibx":
                raise AssertionError(f"{caller} reads {path} on the portable path (KATIBX_PORTABLE=1)")
            return real(path, *args, **kwargs)
        return guarded

    builtins.open = io.open = _guard(builtins.open)
    os.stat = _guard(os.stat)
