"""The fake kubelet: runs each pod's containers as local processes and reports the pod's status.

Images are pulled in name only, unless the cluster has a puller (`pull`) that unpacks an image into a runtime
bundle (an OCI `config.json` and `rootfs/`, as `umoci unpack` makes); then the container really runs the image: its
command (or the image's) is executed inside the image's root filesystem (chroot, needs root), in the image's working
folder (or `workingDir`), with the image's environment plus the container's. An image the cluster lists as missing,
or that its puller cannot pull, leaves its container waiting in `ErrImagePull`, then `ImagePullBackOff`, retried
with a doubling back-off (it starts once the image is there); a malformed reference waits in `InvalidImageName` for
good. Without a bundle a container's `command` + `args` run directly on this host (`python`/`python3` with the
interpreter running the tests), without a shell, in their own process group, with the host environment plus the
container's `env` (values, `fieldRef`, `configMapKeyRef`, `secretKeyRef`), `$(VAR)` expansion as Kubernetes does,
and `workingDir` when that folder exists on the host (otherwise a per-pod folder under the cluster's directory). Each run of a container (instance) writes its own log
file; `pods/{name}/log` serves the current one and, with `previous`, the one before. Init containers run one after
another before the others. restartPolicy OnFailure/Always restarts a container after a doubling
`CrashLoopBackOff` (restartCount counts the restarts). A pod being deleted gets SIGTERM, SIGKILL once its grace
period is over, its final status, and is then deleted with grace 0, as the real kubelet does.
One thread starts and kills processes; one more waits on all of them through pidfds (polling where unavailable)
and fires the timers (pull and restart back-offs, grace periods).
"""

from __future__ import annotations

import base64
import copy
import heapq
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .clock import now_rfc3339
from .errors import ApiError
from .resources import ResourceType
from .store import CLOSE, Event, Store

HOST_IP = "127.0.0.1"


# A container image reference: [host[:port]/]path[:tag][@digest], lower-case path components.
IMAGE_REFERENCE = re.compile(r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
                             r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
                             r"(?:@sha256:[0-9a-f]{64})?$")
BACKOFF_CAP = 10.0  # seconds; the real kubelet caps both back-offs at 300 s


def log_path(root: Path, namespace: str, pod: str, container: str, instance: int = 0) -> Path:
    """Where one run (instance, its restartCount) of a container keeps its output."""
    return root / "pods" / namespace / pod / f"{container}.{instance}.log"


@dataclass
class ContainerRun:
    """One container of a running pod."""

    spec: dict[str, Any]
    init: bool = False
    process: subprocess.Popen[bytes] | None = None
    pidfd: int = -1
    started_at: str = ""
    restart_count: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    backoff: float = 0.0  # the last restart back-off (0: never restarted)
    pull_delay: float = 0.0  # the last image pull back-off (0: not backed off)
    bundle: Path | None = None  # the unpacked image it runs in (None: on the host, the image pulled in name only)

    @property
    def name(self) -> str:
        return str(self.spec.get("name", ""))


@dataclass
class PodRun:
    """A pod the kubelet is running."""

    namespace: str
    name: str
    uid: str
    pod: dict[str, Any]
    directory: Path
    init: list[ContainerRun]
    main: list[ContainerRun]
    start_time: str = ""
    deleted: bool = False
    terminating: bool = False  # SIGTERM sent; SIGKILL at kill_at
    kill_at: float = float("inf")
    started: bool = False  # a main container has run (the pod is Running even while one backs off)

    @property
    def restart_policy(self) -> str:
        return str(self.pod.get("spec", {}).get("restartPolicy", "Always"))


