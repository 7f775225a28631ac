"""FakeCluster: the fake API server, Job controller, training operator and kubelet, started and stopped together."""

from __future__ import annotations

import copy
import re
import secrets
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Callable

import kubernetes

from .api import Api
from .garbage_collector import GarbageCollector
from .job_controller import JobController
from .kubelet import Kubelet
from .resources import ResourceRegistry, ResourceType
from .server import Call, Failure, FakeHTTPServer
from .store import Store
from .training_operator import TrainingOperator


class FakeCluster:
    """A local stand-in for a Kubernetes cluster that the unmodified `kubernetes` client talks to over HTTP.

    Use as a context manager: `with FakeCluster(tmp_path) as cluster: ...`. Pods run as local processes (images are
    pulled in name only; see kubelet.py), with `KUBECONFIG` pointing at this cluster so code inside a pod can call
    the API.
    """

    def __init__(self, directory: Path, namespaces: tuple[str, ...] = ("default",), *,
                 bookmark_interval: float = 60.0, history: int = 50_000, history_seconds: float = 75.0,
                 gc_delay: float = 0.2, pull_backoff: float = 0.5, restart_backoff: float = 0.5,
                 pull: Callable[[str], Path | None] | None = None) -> None:
        """The timings default to the real ones where tests can afford them (bookmarks, watch history); the
        back-offs and the garbage collector's delay are shorter than a real cluster's (10 s and more) but keep
        their order of events. ``pull`` unpacks the images it knows (:class:`images.RegistryPuller`), which then
        really run (see kubelet.py)."""
        self.directory = Path(directory) / "fake-kube"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(16)
        self.registry = ResourceRegistry()
        self.store = Store(self.registry, history=history, history_seconds=history_seconds)
        self.missing_images: set[str] = set()
        """Images no registry has: their containers wait in ErrImagePull/ImagePullBackOff until removed here."""
        self._gc_delay, self._pull_backoff, self._restart_backoff = gc_delay, pull_backoff, restart_backoff
        self._pull = pull
        self._stopping = threading.Event()
        self.api = Api(self.store, self.registry, self.directory, self._stopping, bookmark_interval)
        self._server: FakeHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._namespaces = ("default", "kube-system", "kube-public") + tuple(
            ns for ns in namespaces if ns not in ("default", "kube-system", "kube-public"))
        self.kubeconfig = self.directory / "kubeconfig"
        self.url = ""
        self.kubelet: Kubelet | None = None
        self._controllers: list[Any] = []

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "FakeCluster":
        """Bind 127.0.0.1 on a free port, write the kubeconfig and start the controllers and kubelet."""
        for namespace in self._namespaces:
            self.api.create_object(self.registry.get("", "v1", "namespaces"), "",  # type: ignore[arg-type]
                                   {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        self._server = FakeHTTPServer(self.api, self.token, self._stopping)
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self.api.server_address = f"127.0.0.1:{port}"
        self._write_kubeconfig()
        self.kubelet = Kubelet(self.store, self.registry.get("", "v1", "pods"),  # type: ignore[arg-type]
                               self.directory, {"KUBECONFIG": str(self.kubeconfig)},
                               missing_images=self.missing_images, pull_backoff=self._pull_backoff,
                               restart_backoff=self._restart_backoff, pull=self._pull)
        self._controllers = [JobController(self.api), TrainingOperator(self.api),
                             GarbageCollector(self.store, self._gc_delay)]
        self.kubelet.start()
        for controller in self._controllers:
            controller.start()
        self._serve_thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                              name="fake-apiserver", daemon=True)
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every watch and kill every pod process; no thread or process is left behind."""
        if self._server is None:
            return
        self._stopping.set()
        for controller in self._controllers:
            controller.stop()
        if self.kubelet is not None:
            self.kubelet.stop()
        self.store.close_watches()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        if self._serve_thread is not None:
            self._serve_thread.join(5)
        self._server = None

    def __enter__(self) -> "FakeCluster":
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: fake\n  cluster:\n    server: {self.url}\n"
            f"users:\n- name: fake\n  user:\n    token: {self.token}\n"
            "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n"
            "current-context: fake\n")

    # --------------------------------------------------------------- client
    def api_client(self) -> kubernetes.client.ApiClient:
        """A client configured from this cluster's kubeconfig (context "fake")."""
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(self.kubeconfig), context="fake",
                                           client_configuration=configuration)
        return kubernetes.client.ApiClient(configuration)

    @property
    def calls(self) -> list[Call]:
        """Every request so far: (method, path, query, status); status 0 for an injected hang."""
        return self._server.calls if self._server is not None else []

    def fail(self, method: str, path_regex: str, status: int, times: int = 1, body_reason: str = "", *,
             retry_after: int = 1, hang_seconds: float = 30.0, after: bool = False) -> None:
        """Answer the next `times` requests whose method and path match with `status` and a Status body.

        `method` may be "*". 429 and 503 carry `Retry-After`. Status 0 sends no answer: the connection hangs for
        `hang_seconds` (or until the cluster stops) and is closed, so the client times out. With `after=True`
        the request is carried out first and its answer replaced by the error (a create that happened although
        the client saw a failure).
        """
        assert self._server is not None, "the cluster is not running"
        with self._server.failures_lock:
            self._server.failures.append(Failure(method.upper() if method != "*" else "*", re.compile(path_regex),
                                                 status, times, body_reason, retry_after, hang_seconds, after))

    def expire_watches(self) -> None:
        """End every open watch; resourceVersions issued so far become too old (410 Expired)."""
        self.store.expire()

    def objects(self, api_version: str, kind: str, namespace: str | None = "default") -> list[dict[str, Any]]:
        """Copies of the stored objects of a kind (in one namespace, or all with None)."""
        return [copy.deepcopy(obj) for rtype, obj in self.store.all_objects()
                if rtype.api_version == api_version and rtype.kind == kind
                and (namespace is None or not rtype.namespaced or obj["metadata"].get("namespace") == namespace)]

    def pod_processes(self) -> list[subprocess.Popen[bytes]]:
        """The local processes of pod containers that are still running."""
        return self.kubelet.processes() if self.kubelet is not None else []

    def add_resource(self, group: str, version: str, plural: str, kind: str, namespaced: bool = True) -> None:
        """Serve another custom resource type (stored generically, like a CRD without a schema)."""
        self.registry.add(ResourceType(group, version, plural, kind, namespaced))
