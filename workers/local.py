"""The embedded default backend: each trial is a local process (a command, or a forked function call), or with
``isolation: none`` a function call on a thread of this process."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil

from katibx import capabilities
from katibx.backend import (
    Backend,
    BackendOption,
    BackendUnavailable,
    TrialEvent,
    TrialExited,
    TrialJob,
    TrialMetrics,
    TrialStartError,
)
from katibx.defaults import WORKER_DEFAULTS
from katibx.gpus import GPUS_ENV, VISIBLE_ENV, GpuPool, discover_gpus, shared_pool
from katibx.metrics_collector import MetricsCollector, collector_kind, source_path
from katibx.objective import Objective
from katibx.processes import kill_group, pid_reused, process_started
from katibx.quantities import parse_size
from katibx.spec import Experiment
from katibx.template import (
    FUNCTION_KIND,
    active_deadline_seconds,
    format_value,
    gpu_count,
    primary_container,
    render_trial_spec,
    template_resources,
    trial_resources,
)
from katibx.trial_dir import (
    CHECKPOINT_DIR,
    FILES_DIR,
    PRUNABLE_FILE,
    PUSH_FILE,
    STDOUT_LOG,
    STOP_FILE,
    trial_environment,
)
from katibx.workers._escaped import TOKEN_ENV, kill_marked, last_pid, new_token
from katibx.workers._function_worker import FunctionWorker, TrialRequest
from katibx.workers._process_exit import ProcessExit, wait_readable
from katibx.workers._python_path import with_python_on_path
from katibx.workers._thread_trials import ThreadTrials

log = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 3.0
DEFAULT_LOG_LIMIT_BYTES = 1 << 30  # a trial's log keeps at most this much, its end
# Algorithm setting naming the checkpoint path trials use (Katib's pbt mounts a volume there).
CHECKPOINT_SETTING = "suggestion_trial_dir"
# Function trial template field: false forks a fresh process for every trial (no module state is shared).
REUSE_FIELD = "reuseProcesses"
# Function trial template field: "none" runs trials on threads of the controller's process (workers/_thread_trials.py)
ISOLATION_FIELD = "isolation"
ISOLATIONS = ("process", "none")


@dataclass
class _Running:
    """One live trial and what is known about it: a command's process, or the function worker running it."""

    name: str
    pid: int
    wait: Callable[[], int | None]  # exit status once finished, else None
    collector: MetricsCollector
    deadline: float | None
    worker: FunctionWorker | None = None  # a function trial's worker
    exit: ProcessExit | None = None  # a command's process
    killed_at: float | None = None
    timed_out: bool = False
    started: float = field(default_factory=time.monotonic)
    code: int | None = None  # the exit status once known (a function worker reports it only once)
    ended: bool = False  # exited, and what it left running stopped; its output may still be being read
    log: Path = Path()  # the trial's stdout and stderr
    token: str = ""  # in the environment of every process of the trial (workers/_escaped.py)
    since: float = field(default_factory=time.time)  # epoch seconds, to compare with processes' start times
    first_pid: int | None = None  # the newest process id just before the trial started (Linux), or None

    def exit_code(self) -> int | None:
        """The exit status once finished, else None."""
        if self.code is None:
            self.code = self.wait()
        return self.code

    @property
    def fds(self) -> tuple[int, ...]:
        """Readable when the trial may have finished."""
        return self.worker.fds if self.worker is not None else (self.exit.fd,)  # type: ignore[union-attr]


