"""What the kubernetes backend keeps about one running trial: its worker object, conditions and collected logs."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from katibx.backend import TrialJob
from katibx.defaults import WORKER_DEFAULTS
from katibx.metric_parsers import LineParser
from katibx.metrics_collector import collector_kind, metric_names
from katibx.workers._manifests import Resource, pod_selector


@dataclass
class TrackedTrial:
    """One trial's worker object and what has been collected from it."""

    name: str
    namespace: str
    resource: Resource
    experiment: str
    selector: str  # its pods
    primary_labels: dict[str, str]
    container: str | None
    success: str
    failure: str
    retain: bool
    stdout: bool  # StdOut metrics: parse the primary pods' logs
    parser: Callable[[], LineParser]
    push_parser: LineParser
    file_parser: Callable[[], LineParser] | None  # File metrics: parse the file the wrapped command prints at its end
    trial_dir: Any
    uid: str | None = None
    created_at: float = float("inf")  # when the create call returned (a list before that cannot show the object)
    finishing: bool = False
    attaching: bool = False  # re-attached after a crash: pushes wait (503) until the kept records are read again
    killed: bool = False
    followers: dict[str, threading.Thread] = field(default_factory=dict)  # pod name -> log follower
    # pod name -> the log text read so far, every run, in pieces (joined when read: appending never copies it all)
    texts: dict[str, list[str]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # pod name -> how much text that is
    runs: dict[str, tuple[int, int]] = field(default_factory=dict)  # pod name -> (run read last, where its text starts)
    complete: set[str] = field(default_factory=set)  # pods whose whole log has been read
    drained: bool = False  # followers must stop feeding: the final read takes over
    errors: list[str] = field(default_factory=list)
    stuck_since: dict[str, float] = field(default_factory=dict)  # pod name -> when a container was first seen unable to start
    start_timers: dict[str, threading.Timer] = field(default_factory=dict)  # pod name -> its start timeout's timer
    lock: threading.Lock = field(default_factory=threading.Lock)
    poll_lock: threading.Lock = field(default_factory=threading.Lock)  # held by a periodic log read in progress

    @classmethod
    def for_job(cls, job: TrialJob, worker: dict[str, Any], resource: Resource, namespace: str, *,
                attaching: bool) -> TrackedTrial:
        """What to track of a trial's worker object, from its experiment's trial template and metrics collector."""
        experiment = job.experiment
        tt = experiment.spec.trial_template
        assert tt is not None
        defaults = WORKER_DEFAULTS.get(resource.kind, ("", "", None))
        mc = experiment.spec.metrics_collector_spec
        src = mc.source if mc else None
        formats = src.filter.metrics_format if src and src.filter else None
        names = metric_names(experiment)
        primary = tt.primary_pod_labels if tt.primary_pod_labels is not None else (defaults[2] or {})
        fsp = src.file_system_path if src else None
        file_format = ((fsp.format if fsp else None) or "TEXT") if collector_kind(experiment) == "File" else None
        return cls(
            name=job.trial.name, namespace=namespace, resource=resource, experiment=experiment.name,
            selector=pod_selector(worker, job.trial.name), primary_labels=dict(primary),
            container=tt.primary_container_name, success=tt.success_condition or defaults[0],
            failure=tt.failure_condition or defaults[1], retain=bool(tt.retain),
            stdout=collector_kind(experiment) == "StdOut", parser=lambda: LineParser(names, formats),
            file_parser=(lambda: LineParser(names, formats, file_format)) if file_format else None,
            push_parser=LineParser(names, file_format="JSON"), trial_dir=job.trial_dir, attaching=attaching,
        )

    def is_primary(self, pod: dict[str, Any]) -> bool:
        """Whether ``pod`` carries the trial's ``primaryPodLabels``."""
        labels = (pod.get("metadata") or {}).get("labels") or {}
        return all(labels.get(k) == v for k, v in self.primary_labels.items())

    def cancel_timers(self) -> None:
        """Cancel the trial's start timeouts (it is ending, or the backend closes)."""
        with self.lock:
            timers, self.start_timers = list(self.start_timers.values()), {}
        for timer in timers:
            timer.cancel()

    def add_text(self, pod_name: str, run: int, text: str, *, unless_drained: bool = False,
                 restart: bool = False) -> bool:
        """Keep ``text`` read from run ``run`` of a pod's primary container (a new run starts a new text); False,
        keeping nothing, when ``unless_drained`` and the final read has begun. ``restart``: that run's text starts
        over with this one (the kubelet rotated the log: the API serves the new file only)."""
        with self.lock:
            if unless_drained and self.drained:
                return False
            size = self.sizes.get(pod_name, 0)
            last, start = self.runs.get(pod_name, (run, size))
            self.runs[pod_name] = (run, size if restart or last != run else start)
            if text:
                self.texts.setdefault(pod_name, []).append(text)
                self.sizes[pod_name] = size + len(text)
            return True

    def pod_text(self, pod_name: str) -> str:
        """Everything read of the pod's primary container's log, every run."""
        with self.lock:
            return self._joined(pod_name)

    def _joined(self, pod_name: str) -> str:
        pieces = self.texts.get(pod_name) or [""]
        if len(pieces) > 1:
            pieces[:] = ["".join(pieces)]
        return pieces[0]

    def run_text(self, pod_name: str, run: int) -> str:
        """What has been read of that run of the pod's primary container ("" for a run not read yet)."""
        with self.lock:
            last, start = self.runs.get(pod_name, (None, 0))
            return self._joined(pod_name)[start:] if last == run else ""

    def run_size(self, pod_name: str, run: int) -> int:
        """How much has been read of that run (0 for a run not read yet)."""
        with self.lock:
            last, start = self.runs.get(pod_name, (None, 0))
            return self.sizes.get(pod_name, 0) - start if last == run else 0

    def run_of(self, pod: dict[str, Any]) -> int:
        """The current run of the pod's primary container: its restartCount (a restarted container logs anew)."""
        name = self.container_of(pod) or next(
            (c.get("name") for c in (pod.get("spec") or {}).get("containers") or []), None)
        for entry in (pod.get("status") or {}).get("containerStatuses") or []:
            if entry.get("name") == name:
                return int(entry.get("restartCount") or 0)
        return 0

    def container_of(self, pod: dict[str, Any]) -> str | None:
        """The primary container's name when ``pod`` has it, else None (the pod's only container)."""
        names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        return self.container if self.container in names else None
