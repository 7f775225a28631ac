"""Function trials on threads of the controller's process (``isolation="none"``): the same results as in worker
processes, metrics reported, returned or printed, pruning, failures with their traceback in the trial's log, a
deadline that abandons a trial, resume, and the settings that need a process of their own refused.

Real threads of this test's process, a real SQLite store."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import wait_until

import katibx
import katibx.workers._thread_trials as thread_trials
from katibx.client import KatibxClient
from katibx.preparation import check_experiment, create_backend
from katibx.store import Store
from katibx.trial import TrialState
from katibx.tuning import TuneError, function_experiment
from katibx.validation import ValidationError

SPACE = {"x": katibx.search.double(-1, 1), "n": katibx.search.int(1, 5)}


def square(p: dict[str, Any]) -> float:
    return p["x"] ** 2 + p["n"]


def where(p: dict[str, Any]) -> dict[str, Any]:
    """Reports the process and thread it runs in."""
    return {"loss": p["x"] ** 2, "pid": os.getpid(), "main": int(threading.current_thread() is threading.main_thread())}


def _tune(tmp_path: Path, name: str, objective: Any, **options: Any) -> Any:
    options = {"max_trial_count": 6, "parallel_trial_count": 2, "store": tmp_path / "katibx.db", "progress": False,
               "objective_metric_name": "loss", "objective_type": "minimize", **options}
    return katibx.tune(name, objective, options.pop("parameters", SPACE), **options)


def test_trials_run_on_threads_of_this_process_with_the_results_of_worker_processes(tmp_path: Path) -> None:
    seeded = {"algorithm_settings": {"random_state": 7}}
    threads = _tune(tmp_path, "threads", square, isolation="none", **seeded)
    processes = _tune(tmp_path, "processes", square, **seeded)
    assert [(t.params, t.values) for t in threads.trials] == [(t.params, t.values) for t in processes.trials]
    assert all(t.state is TrialState.SUCCEEDED for t in threads.trials)
    placed = _tune(tmp_path, "where", where, isolation="none", additional_metric_names=["pid", "main"])
    assert {t.history["pid"][-1] for t in placed.trials} == {os.getpid()}
    assert {t.history["main"][-1] for t in placed.trials} == {0}  # on trial threads, not the controller's
    stored = Store(tmp_path / "katibx.db").get_experiment("where").experiment
    assert stored.spec.trial_template.trial_spec["spec"]["isolation"] == "none"  # resume runs them the same way


def chatty(p: dict[str, Any]) -> None:
    """Reports intermediate values, prints its metric line and some text, returns nothing."""
    katibx.report_metrics({"loss": 10.0})
    print(f"working on x={p['x']}")
    print(f"loss={p['x'] ** 2}", file=sys.stderr)


def test_printed_and_reported_metrics_are_collected_and_the_output_goes_to_the_trial_log(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _tune(tmp_path, "chatty", chatty, isolation="none", max_trial_count=4)
    client = KatibxClient(tmp_path / "katibx.db")
    for trial in result.trials:
        assert trial.state is TrialState.SUCCEEDED
        assert trial.history["loss"] == [10.0, trial.params["x"] ** 2]  # reported, then printed (StdOut collector)
        log = client.get_trial_logs("chatty", trial.name)
        assert f"working on x={trial.params['x']}" in log and "loss=" in log
    captured = capsys.readouterr()
    assert "working on" not in captured.out + captured.err  # the trials' output is theirs, not the caller's
    assert sys.stdout is not None and type(sys.stdout).__name__ != "_TrialStream"  # given back after the run


def failing(p: dict[str, Any]) -> float:
    if p["n"] % 2:
        raise ValueError(f"odd n {p['n']}")
    if p["n"] == 4:
        sys.exit(3)  # a trial's exit ends the trial, not the controller
    return p["x"]


def test_a_failing_trial_fails_with_its_exception_and_traceback_and_the_run_goes_on(tmp_path: Path) -> None:
    result = _tune(tmp_path, "failing", failing, isolation="none", algorithm_name="grid", max_trial_count=5,
                   parameters={"x": katibx.search.categorical([0.5]), "n": katibx.search.int(1, 5)},
                   max_failed_trial_count=5, parallel_trial_count=1)
    by_n = {t.params["n"]: t for t in result.trials}
    client = KatibxClient(tmp_path / "katibx.db")
    for n in (1, 3, 5):
        assert by_n[n].state is TrialState.FAILED
        assert by_n[n].message == f"Trial has failed: the objective raised ValueError: odd n {n}"
        log = client.get_trial_logs("failing", by_n[n].name)
        assert "Traceback (most recent call last)" in log and f"ValueError: odd n {n}" in log
    assert by_n[4].state is TrialState.FAILED and "SystemExit: 3" in by_n[4].message
    assert by_n[2].state is TrialState.SUCCEEDED and client.get_trial_logs("failing", by_n[2].name) == ""


BATCH = bytes(256 << 10)  # what a training step of the pruned objective works on


def pruned(p: dict[str, Any]) -> float:
    """x=0 ends after 4 steps; the others go on until they are asked to stop (or 10,000 steps)."""
    for step in range(4 if p["x"] == 0 else 10_000):
        katibx.report_metrics({"loss": 10 * p["x"] + 1 / (step + 1)})
        if katibx.should_prune():
            print(f"pruned at step {step}")
            raise katibx.TrialPruned()
        hashlib.sha256(BATCH).digest()  # a training step: work that lets go of the GIL, as numpy's and torch's does
    return 10 * p["x"]


def test_early_stopping_asks_a_thread_trial_which_ends_itself(tmp_path: Path) -> None:
    result = _tune(tmp_path, "pruning", pruned, isolation="none", algorithm_name="grid", max_trial_count=3,
                   parameters={"x": katibx.search.int(0, 2)}, parallel_trial_count=1,
                   early_stopping_algorithm_name="medianstop",
                   early_stopping_settings={"min_trials_required": 1, "start_step": 2})
    by_x = {t.params["x"]: t for t in result.trials}
    assert by_x[0].state is TrialState.SUCCEEDED
    client = KatibxClient(tmp_path / "katibx.db")
    for x in (1, 2):
        assert by_x[x].state is TrialState.EARLY_STOPPED, (by_x[x].state, by_x[x].message)
        assert 2 <= len(by_x[x].history["loss"]) < 10_000
        assert "pruned at step" in client.get_trial_logs("pruning", by_x[x].name)


RELEASE = threading.Event()  # lets the trial the deadline abandoned end, once the test has seen it abandoned
ENDED = threading.Event()


def stuck(p: dict[str, Any]) -> float:
    """Waits for the test; it never asks katibx.should_prune, so a deadline can only abandon it."""
    RELEASE.wait(60)
    ENDED.set()
    return 1.0


def test_a_deadline_abandons_a_trial_that_does_not_end_and_the_run_does_not_wait_for_it(tmp_path: Path) -> None:
    RELEASE.clear()
    ENDED.clear()
    try:
        with pytest.raises(TuneError) as raised:
            _tune(tmp_path, "stuck", stuck, isolation="none", max_trial_count=1, parallel_trial_count=1,
                  trial_active_deadline_seconds=0.2)
        assert raised.value.result is not None
        trial = raised.value.result.trials[0]
        assert trial.state is TrialState.FAILED and "DeadlineExceeded" in trial.reason
        assert not ENDED.is_set()  # the run ended while the function still ran: abandoned, not waited for
    finally:
        RELEASE.set()
    assert ENDED.wait(10)


def test_resume_imports_the_objective_into_this_process_and_a_module_that_fails_is_one_line(
        tmp_path: Path) -> None:
    module = tmp_path / "thread_objective.py"
    module.write_text("import os\n\ndef objective(p):\n    return {'loss': p['x'], 'pid': os.getpid()}\n")
    sys.path.insert(0, str(tmp_path))
    store = tmp_path / "katibx.db"
    try:
        from thread_objective import objective  # type: ignore[import-not-found]

        _tune(tmp_path, "resumed", objective, isolation="none", max_trial_count=2, parallel_trial_count=1,
              additional_metric_names=["pid"])
        sys.modules.pop("thread_objective")  # resumed as `katibx resume` would: imported again, by reference
        record = katibx.resume_experiment("resumed", store=Store(store), max_trial_count=4)
        trials = Store(store).trials(record.id)
        assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 4
        assert {t.observation["pid"].latest for t in trials} == {str(os.getpid())}  # this process: threads
        assert "thread_objective" in sys.modules

        module.write_text("raise NameError('broken module')\n")
        sys.modules.pop("thread_objective")
        with pytest.raises(ValidationError) as raised:  # one line naming the field (the CLI's exit code 2)
            katibx.resume_experiment("resumed", store=Store(store), max_trial_count=5)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("thread_objective", None)
    assert raised.value.errors == ["spec.trialTemplate.trialSpec.spec.function: importing the objective "
                                   "'thread_objective:objective' failed: NameError: broken module"]
    assert len(Store(store).trials(record.id)) == 4  # nothing stored is lost


RUNNING = threading.Event()  # set by a blocked trial once it runs


def blocked(p: dict[str, Any]) -> float:
    """n=1 reaches the goal at once; n=2 runs until the test releases it."""
    if p["n"] == 1:
        return 0.0
    RUNNING.set()
    RELEASE.wait(60)
    ENDED.set()
    return 1.0


def _blocked_run(tmp_path: Path, name: str, values: list[int], **options: Any) -> tuple[threading.Thread, list[Any]]:
    for event in (RUNNING, RELEASE, ENDED):
        event.clear()
    done: list[Any] = []
    run = threading.Thread(target=lambda: done.append(_tune(
        tmp_path, name, blocked, isolation="none", algorithm_name="grid", max_trial_count=len(values),
        parameters={"n": katibx.search.categorical(values)}, **options)))
    run.start()
    return run, done


def test_a_running_thread_trial_shows_running_in_the_store(tmp_path: Path) -> None:
    run, done = _blocked_run(tmp_path, "blocked", [2], parallel_trial_count=1)
    try:
        assert RUNNING.wait(60)
        store = Store(tmp_path / "katibx.db")
        # (the controller stores it once it has waited for events: within 0.2 s)
        wait_until(lambda: [t.state for t in store.trials(store.get_experiment("blocked").id)] == [TrialState.RUNNING],
                   what="the running trial shown Running in the store")
    finally:
        RELEASE.set()
        run.join(60)
    assert done and done[0].trials[0].state is TrialState.SUCCEEDED


def test_completion_abandons_a_running_thread_trial_when_asked_to_kill_it(tmp_path: Path) -> None:
    run, done = _blocked_run(tmp_path, "abandoned", [1, 2], parallel_trial_count=2, objective_goal=0.5,
                             kill_running_on_completion=True)
    try:
        run.join(60)
        assert done, "tune did not return"
        by_n = {t.params["n"]: t for t in done[0].trials}
        assert by_n[1].state is TrialState.SUCCEEDED
        assert by_n[2].state is TrialState.KILLED and "could not be stopped (isolation: none)" in by_n[2].message
        assert RUNNING.is_set() and not ENDED.is_set()  # it still runs: abandoned, not waited for
    finally:
        RELEASE.set()
    assert ENDED.wait(10)


def nested(p: dict[str, Any]) -> float:
    """Runs a sweep of its own, in worker processes forked from this trial's thread."""
    inner = katibx.tune(f"inner-{p['n']}", square, SPACE, objective_metric_name="loss", objective_type="minimize",
                        max_trial_count=2, parallel_trial_count=1, store=p["store"], progress=False)
    return float(inner.best_value)


