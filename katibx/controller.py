"""The experiment controller: Katib's reconcile loop, driven by store state so a crash at any moment loses nothing.

Order of work is always: commit to the store, then act (start or stop a worker), so a restarted
controller finds every trial the previous one created and never creates one twice.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import string
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from katibx.algorithms.base import SearchAlgorithm
from katibx.algorithms.early_stopping import EarlyStoppingAlgorithm
from katibx import plugins
from katibx.collectors import MetricLog
from katibx.search_space import SearchSpace
from katibx.spec import Experiment
from katibx.status import (
    FAILED,
    REASON_RESTARTING,
    REASON_RUNNING,
    REASON_SUGGESTION_END,
    RESTARTING,
    RUNNING,
    SUCCEEDED,
    TrialCounts,
    completion,
    is_completed,
    set_condition,
)
from katibx.store import ExperimentRecord, Store
from katibx.report import CHECKPOINT_DIR
from katibx.trial import CHECKPOINT_FROM_LABEL, TRIAL_REASONS, TrialRecord, TrialState, summarize
from katibx.workers.base import Backend, TrialExited, TrialJob, TrialMetrics, TrialStartError

log = logging.getLogger(__name__)

TrialListener = Callable[[ExperimentRecord, list[TrialRecord]], None]
_SUFFIX = string.ascii_lowercase + string.digits


def create_algorithm(experiment: Experiment) -> SearchAlgorithm:
    """Instantiate the experiment's search-algorithm plugin (validates its settings)."""
    assert experiment.spec.algorithm and experiment.spec.algorithm.algorithm_name
    cls = plugins.load(plugins.ALGORITHMS, experiment.spec.algorithm.algorithm_name)
    return cls(experiment, SearchSpace.from_experiment(experiment))


def create_early_stopping(experiment: Experiment) -> EarlyStoppingAlgorithm | None:
    """Instantiate the experiment's early-stopping plugin, if it has one (validates its settings)."""
    spec = experiment.spec.early_stopping
    if spec is None or not spec.algorithm_name:
        return None
    return plugins.load(plugins.EARLY_STOPPING, spec.algorithm_name)(experiment)


