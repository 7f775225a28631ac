"""One controller per experiment: a lease in the store that its holder renews with a heartbeat.

A second ``run``/``resume``/``tune`` of a running experiment is refused, naming the holder. A lease whose holder is
gone is taken over: at once on the holder's host (its process no longer exists), from another host once its
heartbeat is older than the lease duration (the holder cannot be asked there). ``katibx delete --force`` asks the
holder to stop through the store, which works across hosts. The durations follow Kubernetes controllers' leader
election (15 s lease, renewed every 2 s).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime

from katibx.processes import process_started, same_process_alive, this_host
from katibx.store import ExperimentRecord, LeaseRow, Store, StoreError, StoreFault

log = logging.getLogger(__name__)

LEASE_SECONDS = 15.0
RENEW_SECONDS = 2.0


class ExperimentBusy(StoreError):
    """Another live controller holds the experiment's lease."""


class LeaseLost(StoreError):
    """This controller must stop: another one took its lease over, or ``katibx delete --force`` asked it to stop."""


def controller_alive(store: Store, record: ExperimentRecord) -> bool:
    """Whether a controller holds the experiment's lease and may still be running (as :func:`holder_alive`)."""
    lease = store.lease(record.id)
    return lease is not None and holder_alive(lease)


def holder_alive(lease: LeaseRow, *, lease_seconds: float = LEASE_SECONDS) -> bool:
    """Whether the lease's holder may still be running: on its own host, its process exists (the same process, not
    one that reused its pid); elsewhere, its heartbeat is fresher than ``lease_seconds``."""
    if lease.host == this_host():
        return same_process_alive(lease.pid, lease.pid_started)
    return time.time() - lease.heartbeat < lease_seconds


def describe_holder(lease: LeaseRow) -> str:
    """``pid 123 on host h, since 12:00:01, last heartbeat 1 s ago``."""
    since = datetime.fromtimestamp(lease.acquired).strftime("%Y-%m-%d %H:%M:%S")
    host = lease.host.partition("/pidns:")[0]
    return (f"pid {lease.pid} on host {host}, since {since}, "
            f"last heartbeat {max(0.0, time.time() - lease.heartbeat):.0f} s ago")


def new_lease() -> LeaseRow:
    """A lease for this process, as a controller about to run an experiment would hold it."""
    now = time.time()
    pid = os.getpid()
    import uuid  # (only a controller takes a lease; reading commands start without it)

    return LeaseRow(uuid.uuid4().hex, this_host(), pid, process_started(pid) or 0.0, now, now)