def test_a_sweep_inside_a_thread_trial_runs_its_own_process_trials(tmp_path: Path) -> None:
    result = _tune(tmp_path, "outer", nested, isolation="none", max_trial_count=1, parallel_trial_count=1,
                   parameters={"n": katibx.search.int(1, 3), "store": str(tmp_path / "inner.db")})
    assert result.trials[0].state is TrialState.SUCCEEDED  # the inner trials' metrics reached the inner sweep


def test_file_metrics_collectors_are_refused_for_thread_trials() -> None:
    experiment = function_experiment("files", square, SPACE, objective_metric_name="loss", isolation="none")
    experiment.spec.metrics_collector_spec.collector.kind = "File"
    errors = check_experiment(experiment, create_backend("local"))
    assert any(e.startswith("spec.metricsCollectorSpec.collector.kind: File reads files a trial writes") for e in errors), errors


@pytest.mark.parametrize(("options", "message"), [
    ({"isolation": "thread"}, "isolation: must be 'process' or 'none', got 'thread'"),
    ({"env_per_trial": {"A": "1"}}, "spec.trialTemplate.trialSpec.spec.env (env_per_trial): trials with isolation "
                                    "none share the controller's process and its environment"),
    ({"reuse_processes": False}, "spec.trialTemplate.trialSpec.spec.reuseProcesses (reuse_processes): false (a "
                                 "fresh process per trial) contradicts"),
    ({"resources_per_trial": {"gpu": 1}}, "spec.trialTemplate.trialSpec.spec.isolation (isolation): trials with "
                                          "isolation none share the controller's process, which cannot give each "
                                          "its own GPUs"),
    ({"algorithm_name": "pbt", "algorithm_settings": {"suggestion_trial_dir": "/var/log/katib/checkpoints/"}},
     "need a checkpoint folder each"),
])
def test_what_needs_a_process_of_its_own_is_refused_before_anything_is_stored(
        tmp_path: Path, options: dict[str, Any], message: str) -> None:
    options = {"isolation": "none", **options}
    with pytest.raises(ValidationError) as raised:
        _tune(tmp_path, "refused", square, **options)
    assert any(message in error for error in raised.value.errors), raised.value.errors
    assert not (tmp_path / "katibx.db").exists()