class Controller:
    """Runs one experiment to completion on a backend.

    ``kill_running_on_completion`` ends trials that are still running once the experiment completes
    (Katib lets them finish); ``listener`` is called after every change, for progress displays.
    """

    def __init__(
        self,
        store: Store,
        record: ExperimentRecord,
        backend: Backend,
        *,
        function: Callable[..., Any] | None = None,
        kill_running_on_completion: bool = False,
        listener: TrialListener | None = None,
        poll_timeout: float = 0.5,
    ) -> None:
        self.store = store
        self.record = record
        self.backend = backend
        self.function = function
        self.kill_running_on_completion = kill_running_on_completion
        self.listener = listener
        self.poll_timeout = poll_timeout
        self.algorithm = create_algorithm(record.experiment)
        self.early_stopping = create_early_stopping(record.experiment)
        self.trials: list[TrialRecord] = store.trials(record.id)
        if self.early_stopping is not None:
            for trial in self.trials:  # the store's history is the early-stopping state too
                if trial.state.is_terminal:
                    self.early_stopping.observe(trial, store.observation_logs(trial.id))
        self._by_name = {t.name: t for t in self.trials}
        # Kept in step with every state change, so a step of the loop costs the same at trial 10 and 10,000.
        self._states: Counter[TrialState] = Counter(t.state for t in self.trials)
        self._active_trials: dict[str, TrialRecord] = {t.name: t for t in self.trials if t.state.is_active}
        self._checked_at: tuple[int, int] | None = None  # (completed, failures) when completion was last checked
        self._logs: dict[str, list[tuple[float, str, str]]] = {}
        self._started: set[str] = set()
        self._killing: dict[str, TrialState] = {}

    @property
    def experiment(self) -> Experiment:
        return self.record.experiment

    # main loop ----------------------------------------------------------------------------
    def run(self) -> ExperimentRecord:
        """Reconcile until the experiment is completed and no trial is active; returns the final record."""
        self._recover()
        self._mark_running()
        try:
            while True:
                self._reconcile()
                if is_completed(self.record.conditions) and not self._active():
                    break
                for event in self.backend.poll(self.poll_timeout):
                    if isinstance(event, TrialMetrics):
                        self._observe(event.trial_name, event.logs)
                    elif isinstance(event, TrialExited):
                        self._observe(event.trial_name, event.logs)
                        self._finish(event)
        finally:
            self.backend.close()
        return self.record

    def _active(self) -> list[TrialRecord]:
        return list(self._active_trials.values())

    def _counts(self) -> TrialCounts:
        return TrialCounts.from_states(self._states)

    def _recover(self) -> None:
        """Trials a previous controller left running are re-attached when the backend can (their metrics are collected
        again from the start), else stopped and run again from scratch, under the same name."""
        for trial in self._active():
            handle = self.store.trial_handle(trial)
            self.store.clear_observations(trial.id)
            if handle and trial.state is TrialState.RUNNING and self.backend.attach(self._job(trial), handle):
                log.info("trial %s is still running; re-attached to it", trial.name)
                self._started.add(trial.name)
                self._logs[trial.name] = []
                continue
            if handle:
                self.backend.release(handle)
            if trial.state is TrialState.RUNNING:
                log.info("trial %s was running when the controller stopped; running it again", trial.name)
                self._set_state(trial, TrialState.CREATED, "TrialCreated", "Trial is re-run after a controller restart")

    def _mark_running(self) -> None:
        conditions = self.record.conditions
        if is_completed(conditions) and self._can_restart():
            set_condition(conditions, RESTARTING, True, REASON_RESTARTING, "Experiment is restarting")
            for ctype in (SUCCEEDED, FAILED):
                conditions[:] = [c for c in conditions if c["type"] != ctype]
            self.record.completed = None
        if not is_completed(conditions):
            set_condition(conditions, RUNNING, True, REASON_RUNNING, "Experiment is running")
            if any(c["type"] == RESTARTING and c["status"] == "True" for c in conditions):
                set_condition(conditions, RESTARTING, False, REASON_RUNNING, "Experiment has restarted")
        self._save_experiment()

    def _can_restart(self) -> bool:
        spec = self.experiment.spec
        return completion(self.experiment, self.trials, self._counts()) is None and (
            spec.max_trial_count is None or spec.max_trial_count > len(self.trials)
        )

    def _reconcile(self) -> None:
        """Check completion, then create and start trials up to parallelTrialCount."""
        if not is_completed(self.record.conditions):
            self._check_completion()
        if not is_completed(self.record.conditions):
            self._create_trials()
        for trial in self._active():
            if trial.state is TrialState.CREATED and trial.name not in self._started:
                self._start(trial)

    def _create_trials(self) -> None:
        spec = self.experiment.spec
        counts = self._counts()
        wanted = (spec.parallel_trial_count or 1) - counts.active
        if spec.max_trial_count is not None:
            wanted = min(wanted, spec.max_trial_count - counts.trials)
        if wanted <= 0:
            return
        suggestions = self.algorithm.suggest(list(self.trials), wanted)[:wanted]
        if not suggestions:
            if counts.active == 0:
                self._complete(SUCCEEDED, REASON_SUGGESTION_END, "Experiment has succeeded because the search algorithm has no more suggestions")
            return
        space = SearchSpace.from_experiment(self.experiment)
        new: list[TrialRecord] = []
        for s in suggestions:
            name = s.name or self._trial_name()
            trial = TrialRecord(
                name=name, index=len(self.trials) + len(new), assignments=space.cast(s.assignments),
                labels={"katib.kubeflow.org/experiment": self.experiment.name, **s.labels},
            )
            self._condition(trial, TrialState.CREATED, TRIAL_REASONS[TrialState.CREATED], "Trial is created")
            new.append(trial)
        self.store.add_trials(self.record.id, new)
        for trial in new:
            self.trials.append(trial)
            self._by_name[trial.name] = trial
            self._states[trial.state] += 1
            self._active_trials[trial.name] = trial
        self._notify()

    def _trial_name(self) -> str:
        while True:
            name = f"{self.experiment.name}-" + "".join(secrets.choice(_SUFFIX) for _ in range(8))
            if name not in self._by_name:
                return name

    def _job(self, trial: TrialRecord) -> TrialJob:
        return TrialJob(
            experiment=self.experiment, trial=trial, workdir=Path(self.record.workdir),
            trial_dir=self.store.trial_dir(self.record, trial.name), function=self.function,
        )

    def _start(self, trial: TrialRecord) -> None:
        job = self._job(trial)
        self._started.add(trial.name)
        self._logs[trial.name] = []
        trial.start_time = time.time()
        try:
            self._copy_checkpoint(trial, job.trial_dir / CHECKPOINT_DIR)
            handle = self.backend.start(job)
        except TrialStartError as exc:
            self._set_state(trial, TrialState.FAILED, "TrialFailed. Job reason: StartError", str(exc))
            return
        self._condition(trial, TrialState.RUNNING, TRIAL_REASONS[TrialState.RUNNING], "Trial is running")
        self.store.save_trial(trial, handle)
        self._notify()

    def _copy_checkpoint(self, trial: TrialRecord, target: Path) -> None:
        """Replace ``target`` with a copy of the checkpoint directory of the trial named by CHECKPOINT_FROM_LABEL."""
        source = trial.labels.get(CHECKPOINT_FROM_LABEL)
        if not source:
            return
        if source == trial.name or source not in self._by_name:
            raise TrialStartError(f"label {CHECKPOINT_FROM_LABEL}: no other trial {source!r} in this experiment")
        origin = self.store.trial_dir(self.record, source) / CHECKPOINT_DIR
        try:
            if target.exists():
                shutil.rmtree(target)
            if origin.is_dir():
                shutil.copytree(origin, target, symlinks=True)
            else:  # the parent saved nothing
                target.mkdir(parents=True)
        except OSError as exc:
            raise TrialStartError(f"cannot copy the checkpoint of trial {source!r}: {exc}") from None

    # events -------------------------------------------------------------------------------
    def _observe(self, trial_name: str, logs: list[MetricLog]) -> None:
        trial = self._by_name.get(trial_name)
        if trial is None or not logs:
            return
        now = time.time()
        rows = [(m.timestamp if m.timestamp is not None else now, m.name, m.value) for m in logs]
        self.store.add_observations(trial.id, rows)
        history = self._logs.setdefault(trial_name, [])
        history.extend(rows)
        if (self.early_stopping is not None and trial.state is TrialState.RUNNING and trial.name not in self._killing
                and not is_completed(self.record.conditions) and self.early_stopping.should_stop(trial, history)):
            log.info("early stopping trial %s", trial.name)
            self._killing[trial.name] = TrialState.EARLY_STOPPED
            self.backend.kill(trial.name)

    def _finish(self, event: TrialExited) -> None:
        trial = self._by_name.get(event.trial_name)
        if trial is None or trial.state.is_terminal:
            return
        logs = self._logs.pop(trial.name, [])
        trial.observation = summarize(logs)
        trial.completion_time = time.time()
        forced = self._killing.pop(trial.name, None)
        state: TrialState
        if forced is TrialState.EARLY_STOPPED:
            state, reason, message = forced, TRIAL_REASONS[forced], "Trial is early stopped"
        elif forced is not None:
            state, reason, message = forced, TRIAL_REASONS[forced], f"Trial was stopped by the controller ({event.message})"
        elif event.succeeded:
            metric = self.experiment.spec.objective.objective_metric_name  # type: ignore[union-attr]
            if metric in trial.observation:
                state, reason, message = TrialState.SUCCEEDED, f"TrialSucceeded. Job reason: {event.reason}", "Trial has succeeded"
            else:
                state, reason = TrialState.METRICS_UNAVAILABLE, TRIAL_REASONS[TrialState.METRICS_UNAVAILABLE]
                message = f"Metrics are not available: objective metric {metric!r} was not reported"
        else:
            state, reason, message = TrialState.FAILED, f"TrialFailed. Job reason: {event.reason}", f"Trial has failed: {event.message}"
        self._set_state(trial, state, reason, message)
        if self.early_stopping is not None:
            self.early_stopping.observe(trial, logs)

    def _set_state(self, trial: TrialRecord, state: TrialState, reason: str, message: str) -> None:
        if state.is_terminal and trial.completion_time is None:
            trial.completion_time = time.time()
        self._condition(trial, state, reason, message)
        self.store.save_trial(trial)
        self._notify()

    def _condition(self, trial: TrialRecord, state: TrialState, reason: str, message: str) -> None:
        if trial.name in self._by_name:  # a trial being created is counted once it joins the experiment
            self._states[trial.state] -= 1
            self._states[state] += 1
            if state.is_active:
                self._active_trials[trial.name] = trial
            else:
                self._active_trials.pop(trial.name, None)
        trial.state, trial.reason, trial.message = state, reason, message
        if state is not TrialState.RUNNING:
            for cond in trial.conditions:
                if cond["type"] == TrialState.RUNNING.value:
                    set_condition(trial.conditions, TrialState.RUNNING.value, False, reason, message)
        set_condition(trial.conditions, state.value, True, reason, message)

    # completion ---------------------------------------------------------------------------
    def _check_completion(self) -> None:
        counts = self._counts()
        checked_at = (counts.completed, counts.failures)
        if checked_at == self._checked_at:  # the rules only change their answer when a trial finishes
            return
        self._checked_at = checked_at
        done = completion(self.experiment, self.trials, counts)
        if done is not None:
            self._complete(*done)

    def _complete(self, ctype: str, reason: str, message: str) -> None:
        set_condition(self.record.conditions, RUNNING, False, reason, message)
        set_condition(self.record.conditions, ctype, True, reason, message)
        self.record.completed = time.time()
        self._save_experiment()
        log.info("experiment %s %s: %s", self.experiment.name, ctype, message)
        for trial in self._active():
            if trial.state is TrialState.CREATED:
                self._set_state(trial, TrialState.KILLED, TRIAL_REASONS[TrialState.KILLED], "Experiment completed before the trial started")
            elif self.kill_running_on_completion:
                self._killing[trial.name] = TrialState.KILLED
                self.backend.kill(trial.name)

    def _save_experiment(self) -> None:
        self.store.save_experiment(self.record)
        self._notify()

    def _notify(self) -> None:
        if self.listener is not None:
            self.listener(self.record, self.trials)
