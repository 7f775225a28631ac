"""The ``ray`` backend: trials run on a Ray cluster, each inside a long-lived worker actor.

Design (issue 5):

- A pool of worker actors (at most ``parallelTrialCount`` at a time) is kept for the whole run; each actor holds
  one trial's resources (``num_cpus``/``num_gpus``/``memory`` from the trial template's container ``resources``)
  and runs one trial at a time, so a trial costs one actor call, not an actor start (Ray Tune starts an actor
  per trial). Actors that Ray cannot place yet stay pending: trials wait for resources, never oversubscribe.
- Inside the actor the trial is run by the local backend itself (:class:`katibx.workers.local.LocalBackend`): the same
  substitution without a shell, env, trial directory, ``activeDeadlineSeconds``, function trials in reused worker
  processes (each lets go of the actor's descriptors when it starts) and metrics collection. The collector runs
  on the worker, so only parsed metrics travel back: the controller keeps one outstanding ``poll`` call per busy
  actor, which returns as soon as the local backend has events.
- Killing a trial calls the actor, which stops the trial's process group (SIGTERM, SIGKILL after a grace period).
  A dead actor fails its trial with reason ``WorkerDied`` and the processes it left are stopped. A Ray cluster
  that goes away raises :class:`RayClusterError` (one line from the CLI); the store keeps every committed state.
- Nothing is retried by Ray (``max_restarts=0``, ``max_task_retries=0``, ``max_retries=0``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from katibx.backend import Backend, BackendOption, ClusterError, TrialEvent, TrialExited, TrialJob, TrialStartError
from katibx.processes import process_started, same_process_alive, this_host
from katibx.template import render_trial_spec, template_resources, trial_resources
from katibx.trial_dir import RAY_WORKER_FILE, STDOUT_LOG
from katibx.validation import ValidationError
from katibx.workers.local import ISOLATION_FIELD, LocalBackend, in_threads

log = logging.getLogger(__name__)

ADDRESS_ENV = "RAY_ADDRESS"
# Set on a node without the controller's filesystem: the node keeps trial directories under this folder instead,
# and a finished trial's output is copied back to the controller (``katibx logs`` reads it there).
WORKER_DIR_ENV = "KATIBX_WORKER_DIR"
LOG_COPY_LIMIT = 16 * 2**20  # bytes of a trial's output copied back from a node (the end is kept)
# How long one poll call on a worker actor may wait for events before answering empty.
WORKER_POLL_SECONDS = 2.0
# How long actors may stay unreachable before the cluster is taken as gone.
UNREACHABLE_SECONDS = 10.0
# How long a dead actor's cluster may take to run a probe task before the cluster is taken as gone.
PROBE_SECONDS = 10.0
# An actor not placed this long after its creation is taken as waiting for resources that idle actors may hold.
PLACEMENT_GRACE_SECONDS = 1.0
class RayClusterError(ClusterError):
    """The Ray cluster cannot be reached any more."""


def _actor_options(resources: dict[str, float]) -> dict[str, Any]:
    options: dict[str, Any] = {"num_cpus": resources.get("CPU", 1.0), "num_gpus": resources.get("GPU", 0.0)}
    if resources.get("memory"):
        options["memory"] = int(resources["memory"])
    custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU", "memory")}
    if custom:
        options["resources"] = custom
    return options


# worker side -------------------------------------------------------------------------------------------------
class TrialWorker:
    """A Ray actor running one trial at a time with the local backend; reused for many trials."""

    def __init__(self, sys_path: list[str], poll_interval: float) -> None:
        # Function trials pickled by reference import their module: make the controller's import path usable here.
        for entry in sys_path:
            if entry and entry not in sys.path and os.path.isdir(entry):
                sys.path.append(entry)
        # Function trials reuse worker processes as they do locally; a worker closes the actor's descriptors when it
        # starts. Ray placed the actor and set its CUDA_VISIBLE_DEVICES: the local backend schedules no GPUs.
        self._local = LocalBackend(metrics_poll_interval=poll_interval, schedule_gpus=False,
                                   close_inherited_descriptors=True)
        self._function: tuple[bytes, Any] | None = None  # the last objective as pickled and as loaded: its workers
        # serve it again while it comes pickled the same (an objective whose pickle changes gets fresh workers)
        self._lock = threading.Lock()
        self._poll_interval = poll_interval

    def info(self) -> dict[str, Any]:
        import ray

        return {"worker_pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}

    def start(self, job: TrialJob, function: bytes | None) -> dict[str, Any]:
        """Start the trial; its handle, or ``{"error": message}`` when it cannot start."""
        from ray import cloudpickle

        try:
            job = replace(job, trial_dir=node_trial_dir(job.trial_dir))
            job.trial_dir.mkdir(parents=True, exist_ok=True)
            if function is not None:  # (without it, a resumed experiment's workers import it by reference)
                if self._function is None or self._function[0] != function:
                    self._function = (function, cloudpickle.loads(function))
                job.function = self._function[1]
            with self._lock:
                handle = self._local.start(job)
            handle = {**handle, **self.info()}
            (job.trial_dir / RAY_WORKER_FILE).write_text(json.dumps(handle))
            return handle
        except TrialStartError as exc:
            return {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - e.g. an objective that cannot be unpickled on this worker
            return {"error": f"cannot start the trial on the Ray worker: {type(exc).__name__}: {exc}"}

    def poll(self, timeout: float) -> list[TrialEvent]:
        """The local backend's events, waiting up to ``timeout`` seconds for the first one."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                events = self._local.poll(min(self._poll_interval, max(end - time.monotonic(), 0)))
                idle = not self._local._running
            if events or idle or time.monotonic() >= end:
                return events

    def kill(self, trial_name: str) -> None:
        with self._lock:
            self._local.kill(trial_name)

    def ask_to_stop(self, trial_name: str) -> bool:
        with self._lock:
            return self._local.ask_to_stop(trial_name)

    def read_log(self, trial_dir: str) -> bytes | None:
        """A finished trial's output as kept on this node (its last LOG_COPY_LIMIT bytes); None when absent."""
        try:
            with open(node_trial_dir(trial_dir) / STDOUT_LOG, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_COPY_LIMIT))
                return f.read()
        except OSError:
            return None

    def close(self) -> None:
        with self._lock:
            self._local.close()


