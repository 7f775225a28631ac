"""The REST semantics of the fake API server: routing of paths to resource types and the verbs on them.

Independent of HTTP: `Api.handle(method, path, query, body, headers)` returns a `Response` (a JSON body, a text
body, or a stream of chunks for watches and followed logs). server.py moves requests and responses over HTTP.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from . import admission, defaults
from .errors import ApiError, resource_not_found, status_body
from .kubelet import log_path
from .patch import json_patch, merge_patch
from .resources import ResourceRegistry, ResourceType
from .selectors import fields_match, labels_match, parse_field_selector, parse_label_selector
from .store import Store
from .watch import watch_stream

KUBERNETES_VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "fake",
                      "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24",
                      "compiler": "gc", "platform": "linux/amd64"}


@dataclass
class Response:
    """What to send back: a status code and a JSON/text body, or a stream of chunks."""

    status: int
    body: Any = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterator[bytes] | None = None

    def payload(self) -> bytes:
        """The body as bytes."""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body, separators=(",", ":")).encode()


def _flag(query: dict[str, str], name: str) -> bool:
    return query.get(name, "").lower() in ("true", "1")


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}", "BadRequest") from error


class Api:
    """Serves the Kubernetes REST API from a Store."""

    def __init__(self, store: Store, registry: ResourceRegistry, root: Path, stopping: threading.Event,
                 bookmark_interval: float = 1.0) -> None:
        self.store = store
        self.registry = registry
        self.root = root
        self.stopping = stopping
        self.bookmark_interval = bookmark_interval
        self.server_address = ""

    # ------------------------------------------------------------- routing
    def handle(self, method: str, path: str, query: dict[str, str], body: bytes,
               headers: dict[str, str]) -> Response:
        """Serve one request; ApiErrors become Status responses."""
        try:
            return self._route(method, path, query, body, headers)
        except ApiError as error:
            return Response(error.code, error.status(), headers=dict(error.headers))

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes,
               headers: dict[str, str]) -> Response:
        parts = [part for part in path.split("/") if part]
        if parts in (["healthz"], ["readyz"], ["livez"]):
            return Response(200, "ok", "text/plain")
        if parts == ["version"]:
            return Response(200, KUBERNETES_VERSION)
        if parts == ["api"]:
            return Response(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self.server_address}]})
        if parts == ["apis"]:
            return Response(200, self._group_list())
        if len(parts) == 2 and parts[0] == "apis":
            group = self._group_list(parts[1])
            if group is None:
                raise resource_not_found()
            return Response(200, group)
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise resource_not_found()
        if not rest:
            return Response(200, self._resource_list(group, version))
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (group == "" and len(rest) == 3 and
                                                                rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        rtype = self.registry.get(group, version, rest[0])
        if rtype is None or len(rest) > 3:
            raise resource_not_found()
        if namespace is not None and not rtype.namespaced:
            raise resource_not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub not in (None, "status", "log"):
            raise resource_not_found()
        if sub == "log" and rtype.kind != "Pod":
            raise resource_not_found()
        ns = namespace or ""
        if name is None:
            if method == "GET":
                if _flag(query, "watch"):
                    return self._watch(rtype, namespace, query)
                return self._list(rtype, namespace, query)
            if method == "POST":
                if rtype.namespaced and namespace is None:
                    raise ApiError(405, "the server does not allow this method on the requested resource",
                                   "MethodNotAllowed")
                return self._create(rtype, ns, _json_body(body), query)
            if method == "DELETE":
                return self._delete_collection(rtype, namespace, query, body)
            raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")
        if rtype.namespaced and namespace is None:
            raise resource_not_found()
        if sub == "log":
            if method != "GET":
                raise ApiError(405, "the server does not allow this method on the requested resource",
                               "MethodNotAllowed")
            return self._log(rtype, ns, name, query)
        if method == "GET":
            return Response(200, self.store.get(rtype, ns, name))
        if method == "PUT":
            return self._replace(rtype, ns, name, _json_body(body), sub)
        if method == "PATCH":
            return self._patch(rtype, ns, name, body, headers.get("content-type", ""), sub)
        if method == "DELETE" and sub is None:
            return self._delete(rtype, ns, name, query, body)
        raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")

    # ----------------------------------------------------------- discovery
    def _group_list(self, only: str | None = None) -> Any:
        groups = []
        for name, versions in sorted(self.registry.group_versions().items()):
            entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
            groups.append({"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": entries,
                           "preferredVersion": entries[0]})
        if only is not None:
            return next((g for g in groups if g["name"] == only), None)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        types = [r for r in self.registry.all() if r.group == group and r.version == version]
        if not types:
            raise resource_not_found()
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        resources: list[dict[str, Any]] = []
        for rtype in types:
            resources.append({"name": rtype.plural, "singularName": rtype.singular, "namespaced": rtype.namespaced,
                              "kind": rtype.kind, "verbs": verbs, "shortNames": list(rtype.short_names)})
            if rtype.status_subresource:
                resources.append({"name": f"{rtype.plural}/status", "singularName": "", "namespaced":
                                  rtype.namespaced, "kind": rtype.kind, "verbs": ["get", "patch", "update"]})
            if rtype.kind == "Pod":
                resources.append({"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod",
                                  "verbs": ["get"]})
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": types[0].api_version,
                "resources": resources}

    # --------------------------------------------------------------- reads
    def _selector(self, query: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"))
        return lambda obj: labels_match(labels, obj) and fields_match(fields, obj)

    def _list(self, rtype: ResourceType, namespace: str | None, query: dict[str, str]) -> Response:
        matches = self._selector(query)
        if query.get("resourceVersionMatch") == "Exact" and query.get("resourceVersion"):
            self.store.check_not_expired(int(query["resourceVersion"]))
        items, rv = self.store.list(rtype, namespace, matches)
        start, meta = "", {}
        if query.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(query["continue"]))
            except ValueError as error:
                raise ApiError(400, "continue key is not valid", "BadRequest") from error
            try:
                self.store.check_not_expired(int(token["rv"]))
            except ApiError as error:
                raise ApiError(410, "The provided continue parameter is too old to display a consistent list "
                               "result. You can start a new list without the continue parameter.", "Expired") \
                    from error
            start = token["start"]
            items = [obj for obj in items if _position(obj) > start]
        limit = int(query.get("limit") or 0)
        if limit and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"rv": rv, "start": _position(items[-1])}).encode()).decode()
            meta["remainingItemCount"] = remaining
        meta = {"resourceVersion": str(rv), **meta}
        if rtype.schema:
            items = [{k: v for k, v in obj.items() if k not in ("apiVersion", "kind")} for obj in items]
        return Response(200, {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version, "metadata": meta,
                              "items": items})

    def _watch(self, rtype: ResourceType, namespace: str | None, query: dict[str, str]) -> Response:
        matches = self._selector(query)
        raw = query.get("resourceVersion", "")
        since = int(raw) if raw not in ("", "0") else None
        timeout = float(query.get("timeoutSeconds") or 1800)
        stream = watch_stream(self.store, rtype, namespace, matches, since, timeout,
                              _flag(query, "allowWatchBookmarks"), self.bookmark_interval, self.stopping)
        return Response(200, content_type="application/json", stream=stream)

    def _log(self, rtype: ResourceType, namespace: str, name: str, query: dict[str, str]) -> Response:
        pod = self.store.get(rtype, namespace, name)
        names = [c.get("name") for c in pod.get("spec", {}).get("containers") or []]
        all_names = names + [c.get("name") for c in pod.get("spec", {}).get("initContainers") or []]
        container = query.get("container")
        if not container:
            if len(names) != 1:
                raise ApiError(400, f"a container name must be specified for pod {name}, choose one of: "
                               f"[{' '.join(str(n) for n in names)}]", "BadRequest")
            container = str(names[0])
        if container not in all_names:
            raise ApiError(400, f"container {container} is not valid for pod {name}", "BadRequest")
        instance = _restart_count(pod, container)
        if _flag(query, "previous") and not _waiting_reason(pod, container) == "CrashLoopBackOff":
            # waiting to restart, the run that ended is both the current and the previous one (as the kubelet serves)
            if instance == 0:
                raise ApiError(400, f'previous terminated container "{container}" in pod "{name}" not found',
                               "BadRequest")
            instance -= 1
        path = log_path(self.root, namespace, name, container, instance)
        reason = _waiting_reason(pod, container)
        started = bool(_container_status(pod, container)) and reason in ("", "CrashLoopBackOff")
        if not path.exists() or not (started or _flag(query, "previous")):
            reason = reason or "ContainerCreating"
            raise ApiError(400, f'container "{container}" in pod "{name}" is waiting to start: {reason}',
                           "BadRequest")
        tail = int(query["tailLines"]) if query.get("tailLines") else None
        limit = int(query["limitBytes"]) if query.get("limitBytes") else None
        if not _flag(query, "follow") or _flag(query, "previous"):
            data = path.read_bytes()
            if tail is not None:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-tail:]) if tail > 0 else b""
            if limit is not None:
                data = data[:limit]
            return Response(200, data, "text/plain")
        return Response(200, content_type="text/plain", stream=self._follow(
            rtype, namespace, name, pod["metadata"]["uid"], container, instance, path, tail))

    def _follow(self, rtype: ResourceType, namespace: str, name: str, uid: str, container: str, instance: int,
                path: Path, tail: int | None) -> Iterator[bytes]:
        """One run of a container's log as it grows, until that run has ended and everything was sent (a restart
        is a new run: the stream ends, as the real one does)."""
        with path.open("rb") as log:
            if tail is not None:
                lines = log.read().splitlines(keepends=True)
                start = b"".join(lines[-tail:]) if tail > 0 else b""
                if start:
                    yield start
            while not self.stopping.is_set():
                chunk = log.read(65536)
                if chunk:
                    yield chunk
                    continue
                pod = self.store.find(rtype, namespace, name)
                if pod is None or pod["metadata"]["uid"] != uid or _run_over(pod, container, instance):
                    rest = log.read()
                    if rest:
                        yield rest
                    return
                time.sleep(0.05)

    # -------------------------------------------------------------- writes
    def create_object(self, rtype: ResourceType, namespace: str, obj: Any, dry_run: bool = False) -> dict[str, Any]:
        """Admission, defaulting and storage of a new object (also used by the fake controllers)."""
        if not isinstance(obj, dict):
            raise ApiError(400, "the request body must be a JSON object", "BadRequest")
        obj = copy.deepcopy(obj)
        if obj.get("apiVersion", rtype.api_version) != rtype.api_version or \
                obj.get("kind", rtype.kind) != rtype.kind:
            raise ApiError(400, f"the API version in the data ({obj.get('apiVersion')}) does not match the "
                           f"expected API version ({rtype.api_version}) or the kind ({obj.get('kind')}) is not "
                           f"{rtype.kind}", "BadRequest")
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        meta = obj.setdefault("metadata", {})
        if rtype.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the "
                           "request", "BadRequest")
        admission.admit(rtype, obj)
        return self.store.create(rtype, namespace, obj, prepare=self._defaulter(rtype), dry_run=dry_run)

    @staticmethod
    def _defaulter(rtype: ResourceType) -> Callable[[dict[str, Any]], None] | None:
        if rtype.kind == "Job" and rtype.group == "batch":
            return lambda obj: defaults.job_defaults(obj, obj["metadata"]["uid"])
        if rtype.kind == "Pod":
            return defaults.pod_defaults
        if rtype.kind == "Namespace":
            return lambda obj: obj.update(spec={"finalizers": ["kubernetes"]}, status={"phase": "Active"})
        return None

    def _create(self, rtype: ResourceType, namespace: str, body: Any, query: dict[str, str]) -> Response:
        created = self.create_object(rtype, namespace, body, dry_run=query.get("dryRun") == "All")
        return Response(201, created)

    def _replace(self, rtype: ResourceType, namespace: str, name: str, body: Any, sub: str | None) -> Response:
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object", "BadRequest")
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise ApiError(400, "the name of the object does not match the name on the URL", "BadRequest")

        def mutate(obj: dict[str, Any]) -> None:
            obj.clear()
            obj.update(copy.deepcopy(body))
            self._admit_update(rtype, obj, sub)

        return Response(200, self.store.update(rtype, namespace, name, mutate, sub,
                                               expect_rv=meta.get("resourceVersion")))

    def _patch(self, rtype: ResourceType, namespace: str, name: str, body: bytes, content_type: str,
               sub: str | None) -> Response:
        patch = _json_body(body)
        kind = content_type.split(";")[0].strip()
        if kind not in ("application/json-patch+json", "application/merge-patch+json",
                        "application/strategic-merge-patch+json", "application/apply-patch+yaml",
                        "application/apply-patch+json", ""):
            raise ApiError(415, "the body of the request was in an unknown format - accepted media types include: "
                           "application/json-patch+json, application/merge-patch+json, "
                           "application/apply-patch+yaml", "UnsupportedMediaType")
        expect = None
        if kind == "application/json-patch+json" or isinstance(patch, list):
            if not isinstance(patch, list):
                raise ApiError(400, "a JSON patch must be a list of operations", "BadRequest")
        elif isinstance(patch, dict):
            expect = (patch.get("metadata") or {}).get("resourceVersion")
        else:
            raise ApiError(400, "a merge patch must be a JSON object", "BadRequest")

        def mutate(obj: dict[str, Any]) -> None:
            result = json_patch(obj, patch) if isinstance(patch, list) else merge_patch(obj, patch)
            obj.clear()
            obj.update(result)
            self._admit_update(rtype, obj, sub)

        return Response(200, self.store.update(rtype, namespace, name, mutate, sub, expect_rv=expect))

    @staticmethod
    def _admit_update(rtype: ResourceType, obj: dict[str, Any], sub: str | None) -> None:
        """Validate the object an update would store (built-in kinds, strict schema)."""
        obj.setdefault("apiVersion", rtype.api_version)
        obj.setdefault("kind", rtype.kind)
        if rtype.schema:
            admission.admit(rtype, obj)

    def _delete_options(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if body.strip():
            parsed = _json_body(body)
            if isinstance(parsed, dict):
                options.update(parsed)
        if query.get("propagationPolicy"):
            options["propagationPolicy"] = query["propagationPolicy"]
        if query.get("orphanDependents"):
            options["orphanDependents"] = _flag(query, "orphanDependents")
        if query.get("gracePeriodSeconds"):
            options["gracePeriodSeconds"] = query["gracePeriodSeconds"]
        if options.get("gracePeriodSeconds") is not None:
            try:
                options["gracePeriodSeconds"] = int(options["gracePeriodSeconds"])
            except (TypeError, ValueError) as error:
                raise ApiError(400, f"gracePeriodSeconds must be an integer: {error}", "BadRequest") from error
        return options

    def _policy(self, rtype: ResourceType, options: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The propagation policy and warning headers (batch/v1 Jobs orphan their pods by default)."""
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy is None:
            if rtype.group == "batch" and rtype.version == "v1" and rtype.kind == "Job":
                return "Orphan", {"Warning": '299 - "child pods are preserved by default when jobs are deleted; '
                                             'set propagationPolicy=Background to remove them"'}
            return "Background", {}
        if policy not in ("Foreground", "Background", "Orphan"):
            raise ApiError(422, f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: '
                           f'"{policy}": supported values: "Foreground", "Background", "Orphan", "nil"', "Invalid")
        return policy, {}

    def _delete(self, rtype: ResourceType, namespace: str, name: str, query: dict[str, str],
                body: bytes) -> Response:
        options = self._delete_options(query, body)
        policy, headers = self._policy(rtype, options)
        preconditions = options.get("preconditions") or {}
        if rtype.kind == "Namespace" and not rtype.group:
            self.store.get(rtype, "", name)
            self.store.delete_namespace_contents(name)
        if options.get("dryRun") == ["All"] or query.get("dryRun") == "All":
            return Response(200, self.store.get(rtype, namespace, name), headers=headers)
        obj, removed = self.store.delete(rtype, namespace, name, policy, preconditions.get("uid"),
                                         preconditions.get("resourceVersion"), options.get("gracePeriodSeconds"))
        if not removed:  # a terminating pod is answered 200, an object left to finalizers 202
            return Response(200 if rtype.kind == "Pod" else 202, obj, headers=headers)
        if rtype.schema and rtype.kind != "Pod":
            details = {"name": name, "kind": rtype.plural, "uid": obj["metadata"]["uid"]}
            if rtype.group:
                details["group"] = rtype.group
            return Response(200, status_body(200, "", "", details, success=True), headers=headers)
        return Response(200, obj, headers=headers)

    def _delete_collection(self, rtype: ResourceType, namespace: str | None, query: dict[str, str],
                           body: bytes) -> Response:
        options = self._delete_options(query, body)
        policy, headers = self._policy(rtype, options)
        items, _ = self.store.list(rtype, namespace, self._selector(query))
        for obj in items:
            try:
                self.store.delete(rtype, obj["metadata"].get("namespace", ""), obj["metadata"]["name"], policy,
                                  grace=options.get("gracePeriodSeconds"))
            except ApiError:
                pass
        return Response(200, {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version,
                              "metadata": {"resourceVersion": str(self.store.resource_version)}, "items": items},
                        headers=headers)


def _position(obj: dict[str, Any]) -> str:
    """Sort position of an object in a list (namespace/name)."""
    return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"


def _container_status(pod: dict[str, Any], container: str) -> dict[str, Any]:
    status = pod.get("status") or {}
    for entry in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        if entry.get("name") == container:
            return dict(entry)
    return {}


def _restart_count(pod: dict[str, Any], container: str) -> int:
    """The container's current run (its restartCount)."""
    return int(_container_status(pod, container).get("restartCount") or 0)


def _waiting_reason(pod: dict[str, Any], container: str) -> str:
    return str(((_container_status(pod, container).get("state") or {}).get("waiting") or {}).get("reason") or "")


def _run_over(pod: dict[str, Any], container: str, instance: int) -> bool:
    """Whether this run of the container has ended (it terminated, or a later run exists)."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return True
    entry = _container_status(pod, container)
    return int(entry.get("restartCount") or 0) > instance or "running" not in (entry.get("state") or {})
