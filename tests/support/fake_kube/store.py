"""The thread-safe object store: resourceVersions, uids, generateName, owner index, event history and fan-out.

The history behaves as the API server's watch cache: it keeps the last `history` events and no event older than
`history_seconds` once newer ones arrive (75 s, the cache's freshness window), so a watch resumed from an older
resourceVersion gets 410 Expired on a busy cluster, and a quiet one keeps its history.

Stored objects are never mutated in place (every change stores a new dict), so the event history and readers can
share them without copying; callers that want to modify an object copy it first.
"""

from __future__ import annotations

import copy
import dataclasses
import queue
import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .clock import now_rfc3339
from .errors import ApiError, already_exists, conflict, expired, not_found
from .resources import ResourceRegistry, ResourceType

Location = tuple[tuple[str, str, str], str, str]

CLOSE = object()
"""Put on a watcher's queue when the server ends every watch (expire_watches, shutdown)."""


@dataclass(frozen=True)
class Event:
    """One change: its resourceVersion, resource type, ADDED/MODIFIED/DELETED, the new and the previous object."""

    rv: int
    rtype: ResourceType
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None
    at: float = dataclasses.field(default_factory=time.monotonic)


def random_suffix(length: int = 5) -> str:
    """Random lower-case letters and digits, like the server's generateName suffix (no vowels, as Kubernetes)."""
    return "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=length))


