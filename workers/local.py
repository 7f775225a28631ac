"""The embedded default backend: each trial is a local process (a command, or a forked function call)."""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil

from katibx.collection import PUSH_FILE, STDOUT_LOG, MetricsCollector
from katibx.report import METRICS_FILE_ENV, TRIAL_DIR_ENV, TRIAL_NAME_ENV, report_metrics
from katibx.spec import Experiment
from katibx.template import FUNCTION_KIND, active_deadline_seconds, primary_container, render_trial_spec
from workers.base import Backend, TrialEvent, TrialExited, TrialJob, TrialMetrics, TrialStartError

log = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 3.0
_SUPPORTED_COLLECTORS = ("StdOut", "File", "TensorFlowEvent", "Push")


@dataclass
class _Running:
    """One live trial process and what is known about it."""

    name: str
    pid: int
    pidfd: int
    wait: Callable[[], int | None]  # exit code once exited, else None
    collector: MetricsCollector
    deadline: float | None
    killed_at: float | None = None
    timed_out: bool = False
    started: float = field(default_factory=time.monotonic)


class LocalBackend(Backend):
    """Runs trials as processes on this machine; each has its own session so the whole tree can be stopped."""

    name = "local"

    def __init__(self, metrics_poll_interval: float = 0.2) -> None:
        self.metrics_poll_interval = metrics_poll_interval
        self._running: dict[str, _Running] = {}
        self._fork = multiprocessing.get_context("fork")

    # checks ------------------------------------------------------------------------------
    def check(self, experiment: Experiment) -> list[str]:
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
        mc = experiment.spec.metrics_collector_spec
        kind = mc.collector.kind if mc and mc.collector else "StdOut"
        if kind not in _SUPPORTED_COLLECTORS:
            errors.append(
                f"spec.metricsCollectorSpec.collector.kind: {kind} collectors need a Kubernetes cluster; "
                f"the local backend supports {', '.join(_SUPPORTED_COLLECTORS)}"
            )
        spec = tt.trial_spec or {}
        if spec.get("kind") == FUNCTION_KIND:
            return errors
        container = primary_container(spec, tt.primary_container_name)
        path = "spec.trialTemplate.trialSpec"
        if container is None:
            errors.append(
                f"{path}: no container named {tt.primary_container_name!r} in the {spec.get('kind')} template "
                "(the local backend runs the primary container's command)"
            )
        elif not container.get("command") and not container.get("args"):
            errors.append(
                f"{path}: container {tt.primary_container_name!r} has no command; the local backend cannot read "
                "an image's entrypoint, so give the command explicitly"
            )
        else:
            for env in container.get("env") or []:
                if "value" not in env and "valueFrom" in env:
                    errors.append(f"{path}: env {env.get('name')!r} uses valueFrom, which only a cluster can resolve")
        return errors

    # lifecycle ---------------------------------------------------------------------------
    def start(self, job: TrialJob) -> dict[str, Any]:
        job.trial_dir.mkdir(parents=True, exist_ok=True)
        for stale in (STDOUT_LOG, PUSH_FILE):
            (job.trial_dir / stale).unlink(missing_ok=True)
        env = {
            **os.environ,
            TRIAL_NAME_ENV: job.trial.name,
            TRIAL_DIR_ENV: str(job.trial_dir),
            METRICS_FILE_ENV: str(job.trial_dir / PUSH_FILE),
            "KATIBX_EXPERIMENT": job.experiment.name,
        }
        worker = render_trial_spec(job.experiment, job.trial.name, job.trial.assignments)
        deadline = active_deadline_seconds(worker)
        if worker.get("kind") == FUNCTION_KIND:
            pid, wait = self._start_function(job, worker, env)
        else:
            pid, wait = self._start_command(job, worker, env)
        pidfd = os.pidfd_open(pid)
        collector = MetricsCollector(job.experiment, job.trial_dir, job.workdir)
        self._running[job.trial.name] = _Running(
            job.trial.name, pid, pidfd, wait, collector, time.monotonic() + deadline if deadline else None
        )
        return {"pid": pid, "create_time": psutil.Process(pid).create_time()}

    def _start_command(self, job: TrialJob, worker: dict[str, Any], env: dict[str, str]) -> tuple[int, Callable[[], int | None]]:
        tt = job.experiment.spec.trial_template
        assert tt is not None
        container = primary_container(worker, tt.primary_container_name) or {}
        argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        for item in container.get("env") or []:
            if "value" in item:
                env[str(item["name"])] = str(item["value"])
        with open(job.trial_dir / STDOUT_LOG, "wb") as out:
            try:
                proc = subprocess.Popen(
                    argv, cwd=job.workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            except OSError as exc:
                raise TrialStartError(f"cannot start {argv[0] if argv else 'an empty command'!r}: {exc.strerror or exc}") from None
        return proc.pid, proc.poll

    def _start_function(self, job: TrialJob, worker: dict[str, Any], env: dict[str, str]) -> tuple[int, Callable[[], int | None]]:
        spec = worker.get("spec") or {}
        function = job.function or _import_function(str(spec.get("function", "")))
        for item in spec.get("env") or []:
            env[str(item["name"])] = str(item["value"])
        arguments = {**(spec.get("fixedParameters") or {}), **job.trial.assignments}
        process = self._fork.Process(
            target=_run_function, args=(function, arguments, env, str(job.workdir),
                                        str(job.trial_dir / STDOUT_LOG)),
            name=f"katibx-trial-{job.trial.name}", daemon=False,
        )
        process.start()
        assert process.pid is not None

        def wait() -> int | None:
            process.join(0)
            return process.exitcode

        return process.pid, wait

    def poll(self, timeout: float) -> list[TrialEvent]:
        events: list[TrialEvent] = []
        wait = min(timeout, self.metrics_poll_interval)
        fds = [r.pidfd for r in self._running.values()]
        if fds:
            select.select(fds, [], [], max(wait, 0))
        elif wait > 0:
            time.sleep(wait)
        now = time.monotonic()
        for run in list(self._running.values()):
            logs = run.collector.poll()
            code = run.wait()
            if code is None:
                if logs:
                    events.append(TrialMetrics(run.name, logs))
                if run.deadline is not None and now > run.deadline and run.killed_at is None:
                    run.timed_out = True
                    self._signal(run, signal.SIGTERM)
                elif run.killed_at is not None and now - run.killed_at > KILL_GRACE_SECONDS:
                    self._signal(run, signal.SIGKILL)
                continue
            self._reap(run)
            logs.extend(run.collector.finish())
            events.append(self._exit_event(run, code, logs))
        return events

    def _exit_event(self, run: _Running, code: int, logs: list[Any]) -> TrialExited:
        if run.timed_out:
            return TrialExited(run.name, False, "DeadlineExceeded", "Job was active longer than specified deadline", logs)
        if code == 0:
            return TrialExited(run.name, True, "Completed", "process exited with code 0", logs)
        if code < 0:
            sig = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            return TrialExited(run.name, False, "Killed" if run.killed_at else "Error", f"process killed by {sig}", logs)
        return TrialExited(run.name, False, "Error", f"process exited with code {code}", logs)

    def kill(self, trial_name: str) -> None:
        run = self._running.get(trial_name)
        if run is not None and run.killed_at is None:
            self._signal(run, signal.SIGTERM)

    def _signal(self, run: _Running, sig: int) -> None:
        if run.killed_at is None:
            run.killed_at = time.monotonic()
        try:
            os.killpg(run.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self, run: _Running) -> None:
        # Stop anything the trial left behind in its session, then forget it.
        try:
            os.killpg(run.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        os.close(run.pidfd)
        del self._running[run.name]

    def release(self, handle: dict[str, Any]) -> None:
        pid, created = handle.get("pid"), handle.get("create_time")
        if not pid:
            return
        try:
            proc = psutil.Process(int(pid))
            if created is not None and abs(proc.create_time() - float(created)) > 0.01:
                return  # the pid was reused by an unrelated process
            os.killpg(int(pid), signal.SIGKILL)
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            return

    def close(self) -> None:
        for run in list(self._running.values()):
            self._signal(run, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while self._running and time.monotonic() < deadline:
            for run in list(self._running.values()):
                if run.wait() is not None:
                    self._reap(run)
            time.sleep(0.02)
        for run in list(self._running.values()):
            self._signal(run, signal.SIGKILL)
            run.wait()
            self._reap(run)


def _import_function(ref: str) -> Callable[..., Any]:
    """Resolve ``module:qualname`` (the experiment folder is importable)."""
    module_name, _, qualname = ref.partition(":")
    if not module_name or not qualname:
        raise ValueError(f"spec.trialTemplate.trialSpec.spec.function: expected 'module:function', got {ref!r}")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _run_function(function: Callable[..., Any], assignments: dict[str, Any], env: dict[str, str], workdir: str, log_path: str) -> None:
    """Child side of a function trial: own session, output to the trial log, returned dict pushed as metrics."""
    os.setsid()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(workdir)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        result = function(assignments)
        if isinstance(result, dict):
            report_metrics(result)
        elif result is not None:
            raise TypeError(f"the objective returned {type(result).__name__}; return a dict of metrics or None")
    except BaseException:  # noqa: BLE001 - any failure of user code fails the trial, never the controller
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
