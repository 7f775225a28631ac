"""A child process's end as a file descriptor a poll loop can wait on, on Linux and on every other POSIX system.

Where the system has process descriptors (Linux 5.3+) it is the child's pidfd. Elsewhere (macOS, or
``KATIBX_PORTABLE=1``) a waiter thread blocks in the child's own ``wait`` (``Popen.wait``, ``Process.join``: the
child is reaped by the object that started it, so its exit status stays known) and then writes to a pipe whose read
end is the descriptor. Either way waiting costs no polling, and a signal is never sent to a pid that was reaped.
"""

from __future__ import annotations

import os
import select
import selectors
import signal
import threading
from typing import Any, Callable, Iterable

from katibx import capabilities


class ProcessExit:
    """Readable ``fd`` once process ``pid`` (a child of this process) has exited; ``wait`` reaps it (portable path)."""

    def __init__(self, pid: int, wait: Callable[[], Any]) -> None:
        self.pid = pid
        self._exited = threading.Event()
        self._write_end = -1
        if capabilities.pidfd():
            self.fd = os.pidfd_open(pid)
            self.pidfd = True
            return
        self.pidfd = False
        self.fd, self._write_end = os.pipe()
        threading.Thread(target=self._wait, args=(wait,), name=f"katibx-wait-{pid}", daemon=True).start()

    def _wait(self, wait: Callable[[], Any]) -> None:
        try:
            wait()
        finally:
            self._exited.set()
            try:
                os.write(self._write_end, b"x")
            except OSError:  # closed already: nobody waits any more
                pass
            os.close(self._write_end)

    def ended(self, timeout: float = 0.0) -> bool:
        """Whether the process has exited, waiting at most ``timeout`` seconds for it."""
        return bool(wait_readable([self.fd], timeout))

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Signal the process itself, unless it has exited (its pid may then belong to another process)."""
        try:
            if self.pidfd:
                signal.pidfd_send_signal(self.fd, signum)
            elif not self._exited.is_set():
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Release the descriptor (the waiter thread, if any, ends with the process)."""
        os.close(self.fd)


def wait_readable(fds: Iterable[int], timeout: float) -> list[int]:
    """The descriptors among ``fds`` that are readable, waiting up to ``timeout`` seconds for one; poll(2) where the
    system has it (no limit on descriptor numbers), else the best selector."""
    fds = list(fds)
    if hasattr(select, "poll"):
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        return [fd for fd, _ in poller.poll(max(timeout, 0) * 1000)]
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        return [key.fd for key, _ in selector.select(max(timeout, 0))]
