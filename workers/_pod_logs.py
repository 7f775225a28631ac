"""Pod logs for the kubernetes backend: followers that stream running primary pods' logs into metrics, periodic reads
of the pods no stream is left for, the final read once a trial ends, the trial's ``stdout.log``, and ``katibx logs``
straight from the pods.

A restarted container (restartPolicy OnFailure/Always) logs each run anew and the API serves the current run (and,
with ``previous``, the one before): a follower follows run after run, and every read is placed by the run it read
(the restartCount), so a restart is neither read twice nor taken for more output of the same run."""

from __future__ import annotations

import codecs
import logging
import queue
import threading
import time
from typing import Any, Callable

from katibx.backend import TrialEvent, TrialMetrics
from katibx.metric_parsers import LineParser, MetricsFormatError
from katibx.metrics import MetricLog
from katibx.trial_dir import STDOUT_LOG
from katibx.workers._kube_api import KubeApi, KubernetesClusterError, api_message, json_body, shut_down
from katibx.workers._manifests import file_section, pod_selector
from katibx.workers._tracked import TrackedTrial

log = logging.getLogger(__name__)

# How long a finished trial waits for its followed log streams to end.
LOG_DRAIN_SECONDS = 10.0
# How often a follower whose run ended looks at the watched pod for the next run.
NEXT_RUN_POLL_SECONDS = 0.2


