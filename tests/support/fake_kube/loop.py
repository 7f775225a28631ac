"""A controller loop: one thread that reconciles keys from store events and from timers, as a workqueue does."""

from __future__ import annotations

import heapq
import queue
import sys
import threading
import time
from typing import Any, Callable, Hashable

from .store import CLOSE, Event, Store


class ControllerLoop:
    """Calls `reconcile(key)` for the keys `keys_of(event)` names and for keys whose timer has come."""

    def __init__(self, name: str, store: Store, keys_of: Callable[[Event], list[Hashable]],
                 reconcile: Callable[[Hashable], None]) -> None:
        self.name = name
        self._events = store.listen()
        self._store = store
        self._keys_of = keys_of
        self._reconcile = reconcile
        self._timers: list[tuple[float, int, Hashable]] = []
        self._timer_lock = threading.Lock()
        self._counter = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._store.unlisten(self._events)
        self._thread.join(10)

    def after(self, delay: float, key: Hashable) -> None:
        """Reconcile `key` again after `delay` seconds."""
        with self._timer_lock:
            self._counter += 1
            heapq.heappush(self._timers, (time.monotonic() + delay, self._counter, key))
        self._events.put(None)

    def _due(self) -> tuple[list[Hashable], float]:
        """Keys whose timers have come, and the seconds until the next one."""
        now, due = time.monotonic(), []
        with self._timer_lock:
            while self._timers and self._timers[0][0] <= now:
                due.append(heapq.heappop(self._timers)[2])
            wait = self._timers[0][0] - now if self._timers else 1.0
        return due, max(0.001, min(wait, 1.0))

    def _run(self) -> None:
        while True:
            due, wait = self._due()
            pending: list[Hashable] = list(due)
            try:
                item: Any = self._events.get(timeout=wait)
                while True:
                    if item is CLOSE:
                        return
                    if item is not None:
                        pending.extend(self._keys_of(item))
                    item = self._events.get_nowait()
            except queue.Empty:
                pass
            for key in dict.fromkeys(pending):
                try:
                    self._reconcile(key)
                except Exception as error:  # one bad object must not stop the controller
                    print(f"{self.name}: reconcile {key}: {error!r}", file=sys.stderr)


class Controller:
    """A fake controller: its `loop` is started and stopped with the cluster."""

    loop: ControllerLoop

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()
