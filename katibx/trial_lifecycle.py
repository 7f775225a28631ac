"""A trial's life on a backend: start, observe its metrics, finish with Katib's state and reason, stop on request.

Every step commits to the store before it acts (starting or stopping a worker), so a controller that restarts
after a crash finds each trial where the last one left it (:meth:`TrialLifecycle.recover`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from katibx.backend import Backend, TrialExited, TrialJob, TrialStartError, workspace
from katibx.early_stopping import EarlyStoppingAlgorithm
from katibx.metrics import MetricLog, non_finite
from katibx.objective import Objective
from katibx.observation_sampling import ObservationSampler
from katibx.status import is_completed
from katibx.store import ExperimentRecord, Store, TrialEnd
from katibx.trial import CHECKPOINT_FROM_LABEL, TRIAL_REASONS, TrialRecord, TrialState
from katibx.trial_book import TrialBook
from katibx.trial_dir import CHECKPOINT_DIR

log = logging.getLogger(__name__)
# How long a trial early stopping asked to stop (katibx.should_prune) has to end by itself before it is killed.
STOP_GRACE_SECONDS = 30.0


class TrialLifecycle:
    """Moves the trials of one experiment through Created -> Running -> a terminal state on ``backend``.

    ``notify`` is called after every change the store has taken (progress displays). ``defer_ends``: a trial's end
    is written with the next trials the controller creates (one commit), or before anything else is written or done;
    False writes it at once (a listener that reads each finished trial back from the store needs that)."""

    def __init__(self, store: Store, record: ExperimentRecord, book: TrialBook, backend: Backend,
                 early_stopping: EarlyStoppingAlgorithm | None, function: Callable[..., Any] | None,
                 notify: Callable[[], None], defer_ends: bool = True) -> None:
        self.store, self.record, self.book, self.backend = store, record, book, backend
        self.early_stopping = early_stopping
        self.function = function
        self.notify = notify
        self.objective = Objective(record.experiment)
        self._observations: dict[str, ObservationSampler] = {}  # of the trials this controller started or attached
        self._started: set[str] = set()
        self._stopping: dict[str, TrialState] = {}  # trial -> the state it ends in once its worker has stopped
        self._stop_by: dict[str, float] = {}  # trial asked to stop -> when it is killed if it has not ended
        # Started trials whose backend keeps no handle (nothing of theirs can outlive this process), not yet stored
        # as Running: written with their next change, or by save_started once the controller has waited for events.
        self._unsaved: dict[str, TrialRecord] = {}
        # Trials that have ended, their end not yet written: saved with the next trials the controller creates (one
        # commit), or by save_ended, which the controller calls before it waits, completes or stops.
        self._ended: list[TrialEnd] = []
        self._defer_ends = defer_ends
        self._trials_dir = store.experiment_dir(record)  # each trial's folder is in it
        self._workdir = Path(record.workdir)
        if early_stopping is not None:
            for trial in store.trials(record.id):  # the store's history is the early-stopping state too
                if trial.state.is_terminal:
                    early_stopping.observe(trial, store.observation_logs(trial.id))

    def is_started(self, trial: TrialRecord) -> bool:
        return trial.name in self._started

    # start -------------------------------------------------------------------------------------
    def recover(self) -> None:
        """Trials a previous controller left running are re-attached when the backend can (their metrics are collected
        again from the start), else stopped and run again from scratch, under the same name."""
        for trial in self.book.active():
            handle = self.store.trial_handle(trial)
            self.store.clear_observations(trial.id)
            if handle and trial.state is TrialState.RUNNING and self.backend.attach(self._job(trial), handle):
                log.info("trial %s is still running; re-attached to it", trial.name)
                self._started.add(trial.name)
                self._observations[trial.name] = ObservationSampler()
                continue
            if handle:
                self.backend.release(handle)
            if trial.state is TrialState.RUNNING:
                log.info("trial %s was running when the controller stopped; running it again", trial.name)
                self.set_state(trial, TrialState.CREATED, "TrialCreated", "Trial is re-run after a controller restart")

    def start(self, trial: TrialRecord) -> None:
        """Start the trial, unless the backend says what it asks for is taken (it stays Created until then)."""
        job = self._job(trial)
        if not self.backend.can_start(job):
            return
        self.save_ended()  # (what has ended is stored before anything starts)
        self._started.add(trial.name)
        self._observations[trial.name] = ObservationSampler()
        trial.start_time = time.time()
        try:
            with workspace(job.trial_dir):  # a full disk stops the run, whichever backend met it
                self._copy_checkpoint(trial, job.trial_dir / CHECKPOINT_DIR)
                handle = self.backend.start(job)
        except TrialStartError as exc:
            self.set_state(trial, TrialState.FAILED, "TrialFailed. Job reason: StartError", str(exc))
            return
        self.book.move(trial, TrialState.RUNNING, TRIAL_REASONS[TrialState.RUNNING], "Trial is running")
        if handle:  # committed at once: a controller that restarts finds the worker by it
            self.store.save_trial(trial, handle)
        else:  # a trial that ends before the controller next waits is stored once, when it ends
            self._unsaved[trial.name] = trial
        self.notify()

    def save_started(self) -> None:
        """Store the Running state of the trials started without a handle that are still running (the controller
        calls it after each wait for events: a trial shows Running in the store from then on)."""
        for trial in list(self._unsaved.values()):
            self._save_started(trial)

    def _save_started(self, trial: TrialRecord) -> None:
        if self._unsaved.pop(trial.name, None) is not None and trial.state is TrialState.RUNNING:
            self.store.save_trial(trial)

    def _job(self, trial: TrialRecord) -> TrialJob:
        return TrialJob(experiment=self.record.experiment, trial=trial, workdir=self._workdir,
                        trial_dir=self._trials_dir / trial.name, function=self.function)

    def _copy_checkpoint(self, trial: TrialRecord, target: Path) -> None:
        """Replace ``target`` with a copy of the checkpoint directory of the trial named by CHECKPOINT_FROM_LABEL."""
        source = trial.labels.get(CHECKPOINT_FROM_LABEL)
        if not source:
            return
        if source == trial.name or self.store.trial_named(self.record.id, source) is None:
            raise TrialStartError(f"label {CHECKPOINT_FROM_LABEL}: no other trial {source!r} in this experiment")
        origin = self.store.trial_dir(self.record, source) / CHECKPOINT_DIR
        try:
            with workspace(target.parent):  # (a full disk stops the run; other faults fail this trial)
                if target.exists():
                    shutil.rmtree(target)
                if origin.is_dir():
                    shutil.copytree(origin, target, symlinks=True)
                else:  # the parent saved nothing
                    target.mkdir(parents=True)
        except OSError as exc:
            raise TrialStartError(f"cannot copy the checkpoint of trial {source!r}: {exc}") from None

    # run ---------------------------------------------------------------------------------------
    def observe(self, trial_name: str, logs: list[MetricLog]) -> None:
        """Keep a running trial's new metric logs (stamped with their arrival time when they carry none) and ask
        early stopping whether it should go on."""
        trial = self.book.get(trial_name)
        if trial is None or not logs:
            return
        observations = self._observations.setdefault(trial_name, ObservationSampler())
        self._save_started(trial)  # a trial's metrics are stored after its Running state
        self.store.add_observations(trial.id, observations.add(_stamped(logs)))
        if (self.early_stopping is not None and trial.state is TrialState.RUNNING and trial.name not in self._stopping
                and not is_completed(self.record.conditions)
                and self.early_stopping.should_stop(trial, observations.history())):
            log.info("early stopping trial %s", trial.name)
            self.stop(trial, TrialState.EARLY_STOPPED)

    def stop(self, trial: TrialRecord, state: TrialState) -> None:
        """Stop a running trial's worker; the trial ends in ``state`` (EarlyStopped or Killed) when it has stopped.
        Early stopping first asks the trial, which may end by itself within :data:`STOP_GRACE_SECONDS`."""
        self.save_ended()  # (the ends the decision to stop it may rest on are stored first)
        self._stopping[trial.name] = state
        if state is TrialState.EARLY_STOPPED and self.backend.ask_to_stop(trial.name):
            self._stop_by[trial.name] = time.monotonic() + STOP_GRACE_SECONDS
        else:
            self.backend.kill(trial.name)

    def enforce_stops(self) -> None:
        """Kill the trials asked to stop that have not ended within the grace period."""
        now = time.monotonic()
        for name, deadline in list(self._stop_by.items()):
            trial = self.book.get(name)
            if trial is None or trial.state.is_terminal:
                del self._stop_by[name]
            elif now >= deadline:
                del self._stop_by[name]
                log.info("trial %s did not stop within %.0f s of being asked: killing it", name, STOP_GRACE_SECONDS)
                self.backend.kill(name)

    # finish ------------------------------------------------------------------------------------
    def finish(self, event: TrialExited) -> None:
        """A trial's worker ended: its observation and Katib's state, reason and message."""
        trial = self.book.get(event.trial_name)
        if trial is None or trial.state.is_terminal:
            return
        observations = self._observations.pop(trial.name, None) or ObservationSampler()
        logs = observations.add(_stamped(event.logs)) + observations.unstored_final()
        trial.observation = observations.summaries
        trial.completion_time = time.time()
        state, reason, message = self._outcome(trial, event)
        self.set_state(trial, state, reason, message, logs, defer=self._defer_ends)
        if self.early_stopping is not None:
            self.early_stopping.observe(trial, observations.history())

    def _outcome(self, trial: TrialRecord, event: TrialExited) -> tuple[TrialState, str, str]:
        forced = self._stopping.pop(trial.name, None)
        if forced is TrialState.EARLY_STOPPED:
            return forced, TRIAL_REASONS[forced], "Trial is early stopped"
        if forced is not None:
            return forced, TRIAL_REASONS[forced], f"Trial was stopped by the controller ({event.message})"
        if not event.succeeded:
            return TrialState.FAILED, f"TrialFailed. Job reason: {event.reason}", f"Trial has failed: {event.message}"
        if self.objective.metric in trial.observation:
            unusable = [f"{name}={self.objective.raw(trial, name)}" for name, _ in self.objective.objectives
                        if non_finite(self.objective.raw(trial, name))]
            if unusable:
                return (TrialState.METRICS_UNAVAILABLE, TRIAL_REASONS[TrialState.METRICS_UNAVAILABLE],
                        f"Metrics are not available: objective value is not a finite number ({', '.join(unusable)})")
            return TrialState.SUCCEEDED, f"TrialSucceeded. Job reason: {event.reason}", "Trial has succeeded"
        return (TrialState.METRICS_UNAVAILABLE, TRIAL_REASONS[TrialState.METRICS_UNAVAILABLE],
                f"Metrics are not available: objective metric {self.objective.metric!r} was not reported")

    def set_state(self, trial: TrialRecord, state: TrialState, reason: str, message: str,
                  logs: list[MetricLog] | None = None, *, defer: bool = False) -> None:
        """Move the trial and commit it, with its last metric ``logs`` and, when it has become the optimal trial,
        the experiment's optimal trial (one transaction). ``defer``: a trial whose worker has ended is written
        later (see :meth:`writing_ended`); nothing acts on it before."""
        self._unsaved.pop(trial.name, None)  # written now
        if state.is_terminal:
            self._started.discard(trial.name)
            if trial.completion_time is None:
                trial.completion_time = time.time()
        optimal = self.book.move(trial, state, reason, message)
        if optimal:
            self.record.optimal_trial_id = trial.id
        if defer:
            self._ended.append(TrialEnd(trial, logs, self.record if optimal else None))
            self.book.unwritten(trial)
            return
        self.save_ended()
        self.store.save_trial(trial, logs=logs, optimal_of=self.record if optimal else None)
        self.notify()

    @contextlib.contextmanager
    def writing_ended(self) -> Iterator[list[TrialEnd]]:
        """The ends not yet written, for the block to write (with the trials it adds: one commit); put back to be
        written later when the block fails."""
        ended, self._ended = self._ended, []
        try:
            yield ended
        except BaseException:
            self._ended[:0] = ended
            raise
        self.book.written(end.trial for end in ended)

    def drop_ended(self) -> None:
        """Forget the ends not yet written (another controller has the experiment and runs those trials again)."""
        self._ended.clear()

    def save_ended(self) -> None:
        """Write the ends not yet written."""
        if not self._ended:
            return
        with self.writing_ended() as ended:
            self.store.add_trials(self.record.id, [], ended)
        self.notify()


def _stamped(logs: list[MetricLog]) -> list[MetricLog]:
    """Metric logs stamped with their arrival time where they carry none."""
    now = time.time()
    return [log if log.timestamp is not None else MetricLog(log.name, log.value, now) for log in logs]