def _alive() -> bool:
    """The probe task: running at all is the answer."""
    return True


def node_trial_dir(trial_dir: str | Path) -> Path:
    """A trial's directory on this node: the controller's path, or under ``$KATIBX_WORKER_DIR`` when the node sets it
    (``<it>/<namespace>/<experiment>/<trial>``)."""
    path = Path(trial_dir)
    root = os.environ.get(WORKER_DIR_ENV)
    return Path(root).joinpath(*path.parts[-3:]) if root else path


def _release_on_node(trial_dir: str) -> bool:
    """Stop what a trial left running on this node (its process group), from the worker file in its trial dir."""
    try:
        handle = json.loads((node_trial_dir(trial_dir) / RAY_WORKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    LocalBackend().release(handle)
    return True


# controller side ---------------------------------------------------------------------------------------------
@dataclass
class _Worker:
    actor: Any
    key: tuple[tuple[str, float], ...]
    trial: str | None = None
    trial_dir: str = ""
    start_ref: Any = None
    poll_ref: Any = None
    handle: dict[str, Any] = field(default_factory=dict)
    kill_requested: bool = False
    unreachable_since: float | None = None
    ready_ref: Any = None  # resolves once Ray has placed the actor (it holds its resources from then on)
    ready: bool = False
    polled: float = 0.0  # when the outstanding poll call was sent
    created: float = field(default_factory=time.monotonic)


class RayBackend(Backend):
    """Runs trials on a Ray cluster: ``address`` (or ``$RAY_ADDRESS``) to connect, else a local cluster is started."""

    name = "ray"
    options = (BackendOption("--ray-address", "address", envvar=ADDRESS_ENV, metavar="ADDR",
                             help="The cluster to connect to (env RAY_ADDRESS); default: start a "
                                  "local one."),)
    collector_refusals = LocalBackend.collector_refusals

    def __init__(self, address: str | None = None, metrics_poll_interval: float = 0.05,
                 unreachable_seconds: float = UNREACHABLE_SECONDS) -> None:
        self.address = address or os.environ.get(ADDRESS_ENV) or None
        self.metrics_poll_interval = metrics_poll_interval
        self.unreachable_seconds = unreachable_seconds
        self._ray: Any = None
        self._owns_connection = False
        self._worker_class: Any = None
        self._probe: Any = None
        self._workers: list[_Worker] = []
        self._events: list[TrialEvent] = []
        self._pool_size = 1
        self._node_resources: list[dict[str, float]] | None = None
        self._lost = False

    # connection --------------------------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._ray is not None:
            return self._ray
        try:
            import ray
        except ImportError:
            raise ValidationError(["--backend ray: the 'ray' package is not installed: pip install 'katibx[ray]'"]) from None
        with _CONNECTION_LOCK:  # several controllers of one process (KatibClient's threads) share one connection
            if not ray.is_initialized():
                options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False,
                                           "namespace": "katibx"}
                try:
                    if self.address:
                        ray.init(address=self.address, **options)
                    else:
                        _stop_orphaned_local_clusters()
                        ray.init(address="local", include_dashboard=False, **options)
                        _mark_local_cluster()
                except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError... all mean "cannot connect"
                    where = f"at {self.address}" if self.address else "(local cluster)"
                    raise ValidationError([f"--ray-address: cannot connect to Ray {where}: {_one_line(exc)}"]) from None
                _CONNECTION["opened_by_katibx"] = True
                _CONNECTION["local"] = not self.address
            _CONNECTION["users"] += 1
            self._owns_connection = True  # one use of it, given back by close()
        self._ray = ray
        self._worker_class = ray.remote(TrialWorker)
        self._probe = ray.remote(num_cpus=0)(_alive)
        return ray

    def _nodes(self, refresh: bool = False) -> list[dict[str, float]]:
        """Total resources of each alive node (cached; ``refresh`` asks the cluster again)."""
        if refresh or self._node_resources is None:
            self._node_resources = [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive")]
        return self._node_resources

    # checks ------------------------------------------------------------------------------------------------
    def check(self, experiment: Any) -> list[str]:
        errors = [e.replace("the local backend", "the ray backend") for e in LocalBackend.template_errors(experiment)]
        if in_threads(experiment):
            errors.append(f"spec.trialTemplate.trialSpec.spec.{ISOLATION_FIELD}: none runs trials in the "
                          "controller's process; the ray backend runs them on its actors (use isolation process, "
                          "or the local backend)")
        tt = experiment.spec.trial_template
        if tt is not None and tt.trial_spec and not errors:
            try:
                template_resources(tt.trial_spec, tt.primary_container_name)
            except ValueError as exc:
                errors.append(f"spec.trialTemplate.trialSpec: {exc}")
        if not errors:
            try:
                self._connect()
            except ValidationError as exc:
                errors.extend(exc.errors)
        return errors

    # lifecycle ---------------------------------------------------------------------------------------------
    def start(self, job: TrialJob) -> dict[str, Any]:
        self._connect()
        tt = job.experiment.spec.trial_template
        assert tt is not None
        try:
            resources = trial_resources(render_trial_spec(job.experiment, job.trial.name, job.trial.assignments),
                                        tt.primary_container_name)
        except (TypeError, ValueError) as exc:
            raise TrialStartError(f"invalid trial template: {exc}") from None
        self._refuse_unplaceable(resources)
        function = None
        if job.function is not None:
            from ray import cloudpickle

            try:
                function = cloudpickle.dumps(job.function)
            except Exception as exc:  # noqa: BLE001
                raise TrialStartError(f"the objective cannot be sent to Ray: {exc}") from None
        self._pool_size = max(self._pool_size, job.experiment.spec.parallel_trial_count or 1)
        worker = self._idle_worker(tuple(sorted(resources.items())))
        job.trial_dir.mkdir(parents=True, exist_ok=True)
        for stale in (RAY_WORKER_FILE, STDOUT_LOG):  # a re-run trial's output is copied here again
            (job.trial_dir / stale).unlink(missing_ok=True)
        worker.trial, worker.trial_dir, worker.kill_requested = job.trial.name, str(job.trial_dir), False
        worker.handle, worker.poll_ref = {}, None
        worker.start_ref = worker.actor.start.remote(replace(job, function=None), function)
        self._make_room()
        return {"backend": self.name, "trial_dir": str(job.trial_dir), "resources": resources}

    def _refuse_unplaceable(self, resources: dict[str, float]) -> None:
        """A trial no node of the cluster could ever hold fails now instead of waiting for ever."""
        def fits(nodes: list[dict[str, float]]) -> bool:
            return any(all(node.get(k, 0.0) >= v for k, v in resources.items()) for node in nodes)

        if fits(self._nodes()) or fits(nodes := self._nodes(refresh=True)):
            return
        wanted = ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(resources.items()))
        largest = "; ".join(", ".join(f"{k} {_fmt(node.get(k, 0.0))}" for k in sorted(resources)) for node in nodes)
        raise TrialStartError(f"the trial needs {wanted} but no node of the Ray cluster has that much "
                              f"(nodes: {largest or 'none'})")

    def _idle_worker(self, key: tuple[tuple[str, float], ...]) -> _Worker:
        idle = [w for w in self._workers if w.trial is None]
        for worker in idle:
            if worker.key == key:
                return worker
        if len(self._workers) >= self._pool_size and idle:  # make room: an idle actor of another shape goes
            self._drop(idle[0])
        options = _actor_options(dict(key))
        actor = self._worker_class.options(max_restarts=0, max_task_retries=0, max_concurrency=4, **options).remote(
            [p for p in sys.path if p], self.metrics_poll_interval)
        worker = _Worker(actor, key, ready_ref=actor.info.remote())
        self._workers.append(worker)
        return worker

    def _make_room(self) -> None:
        """Idle actors hold resources: drop them while an actor that is still waiting to be placed needs them."""
        ray = self._ray
        waiting = [w for w in self._workers if not w.ready]
        if waiting:
            done, _ = ray.wait([w.ready_ref for w in waiting], num_returns=len(waiting), timeout=0)
            for w in waiting:
                w.ready = w.ready_ref in done
            # An actor normally starts within a second or two; one still not placed after that waits for resources.
            waiting = [w for w in waiting if not w.ready and w.trial is not None
                       and time.monotonic() - w.created > PLACEMENT_GRACE_SECONDS]
        idle = [w for w in self._workers if w.trial is None and w.ready]
        if not waiting or not idle:
            return
        # Only when this run's own placed actors leave no room for it: a waiting actor may just be starting
        # (then it is already placed), or wait for someone else's resources (then dropping ours does not help).
        total = dict(ray.cluster_resources())
        held: dict[str, float] = {}
        for w in self._workers:
            if w.ready:
                for k, v in w.key:
                    held[k] = held.get(k, 0.0) + v
        for w in waiting:
            while idle and any(held.get(k, 0.0) + v > total.get(k, 0.0) for k, v in w.key):
                freed = idle.pop()
                self._drop(freed)
                for k, v in freed.key:
                    held[k] -= v

    def _drop(self, worker: _Worker) -> None:
        self._workers.remove(worker)
        try:
            self._ray.kill(worker.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def poll(self, timeout: float) -> list[TrialEvent]:
        ray = self._ray
        events, self._events = self._events, []
        refs: dict[Any, _Worker] = {}
        for worker in self._workers:
            if worker.trial is None:
                continue
            if worker.start_ref is None and worker.poll_ref is None:
                worker.poll_ref, worker.polled = worker.actor.poll.remote(WORKER_POLL_SECONDS), time.monotonic()
            refs[worker.start_ref if worker.start_ref is not None else worker.poll_ref] = worker
        if not refs:
            if timeout > 0 and not events:
                time.sleep(min(timeout, 0.05))
            return events
        if not all(w.ready for w in self._workers):
            timeout = min(timeout, 0.5)  # look again soon whether idle actors must make room
        ready, rest = ray.wait(list(refs), num_returns=1, timeout=0 if events else timeout)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        for ref in ready:
            events.extend(self._result(refs[ref], ref))
        events.extend(self._silent(set(ready)))
        if not all(w.ready for w in self._workers):
            self._make_room()
        return events

    def _result(self, worker: _Worker, ref: Any) -> list[TrialEvent]:
        ray = self._ray
        name = worker.trial
        assert name is not None
        try:
            value = ray.get(ref)
        except ray.exceptions.ActorUnavailableError as exc:
            return self._unreachable(worker, exc)
        except ray.exceptions.RayActorError as exc:
            if not self._answers():  # the whole cluster went away (a head killed takes its actors first)
                raise self._cluster_lost(_one_line(exc)) from None
            self._workers.remove(worker)
            self._release_trial(worker.trial_dir)
            return [TrialExited(name, False, "WorkerDied", f"the Ray worker running the trial died: {_one_line(exc)}")]
        worker.unreachable_since = None
        if ref is worker.start_ref:
            worker.start_ref = None
            if "error" in value:
                worker.trial = None
                return [TrialExited(name, False, "StartError", value["error"])]
            worker.handle, worker.ready = value, True
            if worker.kill_requested:
                worker.actor.kill.remote(name)
            worker.poll_ref, worker.polled = worker.actor.poll.remote(WORKER_POLL_SECONDS), time.monotonic()
            return []
        worker.poll_ref = None
        events: list[TrialEvent] = list(value)
        if any(isinstance(e, TrialExited) for e in events):
            worker.trial = None
            self._copy_log(worker)
        else:
            worker.poll_ref, worker.polled = worker.actor.poll.remote(WORKER_POLL_SECONDS), time.monotonic()
        return events

    def _copy_log(self, worker: _Worker) -> None:
        """Bring a finished trial's output here when it ran on a node that does not share the trial directory."""
        local = Path(worker.trial_dir) / STDOUT_LOG
        if local.exists():
            return
        try:
            data = self._ray.get(worker.actor.read_log.remote(worker.trial_dir), timeout=30)
        except Exception as exc:  # noqa: BLE001 - the trial's result stands without its log
            log.warning("could not copy the output of %s from its Ray node: %s", worker.trial_dir, _one_line(exc))
            return
        if data is not None:
            local.write_bytes(data)

    def _silent(self, answered: set[Any]) -> list[TrialEvent]:
        """Actors that stopped answering (a poll answers within WORKER_POLL_SECONDS): their node or the cluster is gone."""
        now = time.monotonic()
        limit = WORKER_POLL_SECONDS + self.unreachable_seconds
        busy = [w for w in self._workers if w.trial is not None and w.start_ref is None]
        silent = [w for w in busy if (w.poll_ref is not None and w.poll_ref not in answered and now - w.polled > limit)
                  or (w.unreachable_since is not None and now - w.unreachable_since > self.unreachable_seconds)]
        if not silent:
            return []
        if len(silent) == len(busy):
            raise self._cluster_lost(f"no Ray worker has answered for {limit:g} s")
        events: list[TrialEvent] = []
        for worker in silent:
            assert worker.trial is not None
            events.append(TrialExited(worker.trial, False, "WorkerDied",
                                      f"the Ray worker running the trial has not answered for {limit:g} s"))
            self._drop(worker)
            self._release_trial(worker.trial_dir)
        return events

    def _answers(self) -> bool:
        """Whether the cluster still runs a task (one needing no CPU, so busy trials cannot hold it up)."""
        try:
            self._ray.get(self._probe.remote(), timeout=PROBE_SECONDS)
        except Exception:  # noqa: BLE001 - any failure means no answer
            return False
        return True

    def _cluster_lost(self, why: str) -> RayClusterError:
        self._lost = True
        where = self.address or "the local Ray cluster"
        return RayClusterError(f"lost the Ray cluster at {where}: {why}; the experiment's state is saved, "
                               "continue with: katibx resume NAME --backend ray")

    def _unreachable(self, worker: _Worker, exc: Exception) -> list[TrialEvent]:
        """An actor that cannot be reached: retried, until it has been so long that the cluster is taken as gone."""
        now = time.monotonic()
        worker.unreachable_since = worker.unreachable_since or now
        if now - worker.unreachable_since > self.unreachable_seconds:
            raise self._cluster_lost(_one_line(exc))
        if worker.start_ref is None:  # a start that may or may not have run is never re-sent
            worker.poll_ref = None
        time.sleep(0.2)
        return []

    def kill(self, trial_name: str) -> None:
        for worker in self._workers:
            if worker.trial != trial_name:
                continue
            worker.kill_requested = True
            if worker.start_ref is None:
                worker.actor.kill.remote(trial_name)
                return
            ready, _ = self._ray.wait([worker.start_ref], timeout=0)
            if not ready:  # still waiting for resources (or starting): drop the actor, the trial never ran
                self._drop(worker)
                self._release_trial(worker.trial_dir)
                self._events.append(TrialExited(trial_name, False, "Killed", "stopped before it started on Ray"))
            return

    def ask_to_stop(self, trial_name: str) -> bool:
        """Ask the trial through its worker (which has its folder); False, and so a kill, when that fails."""
        for worker in self._workers:
            if worker.trial == trial_name:
                try:
                    if worker.start_ref is not None and not self._ray.wait([worker.start_ref], timeout=0)[0]:
                        return False  # not started yet: it cannot have asked
                    return bool(self._ray.get(worker.actor.ask_to_stop.remote(trial_name), timeout=10))
                except Exception as exc:  # noqa: BLE001 - the worker or its node may be gone: it is killed instead
                    log.warning("trial %s: cannot ask it to stop on Ray (%s); stopping it", trial_name, exc)
        return False

    def _release_trial(self, trial_dir: str) -> None:
        """Stop processes a trial left on any node (found through its worker file); best effort, bounded in time."""
        ray = self._ray
        if ray is None or not trial_dir:
            return
        if _release_on_node(trial_dir) or self._lost:  # this machine is a node, or shares the trial directory
            return
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        task = ray.remote(_release_on_node)
        try:
            refs = [task.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                n["NodeID"], soft=False)).remote(trial_dir) for n in ray.nodes() if n.get("Alive")]
            ray.wait(refs, num_returns=len(refs), timeout=30)
        except Exception as exc:  # noqa: BLE001 - release is best effort
            log.warning("could not release trial processes of %s: %s", trial_dir, exc)

    def release(self, handle: dict[str, Any]) -> None:
        if handle.get("backend") != self.name:
            LocalBackend().release(handle)
            return
        self._connect()
        self._release_trial(str(handle.get("trial_dir", "")))

    def settings(self) -> dict[str, Any]:
        return {"address": self.address} if self.address else {}

    def close(self) -> None:
        if not self.address:  # a killed controller's local cluster left processes behind; this run ends them
            _stop_orphaned_local_clusters()
        ray = self._ray
        if ray is None:
            return
        busy = [w for w in self._workers if w.trial is not None]
        if self._lost:  # stop what runs on this machine; nothing can be asked of the cluster any more
            for worker in busy:
                self._release_trial(worker.trial_dir)
            self._ray, self._workers = None, []
            return
        try:
            refs = [w.actor.close.remote() for w in busy]
            if refs:
                ray.wait(refs, num_returns=len(refs), timeout=10)
        except Exception:  # noqa: BLE001 - closing after the cluster went away
            pass
        for worker in busy:
            self._release_trial(worker.trial_dir)
        for worker in list(self._workers):
            self._drop(worker)
        if self._owns_connection:
            with _CONNECTION_LOCK:
                _CONNECTION["users"] -= 1
                if _CONNECTION["users"] == 0 and _CONNECTION["opened_by_katibx"]:  # the last of its users
                    try:
                        ray.shutdown()
                    except Exception as exc:  # noqa: BLE001 - closing after the cluster went away
                        log.debug("ray.shutdown: %s", exc)
                    if _CONNECTION["local"]:
                        _unmark_local_cluster()
                    _CONNECTION.update(opened_by_katibx=False, local=False)
        self._ray = None
        self._owns_connection = False