class LocalBackend(Backend):
    """Runs trials as processes on this machine, each in its own session so the whole tree can be stopped.

    Function trials run in worker processes forked from this one; with ``reuse_function_workers`` (and unless
    the trial template says ``reuseProcesses: false``) a worker whose trial ended cleanly runs the next one. A
    template that says ``isolation: none`` has them run on threads of this process instead.
    """

    name = "local"
    options = (BackendOption("--log-limit", "log_limit_bytes", envvar="KATIBX_LOG_LIMIT", metavar="SIZE",
                             parse=lambda text: {"log_limit_bytes": parse_size(text)},
                             help="The most a trial's log keeps, its end (default 1Gi; "
                                  "1048576, 512Mi, 2G...)."),)
    collector_refusals = {
        kind: "Katib runs it as a sidecar in the trial's pod; print the metrics or push them with katibx.report_metrics"
        for kind in ("PrometheusMetric", "Custom")
    }

    def __init__(self, metrics_poll_interval: float = 0.2, reuse_function_workers: bool = True,
                 log_limit_bytes: int = DEFAULT_LOG_LIMIT_BYTES, schedule_gpus: bool = True,
                 close_inherited_descriptors: bool = False) -> None:
        unsupported = capabilities.local_processes_unsupported()
        if unsupported is not None:
            raise BackendUnavailable(unsupported)
        if log_limit_bytes <= 0:
            raise ValueError(f"log_limit_bytes must be positive, got {log_limit_bytes}")
        self.metrics_poll_interval = metrics_poll_interval
        self.reuse_function_workers = reuse_function_workers
        self.log_limit_bytes = log_limit_bytes
        self._running: dict[str, _Running] = {}
        self._idle: list[FunctionWorker] = []
        self._backlog = False  # a trial's output was left unread at the last poll: the next one does not wait
        self._fork = multiprocessing.get_context("fork")
        self._gpu_pool: GpuPool | None = None
        self.schedule_gpus = schedule_gpus  # False where another scheduler (Ray) already gave the process its GPUs
        self.close_inherited_descriptors = close_inherited_descriptors  # function workers forked from a Ray actor
        self._threads: ThreadTrials | None = None  # trials of an ``isolation: none`` template
        self._gpus_asked: tuple[Experiment | None, bool] = (None, True)  # (experiment, whether it may ask for GPUs)

    # checks ------------------------------------------------------------------------------
    def check(self, experiment: Experiment) -> list[str]:
        return self.template_errors(experiment) or self._gpu_errors(experiment)

    @property
    def _gpus(self) -> GpuPool:
        """This machine's GPUs, found when a trial first asks for some (see :mod:`katibx.gpus`)."""
        if self._gpu_pool is None:
            self._gpu_pool = shared_pool(discover_gpus())
        return self._gpu_pool

    def _gpu_errors(self, experiment: Experiment) -> list[str]:
        """A trial that asks for more GPUs than this machine has could never start: refused before any runs."""
        tt = experiment.spec.trial_template
        if tt is None or not tt.trial_spec:
            return []
        path = "spec.trialTemplate.trialSpec"
        try:
            wanted = gpu_count(template_resources(tt.trial_spec, tt.primary_container_name))
        except ValueError as exc:
            return [f"{path}: {exc}"]
        if self.schedule_gpus and wanted and wanted > len(self._gpus.devices):
            return [f"{path}: a trial asks for {wanted} GPUs (nvidia.com/gpu) and {self._gpu_origin()}; set "
                    f"{GPUS_ENV}=0,1,... to name the devices"]
        return []

    def _gpu_origin(self) -> str:
        have = len(self._gpus.devices)
        where = next((f"${name}" for name in (GPUS_ENV, VISIBLE_ENV) if os.environ.get(name) is not None), None)
        if have:
            return f"this machine has {have} ({where or 'nvidia-smi'})"
        return f"this machine has none ({where} lists none)" if where else \
            "this machine has none (nvidia-smi lists none, or is not there)"

    @staticmethod
    def template_errors(experiment: Experiment) -> list[str]:
        """What of the trial template this machine's processes cannot run (the Ray backend's actors neither)."""
        tt = experiment.spec.trial_template
        errors: list[str] = []
        if tt is None:
            return errors
        if tt.config_map is not None:
            cm = tt.config_map
            errors.append(
                f"spec.trialTemplate.configMap: the local backend cannot read ConfigMap "
                f"{cm.config_map_namespace}/{cm.config_map_name} (key {cm.template_path}) from a cluster; "
                "inline the template as spec.trialTemplate.trialSpec or use --backend kubernetes"
            )
            return errors
        if collector_kind(experiment) == "TensorFlowEvent" and importlib.util.find_spec("tensorboard") is None:
            errors.append(
                "spec.metricsCollectorSpec.collector.kind: TensorFlowEvent metrics collector needs the "
                "'tensorboard' package: pip install 'katibx[tensorboard]'"
            )
        spec = tt.trial_spec or {}
        path = "spec.trialTemplate.trialSpec"
        try:
            active_deadline_seconds(spec)
        except (TypeError, ValueError) as exc:
            if "${trialParameters." not in str(exc):  # a substituted deadline is checked when the trial starts
                errors.append(f"{path}.spec: {exc}")
        if not isinstance(spec.get("spec") or {}, dict):
            return errors  # (said above: nothing more can be read from it)
        if spec.get("kind") == FUNCTION_KIND:
            reuse = (spec.get("spec") or {}).get(REUSE_FIELD, True)
            if not isinstance(reuse, bool):
                errors.append(f"{path}.spec.{REUSE_FIELD}: must be true or false, got {reuse!r}")
            return errors + _isolation_errors(experiment, spec, path)
        if spec.get("kind") not in WORKER_DEFAULTS:
            errors.append(
                f"{path}.kind: the local backend cannot run {spec.get('kind')} ({spec.get('apiVersion')}) trials; "
                f"it runs {', '.join(WORKER_DEFAULTS)}; use --backend kubernetes for other kinds"
            )
            return errors
        container = primary_container(spec, tt.primary_container_name)
        if container is None:
            errors.append(
                f"{path}: no container named {tt.primary_container_name!r} in the {spec.get('kind')} template "
                "(the local backend runs the primary container's command)"
            )
        elif not container.get("command"):
            errors.append(
                f"{path}: container {tt.primary_container_name!r} has no command; the local backend cannot read "
                "an image's entrypoint, so give the command explicitly"
            )
        else:
            for key in ("command", "args"):
                value = container.get(key)
                if value is not None and (not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value)):
                    errors.append(f"{path}: container {tt.primary_container_name!r} {key} must be a list of strings")
            for env in container.get("env") or []:
                if isinstance(env, dict) and "valueFrom" in env:
                    errors.append(f"{path}: env {env.get('name')!r} uses valueFrom, which only a cluster can resolve")
            if container.get("envFrom"):
                errors.append(f"{path}: container {tt.primary_container_name!r} uses envFrom, which only a cluster can resolve")
        return errors

    def settings(self) -> dict[str, Any]:
        return {} if self.log_limit_bytes == DEFAULT_LOG_LIMIT_BYTES else {"log_limit_bytes": self.log_limit_bytes}

    # lifecycle ---------------------------------------------------------------------------
    def can_start(self, job: TrialJob) -> bool:
        """False while the GPUs the trial asks for are held by running trials."""
        tt = job.experiment.spec.trial_template
        if not self.schedule_gpus or not self._may_ask_for_gpus(job.experiment):
            return True
        try:
            wanted = gpu_count(trial_resources(render_trial_spec(job.experiment, job.trial.name, job.trial.assignments),
                                               tt.primary_container_name if tt else None))
        except (TypeError, ValueError):
            return True  # start says what is wrong
        return wanted == 0 or wanted > len(self._gpus.devices) or self._gpus.can_take(wanted)

    def _may_ask_for_gpus(self, experiment: Experiment) -> bool:
        """Whether a trial of the experiment may ask for GPUs (its template names some, or a parameter may set how
        many): the others need no trial rendered to be placed. Worked out once per experiment."""
        if self._gpus_asked[0] is not experiment:
            tt = experiment.spec.trial_template
            try:
                asks = bool(tt and tt.trial_spec and gpu_count(template_resources(tt.trial_spec,
                                                                                  tt.primary_container_name)))
            except (TypeError, ValueError):
                asks = True  # start says what is wrong
            self._gpus_asked = (experiment, asks)
        return self._gpus_asked[1]

    def _hand_gpus(self, trial: str, worker: dict[str, Any], container: str | None, env: dict[str, str]) -> list[str]:
        """The free devices the trial asks for, in its ``CUDA_VISIBLE_DEVICES`` (and ``$KATIBX_GPUS``, for a katibx
        inside it); where the experiment's trials ask for GPUs, one that asks for none sees none (its own container
        env may still say otherwise). An experiment that never asks leaves the variable as it is."""
        if not self.schedule_gpus:
            return []
        wanted = gpu_count(trial_resources(worker, container))
        if wanted == 0:
            if self._gpu_pool is not None and self._gpu_pool.devices:
                env[VISIBLE_ENV] = env[GPUS_ENV] = ""
            return []
        if wanted > len(self._gpus.devices):
            raise TrialStartError(f"the trial asks for {wanted} GPUs (nvidia.com/gpu) and {self._gpu_origin()}")
        devices = self._gpus.take(f"{id(self)}/{trial}", wanted)
        if devices is None:
            raise TrialStartError(f"the {wanted} GPUs the trial asks for are held by other trials")
        env[VISIBLE_ENV] = env[GPUS_ENV] = ",".join(devices)
        return devices

    def start(self, job: TrialJob) -> dict[str, Any]:
        if in_threads(job.experiment):
            return self._start_thread(job)
        _prepare_folder(job.trial_dir)
        token, since = new_token(), time.time()
        env = {**os.environ, **trial_environment(job.trial_dir, job.experiment.name, job.trial.name), TOKEN_ENV: token}
        tt = job.experiment.spec.trial_template
        try:
            worker = render_trial_spec(job.experiment, job.trial.name, job.trial.assignments)
            deadline = active_deadline_seconds(worker)
            devices = self._hand_gpus(job.trial.name, worker, tt.primary_container_name if tt else None, env)
        except (TypeError, ValueError) as exc:
            raise TrialStartError(f"invalid trial template: {exc}") from None
        try:
            handle = self._start(job, worker, env, deadline, token, since, fresh_worker=bool(devices))
        except BaseException:
            if devices:
                self._gpus.give_back(f"{id(self)}/{job.trial.name}")
            raise
        return {**handle, "gpus": devices} if devices else handle

    def _start(self, job: TrialJob, worker: dict[str, Any], env: dict[str, str], deadline: float | None, token: str,
               since: float, fresh_worker: bool) -> dict[str, Any]:
        ends = time.monotonic() + deadline if deadline else None
        first_pid = last_pid()  # the trial's processes all come after it (workers/_escaped.py)
        if worker.get("kind") == FUNCTION_KIND:
            collector = MetricsCollector(job.experiment, job.trial_dir, job.workdir)
            function_worker = self._start_function(job, worker, env, fresh_worker)
            run = _Running(job.trial.name, function_worker.pid, function_worker.result, collector, ends,
                           worker=function_worker)
            started = function_worker.started
        else:
            argv, source = self._command(job, worker, env)
            collector = MetricsCollector(job.experiment, job.trial_dir, job.workdir, source)
            process = self._start_command(job, argv, env)
            started = process_started(process.pid, zombies=True)  # (it may have exited already)
            try:
                exit_ = ProcessExit(process.pid, lambda: process.poll() is not None)
            except BaseException:
                kill_group(process.pid)
                process.wait()
                raise
            run = _Running(job.trial.name, process.pid, process.poll, collector, ends, exit=exit_)
        run.token, run.since, run.first_pid, run.log = token, since, first_pid, job.trial_dir / STDOUT_LOG
        self._running[job.trial.name] = run
        return {"pid": run.pid, "started": started, "token": token, "since": since}

    @staticmethod
    def _command(job: TrialJob, worker: dict[str, Any], env: dict[str, str]) -> tuple[list[str], Path | None]:
        """The primary container's argv, its env merged into ``env``, and where its File/event metrics will be."""
        tt = job.experiment.spec.trial_template
        assert tt is not None
        container = primary_container(worker, tt.primary_container_name) or {}
        argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        if not argv:
            raise TrialStartError(f"container {tt.primary_container_name!r} has no command")
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        names: list[str] = []
        for item in container.get("env") or []:
            if isinstance(item, dict) and item.get("name") and "valueFrom" not in item:
                value = item.get("value")
                env[str(item["name"])] = "" if value is None else format_value(value)
                names.append(str(item["name"]))
        values, source = argv + [env[n] for n in names], None
        declared = source_path(job.experiment)
        if declared:
            values, source = relocate(values, declared, job.trial_dir / FILES_DIR,
                                      directory=collector_kind(job.experiment) == "TensorFlowEvent")
        algorithm = job.experiment.spec.algorithm
        mount = (algorithm.settings_dict() if algorithm else {}).get(CHECKPOINT_SETTING)
        if mount:
            values = mount_checkpoint(values, mount, job.trial_dir / CHECKPOINT_DIR)
        env.update(zip(names, values[len(argv):]))
        with_python_on_path(job.trial_dir.parent, env)  # `bash -c "python ..."` too, after the container's PATH
        return values[:len(argv)], source

    @staticmethod
    def _start_command(job: TrialJob, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(job.trial_dir / STDOUT_LOG, "wb") as out:
            try:
                proc = subprocess.Popen(
                    argv, cwd=job.workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            except OSError as exc:
                raise TrialStartError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
        return proc

    def _start_function(self, job: TrialJob, worker: dict[str, Any], env: dict[str, str],
                        fresh: bool = False) -> FunctionWorker:
        """A worker process running the function trial: an idle one when workers are reused, else a new one (always
        for a trial given GPUs: CUDA reads CUDA_VISIBLE_DEVICES once per process, so such a worker serves no
        other trial)."""
        spec = worker.get("spec") or {}
        # Without the function object (a resumed experiment), the worker imports it: user code never runs here.
        function: Callable[..., Any] | str = job.function or str(spec.get("function", ""))
        for item in spec.get("env") or []:
            env[str(item["name"])] = format_value(item.get("value", ""))
        request = TrialRequest({**(spec.get("fixedParameters") or {}), **job.trial.assignments}, env,
                               str(job.workdir), str(job.trial_dir / STDOUT_LOG),
                               tuple(name for name, _ in Objective(job.experiment).objectives))
        reuse = self.reuse_function_workers and spec.get(REUSE_FIELD, True) is not False and not fresh
        while reuse and self._idle:
            idle = next((w for w in self._idle if w.serves(function)), None)
            if idle is None:  # a worker forked for another objective: never needed again
                self._idle.pop(0).stop()
                continue
            self._idle.remove(idle)
            if idle.run(request):
                return idle
            idle.stop()
        new = FunctionWorker(self._fork, function, reuse, self.close_inherited_descriptors)
        if not new.run(request):
            new.stop()
            raise TrialStartError("the function trial's worker process exited before it could start the trial")
        return new

    def _start_thread(self, job: TrialJob) -> dict[str, Any]:
        """Start a function trial on a thread of this process (``isolation: none``): no folder, process or pipe."""
        try:
            worker = render_trial_spec(job.experiment, job.trial.name, job.trial.assignments)
            deadline = active_deadline_seconds(worker)
        except (TypeError, ValueError) as exc:
            raise TrialStartError(f"invalid trial template: {exc}") from None
        spec = worker.get("spec") or {}
        if job.function is None:  # (the runner imports a stored experiment's objective before its controller runs)
            raise TrialStartError("isolation none runs the objective in this process: it must be given to the run")
        if self._threads is None or self._threads.experiment is not job.experiment:
            if self._threads is not None:
                self._threads.close()
            self._threads = ThreadTrials(job.experiment, lambda path: keep_tail(path, self.log_limit_bytes))
        self._threads.start(job.trial.name, job.trial_dir / STDOUT_LOG, job.function,
                            {**(spec.get("fixedParameters") or {}), **job.trial.assignments},
                            time.monotonic() + deadline if deadline else None)
        return {}  # nothing of the trial outlives this process: no worker for a later controller to find

    def poll(self, timeout: float) -> list[TrialEvent]:
        events: list[TrialEvent] = []
        wait = 0.0 if self._backlog else min(timeout, self.metrics_poll_interval)
        fds = [fd for run in self._running.values() if not run.ended for fd in run.fds]
        if self._threads:
            fds.append(self._threads.fd)
        if fds:
            wait_readable(fds, wait)
        elif wait > 0:
            time.sleep(wait)
        if self._threads:
            events.extend(self._threads.events())
        now = time.monotonic()
        self._backlog = False
        for run in list(self._running.values()):
            code = run.exit_code()  # before reading: output written before the exit is then all in the files
            if code is not None and not run.ended:
                self._end(run)  # what it left running is stopped at once, while its output is still being read
            logs = run.collector.poll()
            # Output is read in bounded steps, so memory does not follow what a trial prints: a trial that has
            # exited ends once all of it has been read.
            self._backlog |= run.collector.pending
            if code is None or run.collector.pending:
                if logs:
                    events.append(TrialMetrics(run.name, logs))
                if code is not None:
                    continue
                if run.deadline is not None and now > run.deadline and run.killed_at is None:
                    run.timed_out = True
                    self._signal(run, signal.SIGTERM)
                elif run.killed_at is not None and now - run.killed_at > KILL_GRACE_SECONDS:
                    self._signal(run, signal.SIGKILL)
                continue
            del self._running[run.name]
            logs.extend(run.collector.finish())
            keep_tail(run.log, self.log_limit_bytes)  # once its metrics are read
            events.append(self._exit_event(run, code, logs))
        return events

    def _exit_event(self, run: _Running, code: int, logs: list[Any]) -> TrialExited:
        if run.timed_out:
            return TrialExited(run.name, False, "DeadlineExceeded", "Job was active longer than specified deadline", logs)
        if code == 0 and run.collector.error:
            return TrialExited(run.name, False, "MetricsCollectorError", f"metrics collection failed: {run.collector.error}", logs)
        if code == 0:
            return TrialExited(run.name, True, "Completed", "process exited with code 0", logs)
        if code < 0:
            sig = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            return TrialExited(run.name, False, "Killed" if run.killed_at else "Error", f"process killed by {sig}", logs)
        return TrialExited(run.name, False, "Error", f"process exited with code {code}", logs)

    def kill(self, trial_name: str) -> None:
        if self._threads and trial_name in self._threads:
            self._threads.kill(trial_name)
            return
        run = self._running.get(trial_name)
        if run is not None and run.killed_at is None:
            self._signal(run, signal.SIGTERM)

    def ask_to_stop(self, trial_name: str) -> bool:
        if self._threads and trial_name in self._threads:
            return self._threads.ask_to_stop(trial_name)
        run = self._running.get(trial_name)
        if run is None or run.ended or not (run.log.parent / PRUNABLE_FILE).exists():  # it never asks: kill it
            return False
        try:
            (run.log.parent / STOP_FILE).touch()
        except OSError as exc:
            log.warning("trial %s: cannot ask it to stop (%s); stopping it", trial_name, exc)
            return False
        return True

    def _signal(self, run: _Running, sig: int) -> None:
        if run.ended:  # its pid may belong to another process by now
            return
        if run.killed_at is None:
            run.killed_at = time.monotonic()
        try:
            os.killpg(run.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:  # a forked function trial that has not made its own session yet
                os.kill(run.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _end(self, run: _Running) -> None:
        """The trial has exited: a worker whose trial ended cleanly waits for the next trial; otherwise stop
        anything the trial left behind in its session; then anything it started outside it. Its GPUs are free."""
        run.ended = True
        if self._gpu_pool is not None:
            self._gpu_pool.give_back(f"{id(self)}/{run.name}")
        if run.worker is not None:
            if run.worker.idle and run.killed_at is None:
                self._idle.append(run.worker)
                if run.worker.subreaper:  # a clean worker that is a subreaper has nothing of the trial alive
                    return
            else:
                run.worker.stop()
        else:
            try:
                os.killpg(run.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            assert run.exit is not None
            run.exit.close()
        self._kill_escaped(run.token, run.since, run.first_pid)

    def _kill_escaped(self, token: str, since: float, first_pid: int | None = None) -> None:
        """Stop what the trial started outside its process group (its function workers are spared)."""
        workers = frozenset(w.pid for w in self._idle) | frozenset(
            r.worker.pid for r in self._running.values() if r.worker is not None)
        escaped = kill_marked(token, since, spare=workers, first_pid=first_pid)
        if escaped:
            log.info("stopped %d process(es) a trial left outside its process group: %s", len(escaped), escaped)

    def release(self, handle: dict[str, Any]) -> None:
        pid = handle.get("pid")
        if pid and not _reused(int(pid), handle):
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if handle.get("token"):  # what the trial started outside its group, whether or not its leader lives
            self._kill_escaped(str(handle["token"]), float(handle.get("since") or 0))

    def close(self) -> None:
        if self._threads is not None:
            self._threads.close()
            self._threads = None
        for run in self._running.values():
            self._signal(run, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while any(not run.ended for run in self._running.values()) and time.monotonic() < deadline:
            for run in self._running.values():
                if not run.ended and run.exit_code() is not None:
                    self._end(run)
            time.sleep(0.02)
        stuck = [run for run in self._running.values() if not run.ended]
        for run in stuck:  # every one killed first, then waited for
            self._signal(run, signal.SIGKILL)
        for run in stuck:
            wait_readable(run.fds[:1], KILL_GRACE_SECONDS)  # the first is the process's exit
            run.exit_code()
            self._end(run)
        self._running.clear()
        while self._idle:
            self._idle.pop().stop()


def in_threads(experiment: Experiment) -> bool:
    """Whether the experiment's function trials run on threads of the controller's process (``isolation: none``)."""
    tt = experiment.spec.trial_template
    spec = tt.trial_spec if tt is not None else None
    return bool(spec) and spec.get("kind") == FUNCTION_KIND and (spec.get("spec") or {}).get(ISOLATION_FIELD) == "none"


def _isolation_errors(experiment: Experiment, spec: dict[str, Any], path: str) -> list[str]:
    """What a function template's ``isolation`` cannot have: with ``none`` its trials share this process, so
    nothing that needs a process of their own (environment, GPUs, a checkpoint folder, metrics files)."""
    function_spec = spec.get("spec") or {}
    isolation = function_spec.get(ISOLATION_FIELD, "process")
    field = f"{path}.spec.{ISOLATION_FIELD}"
    if isolation not in ISOLATIONS:
        return [f"{field}: must be one of {', '.join(ISOLATIONS)}, got {isolation!r}"]
    if isolation == "process":
        return []
    shared = "trials with isolation none share the controller's process"
    errors = []
    if function_spec.get("env"):
        errors.append(f"{path}.spec.env: {shared} and its environment; read the values from the parameters "
                      "instead, or use isolation process")
    if function_spec.get(REUSE_FIELD) is False:
        errors.append(f"{path}.spec.{REUSE_FIELD}: false (a fresh process per trial) contradicts {field} none (no "
                      "process of their own); drop one")
    try:
        gpus = gpu_count(template_resources(spec, None))
    except ValueError:
        gpus = 0  # the resources' own error is reported where they are checked
    if gpus:
        errors.append(f"{field}: {shared}, which cannot give each its own GPUs; use isolation process")
    kind = collector_kind(experiment)
    if kind not in ("StdOut", "Push"):
        errors.append(f"spec.metricsCollectorSpec.collector.kind: {kind} reads files a trial writes into its own "
                      f"folder; {shared}: print the metrics or return them, or use isolation process")
    algorithm = experiment.spec.algorithm
    if algorithm is not None and CHECKPOINT_SETTING in algorithm.settings_dict():
        errors.append(f"{field}: {shared}, and {algorithm.algorithm_name}'s trials need a checkpoint folder each "
                      "($KATIBX_CHECKPOINT_DIR); use isolation process")
    return errors


def _prepare_folder(trial_dir: Path) -> None:
    """The trial's folder, without an earlier run's files (a trial run again starts afresh)."""
    try:
        trial_dir.mkdir(parents=True)
    except FileExistsError:
        for stale in (STDOUT_LOG, PUSH_FILE, STOP_FILE, PRUNABLE_FILE):
            (trial_dir / stale).unlink(missing_ok=True)
        shutil.rmtree(trial_dir / FILES_DIR, ignore_errors=True)
    (trial_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)  # the controller may have filled it from a parent


def keep_tail(path: Path, limit: int) -> None:
    """Cut the log at ``path`` to its last ``limit`` bytes, from the start of a line when one begins soon after the
    cut (within 64 KiB and half the limit; else at the byte), with a first line saying how much was dropped: a
    trial's disk use is bounded and its end, where a failure shows, is kept. A log that cannot be cut (a full disk)
    is left whole, with a warning."""
    tail = path.with_name(path.name + ".tail")
    try:
        size = path.stat().st_size
        if size <= limit:
            return
        with path.open("rb") as source:
            cut = size - limit
            source.seek(cut - 1)
            if source.read(1) != b"\n":  # inside a line: skip its rest if it ends soon
                newline = source.read(min(64 << 10, limit // 2)).find(b"\n")  # at most half of what is kept
                cut += newline + 1 if newline >= 0 else 0
            source.seek(cut)
            with tail.open("wb") as target:
                target.write(f"[katibx: the first {cut} bytes of this log were dropped (log limit {limit} "
                             "bytes)]\n".encode())
                shutil.copyfileobj(source, target)
        os.replace(tail, path)
    except OSError as exc:
        tail.unlink(missing_ok=True)
        log.warning("cannot cut the log %s to its last %d bytes: %s", path, limit, exc)


def _reused(pid: int, handle: dict[str, Any]) -> bool:
    """Whether ``pid`` now belongs to an unrelated process (not the trial's, by its start). When the leader is gone, a
    process group with its id can only hold what the trial left behind. Handles stored by earlier katibx kept psutil's
    ``create_time``, which an NTP step moves; compared with a tolerance."""
    if handle.get("started") is not None:
        return pid_reused(pid, float(handle["started"]))
    created = handle.get("create_time")
    if created is None:
        return True  # its start was never known: leave the pid alone (its token still finds what the trial left)
    try:
        return abs(psutil.Process(pid).create_time() - float(created)) > 0.01
    except psutil.NoSuchProcess:
        return False


_PATH_CHARS = r"[\w./-]"


def relocate(values: list[str], declared: str, root: Path, directory: bool = False) -> tuple[list[str], Path | None]:
    """Move the metrics path named in the command or env under the trial's ``root``; the new path or None."""
    # Katib gives every pod its own metrics volume; locally, parallel trials must not share one file, and
    # /var/log/katib is not writable. Only whole mentions move: the declared file, or for a TensorFlowEvent
    # ``directory`` also one of its parent folders (scripts often take the log root and add "train"/"test").
    norm = os.path.normpath(declared)
    if norm in (".", "/") or norm.startswith(".."):
        return values, None
    candidates = [norm]
    if directory:
        parent = os.path.dirname(norm)
        while parent not in ("", "/", "."):
            candidates.append(parent)
            parent = os.path.dirname(parent)
    for mention in candidates:
        pattern = re.compile(rf"(?<!{_PATH_CHARS}){re.escape(mention)}(?=/?(?!{_PATH_CHARS}))")
        if not any(pattern.search(v) for v in values):
            continue
        moved = root / mention.lstrip("/")
        target = root / norm.lstrip("/")
        (target if directory else target.parent).mkdir(parents=True, exist_ok=True)
        return [pattern.sub(lambda _m: str(moved), v) for v in values], target
    return values, None


def mount_checkpoint(values: list[str], declared: str, checkpoint: Path) -> list[str]:
    """Point mentions of the checkpoint path ``declared`` (and paths below it) at the trial's ``checkpoint`` dir."""
    # Katib mounts a volume at the pbt setting suggestion_trial_dir; locally the trial's own directory stands in.
    norm = os.path.normpath(declared)
    if not os.path.isabs(norm) or norm == "/":
        return values
    pattern = re.compile(rf"(?<!{_PATH_CHARS}){re.escape(norm)}(?=/|(?!{_PATH_CHARS}))")
    return [pattern.sub(lambda _m: str(checkpoint), v) for v in values]


