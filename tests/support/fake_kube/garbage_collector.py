"""The fake garbage collector: dependents of deleted owners go later, asynchronously, as in a real cluster.

It acts `delay` seconds after the event that concerns it, from its own thread, so a client sees dependents outlive
their owner for a while. Like the real one it deletes an object all of whose owners are gone, including an object
created with an ownerReference to an owner that no longer exists; drops references to missing owners when others
remain; completes Foreground deletions (dependents first, the owner once none with `blockOwnerDeletion` is left)
and Orphan deletions (references removed, then the `orphan` finalizer). Pods it deletes terminate gracefully.
"""

from __future__ import annotations

import copy
from typing import Any, Hashable

from .errors import ApiError
from .loop import Controller, ControllerLoop
from .resources import ResourceType
from .store import Event, Store

FOREGROUND, ORPHAN = "foregroundDeletion", "orphan"


class GarbageCollector(Controller):
    """Deletes dependents whose owners are gone and completes Foreground and Orphan deletions."""

    def __init__(self, store: Store, delay: float = 0.2) -> None:
        self.store = store
        self.delay = delay
        self.loop = ControllerLoop("fake-garbage-collector", store, self._keys_of, self._reconcile)

    def _keys_of(self, event: Event) -> list[Hashable]:
        """Nothing now: each concerned object is looked at `delay` seconds later."""
        meta = event.obj["metadata"]
        keys: list[Hashable] = []
        if event.type == "DELETED":
            keys.append(("dependents", meta["uid"]))
        elif set(meta.get("finalizers") or ()) & {FOREGROUND, ORPHAN} and meta.get("deletionTimestamp"):
            keys.append(("finalize", meta["uid"]))
        if meta.get("ownerReferences"):
            keys.append(("object", meta["uid"]))
            if event.type == "DELETED":  # an owner in Foreground deletion may now be free to go
                keys.extend(("finalize", ref["uid"]) for ref in meta["ownerReferences"] if ref.get("uid"))
        for key in keys:
            self.loop.after(self.delay, key)
        return []

    def _reconcile(self, key: Hashable) -> None:
        what, uid = key  # type: ignore[misc]
        if what == "dependents":
            for rtype, obj in self.store.owned(uid):
                self._collect(rtype, obj)
        elif what == "object":
            found = self.store.by_uid(uid)
            if found is not None:
                self._collect(*found)
        else:
            found = self.store.by_uid(uid)
            if found is not None:
                self._finalize(*found)

    def _collect(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        """Delete a dependent whose owners are all gone (or being deleted in the foreground); drop missing owners."""
        meta = obj["metadata"]
        refs = meta.get("ownerReferences") or []
        owners = {ref.get("uid"): self.store.by_uid(str(ref.get("uid"))) for ref in refs}
        present = [ref for ref in refs if owners.get(ref.get("uid")) is not None]
        in_foreground = [ref for ref in present if FOREGROUND in (owners[ref.get("uid")][1]["metadata"]  # type: ignore[index]
                                                                     .get("finalizers") or ())]
        if not present or (in_foreground and len(in_foreground) == len(present)):
            self._delete(rtype, obj)
        elif len(present) < len(refs):
            self._set_refs(rtype, obj, present)

    def _finalize(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        """Advance a Foreground or Orphan deletion of an owner."""
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if not meta.get("deletionTimestamp"):
            return
        dependents = self.store.owned(meta["uid"])
        if ORPHAN in finalizers:
            for child_type, child in dependents:
                refs = [ref for ref in child["metadata"].get("ownerReferences") or [] if ref.get("uid") != meta["uid"]]
                self._set_refs(child_type, child, refs)
            self._drop_finalizer(rtype, obj, ORPHAN)
        elif FOREGROUND in finalizers:
            for child_type, child in dependents:
                if not child["metadata"].get("deletionTimestamp"):
                    self._delete(child_type, child)
            blocking = [child for _, child in self.store.owned(meta["uid"]) if any(
                ref.get("uid") == meta["uid"] and ref.get("blockOwnerDeletion")
                for ref in child["metadata"].get("ownerReferences") or [])]
            if not blocking:
                self._drop_finalizer(rtype, obj, FOREGROUND)

    def _delete(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        try:
            self.store.delete(rtype, meta.get("namespace", ""), meta["name"], "Background", precondition_uid=meta["uid"])
        except ApiError:
            pass  # gone already, or replaced by a new object of the same name

    def _set_refs(self, rtype: ResourceType, obj: dict[str, Any], refs: list[dict[str, Any]]) -> None:
        def mutate(changed: dict[str, Any]) -> None:
            if refs:
                changed["metadata"]["ownerReferences"] = copy.deepcopy(refs)
            else:
                changed["metadata"].pop("ownerReferences", None)
        self._update(rtype, obj, mutate)

    def _drop_finalizer(self, rtype: ResourceType, obj: dict[str, Any], finalizer: str) -> None:
        try:
            self.store.remove_finalizer(rtype, obj, finalizer)
        except ApiError:
            pass

    def _update(self, rtype: ResourceType, obj: dict[str, Any], mutate: Any) -> None:
        meta = obj["metadata"]
        try:
            current = self.store.get(rtype, meta.get("namespace", ""), meta["name"])
            if current["metadata"]["uid"] == meta["uid"]:
                self.store.update(rtype, meta.get("namespace", ""), meta["name"], mutate)
        except ApiError:
            pass