class ExperimentLease:
    """The lease of the controller running ``record``: :meth:`acquire` (or the ``with`` block) takes it, a heartbeat
    thread renews it, :meth:`check` raises :class:`LeaseLost` once it is lost or a stop was asked for.

    ``held`` is a lease the caller already stored (:meth:`Store.create_experiment` stores one with a new experiment).
    """

    def __init__(self, store: Store, record: ExperimentRecord, *, held: LeaseRow | None = None,
                 lease_seconds: float = LEASE_SECONDS, renew_seconds: float = RENEW_SECONDS) -> None:
        self.store = store
        self.record = record
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.lease: LeaseRow | None = held
        self._problem: str | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        if held is not None:
            self._start_heartbeat()

    def __enter__(self) -> ExperimentLease:
        if self.lease is None:
            self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lease, or raise :class:`ExperimentBusy` naming the live holder."""
        mine = new_lease()
        for _ in range(10):  # another controller may change the stored lease between the read and the swap
            current = self.store.lease(self.record.id)
            if current is not None and holder_alive(current, lease_seconds=self.lease_seconds):
                raise ExperimentBusy(
                    f"experiment {self.record.name!r} is being run by another controller ({describe_holder(current)}); "
                    f"wait for it, stop it, or 'katibx delete {self.record.name} --force' (store {self.store.path})")
            if current is not None:
                log.warning("experiment %s: taking over the lease of a controller that is gone (%s)",
                            self.record.name, describe_holder(current))
            if self.store.take_lease(self.record.id, mine, current.holder if current else None) is mine:
                self.lease = mine
                self._start_heartbeat()
                return
        raise ExperimentBusy(f"experiment {self.record.name!r}: its lease keeps changing hands; try again")

    def check(self) -> None:
        """Raise :class:`LeaseLost` when this controller has to stop."""
        if self._problem is not None:
            raise LeaseLost(self._problem)

    def release(self) -> None:
        """Stop the heartbeat and give the lease up (a lease already lost is left to its new holder)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.lease is not None:
            try:
                self.store.release_lease(self.record.id, self.lease.holder)
            except StoreError as exc:  # left in the store: the next controller on this host takes it over soon
                # (a fault of the store's file, a full disk, is what ended the run too, and that says so in one line)
                level = logging.INFO if isinstance(exc, StoreFault) else logging.WARNING
                log.log(level, "experiment %s: cannot release the controller lease: %s", self.record.name, exc)
            self.lease = None

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._heartbeat, name=f"katibx-lease-{self.record.name}", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        """Renew the lease every ``renew_seconds`` on a connection of its own (the controller's may be mid-write)."""
        assert self.lease is not None
        holder = self.lease.holder
        try:
            store = Store(self.store.path)
        except StoreError as exc:
            log.warning("experiment %s: lease heartbeat cannot open the store: %s", self.record.name, exc)
            return
        renewed = time.monotonic()
        try:
            while not self._stopped.wait(self.renew_seconds):
                try:
                    current = store.renew_lease(self.record.id, holder)
                except StoreError as exc:  # a full disk or a lock: the controller's own writes will say so
                    log.warning("experiment %s: cannot renew the controller lease: %s", self.record.name, exc)
                    if time.monotonic() - renewed > self.lease_seconds:  # another host may take it over now
                        self._problem = (f"experiment {self.record.name!r}: the controller lease could not be renewed "
                                         f"for {self.lease_seconds:.0f} s ({exc}); it stops so that two controllers "
                                         "never run one experiment")
                        return
                    continue
                renewed = time.monotonic()
                if current is None or current.holder != holder:
                    taker = f" by {describe_holder(current)}" if current else ""
                    self._problem = (f"experiment {self.record.name!r}: this controller lost its lease (taken over"
                                     f"{taker}); it stops so that two controllers never run one experiment")
                    return
                if current.stop_requested:
                    self._problem = f"experiment {self.record.name!r}: stopped at the request of {current.stop_requested}"
                    return
        finally:
            store.close()


def stop_holder(store: Store, record: ExperimentRecord, requester: str, *,
                lease_seconds: float = LEASE_SECONDS) -> LeaseRow | None:
    """Ask the live controller of ``record`` (if any) to stop and wait until it has released the lease; returns the
    lease it held. StoreError when it does not stop within twice the lease duration."""
    current = store.lease(record.id)
    if current is None or not holder_alive(current, lease_seconds=lease_seconds):
        return None
    store.request_stop(record.id, current.holder, requester)
    deadline = time.monotonic() + 2 * lease_seconds
    while time.monotonic() < deadline:
        now = store.lease(record.id)
        if now is None or now.holder != current.holder or not holder_alive(now, lease_seconds=lease_seconds):
            return current
        time.sleep(0.1)
    raise StoreError(f"experiment {record.name!r}: its controller ({describe_holder(current)}) did not stop within "
                     f"{2 * lease_seconds:.0f} s; stop that process, then try again")


def stop_for_deletion(store: Store, record: ExperimentRecord, *, force: bool) -> None:
    """Make sure no controller runs ``record`` before it is deleted: a live one is refused (ExperimentBusy), or
    with ``force`` asked to stop and waited for."""
    current = store.lease(record.id)
    if current is None or not holder_alive(current):
        return
    if not force:
        raise ExperimentBusy(f"experiment {record.name!r} is running ({describe_holder(current)}); "
                             f"'katibx delete {record.name} --force' stops its controller first")
    stop_holder(store, record, f"katibx delete --force (pid {os.getpid()} on host {socket.gethostname()})")
