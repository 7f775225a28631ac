"""The list+watch threads of the kubernetes backend: status comes from watches, never from polling objects.

One thread per (namespace, experiment, worker kind) and one for the experiment's pods, each an informer
(:func:`workers._kube_api.list_and_watch`) on the selector ``katib.kubeflow.org/experiment=<name>``. After each full
list of worker objects, a tracked trial whose object the list does not show was deleted while nobody watched: it is
reported ``DELETED``, so no trial is ever lost.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from katibx.workers._kube_api import KubeApi, list_and_watch, stop_watches
from katibx.workers._manifests import EXPERIMENT_LABEL, Resource
from katibx.workers._tracked import TrackedTrial

Handler = Callable[[str, dict[str, Any]], None]  # (event type, object)


class Watches:
    """The backend's watch threads: started once each, events handed to its handlers, all stopped on close.

    ``trials`` and ``lock`` are the backend's trial table and the lock that guards it (read to find vanished objects).
    """

    def __init__(self, kube: KubeApi, watch_timeout: int, *, trials: dict[str, TrackedTrial], lock: threading.RLock,
                 on_object: Handler, on_pod: Handler, on_error: Callable[[BaseException], None]) -> None:
        self._kube = kube
        self._watch_timeout = watch_timeout
        self._trials, self._lock = trials, lock
        self._on_object, self._on_pod, self._on_error = on_object, on_pod, on_error
        self._threads: dict[tuple[str, ...], threading.Thread] = {}
        self._open: list[Any] = []  # running kubernetes.watch.Watch objects, stopped by close

    def start(self, namespace: str, experiment: str, resource: Resource | None) -> None:
        """Start (once) the list+watch thread for a worker kind, or for pods when ``resource`` is None."""
        key = (namespace, experiment, resource.api_version if resource else "v1", resource.kind if resource else "Pod")
        with self._lock:
            if key in self._threads:
                return
            thread = threading.Thread(target=self._loop, args=(namespace, experiment, resource),
                                      name=f"katibx-watch-{key[3]}", daemon=True)
            self._threads[key] = thread
        thread.start()

    def close(self) -> None:
        """Stop the running watches (their threads end once the API stop event is set)."""
        stop_watches(self._open)

    def _list_function(self, resource: Resource | None) -> Callable[..., Any]:
        """A list function for Watch.stream; without a docstring, so events carry plain dicts."""
        batch, core, custom = self._kube.apis()
        if resource is None:
            def list_pods(namespace: str, **kwargs: Any) -> Any:
                return core.list_namespaced_pod(namespace, **kwargs)
            return list_pods
        if resource.is_job:
            def list_jobs(namespace: str, **kwargs: Any) -> Any:
                return batch.list_namespaced_job(namespace, **kwargs)
            return list_jobs

        def list_custom(namespace: str, **kwargs: Any) -> Any:
            return custom.list_namespaced_custom_object(resource.group, resource.version, namespace, resource.plural,
                                                        **kwargs)
        return list_custom

    def _loop(self, namespace: str, experiment: str, resource: Resource | None) -> None:
        """List and watch one worker kind (or pods) of the experiment until the backend closes."""
        selector = f"{EXPERIMENT_LABEL}={experiment}"
        what = f"watch {'Pod' if resource is None else resource.kind} {namespace} {selector}"

        def listed(names: set[str], listed_at: float) -> None:
            assert resource is not None
            self._vanished(resource, namespace, names, listed_at)

        list_and_watch(self._kube, what, self._list_function(resource), namespace, selector,
                       handle=self._on_pod if resource is None else self._on_object,
                       listed=None if resource is None else listed, on_error=self._on_error, watches=self._open,
                       watch_timeout=self._watch_timeout)

    def _vanished(self, resource: Resource, namespace: str, names: set[str], listed_at: float) -> None:
        """Trials whose object was created before a list that does not show it were deleted unseen."""
        with self._lock:
            gone = [t for t in self._trials.values() if t.resource == resource and t.namespace == namespace
                    and t.uid is not None and t.created_at < listed_at and t.name not in names]
        for trial in gone:
            self._on_object("DELETED", {"metadata": {"name": trial.name, "uid": trial.uid}})
