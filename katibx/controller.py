"""The experiment controller: Katib's reconcile loop, driven by store state so a crash at any moment loses nothing.

Each step checks the completion rules, asks the search algorithm for trials up to ``parallelTrialCount`` and
starts them, then waits for the backend's events. The trials themselves live in a :class:`TrialBook` and move
through a :class:`TrialLifecycle`, which commits to the store before it acts (starting or stopping a worker),
so a restarted controller finds every trial the previous one created and never creates one twice.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from typing import Any, Callable, Iterator

from katibx.backend import Backend, TrialExited, TrialMetrics
from katibx.lease import ExperimentLease, LeaseLost
from katibx.preparation import PreparedExperiment, prepare
from katibx.search_space import SearchSpace
from katibx.spec import Experiment
from katibx.status import (
    FAILED,
    REASON_RESTARTING,
    REASON_RUNNING,
    REASON_SUGGESTION_END,
    REASON_TIME_LIMIT,
    RESTARTING,
    RUNNING,
    SUCCEEDED,
    completion,
    is_completed,
    set_condition,
)
from katibx.store import ExperimentRecord, Store, StoreFault
from katibx.trial import EXPERIMENT_LABEL, TRIAL_REASONS, TrialState
from katibx.trial_book import TrialBook
from katibx.trial_lifecycle import TrialLifecycle

log = logging.getLogger(__name__)

# Called after every change the store has taken, with the experiment and its trial book (counts, the optimal trial,
# the active trials; ``book.history()`` reads every trial, which a listener called often should not need).
TrialListener = Callable[[ExperimentRecord, TrialBook], None]


class Controller:
    """Runs one experiment to completion on a backend.

    ``prepared`` holds the plugins :func:`katibx.preparation.prepare` built (prepared here when not given);
    ``kill_running_on_completion`` ends trials that are still running once the experiment completes (Katib lets
    them finish); ``listener`` is called after every change, for progress displays; ``lease`` is the experiment's
    controller lease (:mod:`katibx.lease`), checked at every step: the run stops once it is lost.

    SIGTERM and SIGHUP end a run like Ctrl-C (KeyboardInterrupt: running trials stopped, the store consistent) where
    the program left them at their default action.
    """

    def __init__(
        self,
        store: Store,
        record: ExperimentRecord,
        backend: Backend,
        *,
        prepared: PreparedExperiment | None = None,
        function: Callable[..., Any] | None = None,
        kill_running_on_completion: bool = False,
        listener: TrialListener | None = None,
        lease: ExperimentLease | None = None,
        poll_timeout: float = 0.5,
        deadline: float | None = None,
    ) -> None:
        """``deadline`` (``time.monotonic()``): then the experiment succeeds with what it has, starting no more
        trials; running ones finish (or are killed with ``kill_running_on_completion``)."""
        self.store = store
        self.deadline = deadline
        self.record = record
        self.backend = backend
        self.kill_running_on_completion = kill_running_on_completion
        self.listener = listener
        self.lease = lease
        self.poll_timeout = poll_timeout
        prepared = prepared or prepare(record.experiment, mlflow=False)  # (its runner chose the logging)
        self.algorithm = prepared.algorithm
        self.book = TrialBook(store, record)
        record.optimal_trial_id = self.book.best.id if self.book.best else 0  # stored with the experiment at start
        # A listener reads each change back from the store as it is made: with one, a trial's end is written at once.
        self.lifecycle = TrialLifecycle(store, record, self.book, backend, prepared.early_stopping, function,
                                        self._notify, defer_ends=listener is None)
        self._space = SearchSpace.from_experiment(record.experiment)
        self._checked_at: tuple[int, int] | None = None  # (completed, failures) when completion was last checked

    @property
    def experiment(self) -> Experiment:
        return self.record.experiment

    def run(self) -> ExperimentRecord:
        """Reconcile until the experiment is completed and no trial is active; returns the final record."""
        with _stop_signals_interrupt():
            return self._run()

    def _run(self) -> ExperimentRecord:
        self._check_lease()
        self.lifecycle.recover()
        self._mark_running()
        try:
            while True:
                _check_stop_signals()
                self._check_lease()
                self._reconcile()
                if is_completed(self.record.conditions) and not self.book.active():
                    break
                self.lifecycle.save_ended()  # before waiting: what has ended is in the store while the run waits
                for event in self.backend.poll(self.poll_timeout):
                    if not isinstance(event, (TrialMetrics, TrialExited)):
                        log.warning("backend %s reported an event katibx does not know: %r", self.backend.name, event)
                        continue
                    if isinstance(event, TrialExited):
                        self.lifecycle.finish(event)  # its last metrics are committed with its end
                    else:
                        self.lifecycle.observe(event.trial_name, event.logs)
                self.lifecycle.save_started()
            self.lifecycle.save_ended()
        except LeaseLost:  # another controller has the experiment now, and runs again what was not stored
            self.lifecycle.drop_ended()
            raise
        finally:
            try:
                self._save_ended()
            finally:
                self.backend.close()
        return self.record

    def _save_ended(self) -> None:
        """Write the trial ends not yet written as the run stops; where the store fails (the fault that stops the
        run, as a rule, and said as such), a resume runs those trials again."""
        try:
            self.lifecycle.save_ended()
        except StoreFault as exc:
            log.debug("the ends of trials that finished as the run stopped were not saved: %s", exc)

    def _check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    def _reconcile(self) -> None:
        """Check completion, then create and start trials up to parallelTrialCount."""
        if not is_completed(self.record.conditions):
            self._check_completion()
        if not is_completed(self.record.conditions) and self.deadline is not None and time.monotonic() >= self.deadline:
            self._complete(SUCCEEDED, REASON_TIME_LIMIT, "Experiment has succeeded because its time limit was reached")
        if not is_completed(self.record.conditions):
            self._create_trials()
        self.lifecycle.enforce_stops()
        for trial in self.book.active():
            if trial.state is TrialState.CREATED and not self.lifecycle.is_started(trial):
                self.lifecycle.start(trial)

    def _create_trials(self) -> None:
        spec = self.experiment.spec
        counts = self.book.counts()
        wanted = (spec.parallel_trial_count or 1) - counts.active
        if spec.max_trial_count is not None:
            wanted = min(wanted, spec.max_trial_count - counts.trials)
        if wanted <= 0:
            return
        suggestions = self.algorithm.suggest(self.book.suggestion_history(), wanted)[:wanted]
        if not suggestions:
            if counts.active == 0:
                self._complete(SUCCEEDED, REASON_SUGGESTION_END,
                               "Experiment has succeeded because the search algorithm has no more suggestions")
            return
        new = [self.book.new_trial(self._space.cast(s.assignments), {EXPERIMENT_LABEL: self.experiment.name, **s.labels},
                                   s.name, self.experiment.name, len(self.book) + i)
               for i, s in enumerate(suggestions)]
        with self.lifecycle.writing_ended() as ended:  # written with the new trials: one commit
            self.store.add_trials(self.record.id, new, ended, rename=self.book.rename)
        self.book.add(new)
        self._notify()

    # experiment conditions ----------------------------------------------------------------------
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
        return completion(self.experiment, self.book.counts(), self.book.best) is None and (
            spec.max_trial_count is None or spec.max_trial_count > len(self.book)
        )

    def _check_completion(self) -> None:
        counts = self.book.counts()
        checked_at = (counts.completed, counts.failures)
        if checked_at == self._checked_at:  # the rules only change their answer when a trial finishes
            return
        self._checked_at = checked_at
        done = completion(self.experiment, counts, self.book.best)
        if done is not None:
            self._complete(*done)

    def _complete(self, ctype: str, reason: str, message: str) -> None:
        set_condition(self.record.conditions, RUNNING, False, reason, message)
        set_condition(self.record.conditions, ctype, True, reason, message)
        self.record.completed = time.time()
        self._save_experiment()
        log.info("experiment %s %s: %s", self.experiment.name, ctype, message)
        for trial in self.book.active():
            if trial.state is TrialState.CREATED:
                self.lifecycle.set_state(trial, TrialState.KILLED, TRIAL_REASONS[TrialState.KILLED],
                                         "Experiment completed before the trial started")
            elif self.kill_running_on_completion:
                self.lifecycle.stop(trial, TrialState.KILLED)

    def _save_experiment(self) -> None:
        self.lifecycle.save_ended()  # the experiment's state never runs ahead of its trials'
        self.store.save_experiment(self.record)
        self._notify()

    def _notify(self) -> None:
        if self.listener is not None:
            self.listener(self.record, self.book)


def combined_listener(*listeners: TrialListener | None) -> TrialListener | None:
    """One controller listener calling each of ``listeners`` that is set, in order (None when none is)."""
    chosen = [listener for listener in listeners if listener is not None]
    if len(chosen) <= 1:
        return chosen[0] if chosen else None

    def each(record: ExperimentRecord, book: TrialBook) -> None:
        for listener in chosen:
            listener(record, book)

    return each


# The stop signals (Ctrl-C, SIGTERM, SIGHUP) delivered while a run had their handlers: the run stops at its next step
# even where the KeyboardInterrupt was caught in a trial's code (one running on the controller's thread).
_STOP_SIGNALS: list[int] = []


def _interrupt(signum: int, _frame: object) -> None:
    _STOP_SIGNALS.append(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _check_stop_signals() -> None:
    if _STOP_SIGNALS:
        raise KeyboardInterrupt(signal.Signals(_STOP_SIGNALS[0]).name)


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the block, where they still have their default action (which
    would end the process without stopping its trials), and so does Ctrl-C, which is also remembered (see
    _STOP_SIGNALS); the handlers are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL),
                            (getattr(signal, "SIGHUP", None), signal.SIG_DFL)):
        if signum is not None and signal.getsignal(signum) is default:
            previous[signum] = signal.signal(signum, _interrupt)
    if previous:
        _STOP_SIGNALS.clear()  # (this run's own; one inside a trial shares the outer run's)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
