"""Reaching the Kubernetes API for the kubernetes backend: client set-up, calls retried with backoff, list+watch.

- :class:`KubeApi` loads the client (kubeconfig or in-cluster) on first use and retries calls on 429/5xx and
  connection errors with backoff (honouring ``Retry-After``) for ``retry_seconds``, then raises
  :class:`KubernetesClusterError` (one line for the CLI) for connection errors.
- :func:`list_and_watch` is an informer: a list, then watches from its resourceVersion; an expired watch (410)
  lists again, other errors list again after a backoff.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Iterator

from katibx.backend import ClusterError

log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 500, 502, 503, 504)


class KubernetesClusterError(ClusterError):
    """The Kubernetes API server cannot be reached or refuses a request."""


class KubeApi:
    """The API client of one controller, with retried calls."""

    def __init__(self, kubeconfig: str | None, context: str | None, *, max_connections: int, retry_seconds: float,
                 stop: threading.Event, api_client: Any = None) -> None:
        self.kubeconfig, self.context = kubeconfig, context
        self.max_connections = max_connections
        self.retry_seconds = retry_seconds
        self.stop = stop
        self.context_namespace: str | None = None
        self._api: Any = api_client

    def client(self) -> Any:
        """The API client, from the kubeconfig (or in-cluster config) on first use."""
        if self._api is not None:
            return self._api
        from kubernetes import client, config

        try:
            if self.kubeconfig is None and not _has_kubeconfig():
                config.load_incluster_config()
                self._api = client.ApiClient()
            else:  # $KUBECONFIG as it is now (the client reads it once, when it is imported)
                kubeconfig = self.kubeconfig or os.environ.get("KUBECONFIG") or None
                self._api = config.new_client_from_config(config_file=kubeconfig, context=self.context)
                _, active = config.list_kube_config_contexts(config_file=kubeconfig)
                if self.context:
                    contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
                    active = next((c for c in contexts if c.get("name") == self.context), active)
                self.context_namespace = ((active or {}).get("context") or {}).get("namespace")
        except (config.ConfigException, OSError, ValueError, TypeError) as exc:
            raise KubernetesClusterError(f"--kubeconfig: cannot load the Kubernetes configuration: {exc}") from None
        self._api.configuration.connection_pool_maxsize = self.max_connections
        self._api.rest_client = type(self._api.rest_client)(self._api.configuration)
        return self._api

    def apis(self) -> tuple[Any, Any, Any]:
        """BatchV1Api, CoreV1Api and CustomObjectsApi on the client."""
        from kubernetes import client

        api = self.client()
        return client.BatchV1Api(api), client.CoreV1Api(api), client.CustomObjectsApi(api)

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, retried on 429/5xx and connection errors with backoff for ``retry_seconds``."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        deadline, delay = time.monotonic() + self.retry_seconds, 0.1
        while True:
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                if exc.status not in RETRY_STATUSES or time.monotonic() > deadline or self.stop.is_set():
                    raise
                wait = _retry_after(exc) or delay
                log.info("%s: HTTP %s, retrying in %.1fs", what, exc.status, wait)
            except (HTTPError, OSError) as exc:
                if time.monotonic() > deadline or self.stop.is_set():
                    host = self.client().configuration.host
                    raise KubernetesClusterError(f"cannot reach the Kubernetes API server at {host}: {exc}") from None
                wait = delay
                log.info("%s: %s, retrying in %.1fs", what, exc, wait)
            time.sleep(wait)
            delay = min(delay * 2, 5.0)


class WatchExpired(Exception):
    """The server ended a watch with a 410 Status: its resourceVersion is older than the history it keeps."""


def shut_down(resp: Any) -> None:
    """Wake a thread blocked reading a streamed response (a watch, a followed log) by shutting its socket down; that
    thread then closes the response. Nothing to do for one already closed."""
    sock = getattr(getattr(resp, "connection", None), "sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError) as exc:  # closed already, or TLS-in-TLS (an HTTPS proxy) without shutdown
        log.debug("cannot shut a stream down: %s", exc)


class _WatchStream:
    """One watch request read as newline-delimited JSON events. The client's ``Watch`` is not used: with
    ``deserialize=False`` it fails on the server's ERROR events (``KeyError: 'raw_object'`` in kubernetes 37), which
    is how a 410 arrives; the events are plain dicts here, whatever the client version."""

    def __init__(self) -> None:
        self._resp: Any = None
        self._stopped = False

    def events(self, list_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """The events of one watch request; WatchExpired on a 410 ERROR event, ApiException on another one."""
        from kubernetes.client.exceptions import ApiException

        self._resp = list_fn(*args, watch=True, _preload_content=False, **kwargs)
        if self._stopped:  # stopped while the request was being made
            self.close()
            return
        try:
            buffer = b""
            for chunk in self._resp.stream(amt=None, decode_content=True):
                lines = (buffer + chunk).split(b"\n")
                buffer = lines.pop()
                for line in lines:
                    if self._stopped:
                        return
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        if status.get("code") == 410:
                            raise WatchExpired(status.get("message") or "Expired")
                        raise ApiException(status=status.get("code"),
                                           reason=f"{status.get('reason')}: {status.get('message')}")
                    yield event
        finally:
            self.close()

    def stop(self) -> None:
        """End the watch from another thread: its socket is shut down first, as closing a response whose stream a
        thread is blocked reading waits for that read (until the next event or bookmark, a minute on a quiet
        cluster)."""
        self._stopped = True
        shut_down(self._resp)  # the reading thread then closes it: closing it here could pull its socket from under it

    def close(self) -> None:
        resp, self._resp = self._resp, None
        if resp is not None:
            try:
                resp.close()
                resp.release_conn()
            except Exception:  # noqa: BLE001 - already closed
                pass


def list_and_watch(api: KubeApi, what: str, list_fn: Callable[..., Any], namespace: str, selector: str, *,
                   handle: Callable[[str, dict[str, Any]], None],
                   listed: Callable[[set[str], float], None] | None,
                   on_error: Callable[[BaseException], None], watches: list[Any], watch_timeout: int) -> None:
    """Hand every listed object, then every watch event, to ``handle(type, obj)`` until ``api.stop`` is set.

    ``listed(names, listed_at)`` follows each full list; a :class:`KubernetesClusterError` goes to ``on_error`` and
    ends the loop. Running watches are kept in ``watches`` so they can be stopped from outside.
    """
    from kubernetes.client.exceptions import ApiException

    stop = api.stop
    delay = 0.1
    while not stop.is_set():
        try:
            listed_at = time.monotonic()
            listing = json_body(api.call(what, list_fn, namespace, label_selector=selector, _preload_content=False))
            version = (listing.get("metadata") or {}).get("resourceVersion")
            names = set()
            for obj in listing.get("items") or []:
                names.add(obj["metadata"]["name"])
                handle("ADDED", obj)
            if listed is not None:
                listed(names, listed_at)
            while not stop.is_set():
                stream = _WatchStream()
                watches.append(stream)
                try:
                    for event in stream.events(list_fn, namespace, label_selector=selector, resource_version=version,
                                               timeout_seconds=watch_timeout, allow_watch_bookmarks=True):
                        obj = event.get("object") or {}
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                            handle(event["type"], obj)
                        if stop.is_set():
                            break
                finally:
                    watches.remove(stream)
                delay = 0.1
        except WatchExpired as exc:
            log.info("%s: resourceVersion expired (%s); listing again", what, exc)
            continue
        except ApiException as exc:
            if stop.is_set():
                return
            if exc.status == 410:  # a list with an expired continue token
                log.info("%s: resourceVersion expired; listing again", what)
                continue
            log.warning("%s: HTTP %s (%s); retrying in %.1fs", what, exc.status, api_message(exc), delay)
        except KubernetesClusterError as exc:
            on_error(exc)
            return
        except Exception as exc:  # noqa: BLE001 - a broken stream or connection: list and watch again
            if stop.is_set():
                return
            log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
        stop.wait(delay)
        delay = min(delay * 2, 5.0)


def stop_watches(watches: list[Any]) -> None:
    """Stop running watches and close their connections."""
    for stream in list(watches):
        stream.stop()


def json_body(resp: Any) -> dict[str, Any]:
    """The JSON body of an unparsed client response (or an already decoded dict)."""
    if isinstance(resp, dict):
        return resp
    data = resp.data if hasattr(resp, "data") else resp
    return json.loads(data) if data else {}


def api_message(exc: Any) -> str:
    """The ``message`` of an API error's Status body, else its reason."""
    try:
        body = json.loads(exc.body)
        return str(body.get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return f"HTTP {getattr(exc, 'status', '?')} {getattr(exc, 'reason', '')}".strip()


def _retry_after(exc: Any) -> float | None:
    """Seconds from a Retry-After header, if any."""
    headers = getattr(exc, "headers", None) or {}
    try:
        value = headers.get("Retry-After")
        return min(float(value), 30.0) if value else None
    except (TypeError, ValueError):
        return None


def _has_kubeconfig() -> bool:
    """Whether a kubeconfig file is configured ($KUBECONFIG or ~/.kube/config); else in-cluster config is used."""
    from kubernetes.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION

    paths = os.environ.get("KUBECONFIG", KUBE_CONFIG_DEFAULT_LOCATION)
    return any(os.path.exists(os.path.expanduser(p)) for p in paths.split(os.pathsep) if p) or not os.environ.get(
        "KUBERNETES_SERVICE_HOST")


def current_context(kubeconfig: str | None) -> str | None:
    """The kubeconfig's current context ($KUBECONFIG or ~/.kube/config when None); None without a readable one."""
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception:  # noqa: BLE001 - in-cluster config, or no kubeconfig at all: nothing to pin
        return None
    return str(active["name"]) if active and active.get("name") else None