class Store:
    """All objects of the fake cluster, keyed by resource type, namespace and name."""

    def __init__(self, registry: ResourceRegistry, history: int = 50_000, history_seconds: float = 75.0) -> None:
        self.registry = registry
        self.lock = threading.RLock()
        self._rv = 1000
        self._compacted = 0
        self._objects: dict[tuple[str, str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self._owned: dict[str, set[Location]] = {}
        self._uids: dict[str, Location] = {}
        self._history: deque[Event] = deque()
        self._history_limit = history
        self._history_seconds = history_seconds
        self.expired_watches = 0  # watches refused with 410 Expired (for tests)
        self._watchers: dict[tuple[str, str, str], list[queue.SimpleQueue[Any]]] = {}
        self._listeners: list[queue.SimpleQueue[Any]] = []

    # ----------------------------------------------------------------- reads
    @property
    def resource_version(self) -> int:
        """The latest resourceVersion issued."""
        with self.lock:
            return self._rv

    def find(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object (do not modify it), or None."""
        return self._objects.get(rtype.key, {}).get((namespace if rtype.namespaced else "", name))

    def get(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        """The stored object, or a 404 ApiError."""
        obj = self.find(rtype, namespace, name)
        if obj is None:
            raise not_found(rtype.group, rtype.plural, name)
        return obj

    def list(self, rtype: ResourceType, namespace: str | None,
             predicate: Callable[[dict[str, Any]], bool] | None = None) -> tuple[list[dict[str, Any]], int]:
        """Objects of a type (in one namespace, or all when None) sorted by namespace and name, and the list RV."""
        with self.lock:
            items = [obj for (ns, _), obj in sorted(self._objects.get(rtype.key, {}).items())
                     if namespace is None or not rtype.namespaced or ns == namespace]
            rv = self._rv
        if predicate is not None:
            items = [obj for obj in items if predicate(obj)]
        return items, rv

    def owned(self, owner_uid: str) -> list[tuple[ResourceType, dict[str, Any]]]:
        """Objects whose ownerReferences name this uid."""
        with self.lock:
            found = []
            for key, namespace, name in self._owned.get(owner_uid, set()):
                obj = self._objects.get(key, {}).get((namespace, name))
                rtype = self.registry.get(*key)
                if obj is not None and rtype is not None:
                    found.append((rtype, obj))
            return found

    def by_uid(self, uid: str) -> tuple[ResourceType, dict[str, Any]] | None:
        """The stored object with this uid and its type, or None (an owner reference's target)."""
        with self.lock:
            location = self._uids.get(uid)
            if location is None:
                return None
            key, namespace, name = location
            obj = self._objects.get(key, {}).get((namespace, name))
            rtype = self.registry.get(*key)
            return (rtype, obj) if obj is not None and rtype is not None else None

    def namespace_exists(self, namespace: str) -> bool:
        """Whether a Namespace object of this name exists."""
        return ("", namespace) in self._objects.get(("", "v1", "namespaces"), {})

    # ---------------------------------------------------------------- writes
    def create(self, rtype: ResourceType, namespace: str, obj: dict[str, Any],
               prepare: Callable[[dict[str, Any]], Any] | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Store a new object: name from generateName, uid, resourceVersion, creationTimestamp, generation.

        `prepare` runs on the object once its name and uid are set (defaulting that needs them, as a Job's
        selector); with `dry_run` the object is returned without being stored.
        """
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        with self.lock:
            if rtype.namespaced and not self.namespace_exists(namespace):
                raise not_found("", "namespaces", namespace)
            bucket = self._objects.setdefault(rtype.key, {})
            ns_key = namespace if rtype.namespaced else ""
            if not meta.get("name"):
                for _ in range(20):
                    candidate = f"{meta['generateName']}{random_suffix()}"
                    if (ns_key, candidate) not in bucket:
                        meta["name"] = candidate
                        break
                else:
                    raise ApiError(409, "generateName could not find a free name", "AlreadyExists")
            name = meta["name"]
            if (ns_key, name) in bucket:
                raise already_exists(rtype.group, rtype.plural, name)
            if rtype.namespaced:
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"):
                meta.pop(field, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta["generation"] = 1
            obj.setdefault("apiVersion", rtype.api_version)
            obj.setdefault("kind", rtype.kind)
            if rtype.status_subresource:
                obj.pop("status", None)
            if prepare is not None:
                prepare(obj)
            if dry_run:
                return obj
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            bucket[(ns_key, name)] = obj
            self._uids[meta["uid"]] = (rtype.key, ns_key, name)
            self._index_owners(rtype, ns_key, name, None, obj)
            self._emit(Event(self._rv, rtype, "ADDED", obj, None))
            return obj

    def update(self, rtype: ResourceType, namespace: str, name: str, mutate: Callable[[dict[str, Any]], Any],
               subresource: str | None = None, expect_rv: str | None = None) -> dict[str, Any]:
        """Apply `mutate` to a copy of the object and store the result (a no-op change keeps the RV).

        With `subresource="status"` only the status is taken from the result; otherwise, for types with a status
        subresource, the status is kept. The generation grows when anything but metadata and status changes.
        """
        with self.lock:
            current = self.get(rtype, namespace, name)
            if expect_rv and expect_rv != current["metadata"].get("resourceVersion"):
                raise conflict(rtype.group, rtype.plural, name)
            changed = copy.deepcopy(current)
            mutate(changed)
            result = self._merge_update(rtype, current, changed, subresource)
            if result == current:
                return current
            meta = result.get("metadata", {})
            if meta.get("deletionTimestamp") and not meta.get("finalizers") and \
                    not meta.get("deletionGracePeriodSeconds"):
                return self._remove(rtype, current, result)
            return self._replace(rtype, current, result)

    def remove_finalizer(self, rtype: ResourceType, obj: dict[str, Any], finalizer: str) -> None:
        """Remove one finalizer from the object, if it is still the same object (its uid) and still exists."""
        meta = obj["metadata"]

        def mutate(changed: dict[str, Any]) -> None:
            left = [f for f in changed["metadata"].get("finalizers") or [] if f != finalizer]
            if left:
                changed["metadata"]["finalizers"] = left
            else:
                changed["metadata"].pop("finalizers", None)

        with self.lock:
            current = self.find(rtype, meta.get("namespace", ""), meta["name"])
            if current is not None and current["metadata"]["uid"] == meta["uid"]:
                self.update(rtype, meta.get("namespace", ""), meta["name"], mutate)

    def _merge_update(self, rtype: ResourceType, current: dict[str, Any], changed: dict[str, Any],
                      subresource: str | None) -> dict[str, Any]:
        """The object to store after an update of the main resource or of /status."""
        if subresource == "status":
            result = copy.copy(current)
            if "status" in changed:
                result["status"] = changed["status"]
            else:
                result.pop("status", None)
            return result
        result = changed
        meta = result.setdefault("metadata", {})
        old_meta = current["metadata"]
        for field in ("uid", "creationTimestamp", "name", "namespace", "generation", "resourceVersion",
                      "deletionTimestamp", "deletionGracePeriodSeconds"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        added = set(meta.get("finalizers") or ()) - set(old_meta.get("finalizers") or ())
        if old_meta.get("deletionTimestamp") and added:
            raise ApiError(422, f'{rtype.kind} "{old_meta["name"]}" is invalid: metadata.finalizers: Forbidden: no new '
                           "finalizers can be added if the object is being deleted, found new finalizers "
                           f'{sorted(added)}', "Invalid")
        result["apiVersion"], result["kind"] = current.get("apiVersion"), current.get("kind")
        if rtype.status_subresource:
            if "status" in current:
                result["status"] = current["status"]
            else:
                result.pop("status", None)
        body_keys = (set(current) | set(result)) - {"metadata", "status", "apiVersion", "kind"}
        if any(current.get(k) != result.get(k) for k in body_keys):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        return result

    def _replace(self, rtype: ResourceType, current: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """Store a changed object under a new resourceVersion and emit MODIFIED."""
        self._rv += 1
        result["metadata"]["resourceVersion"] = str(self._rv)
        ns_key, name = result["metadata"].get("namespace", ""), result["metadata"]["name"]
        self._objects[rtype.key][(ns_key, name)] = result
        self._index_owners(rtype, ns_key, name, current, result)
        self._emit(Event(self._rv, rtype, "MODIFIED", result, current))
        return result

    def delete(self, rtype: ResourceType, namespace: str, name: str, policy: str = "Background",
               precondition_uid: str | None = None, precondition_rv: str | None = None,
               grace: int | None = None) -> tuple[dict[str, Any], bool]:
        """Delete an object as the real registry does; returns (object, removed now).

        A Pod bound to a node and not yet terminal is deleted gracefully: it gets a `deletionTimestamp` `grace`
        seconds ahead (default its `terminationGracePeriodSeconds`) and stays, Terminating, until its kubelet
        deletes it again with grace 0 once its containers stopped. Foreground and Orphan add their finalizer
        (`foregroundDeletion`, `orphan`) for the garbage collector to act on and remove; an object with finalizers
        only gets a `deletionTimestamp` and goes when an update empties them. Background removes the object at once;
        its dependents are the garbage collector's business (garbage_collector.py), later.
        """
        with self.lock:
            current = self.get(rtype, namespace, name)
            meta = current["metadata"]
            if precondition_uid and precondition_uid != meta.get("uid"):
                raise ApiError(409, f"Precondition failed: UID in precondition: {precondition_uid}, UID in object "
                               f"meta: {meta.get('uid')}", "Conflict")
            if precondition_rv and precondition_rv != meta.get("resourceVersion"):
                raise conflict(rtype.group, rtype.plural, name)
            seconds = self._grace_seconds(rtype, current, grace)
            finalizers = list(meta.get("finalizers") or [])
            if not meta.get("deletionTimestamp"):
                finalizers += {"Foreground": ["foregroundDeletion"], "Orphan": ["orphan"]}.get(policy, [])
            elif seconds >= int(meta.get("deletionGracePeriodSeconds") or 0):
                return current, False  # already being deleted, no sooner than this
            if not finalizers and seconds == 0:
                final = None
                if meta.get("deletionTimestamp"):  # a Terminating pod that its kubelet now deletes
                    final = copy.deepcopy(current)
                    final["metadata"]["deletionGracePeriodSeconds"] = 0
                return self._remove(rtype, current, final), True
            marked = copy.deepcopy(current)
            marked["metadata"]["deletionTimestamp"] = now_rfc3339(seconds)
            marked["metadata"]["deletionGracePeriodSeconds"] = seconds
            if finalizers:
                marked["metadata"]["finalizers"] = list(dict.fromkeys(finalizers))
            return self._replace(rtype, current, marked), False

    @staticmethod
    def _grace_seconds(rtype: ResourceType, obj: dict[str, Any], grace: int | None) -> int:
        """The grace period of a deletion: only a Pod that a node runs has one (a terminal pod goes at once)."""
        if rtype.kind != "Pod" or rtype.group:
            return 0
        spec, phase = obj.get("spec") or {}, (obj.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0
        return max(0, int(grace if grace is not None else spec.get("terminationGracePeriodSeconds", 30)))

    def _remove(self, rtype: ResourceType, current: dict[str, Any], final: dict[str, Any] | None) -> dict[str, Any]:
        """Take an object out of the store and emit DELETED (its object carries the deletion's RV)."""
        gone = copy.deepcopy(final if final is not None else current)
        self._rv += 1
        gone["metadata"]["resourceVersion"] = str(self._rv)
        ns_key, name = current["metadata"].get("namespace", ""), current["metadata"]["name"]
        del self._objects[rtype.key][(ns_key, name)]
        self._uids.pop(current["metadata"]["uid"], None)
        self._index_owners(rtype, ns_key, name, current, None)
        self._emit(Event(self._rv, rtype, "DELETED", gone, current))
        return gone

    def delete_namespace_contents(self, namespace: str) -> None:
        """Remove every namespaced object of a namespace (what the namespace controller does)."""
        with self.lock:
            for key, bucket in list(self._objects.items()):
                rtype = self.registry.get(*key)
                if rtype is None or not rtype.namespaced:
                    continue
                for (ns, name), obj in list(bucket.items()):
                    if ns == namespace and (ns, name) in bucket:
                        self._remove(rtype, obj, None)

    def _index_owners(self, rtype: ResourceType, namespace: str, name: str,
                      old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Keep the owner-uid → dependents index in step with a change."""
        location = (rtype.key, namespace, name)
        for obj, add in ((old, False), (new, True)):
            for ref in ((obj or {}).get("metadata", {}).get("ownerReferences") or []):
                uid = ref.get("uid")
                if not uid:
                    continue
                if add:
                    self._owned.setdefault(uid, set()).add(location)
                else:
                    self._owned.get(uid, set()).discard(location)
                    if not self._owned.get(uid, True):
                        del self._owned[uid]

    # ---------------------------------------------------------------- events
    def _emit(self, event: Event) -> None:
        """Record an event in the bounded history and hand it to watchers and controllers (lock held)."""
        self._history.append(event)
        stale = event.at - self._history_seconds
        while len(self._history) > self._history_limit or self._history[0].at < stale:
            self._compacted = max(self._compacted, self._history.popleft().rv)
        for watcher in self._watchers.get(event.rtype.key, ()):
            watcher.put(event)
        for listener in self._listeners:
            listener.put(event)

    def listen(self) -> queue.SimpleQueue[Any]:
        """A queue receiving every future event (for the fake controllers)."""
        listener: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self.lock:
            self._listeners.append(listener)
        return listener

    def unlisten(self, listener: queue.SimpleQueue[Any]) -> None:
        """Stop a listener queue."""
        with self.lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
            listener.put(CLOSE)

    def watch(self, rtype: ResourceType, since: int | None) -> tuple[list[Event], queue.SimpleQueue[Any]]:
        """Subscribe to a type: the events to send first and a queue of later ones.

        `since=None` starts with a synthetic ADDED per existing object; a resourceVersion replays the events after
        it from the history, or raises 410 Expired when the history no longer reaches back that far.
        """
        watcher: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self.lock:
            if since is None:
                first = [Event(int(obj["metadata"]["resourceVersion"]), rtype, "ADDED", obj, None)
                         for _, obj in sorted(self._objects.get(rtype.key, {}).items())]
            else:
                if since < self._compacted:
                    self.expired_watches += 1
                    raise expired(f"too old resource version: {since} ({self._compacted})")
                first = [event for event in self._history if event.rv > since and event.rtype.key == rtype.key]
            self._watchers.setdefault(rtype.key, []).append(watcher)
        return first, watcher

    def unwatch(self, rtype: ResourceType, watcher: queue.SimpleQueue[Any]) -> None:
        """End a subscription."""
        with self.lock:
            watchers = self._watchers.get(rtype.key, [])
            if watcher in watchers:
                watchers.remove(watcher)

    def check_not_expired(self, rv: int) -> None:
        """410 when a resourceVersion is older than the history kept (for exact lists and continue tokens)."""
        with self.lock:
            if rv < self._compacted:
                raise expired(f"too old resource version: {rv} ({self._compacted})")

    def expire(self) -> None:
        """Forget the history (as an etcd compaction) and end every open watch: older RVs now get 410."""
        with self.lock:
            self._rv += 1
            self._compacted = self._rv
            self._history.clear()
            for watchers in self._watchers.values():
                for watcher in watchers:
                    watcher.put(CLOSE)

    def close_watches(self) -> None:
        """End every open watch and listener (shutdown)."""
        with self.lock:
            for watchers in self._watchers.values():
                for watcher in watchers:
                    watcher.put(CLOSE)
            for listener in self._listeners:
                listener.put(CLOSE)

    def all_objects(self) -> Iterable[tuple[ResourceType, dict[str, Any]]]:
        """Every stored object with its type (a snapshot)."""
        with self.lock:
            pairs = [(self.registry.get(*key), obj) for key, bucket in self._objects.items() for obj in bucket.values()]
        return [(rtype, obj) for rtype, obj in pairs if rtype is not None]