def test_the_ray_backend_refuses_thread_trials_without_starting_ray() -> None:
    experiment = function_experiment("on-ray", square, SPACE, objective_metric_name="loss", isolation="none")
    errors = check_experiment(experiment, create_backend("ray"))
    assert any("none runs trials in the controller's process; the ray backend runs them on its actors" in e
               for e in errors), errors


def test_an_objective_whose_module_lacks_a_dependency_says_so_not_the_resume_hint(tmp_path: Path) -> None:
    (tmp_path / "needs_more.py").write_text("import not_installed_anywhere\n\ndef objective(p):\n    return 1.0\n")
    from katibx.functions import import_function

    try:
        with pytest.raises(ValidationError) as raised:
            import_function("needs_more:objective", str(tmp_path))
    finally:
        sys.path.remove(str(tmp_path))  # (import_function makes the experiment's folder importable)
    assert raised.value.errors == ["spec.trialTemplate.trialSpec.spec.function: importing the objective "
                                   "'needs_more:objective' failed: ModuleNotFoundError: No module named "
                                   "'not_installed_anywhere'"]


@pytest.fixture
def quick_is_inline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any trial counts as quick (a loaded machine can make a trivial trial take 5 ms), and Ctrl-C and SIGTERM are
    at their defaults, as in a fresh interpreter (a library another test loaded, Ray's, may leave handlers of its
    own, which katibx rightly leaves alone)."""
    monkeypatch.setattr(thread_trials, "INLINE_BELOW", 60.0)
    saved = {signum: signal.signal(signum, default)
             for signum, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL))}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def paced(p: dict[str, Any]) -> dict[str, Any]:
    """n=2 works for 0.6 s (longer than the INLINE_BELOW the test sets); the others return at once. Reports whether
    it ran on the controller's thread."""
    if p["n"] == 2:
        ends = time.perf_counter() + 0.6
        while time.perf_counter() < ends:
            hashlib.sha256(BATCH).digest()
    return {"loss": float(p["n"]), "main": int(threading.current_thread() is threading.main_thread())}