class PodLogs:
    """Reads trials' primary pod logs: followed while they run (at most ``max_streams`` at once), then read to the end."""

    def __init__(self, api: KubeApi, events: queue.Queue[TrialEvent], max_streams: int,
                 poll_seconds: float = 5.0, *,
                 pod_of: Callable[[TrackedTrial, str], dict[str, Any] | None] = lambda trial, name: None) -> None:
        """``pod_of(trial, pod name)``: the pod as last watched (None once gone)."""
        self._api = api
        self._pod_of = pod_of
        self._events = events
        self._streams = threading.BoundedSemaphore(max(max_streams, 1)) if max_streams > 0 else None
        self.poll_seconds = poll_seconds
        self._polled: dict[tuple[str, str], tuple[TrackedTrial, dict[str, Any], LineParser]] = {}
        self._polled_lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._streams_open: set[Any] = set()  # followed log responses, shut down by close()

    def maybe_follow(self, trial: TrackedTrial, pod: dict[str, Any]) -> None:
        """Follow a running primary pod's log if a stream is free, else read it every ``poll_seconds``."""
        phase = (pod.get("status") or {}).get("phase")
        pod_name = pod["metadata"]["name"]
        if phase != "Running" or not trial.stdout or not trial.is_primary(pod):
            return
        with self._polled_lock:
            polled = (trial.name, pod_name) in self._polled  # read by the poller: not by a stream as well
        with trial.lock:
            if trial.finishing or pod_name in trial.followers or polled:
                return
            if self._streams is None or not self._streams.acquire(blocking=False):
                self._poll(trial, pod)
                return
            thread = threading.Thread(target=self._follow, args=(trial, pod), name=f"katibx-log-{pod_name}", daemon=True)
            trial.followers[pod_name] = thread
            thread.start()  # under the lock: a finishing trial joins only started followers

    def _poll(self, trial: TrackedTrial, pod: dict[str, Any]) -> None:
        """Have the poller read this pod's log periodically (no stream is free for it)."""
        if self.poll_seconds <= 0:
            return
        with self._polled_lock:
            self._polled.setdefault((trial.name, pod["metadata"]["name"]), (trial, pod, [trial.parser()]))
            if self._poller is None:
                self._poller = threading.Thread(target=self._poll_loop, name="katibx-log-poller", daemon=True)
                self._poller.start()

    def _poll_loop(self) -> None:
        """Every ``poll_seconds``, read the new part of each polled pod's log, until the backend stops."""
        while not self._api.stop.wait(self.poll_seconds):
            with self._polled_lock:
                entries = list(self._polled.items())
            for key, (trial, pod, parser) in entries:
                if self._api.stop.is_set():
                    return
                if not self._read_new(trial, pod, parser):
                    with self._polled_lock:
                        self._polled.pop(key, None)

    def _read_new(self, trial: TrackedTrial, pod: dict[str, Any], parser: list[LineParser]) -> bool:
        """Feed what a polled pod's log gained since the last read; False once the pod needs no more reads.

        ``parser`` holds the pod's parser, replaced when a new run of its container is read."""
        with trial.poll_lock:  # the final read waits for this one
            if trial.drained or trial.finishing:
                return False
            try:
                parser[0] = self._read_runs(trial, pod, parser[0], final=False)  # type: ignore[assignment]
            except _PodGone:
                return False
            except KubernetesClusterError as exc:  # the cluster is away: the next read (or the final one) says more
                log.info("trial %s: cannot read the log of pod %s now: %s", trial.name, pod["metadata"]["name"], exc)
        return True

    def _read_runs(self, trial: TrackedTrial, pod: dict[str, Any], parser: LineParser | None, *,
                   final: bool) -> LineParser | None:
        """Read what is new of a pod's log, run by run: first the end of the run read last when the container has
        moved on by one run (the API keeps the run before the current one), then the current run. While the run
        goes on only whole lines are taken (a read may end inside a line, or a character). Returns the parser to
        go on with (a fresh one for a new run)."""
        pod_name = pod["metadata"]["name"]
        latest = self._pod_of(trial, pod_name) or pod
        run = trial.run_of(latest)
        with trial.lock:
            last = trial.runs.get(pod_name, (None, 0))[0]
        if last is not None and last != run:
            if last == run - 1 and _has_current_run(latest, trial.container_of(latest)):
                text = self._read_log(trial, pod, previous=True)
                if text is not None:
                    self._feed_new(trial, pod_name, last, parser, text, final=True)
            else:
                log.info("trial %s: pod %s: runs %s to %s of its container were not read", trial.name, pod_name,
                         last, run - 1)
            if parser is not None:
                self._flush(trial, parser, pod_name)
                parser = trial.parser()
        text = self._read_log(trial, pod, previous=False)
        if text is not None:
            self._feed_new(trial, pod_name, run, parser, text, final=final)
        return parser

    def _read_log(self, trial: TrackedTrial, pod: dict[str, Any], *, previous: bool) -> str | None:
        """The log of the pod's primary container (its previous run's with ``previous``); None when it cannot be
        read now; _PodGone once the pod does not exist."""
        from kubernetes.client.exceptions import ApiException

        _batch, core, _custom = self._api.apis()
        pod_name = pod["metadata"]["name"]
        try:
            data = self._api.call("read log", core.read_namespaced_pod_log, pod_name, trial.namespace,
                                  container=trial.container_of(pod), previous=previous or None,
                                  _preload_content=False).data
        except ApiException as exc:
            log.info("trial %s: cannot read the log of pod %s: %s", trial.name, pod_name, api_message(exc))
            if exc.status == 404:
                raise _PodGone from None
            return None
        except KubernetesClusterError:
            raise
        except Exception as exc:  # noqa: BLE001 - the next read or the final one covers it
            log.info("trial %s: log of pod %s: %s", trial.name, pod_name, exc)
            return None
        return data.decode("utf-8", errors="replace")

    def _feed_new(self, trial: TrackedTrial, pod_name: str, run: int, parser: LineParser | None, text: str, *,
                  final: bool) -> None:
        """Feed the part of a run's log ``text`` not read before. Not final: only up to its last newline. A log
        that no longer starts with what was read was rotated by the kubelet, which then serves the new file only:
        all of it is new (what the run wrote between the last read and the rotation cannot be read any more)."""
        if not final:
            text = text[:text.rfind("\n") + 1]
        prior = trial.run_text(pod_name, run)
        partial = prior[prior.rfind("\n") + 1:]  # a line read in part (by a follower)
        restart = not text.startswith(prior)
        if restart:
            log.info("trial %s: the log of pod %s was rotated; reading the new one", trial.name, pod_name)
            new, partial = text, ""
        else:
            new = text[len(prior):]
        if new or final or restart:
            self._feed(trial, pod_name, run, parser, new, partial + new if final else None, restart=restart)

    def close(self) -> None:
        """Forget the polled pods (the poller ends with the API's stop event) and end the followed streams."""
        with self._polled_lock:
            self._polled.clear()
            streams = list(self._streams_open)
        for resp in streams:
            shut_down(resp)

    def _follow(self, trial: TrackedTrial, pod: dict[str, Any]) -> None:
        """Stream a running pod's log into the trial's metrics, run after run of its container, until the pod is done
        (reconnecting if cut)."""
        _batch, core, _custom = self._api.apis()
        pod_name = pod["metadata"]["name"]
        parser, parsed_run, attempts = trial.parser(), -1, 0
        try:
            while attempts < 5:
                run = trial.run_of(self._pod_of(trial, pod_name) or pod)
                if run != parsed_run:
                    if parsed_run >= 0:
                        self._flush(trial, parser, pod_name)
                    parser, parsed_run = trial.parser(), run
                seen, received, decoder = trial.run_size(pod_name, run), 0, _decoder()
                try:
                    resp = core.read_namespaced_pod_log(pod_name, trial.namespace, container=trial.container_of(pod),
                                                        follow=True, _preload_content=False)
                    with self._polled_lock:
                        self._streams_open.add(resp)
                    try:
                        if self._api.stop.is_set():  # closed while the request was made
                            return
                        for chunk in resp.stream(4096):
                            piece = decoder.decode(chunk)
                            before, received = received, received + len(piece)
                            if received > seen:  # after a reconnect the run's log starts again from its beginning
                                if not self._feed(trial, pod_name, run, parser, piece[max(seen - before, 0):],
                                                  live=True):
                                    return  # the final read has taken over
                                seen = received
                    finally:
                        with self._polled_lock:
                            self._streams_open.discard(resp)
                        resp.release_conn()
                except Exception as exc:  # noqa: BLE001 - reconnect; the final read covers what is missed
                    if trial.killed or trial.drained or self._api.stop.is_set():
                        return
                    attempts += 1
                    log.info("log of pod %s: %s; reconnecting", pod_name, exc)
                    time.sleep(0.5)
                    continue
                attempts = 0
                if not self._next_run(trial, pod_name, run):
                    break
            else:
                return  # the stream kept failing: the final read takes what was not read
            with trial.lock:
                if trial.drained:
                    return
                trial.complete.add(pod_name)
            self._flush(trial, parser, pod_name)
        finally:
            assert self._streams is not None
            self._streams.release()

    def _next_run(self, trial: TrackedTrial, pod_name: str, run: int) -> bool:
        """After a run's log ended: True once the container runs again, False when no run is coming (the pod is done
        or gone, the trial is ending)."""
        while not self._api.stop.wait(NEXT_RUN_POLL_SECONDS):
            pod = self._pod_of(trial, pod_name)
            if pod is None or trial.drained or trial.killed:
                return False
            if trial.run_of(pod) > run and _has_current_run(pod, trial.container_of(pod)):
                return True  # (a short run may already have ended, even the pod with it)
            if trial.finishing or pod["metadata"].get("deletionTimestamp") or \
                    (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return False
        return False

    def _feed(self, trial: TrackedTrial, pod_name: str, run: int, parser: LineParser | None, text: str,
              parse: str | None = None, *, live: bool = False, restart: bool = False) -> bool:
        """Keep ``text`` newly read from that run of the pod (for ``katibx logs``; ``restart``: the run's text
        starts over with it), parse ``parse`` (default: ``text``), queue the metrics. ``live`` (a follower): refused,
        False, once the final read has begun."""
        if not trial.add_text(pod_name, run, text, unless_drained=live, restart=restart):
            return False
        if parser is None:
            return True
        logs: list[MetricLog] = []
        for line in (text if parse is None else parse).splitlines(keepends=True):
            try:
                logs.extend(parser.feed(line))
            except MetricsFormatError as exc:
                trial.errors.append(f"pod {pod_name}: {exc}")
        if logs:
            self._events.put(TrialMetrics(trial.name, logs))
        return True

    def _flush(self, trial: TrackedTrial, parser: LineParser, pod_name: str) -> None:
        """Parse a last log line without a newline."""
        try:
            logs = parser.flush()
        except MetricsFormatError as exc:
            trial.errors.append(f"pod {pod_name}: {exc}")
            return
        if logs:
            self._events.put(TrialMetrics(trial.name, logs))

    def read_remaining(self, trial: TrackedTrial, pods: list[dict[str, Any]]) -> None:
        """Once the trial ended, read what followers did not of every primary pod's log (all of it if unfollowed).

        ``pods`` are the trial's pods as watched; when none were seen they are listed.
        """

        _batch, core, _custom = self._api.apis()
        if not pods:
            listing = json_body(self._api.call("list pods", core.list_namespaced_pod, trial.namespace,
                                               label_selector=trial.selector, _preload_content=False))
            pods = listing.get("items") or []
        deadline = time.monotonic() + LOG_DRAIN_SECONDS
        with trial.lock:  # no follower starts once the trial is finishing
            followers = list(trial.followers.values())
        for follower in followers:
            follower.join(max(deadline - time.monotonic(), 0))
        with trial.poll_lock, trial.lock:
            trial.drained = True
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            if pod_name in trial.complete or not trial.is_primary(pod):
                continue
            parser = trial.parser() if trial.stdout else None
            try:
                parser = self._read_runs(trial, pod, parser, final=True)
            except _PodGone:
                continue
            if parser is not None:
                self._flush(trial, parser, pod_name)
            if trial.file_parser is not None:
                run = trial.run_of(self._pod_of(trial, pod_name) or pod)
                self._parse_file(trial, pod_name, run, trial.file_parser(), trial.run_text(pod_name, run))

    def _parse_file(self, trial: TrackedTrial, pod_name: str, run: int, parser: LineParser, log_text: str) -> None:
        """Queue the metrics of the file the wrapped command printed at the end of the pod's log."""
        section = file_section(log_text, trial.name)
        if section is None:
            log.info("trial %s: pod %s printed no metrics file (the container did not end normally)",
                     trial.name, pod_name)
            return
        self._feed(trial, pod_name, run, parser, "", section)
        self._flush(trial, parser, pod_name)


def write_log(trial: TrackedTrial) -> None:
    """The primary pods' logs as the trial's stdout.log (what ``katibx logs`` shows)."""
    with trial.lock:
        pods = list(trial.texts)
    texts = {pod: trial.pod_text(pod) for pod in pods}
    if not texts:
        return
    parts = [texts[p] for p in sorted(texts)] if len(texts) == 1 else [
        f"==> pod {p} <==\n{texts[p]}" for p in sorted(texts)]
    try:
        (trial.trial_dir / STDOUT_LOG).write_text("".join(parts), encoding="utf-8")
    except OSError as exc:
        log.warning("trial %s: cannot write its log: %s", trial.name, exc)


def read_pod_logs(api: KubeApi, handle: dict[str, Any]) -> str:
    """The current logs of a trial's pods, from its stored handle (for ``katibx logs`` while it runs)."""
    from kubernetes.client.exceptions import ApiException

    _batch, core, _custom = api.apis()
    namespace, name = str(handle.get("namespace") or "default"), str(handle.get("name"))
    selector = pod_selector({"kind": handle.get("kind"), "spec": {"template": {}}}, name)
    try:
        pods = json_body(api.call("list pods", core.list_namespaced_pod, namespace, label_selector=selector,
                                  _preload_content=False)).get("items") or []
        texts = [(p["metadata"]["name"], api.call("read log", core.read_namespaced_pod_log, p["metadata"]["name"],
                                                  namespace, _preload_content=False).data.decode(errors="replace"))
                 for p in pods]
    except ApiException as exc:
        raise KubernetesClusterError(f"cannot read the pods of {name}: {api_message(exc)}") from None
    if len(texts) == 1:
        return texts[0][1]
    return "".join(f"==> pod {pod} <==\n{text}" for pod, text in sorted(texts))


class _PodGone(Exception):
    """The pod whose log was asked for no longer exists."""


def _has_current_run(pod: dict[str, Any], container: str | None) -> bool:
    """Whether the container has a run of its own now (running, or terminated for good), so that its previous log
    is the run before it; while it waits to restart, the API serves the run that ended as both."""
    state = _container_state(pod, container)
    return "running" in state or "terminated" in state


def _container_state(pod: dict[str, Any], container: str | None) -> dict[str, Any]:
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    name = container if container in names else (names[0] if names else None)
    for entry in (pod.get("status") or {}).get("containerStatuses") or []:
        if entry.get("name") == name:
            return dict(entry.get("state") or {})
    return {}


def _decoder() -> Any:
    """An incremental UTF-8 decoder that replaces bad bytes."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace")