# The process's one Ray connection: how many backends use it, and whether katibx opened it (then the last of them
# shuts it down; one the user opened with ray.init stays open).
_CONNECTION: dict[str, Any] = {"users": 0, "opened_by_katibx": False, "local": False}
_CONNECTION_LOCK = threading.Lock()

# A controller killed with SIGKILL takes the local cluster's raylet and GCS with it, but Ray's agents
# (DashboardAgent, RuntimeEnvAgent) live on for ever, re-parented to init. The session folder of a local cluster this
# backend started gets a marker naming its controller; a later run stops what is left of sessions whose controller
# is gone. Processes are matched by the files they hold open in the session folder (Ray renames its processes,
# which overwrites the environment block the system shows, so an environment variable would not be seen).
_OWNER_MARKER = "katibx-controller"


def _marker_text() -> str:
    """``host|pid:start`` of this controller (its host as the lease names it, pid namespace included)."""
    return f"{this_host()}|{os.getpid()}:{process_started(os.getpid())}"


def _mark_local_cluster() -> None:
    """Write this controller's name into the session folder of the local cluster it just started."""
    try:
        from ray._private import worker  # no public API names the session folder

        session = Path(worker._global_node.get_session_dir_path())
        (session / _OWNER_MARKER).write_text(_marker_text())
    except Exception as exc:  # noqa: BLE001 - a Ray without these internals: nothing is marked, nothing cleaned
        log.debug("cannot mark the local Ray cluster's session folder: %s", exc)