def test_after_a_quick_trial_the_next_runs_on_the_controllers_thread_and_after_a_slow_one_on_a_thread_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(thread_trials, "INLINE_BELOW", 0.5)  # a quick trial takes far less, the slow one more
    result = _tune(tmp_path, "paced", paced, isolation="none", algorithm_name="grid", parallel_trial_count=1,
                   max_trial_count=5, parameters={"n": katibx.search.int(0, 4)}, additional_metric_names=["main"])
    on_main = {t.params["n"]: t.history["main"][-1] for t in result.trials}
    # n=0: nothing known yet, a thread; 1 and 2 follow quick trials; 3 follows the slow one; 4 a quick one
    assert on_main == {0: 0, 1: 1, 2: 1, 3: 0, 4: 1}
    assert all(t.state is TrialState.SUCCEEDED for t in result.trials)
    parallel = _tune(tmp_path, "paced-2", paced, isolation="none", algorithm_name="grid", parallel_trial_count=2,
                     max_trial_count=4, parameters={"n": katibx.search.categorical([0, 1, 3, 4])},
                     additional_metric_names=["main"])
    assert {t.history["main"][-1] for t in parallel.trials} == {0}  # with others to run meanwhile, never


INTERRUPTED: list[str] = []


def interrupting(p: dict[str, Any]) -> float:
    """Presses Ctrl-C (SIGINT to this process) once, during the first trial that runs on the controller's thread."""
    if not INTERRUPTED and threading.current_thread() is threading.main_thread():
        INTERRUPTED.append(str(p["n"]))
        signal.raise_signal(signal.SIGINT)
    return float(p["n"])


