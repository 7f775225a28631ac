"""A child process's end as a file descriptor a poll loop can wait on, on Linux and on every other POSIX system.

Where the system has process descriptors (Linux 5.3+) it is the child's pidfd. Where it has kqueue (macOS, the
BSDs) a kqueue watches the process (``NOTE_EXIT``), with no thread at all. Elsewhere (``KATIBX_PORTABLE=1`` on
Linux, which is how the tests take this path) a waiter thread blocks in ``waitid(..., WEXITED | WNOWAIT)``, which
sees the exit without reaping the child, and then writes to a pipe whose read end is the descriptor. Either way the child
is reaped only by the code that started it (``Popen.poll``, ``Process.exitcode``), in the controller's thread, so a
signal is never sent to a pid that was reaped behind its back and exit statuses stay known.
"""

from __future__ import annotations

import os
import select
import selectors
import signal
import threading
from typing import Callable, Iterable

from katibx import capabilities


class ProcessExit:
    """Readable ``fd`` once process ``pid`` (a child of this process) has exited.

    ``reaped()`` says whether the process has exited, reaping it if so (``Popen.poll() is not None``,
    ``Process.exitcode is not None``): before a signal is sent without a pidfd, the pid must still be the child's.
    """

    def __init__(self, pid: int, reaped: Callable[[], bool]) -> None:
        self.pid = pid
        self._reaped = reaped
        self._close: Callable[[], None] = lambda: os.close(self.fd)
        self.pidfd = capabilities.pidfd()
        if self.pidfd:
            self.fd = os.pidfd_open(pid)
        elif hasattr(select, "kqueue"):
            self.fd, self._close = _kqueue_exit(pid)
        else:
            self.fd, write_end = os.pipe()
            try:
                threading.Thread(target=_wait_then_write, args=(pid, write_end), name=f"katibx-wait-{pid}",
                                 daemon=True).start()
            except BaseException:
                os.close(self.fd)
                os.close(write_end)
                raise

    def ended(self, timeout: float = 0.0) -> bool:
        """Whether the process has exited, waiting at most ``timeout`` seconds for it."""
        return bool(wait_readable([self.fd], timeout))

    def kill(self, signum: int | None = None) -> None:
        """Signal the process itself (default SIGKILL), unless it has exited (its pid may then be another's)."""
        signum = signal.SIGKILL if signum is None else signum
        try:
            if self.pidfd:
                signal.pidfd_send_signal(self.fd, signum)
            elif not self._reaped():
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Release the descriptor (a waiter thread ends with the process)."""
        self._close()


def _wait_then_write(pid: int, write_end: int) -> None:
    """Block until the child exits (without reaping it), then make the pipe readable."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:  # reaped already: it has exited
        pass
    finally:
        try:
            os.write(write_end, b"x")
        except OSError:  # nobody reads any more
            pass
        os.close(write_end)


def _kqueue_exit(pid: int) -> tuple[int, Callable[[], None]]:
    """A descriptor that becomes readable when ``pid`` exits, and how to release it: a kqueue watching the process
    (BSD, macOS), or a pipe made readable at once when the process has exited before it could be watched."""
    queue = select.kqueue()
    try:
        queue.control([select.kevent(pid, select.KQ_FILTER_PROC, select.KQ_EV_ADD | select.KQ_EV_ONESHOT,
                                     select.KQ_NOTE_EXIT)], 0)
    except ProcessLookupError:
        queue.close()
        read_end, write_end = os.pipe()
        os.write(write_end, b"x")
        os.close(write_end)
        return read_end, lambda: os.close(read_end)
    return queue.fileno(), queue.close


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