def _unmark_local_cluster() -> None:
    """Remove this controller's marker once its cluster is shut down (so later runs need not look for it)."""
    for marker in _markers():
        try:
            if marker.read_text() == _marker_text():
                marker.unlink()
        except (OSError, ValueError):
            continue


def _markers() -> list[Path]:
    """The markers of this user in Ray's session folders ($RAY_TMPDIR/ray, else /tmp/ray): the folders are
    world-writable, so a marker someone else wrote is never trusted."""
    roots = {Path(os.environ.get("RAY_TMPDIR") or "/tmp") / "ray", Path(tempfile.gettempdir()) / "ray"}
    found = []
    for marker in (m for root in roots for m in root.glob(f"session_*/{_OWNER_MARKER}")):
        try:
            if marker.stat().st_uid == os.getuid():
                found.append(marker)
        except OSError:
            continue
    return found


def _stop_orphaned_local_clusters() -> None:
    """Kill this user's Ray processes that hold files open in the session folder of a local cluster whose
    controller (on this host) is gone, then forget the marker. Never raises: this is housekeeping."""
    try:
        orphaned = []
        for marker in _markers():
            try:
                host, _, owner = marker.read_text().rpartition("|")
            except (OSError, ValueError):
                continue
            if host == this_host() and not _owner_alive(owner):
                orphaned.append(marker)
        if not orphaned:
            return
        sessions = [str(marker.parent.resolve()) + os.sep for marker in orphaned]
        for proc in psutil.process_iter(["uids", "cmdline"]):
            if not _ray_process(proc, os.getuid()):
                continue
            try:
                if any(f.path.startswith(session) for f in proc.open_files() for session in sessions):
                    proc.kill()
                    log.info("stopped process %d of the local Ray cluster of a controller that was killed", proc.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
                continue
        for marker in orphaned:
            marker.unlink(missing_ok=True)
    except Exception as exc:  # noqa: BLE001 - never let housekeeping stop a run
        log.warning("cannot stop what a killed controller's local Ray cluster left running: %s", exc)


def _ray_process(proc: psutil.Process, uid: int) -> bool:
    """Whether ``proc`` is one of this user's Ray processes (renamed ``ray::...``, raylet, gcs_server, or a Python
    program of the ray package), not say a ``tail -f`` of a Ray log."""
    uids, cmdline = proc.info["uids"], proc.info["cmdline"] or []
    if uids is None or uids.real != uid or proc.pid == os.getpid() or not cmdline:
        return False
    return (cmdline[0].startswith("ray::") or Path(cmdline[0]).name in ("raylet", "gcs_server")
            or any(part.endswith(".py") and f"{os.sep}ray{os.sep}" in part for part in cmdline[1:4]))


def _owner_alive(owner: str) -> bool:
    """Whether the controller named ``pid:start`` by a marker still runs (the same process, not a reused pid)."""
    pid, _, recorded = owner.partition(":")
    try:
        return same_process_alive(int(pid), float(recorded))
    except ValueError:
        return False


def _fmt(value: float) -> str:
    return f"{value:g}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