def test_ctrl_c_during_a_trial_on_the_controllers_thread_stops_the_run_and_resume_runs_that_trial_again(
        tmp_path: Path, quick_is_inline: None) -> None:
    INTERRUPTED.clear()
    options = {"isolation": "none", "algorithm_name": "grid", "parallel_trial_count": 1, "max_trial_count": 3,
               "parameters": {"n": katibx.search.int(0, 2)}}
    with pytest.raises(KeyboardInterrupt):
        _tune(tmp_path, "interrupted", interrupting, **options)
    assert INTERRUPTED == ["1"]  # trial 0 ran on a thread, trial 1 on the controller's
    store = Store(tmp_path / "katibx.db")
    record = store.get_experiment("interrupted")
    states = {t.assignments["n"]: t.state for t in store.trials(record.id)}
    assert states == {0: TrialState.SUCCEEDED, 1: TrialState.CREATED}  # nothing of trial 1 was taken as a result
    assert not record.completed
    resumed = _tune(tmp_path, "interrupted", interrupting, load_if_exists=True, **{**options, "max_trial_count": 1})
    assert sorted((t.params["n"], t.state) for t in resumed.trials) == [
        (0, TrialState.SUCCEEDED), (1, TrialState.SUCCEEDED), (2, TrialState.SUCCEEDED)]


def test_a_sweep_on_the_controllers_thread_inside_a_trial_gives_the_trial_back_its_output_and_reports(
        tmp_path: Path, quick_is_inline: None) -> None:
    """An inner sweep whose trials run on the outer trial's thread (after a quick first one) leaves that thread the
    outer trial's: what the outer trial prints and reports afterwards is still its own."""
    def inner(p: dict[str, Any]) -> float:
        return p["y"]

    def outer(p: dict[str, Any]) -> float:
        katibx.tune(f"inner-{p['x']}", inner, {"y": katibx.search.double(0, 1)}, objective_metric_name="v",
                    max_trial_count=3, parallel_trial_count=1, store=tmp_path / "inner.db", progress=False,
                    isolation="none")
        print("outer goes on")
        katibx.report_metrics({"extra": 1.0})
        return float(p["x"])

    result = _tune(tmp_path, "outer-inline", outer, isolation="none", algorithm_name="grid", max_trial_count=3,
                   parallel_trial_count=1, parameters={"x": katibx.search.int(0, 2)}, additional_metric_names=["extra"])
    client = KatibxClient(tmp_path / "katibx.db")
    for trial in result.trials:
        assert trial.state is TrialState.SUCCEEDED, trial.message
        assert trial.metrics["extra"] == 1.0 and "outer goes on" in client.get_trial_logs("outer-inline", trial.name)


CAUGHT: list[int] = []


def catching(p: dict[str, Any]) -> float:
    """A training loop that saves and returns on Ctrl-C (it catches KeyboardInterrupt): n=1 is interrupted."""
    if p["n"] == 1:
        try:
            signal.raise_signal(SIGNAL[0])
        except KeyboardInterrupt:
            CAUGHT.append(p["n"])
    return float(p["n"])


SIGNAL = [signal.SIGINT]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_a_trial_catches_still_stops_the_run(tmp_path: Path, signum: signal.Signals,
                                                           quick_is_inline: None) -> None:
    SIGNAL[0] = signum
    CAUGHT.clear()
    with pytest.raises(KeyboardInterrupt):
        _tune(tmp_path, f"caught-{signum}", catching, isolation="none", algorithm_name="grid", max_trial_count=4,
              parallel_trial_count=1, parameters={"n": katibx.search.int(0, 3)})
    assert CAUGHT == [1]  # it ran on the controller's thread, and caught it
    store = Store(tmp_path / "katibx.db")
    states = {t.assignments["n"]: t.state for t in store.trials(store.get_experiment(f"caught-{signum}").id)}
    assert states == {0: TrialState.SUCCEEDED, 1: TrialState.SUCCEEDED}  # (it returned); no trial after it


def with_its_own_loop(p: dict[str, Any]) -> float:
    async def twice(x: float) -> float:
        return 2 * x
    return asyncio.run(twice(p["x"]))


def test_an_objective_that_runs_its_own_event_loop_works_while_a_notebooks_loop_runs(tmp_path: Path) -> None:
    """A notebook cell runs while the kernel's event loop runs on its thread: trials then stay on trial threads,
    where ``asyncio.run`` works."""
    async def cell() -> Any:
        return _tune(tmp_path, "in-a-loop", with_its_own_loop, isolation="none", max_trial_count=4,
                     parallel_trial_count=1)

    result = asyncio.run(cell())
    assert [t.state for t in result.trials] == [TrialState.SUCCEEDED] * 4
