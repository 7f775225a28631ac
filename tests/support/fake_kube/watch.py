"""Watch streams: newline-delimited JSON events (ADDED/MODIFIED/DELETED/BOOKMARK/ERROR) for a chunked response."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any, Callable, Iterator

from .errors import ApiError
from .resources import ResourceType
from .store import CLOSE, Event, Store


def encode_event(event_type: str, obj: dict[str, Any]) -> bytes:
    """One watch line."""
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


def error_event(error: ApiError) -> bytes:
    """An ERROR event carrying a Status, as the server sends for 410 Expired."""
    return encode_event("ERROR", error.status())


def watch_stream(store: Store, rtype: ResourceType, namespace: str | None,
                 matches: Callable[[dict[str, Any]], bool], since: int | None, timeout: float,
                 bookmarks: bool, bookmark_interval: float, stopping: threading.Event) -> Iterator[bytes]:
    """Events of one type and namespace that pass the selectors, until the timeout, an expiry or shutdown.

    With selectors, an object that stops matching is sent as DELETED and one that starts matching as ADDED, as the
    real watch cache does. With bookmarks requested, a BOOKMARK comes after `bookmark_interval` without events (the
    real server: a minute) and once about 2 s before the timeout. A resourceVersion older than the history yields a single ERROR event with a 410 Status.
    """
    try:
        first, watcher = store.watch(rtype, since)
    except ApiError as error:
        yield error_event(error)
        return
    deadline = time.monotonic() + timeout
    try:
        for event in first:
            line = _filtered(event, namespace, matches)
            if line is not None:
                yield line
        last_sent = time.monotonic()
        while not stopping.is_set():
            now = time.monotonic()
            if now >= deadline:
                return
            try:
                item = watcher.get(timeout=min(0.25, deadline - now))
            except queue.Empty:
                now = time.monotonic()
                if bookmarks and (now - last_sent >= bookmark_interval or deadline - now <= 2.0 < deadline - last_sent):
                    line = _bookmark(store, rtype, watcher)
                    if line is not None:
                        last_sent = time.monotonic()
                        yield line
                continue
            if item is CLOSE:
                return
            line = _filtered(item, namespace, matches)
            if line is not None:
                last_sent = time.monotonic()
                yield line
    finally:
        store.unwatch(rtype, watcher)


def _filtered(event: Event, namespace: str | None, matches: Callable[[dict[str, Any]], bool]) -> bytes | None:
    """The line to send for an event under this watch's namespace and selectors, or None."""
    if namespace is not None and event.obj.get("metadata", {}).get("namespace") != namespace:
        return None
    now_matches = matches(event.obj)
    if event.type == "DELETED":
        return encode_event("DELETED", event.obj) if (now_matches or (event.old is not None and matches(event.old))) \
            else None
    was_matching = event.old is not None and matches(event.old)
    if now_matches:
        return encode_event("MODIFIED" if was_matching else "ADDED", event.obj)
    if was_matching:
        return encode_event("DELETED", event.obj)
    return None


def _bookmark(store: Store, rtype: ResourceType, watcher: Any) -> bytes | None:
    """A BOOKMARK at the latest RV, sent only when no event is waiting (so resuming there loses nothing)."""
    with store.lock:
        if not watcher.empty():
            return None
        rv = store.resource_version
    return encode_event("BOOKMARK", {"kind": rtype.kind, "apiVersion": rtype.api_version,
                                     "metadata": {"resourceVersion": str(rv)}})