class Kubelet:
    """Runs the pods of the fake cluster's single node."""

    def __init__(self, store: Store, pods: ResourceType, root: Path, extra_env: dict[str, str], *,
                 missing_images: set[str] | None = None, pull_backoff: float = 0.5,
                 restart_backoff: float = 0.5, pull: Callable[[str], Path | None] | None = None) -> None:
        self.store = store
        self.pull = pull
        self.missing_images = missing_images if missing_images is not None else set()
        self.pull_backoff = pull_backoff
        self.restart_backoff = restart_backoff
        self._timers: list[tuple[float, int, str, str, str]] = []  # (when, seq, pod uid, container, action)
        self._timer_seq = 0
        self.pods_type = pods
        self.root = root
        self.extra_env = extra_env
        self._lock = threading.RLock()
        self._runs: dict[str, PodRun] = {}
        self._by_pid: dict[int, tuple[PodRun, ContainerRun]] = {}
        self._events = store.listen()
        self._stopping = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._pending_fds: list[int] = []
        self._threads = [threading.Thread(target=self._sync_loop, name="fake-kubelet-sync", daemon=True),
                         threading.Thread(target=self._reap_loop, name="fake-kubelet-reaper", daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both threads and kill every pod's processes, waiting for them to end."""
        self._stopping.set()
        self.store.unlisten(self._events)
        os.write(self._wake_w, b"x")
        for thread in self._threads:
            thread.join(10)
        with self._lock:
            runs = list({id(run): run for run in list(self._runs.values()) + [r for r, _ in self._by_pid.values()]}
                        .values())
            self._runs.clear()
            self._by_pid.clear()
        for run in runs:
            self._kill(run)
        for run in runs:
            for container in run.init + run.main:
                if container.process is not None:
                    try:
                        container.process.wait(10)
                    except subprocess.TimeoutExpired:
                        pass
                self._close_pidfd(container)
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def processes(self) -> list[subprocess.Popen[bytes]]:
        """The container processes still running."""
        with self._lock:
            return [c.process for run in self._runs.values() for c in run.init + run.main
                    if c.process is not None and c.process.poll() is None]

    # ------------------------------------------------------------ pod events
    def _sync_loop(self) -> None:
        while True:
            item = self._events.get()
            if item is CLOSE or self._stopping.is_set():
                return
            event: Event = item
            if event.rtype is not self.pods_type:
                continue
            try:
                self._on_pod_event(event)
            except Exception as error:  # a bug here must not stop the node
                print(f"fake kubelet: {error!r}", file=sys.stderr)

    def _on_pod_event(self, event: Event) -> None:
        meta = event.obj["metadata"]
        uid = meta["uid"]
        if event.type == "DELETED":
            with self._lock:
                run = self._runs.pop(uid, None)
            if run is not None:
                run.deleted = True
                self._kill(run)
            return
        if meta.get("deletionTimestamp"):
            self._terminate(uid, int(meta.get("deletionGracePeriodSeconds") or 0))
            return
        if event.type == "ADDED" and event.obj.get("status", {}).get("phase", "Pending") == "Pending":
            with self._lock:
                if uid in self._runs:
                    return
            self._start_pod(event.obj)

    def _start_pod(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod.get("spec", {})
        directory = self.root / "pods" / meta["namespace"] / meta["name"]
        directory.mkdir(parents=True, exist_ok=True)
        run = PodRun(meta["namespace"], meta["name"], meta["uid"], pod, directory,
                     [ContainerRun(c, init=True) for c in spec.get("initContainers") or []],
                     [ContainerRun(c) for c in spec.get("containers") or []], start_time=now_rfc3339())
        with self._lock:
            self._runs[run.uid] = run
            if run.init:
                self._start_container(run, run.init[0])
            else:
                for container in run.main:
                    self._start_container(run, container)
            self._report(run)

    # ------------------------------------------------------------ containers
    def _start_container(self, run: PodRun, container: ContainerRun) -> None:
        """Pull its image, then start one container's process (or record why it cannot run). Lock held."""
        if run.terminating or run.deleted:
            return
        if not self._pulled(run, container):
            return
        container.started_at = now_rfc3339()
        try:
            if container.bundle is not None:
                argv, env, cwd = self._in_image(run, container.spec, container.bundle)
            else:
                env = self._environment(run, container.spec, dict(os.environ))
                argv = [_expand(part, env) for part in
                        list(container.spec.get("command") or []) + list(container.spec.get("args") or [])]
                if not container.spec.get("command"):
                    raise RuntimeError("the fake kubelet ignores images: a container needs an explicit command")
                if argv[0] in ("python", "python3"):
                    argv[0] = sys.executable
                working_dir = container.spec.get("workingDir")
                cwd = working_dir if working_dir and os.path.isdir(working_dir) else str(run.directory)
            path = log_path(self.root, run.namespace, run.name, container.name, container.restart_count)
            with open(path, "ab") as log:
                process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            log_path(self.root, run.namespace, run.name, container.name, container.restart_count).open("ab").close()
            container.process = None
            container.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": str(error),
                                              "startedAt": container.started_at, "finishedAt": now_rfc3339()}}
            self._after_exit(run, container)
            return
        container.process = process
        container.state = {"running": {"startedAt": container.started_at}}
        run.started = run.started or not container.init
        self._by_pid[process.pid] = (run, container)
        try:
            container.pidfd = os.pidfd_open(process.pid)
            self._pending_fds.append(container.pidfd)
            os.write(self._wake_w, b"x")
        except (AttributeError, OSError):
            container.pidfd = -1

    def _pulled(self, run: PodRun, container: ContainerRun) -> bool:
        """Whether the container's image is there; else it waits (and a retry is timed). Lock held."""
        image = str(container.spec.get("image", ""))
        if not IMAGE_REFERENCE.match(image):
            container.state = {"waiting": {"reason": "InvalidImageName",
                                           "message": f'Failed to apply default image tag "{image}": couldn\'t parse '
                                                      f"image name \"{image}\": invalid reference format"}}
            return False
        why = f"failed to pull and unpack image \"{image}\": not found" if image in self.missing_images else None
        if why is None and self.pull is not None:
            try:
                container.bundle = self.pull(image)
            except Exception as exc:  # noqa: BLE001 - whatever a pull meets, the container waits as a real one would
                why = str(exc) or type(exc).__name__
        if why is None:
            return True
        if container.state.get("waiting", {}).get("reason") == "ErrImagePull":
            container.pull_delay = min(BACKOFF_CAP, container.pull_delay * 2 or self.pull_backoff)
            container.state = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}
            self._after(container.pull_delay, run, container, "pull")
        else:
            container.state = {"waiting": {"reason": "ErrImagePull",
                                           "message": f"rpc error: code = NotFound desc = {why}"}}
            self._after(self.pull_backoff / 2, run, container, "pull")  # the kubelet's next sync
        return False

    def _after(self, delay: float, run: PodRun, container: ContainerRun, action: str) -> None:
        """Do `action` ("pull", "restart") for a container after `delay` seconds. Lock held."""
        self._timer_seq += 1
        heapq.heappush(self._timers, (time.monotonic() + delay, self._timer_seq, run.uid, container.name, action))
        os.write(self._wake_w, b"x")

    def _fire_timers(self) -> None:
        """Run the timers that are due (from the reaper thread)."""
        now = time.monotonic()
        with self._lock:
            while self._timers and self._timers[0][0] <= now:
                _, _, uid, name, action = heapq.heappop(self._timers)
                run = self._runs.get(uid)
                if run is None or run.terminating:
                    continue
                container = next((c for c in run.init + run.main if c.name == name), None)
                if container is None or "waiting" not in container.state:
                    continue
                if action == "restart":
                    container.restart_count += 1
                self._start_container(run, container)
                self._report(run)
            for run in list(self._runs.values()):
                if run.terminating and run.kill_at <= now:
                    run.kill_at = float("inf")
                    self._kill(run)

    def _in_image(self, run: PodRun, spec: dict[str, Any], bundle: Path) -> tuple[list[str], dict[str, str], str]:
        """(argv, environment, working folder) of a container that runs in an unpacked image: the command runs
        inside the image's root filesystem, through this Python in isolated mode (it chroots and execs, so nothing
        of the image has to be a shell)."""
        process = json.loads((bundle / "config.json").read_text())["process"]
        image_env = dict(item.partition("=")[::2] for item in process.get("env") or [])
        env = self._environment(run, spec, image_env)
        if spec.get("command"):
            command = list(spec["command"]) + list(spec.get("args") or [])
        elif spec.get("args"):
            raise RuntimeError("the fake kubelet cannot tell an unpacked image's entrypoint from its cmd: give a command")
        else:
            command = list(process.get("args") or [])
        if not command:
            raise RuntimeError("no command: neither the container nor the image names one")
        workdir = str(spec.get("workingDir") or process.get("cwd") or "/")
        argv = [sys.executable, "-I", "-c", _CHROOT_EXEC, str(bundle / "rootfs"), workdir,
                *(_expand(part, env) for part in command)]
        return argv, env, "/"

    def _environment(self, run: PodRun, spec: dict[str, Any], base: dict[str, str]) -> dict[str, str]:
        """The process environment: ``base`` (the host's, or the image's), cluster access, then the container's
        envFrom and env."""
        env = dict(base)
        env.update(self.extra_env)
        env["HOSTNAME"] = run.name
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self._config_data("configmaps", run.namespace, source["configMapRef"])
            else:
                data = self._config_data("secrets", run.namespace, source.get("secretRef", {}))
            env.update({prefix + key: value for key, value in data.items()})
        for entry in spec.get("env") or []:
            if "value" in entry or "valueFrom" not in entry:
                env[entry["name"]] = _expand(str(entry.get("value", "")), env)
                continue
            value = self._value_from(run, entry["valueFrom"])
            if value is not None:
                env[entry["name"]] = value
        return env

    def _config_data(self, plural: str, namespace: str, ref: dict[str, Any]) -> dict[str, str]:
        """A ConfigMap's data or a Secret's decoded data; a missing required one cannot start the container."""
        rtype = self.store.registry.get("", "v1", plural)
        obj = self.store.find(rtype, namespace, ref.get("name", "")) if rtype else None
        if obj is None:
            if ref.get("optional"):
                return {}
            raise RuntimeError(f'{plural[:-1]} "{ref.get("name")}" not found')
        if plural == "secrets":
            decoded = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            decoded.update(obj.get("stringData") or {})
            return decoded
        return dict(obj.get("data") or {})

    def _value_from(self, run: PodRun, source: dict[str, Any]) -> str | None:
        """An env value from fieldRef, configMapKeyRef or secretKeyRef."""
        if "fieldRef" in source:
            path = source["fieldRef"].get("fieldPath", "")
            meta, spec = run.pod["metadata"], run.pod.get("spec", {})
            if match := re.match(r"metadata\.(labels|annotations)\['(.+)'\]$", path):
                return (meta.get(match.group(1)) or {}).get(match.group(2), "")
            values = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
                      "metadata.uid": meta["uid"], "spec.nodeName": spec.get("nodeName", ""),
                      "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
                      "status.podIP": HOST_IP, "status.hostIP": HOST_IP}
            return values.get(path)
        for key, plural in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
            if key in source:
                ref = source[key]
                data = self._config_data(plural, run.namespace, ref)
                if ref.get("key") not in data and not ref.get("optional"):
                    raise RuntimeError(f'couldn\'t find key {ref.get("key")} in {plural[:-1]} {ref.get("name")}')
                return data.get(ref.get("key", ""))
        return None

    # --------------------------------------------------------------- exits
    def _reap_loop(self) -> None:
        poll_all = False
        while not self._stopping.is_set():
            with self._lock:
                for fd in self._pending_fds:
                    self._selector.register(fd, selectors.EVENT_READ)
                self._pending_fds.clear()
            ready = self._selector.select(timeout=0.05)
            for key, _ in ready:
                if key.fd == self._wake_r:
                    os.read(self._wake_r, 4096)
            if self._stopping.is_set():
                return
            self._fire_timers()
            poll_all = poll_all or any(key.fd != self._wake_r for key, _ in ready) or not ready
            if poll_all:
                self._collect_exits()
                poll_all = False

    def _collect_exits(self) -> None:
        """Record every container process that has ended."""
        with self._lock:
            candidates = list(self._by_pid.items())
        for pid, (run, container) in candidates:
            process = container.process
            if process is None or process.poll() is None:
                continue
            with self._lock:
                self._by_pid.pop(pid, None)
                _kill_group(pid)
                self._close_pidfd(container)
                code = process.returncode
                exit_code = code if code >= 0 else 128 - code
                container.state = {"terminated": {
                    "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": container.started_at, "finishedAt": now_rfc3339(),
                    "containerID": f"fake://{pid}"}}
                if not run.deleted:
                    self._after_exit(run, container)

    def _close_pidfd(self, container: ContainerRun) -> None:
        if container.pidfd >= 0:
            try:
                self._selector.unregister(container.pidfd)
            except (KeyError, ValueError, OSError):
                pass
            if container.pidfd in self._pending_fds:
                self._pending_fds.remove(container.pidfd)
            os.close(container.pidfd)
            container.pidfd = -1

    def _after_exit(self, run: PodRun, container: ContainerRun) -> None:
        """Restart (after a back-off), start the next init container or the main ones, and report. Lock held."""
        if run.terminating:
            self._report(run)
            self._finish_termination(run)
            return
        code = container.state["terminated"]["exitCode"]
        policy = run.restart_policy
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            if not (container.init and code == 0):
                container.last_state = container.state
                container.backoff = min(BACKOFF_CAP, container.backoff * 2 or self.restart_backoff)
                container.state = {"waiting": {"reason": "CrashLoopBackOff", "message": (
                    f"back-off {container.backoff:g}s restarting failed container={container.name} "
                    f"pod={run.name}_{run.namespace}({run.uid})")}}
                self._after(container.backoff, run, container, "restart")
                self._report(run)
                return
        if container.init and code == 0:
            waiting = [c for c in run.init if "waiting" in c.state]
            if waiting:
                self._start_container(run, waiting[0])
            else:
                for main in run.main:
                    self._start_container(run, main)
        self._report(run)
        if self._phase(run) in ("Succeeded", "Failed"):
            self._runs.pop(run.uid, None)

    # -------------------------------------------------------------- status
    def _phase(self, run: PodRun) -> str:
        init_failed = any("terminated" in c.state and c.state["terminated"]["exitCode"] != 0 for c in run.init)
        if init_failed and run.restart_policy == "Never":
            return "Failed"
        containers = run.main
        if not containers or any("terminated" not in c.state for c in run.init + containers):
            return "Running" if run.started or any("running" in c.state for c in run.init) else "Pending"
        codes = [c.state["terminated"]["exitCode"] for c in containers]
        return "Succeeded" if all(code == 0 for code in codes) else "Failed"

    def _report(self, run: PodRun) -> None:
        """Write the pod's status (phase, containerStatuses, conditions). Lock held."""
        phase = self._phase(run)
        running = phase == "Running" and all("running" in c.state for c in run.main)
        now = now_rfc3339()

        def statuses(containers: list[ContainerRun]) -> list[dict[str, Any]]:
            return [{"name": c.name, "image": c.spec.get("image", ""), "imageID": "",
                     "containerID": f"fake://{c.process.pid}" if c.process else "",
                     "ready": "running" in c.state, "started": "running" in c.state,
                     "restartCount": c.restart_count, "state": copy.deepcopy(c.state),
                     "lastState": copy.deepcopy(c.last_state)} for c in containers]

        def condition(kind: str, true: bool) -> dict[str, Any]:
            return {"type": kind, "status": "True" if true else "False", "lastProbeTime": None,
                    "lastTransitionTime": now}

        initialized = all("terminated" in c.state for c in run.init)
        status: dict[str, Any] = {
            "phase": phase, "hostIP": HOST_IP, "hostIPs": [{"ip": HOST_IP}], "podIP": HOST_IP,
            "podIPs": [{"ip": HOST_IP}], "startTime": run.start_time, "qosClass": "BestEffort",
            "conditions": [condition("PodReadyToStartContainers", True), condition("Initialized", initialized),
                           condition("Ready", running), condition("ContainersReady", running),
                           condition("PodScheduled", True)],
            "containerStatuses": statuses(run.main)}
        if run.init:
            status["initContainerStatuses"] = statuses(run.init)

        def mutate(pod: dict[str, Any]) -> None:
            old = pod.get("status", {})
            for new_condition in status["conditions"]:
                for old_condition in old.get("conditions", []):
                    if old_condition["type"] == new_condition["type"] and \
                            old_condition["status"] == new_condition["status"]:
                        new_condition["lastTransitionTime"] = old_condition["lastTransitionTime"]
            pod["status"] = status

        try:
            self.store.update(self.pods_type, run.namespace, run.name, mutate, subresource="status")
        except ApiError:
            pass

    # ---------------------------------------------------------------- kill
    def _terminate(self, uid: str, grace: int) -> None:
        """A pod is being deleted: SIGTERM now, SIGKILL after `grace` seconds, then its final status and removal."""
        with self._lock:
            run = self._runs.get(uid)
            if run is None:
                return
            kill_at = time.monotonic() + grace
            if run.terminating and kill_at >= run.kill_at:
                return
            first = not run.terminating
            run.terminating, run.kill_at = True, kill_at
            if first:
                for container in run.init + run.main:
                    if container.process is not None and container.process.poll() is None:
                        _signal_group(container.process.pid, signal.SIGTERM)
            if grace == 0:
                self._kill(run)
            self._finish_termination(run)

    def _finish_termination(self, run: PodRun) -> None:
        """Once no container of a terminating pod runs: its final status, then delete it with grace 0. Lock held."""
        if any(c.process is not None and c.process.returncode is None and c.process.pid in self._by_pid
               for c in run.init + run.main):
            return
        for container in run.init + run.main:
            if "terminated" not in container.state:
                container.state = {"terminated": {
                    "exitCode": 137, "reason": "ContainerStatusUnknown", "startedAt": None, "finishedAt": now_rfc3339(),
                    "message": "The container could not be located when the pod was terminated"}}
        self._report(run)
        self._runs.pop(run.uid, None)
        try:
            self.store.delete(self.pods_type, run.namespace, run.name, grace=0, precondition_uid=run.uid)
        except ApiError:
            pass

    def _kill(self, run: PodRun) -> None:
        """SIGKILL every process group of a pod."""
        with self._lock:
            for container in run.init + run.main:
                if container.process is not None and container.process.poll() is None:
                    _kill_group(container.process.pid)


# Run argv[3:] inside the root filesystem argv[1] from the folder argv[2], the program found on the image's PATH.
_CHROOT_EXEC = "import os, sys; os.chroot(sys.argv[1]); os.chdir(sys.argv[2]); os.execvp(sys.argv[3], sys.argv[3:])"


def _kill_group(pid: int) -> None:
    """Kill a process group, ignoring one that is already gone."""
    _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, signum: int) -> None:
    """Signal a process group, ignoring one that is already gone."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion (`$$` escapes; unknown names are left as they are)."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, text)


def wait_for_exit(processes: list[subprocess.Popen[bytes]], timeout: float) -> bool:
    """Whether all processes ended within the timeout (for tests)."""
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
    return True
