"""Function trials run in reused worker processes: one worker serves trial after trial, each with its own
environment, working directory and log, and a trial that does not end cleanly ends its worker.

Real forked workers, a real SQLite store; the objectives report their process id as a metric.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import process_gone

import katibx
from katibx.preparation import check_experiment, create_backend
from katibx.runner import run_experiment
from katibx.store import Store
from katibx.trial import TrialRecord, TrialState
from katibx.trial_dir import STDOUT_LOG
from katibx.tuning import function_experiment

METRICS = ["pid", "cwd", "left"]  # besides the objective's "result"


def _trials(store: Store, name: str) -> list[TrialRecord]:
    return sorted(store.trials(store.get_experiment(name).id), key=lambda t: t.index)


def _pid(trial: TrialRecord) -> int:
    return int(trial.observation["pid"].latest)


def _tune(store: Store, name: str, objective: Any, trials: int, **options: Any) -> dict[str, Any]:
    """``trials`` trials one after another, k = 0, 1, ... in order (grid over an int)."""
    return katibx.tune(name=name, objective=objective, parameters={"k": katibx.search.int(0, trials - 1)},
                       objective_metric_name="result", additional_metric_names=METRICS, algorithm_name="grid",
                       parallel_trial_count=1, max_failed_trial_count=trials, store=store, **options)


def tidy_objective(p: dict[str, Any]) -> dict[str, Any]:
    """Fails unless it sees a fresh environment; then leaves a variable and another cwd behind for the next trial."""
    assert "LEFT_BY_PREVIOUS_TRIAL" not in os.environ, "environment leaked from the previous trial"
    print(f"this is {os.environ['KATIB_TRIAL_NAME']}")
    cwd = os.getcwd()
    os.environ["LEFT_BY_PREVIOUS_TRIAL"] = "1"
    os.chdir("/")
    return {"result": p["k"], "pid": os.getpid(), "cwd": cwd}


def test_one_worker_runs_every_trial_each_with_its_own_environment_folder_and_log(tmp_path: Path) -> None:
    store = Store(tmp_path / "katibx.db")
    _tune(store, "tidy", tidy_objective, 4)
    trials = _trials(store, "tidy")
    assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 4, [t.message for t in trials]
    assert len({_pid(t) for t in trials}) == 1 and _pid(trials[0]) != os.getpid()
    assert len({t.observation["cwd"].latest for t in trials}) == 1 and trials[0].observation["cwd"].latest != "/"
    record = store.get_experiment("tidy")
    for trial in trials:
        assert (store.trial_dir(record, trial.name) / STDOUT_LOG).read_text().splitlines()[0] == f"this is {trial.name}"
    store.close()


def test_reuse_processes_false_forks_a_fresh_process_for_every_trial(tmp_path: Path) -> None:
    store = Store(tmp_path / "katibx.db")
    _tune(store, "fresh", tidy_objective, 3, reuse_processes=False)
    trials = _trials(store, "fresh")
    assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 3
    assert len({_pid(t) for t in trials}) == 3
    spec = store.get_experiment("fresh").experiment.spec.trial_template.trial_spec
    assert spec["spec"]["reuseProcesses"] is False  # stored with the experiment, so a resume keeps it
    store.close()


def failing_objective(p: dict[str, Any]) -> dict[str, Any]:
    katibx.report_metrics({"pid": os.getpid()})
    if p["k"] % 2 == 0:
        raise ValueError(f"trial k={p['k']} fails on purpose")
    return {"result": p["k"]}


def test_a_trial_that_raises_fails_alone_and_its_worker_runs_the_next(tmp_path: Path) -> None:
    store = Store(tmp_path / "katibx.db")
    _tune(store, "raising", failing_objective, 4)
    trials = _trials(store, "raising")
    assert [t.state for t in trials] == [TrialState.FAILED, TrialState.SUCCEEDED] * 2
    assert len({_pid(t) for t in trials}) == 1
    log = katibx.KatibxClient(store).get_trial_logs("raising", trials[0].name)
    assert "ValueError: trial k=0 fails on purpose" in log and "k=2" not in log
    store.close()


def untidy_objective(p: dict[str, Any]) -> dict[str, Any]:
    """The first trial leaves a sleeping child process or thread behind (``LEAVE`` says which)."""
    left = 0
    if p["k"] == 0:
        if os.environ["LEAVE"] == "process":
            left = subprocess.Popen(["sleep", "60"]).pid
        else:
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    return {"result": p["k"], "pid": os.getpid(), "left": left}


@pytest.mark.parametrize("leave", ["process", "thread"])
def test_a_trial_that_leaves_work_behind_ends_its_worker(tmp_path: Path, leave: str) -> None:
    store = Store(tmp_path / "katibx.db")
    _tune(store, "untidy", untidy_objective, 3, env_per_trial={"LEAVE": leave})
    trials = _trials(store, "untidy")
    assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 3
    first, second, third = (_pid(t) for t in trials)
    assert first != second == third  # the untidy trial's worker ended; the next worker served the rest
    assert process_gone(first)
    if leave == "process":
        assert process_gone(int(trials[0].observation["left"].latest))  # stopped with its worker's session
    store.close()


def sleepy_objective(p: dict[str, Any]) -> dict[str, Any]:
    katibx.report_metrics({"pid": os.getpid()})
    if p["k"] == 0:
        time.sleep(60)
    return {"result": p["k"]}


def test_a_stopped_trial_ends_its_worker_and_the_next_trial_gets_a_fresh_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "katibx.db")
    _tune(store, "deadline", sleepy_objective, 3, trial_active_deadline_seconds=1)
    trials = _trials(store, "deadline")
    assert [t.state for t in trials] == [TrialState.FAILED, TrialState.SUCCEEDED, TrialState.SUCCEEDED]
    assert "DeadlineExceeded" in trials[0].reason
    assert _pid(trials[0]) != _pid(trials[1]) == _pid(trials[2])
    assert process_gone(_pid(trials[0]))
    store.close()


def pid_objective(p: dict[str, Any]) -> dict[str, Any]:
    return {"result": p["k"], "pid": os.getpid()}


def test_an_idle_worker_that_died_is_replaced(tmp_path: Path) -> None:
    """The OOM killer (here SIGKILL) may take an idle worker: the next trial still runs, in a new one."""
    store = Store(tmp_path / "katibx.db")
    experiment = function_experiment("oom", pid_objective, {"k": katibx.search.int(0, 2)}, algorithm_name="grid",
                                     objective_metric_name="result", additional_metric_names=["pid"],
                                     parallel_trial_count=1)
    killed: list[int] = []

    def kill_idle_worker(record: Any, book: Any) -> None:
        done = [t for t in book.history() if t.state is TrialState.SUCCEEDED]
        if len(done) == 1 and not killed:
            killed.append(_pid(done[0]))
            os.kill(killed[0], signal.SIGKILL)
            assert process_gone(killed[0], 10)  # dead before the next trial is handed to it

    run_experiment(experiment, store=store, function=pid_objective, listener=kill_idle_worker)
    trials = _trials(store, "oom")
    assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 3
    assert _pid(trials[0]) == killed[0] != _pid(trials[1]) == _pid(trials[2])
    store.close()


def test_reuse_processes_must_be_a_boolean() -> None:
    with pytest.raises(katibx.ValidationError, match=r"reuse_processes: must be True or False"):
        function_experiment("bad", pid_objective, {"k": katibx.search.int(0, 2)}, objective_metric_name="result",
                            reuse_processes="no")  # type: ignore[arg-type]
    experiment = function_experiment("bad", pid_objective, {"k": katibx.search.int(0, 2)}, objective_metric_name="result")
    assert experiment.spec.trial_template is not None and experiment.spec.trial_template.trial_spec is not None
    experiment.spec.trial_template.trial_spec["spec"]["reuseProcesses"] = "yes"
    errors = check_experiment(experiment, create_backend("local"))
    assert errors == ["spec.trialTemplate.trialSpec.spec.reuseProcesses: must be true or false, got 'yes'"]


def stream_abusing_objective(p: dict[str, Any]) -> None:
    """Prints its metric, each trial in a way that used to leak into or break the trials after it."""
    k = p["k"]
    if k == 0:  # a block-buffered replacement, never flushed
        sys.stdout = open(1, "w", closefd=False)
        print("result=0")
    elif k == 1:  # closes the stream it was given
        print("result=1")
        sys.stdout.close()
    elif k == 2:  # a common idiom: a line-buffered stream that owns descriptor 1
        sys.stdout = os.fdopen(sys.stdout.fileno(), "w", buffering=1)
        print("result=2")
    elif k == 3:  # closes descriptor 1 itself
        print("result=3", flush=True)
        os.close(1)
    else:
        print(f"result={k}")


def test_a_trial_that_replaces_or_closes_its_output_neither_breaks_nor_pollutes_the_next(tmp_path: Path) -> None:
    store = Store(tmp_path / "katibx.db")
    _tune(store, "streams", stream_abusing_objective, 6)
    trials = _trials(store, "streams")
    assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 6, [t.message for t in trials]
    client = katibx.KatibxClient(store)
    for k, trial in enumerate(trials):
        assert trial.observation["result"].latest == str(k)
        assert client.get_trial_logs("streams", trial.name).split() == [f"result={k}"]
    store.close()


def alarming_objective(p: dict[str, Any]) -> dict[str, Any]:
    """The first trial arms a 1 s alarm whose handler raises, and returns at once; the next one takes 2 s."""
    if p["k"] == 0:
        def fail(*_: Any) -> None:
            raise RuntimeError("alarm set by trial 0")

        signal.signal(signal.SIGALRM, fail)
        signal.alarm(1)
    else:
        time.sleep(2)
    return {"result": p["k"], "pid": os.getpid()}


def test_timers_and_handlers_a_trial_set_do_not_reach_the_next(tmp_path: Path) -> None:
    store = Store(tmp_path / "katibx.db")
    _tune(store, "alarm", alarming_objective, 2)
    trials = _trials(store, "alarm")
    assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 2, [t.message for t in trials]
    assert _pid(trials[0]) == _pid(trials[1])
    store.close()


def descriptor_closing_objective(p: dict[str, Any]) -> dict[str, Any]:
    """Closes every inherited descriptor (the worker's pipe to the controller too), then works for 2 s."""
    os.closerange(3, 4096)
    time.sleep(2)
    return {"result": p["k"], "pid": os.getpid()}


def test_a_trial_that_closes_the_workers_pipe_is_waited_for_without_spinning(tmp_path: Path) -> None:
    store = Store(tmp_path / "katibx.db")
    before = resource.getrusage(resource.RUSAGE_SELF)
    _tune(store, "closer", descriptor_closing_objective, 2)
    after = resource.getrusage(resource.RUSAGE_SELF)
    trials = _trials(store, "closer")
    assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 2, [t.message for t in trials]
    assert _pid(trials[0]) != _pid(trials[1])  # a worker without its pipe cannot be handed another trial
    # 4 s of trials: a controller polling a pipe at its end would burn about that much CPU, not a fraction
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert cpu < 2.0, f"the controller used {cpu:.1f} s of CPU waiting for 4 s of trials"
    store.close()


CONTROLLER_SCRIPT = """
import os, sys, time
import katibx

def objective(p):
    with open(os.path.join(sys.argv[1], f"worker-{p['k']}"), "w") as f:
        f.write(str(os.getpid()))
    if p["k"] == 1:
        time.sleep(60)
    return {"result": p["k"]}

if __name__ == "__main__":
    katibx.tune(name="orphans", objective=objective, parameters={"k": katibx.search.int(0, 1)},
                objective_metric_name="result", algorithm_name="grid", parallel_trial_count=2,
                store=os.path.join(sys.argv[1], "katibx.db"))
"""


def test_an_idle_worker_exits_when_its_controller_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "controller.py"
    script.write_text(CONTROLLER_SCRIPT)
    controller = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=tmp_path)
    try:
        store = Store(tmp_path / "katibx.db")
        deadline = time.monotonic() + 60
        while not (tmp_path / "worker-1").exists() or not any(
                t.state is TrialState.SUCCEEDED for t in _stored_trials(store, "orphans")):
            assert time.monotonic() < deadline and controller.poll() is None
            time.sleep(0.05)
        idle, busy = (int((tmp_path / f"worker-{k}").read_text()) for k in (0, 1))
        controller.kill()
        controller.wait()
        assert process_gone(idle, 10), "the idle worker outlived its controller"
        assert not process_gone(busy, 0.5), "a running trial keeps running until `katibx resume` deals with it"
        os.killpg(busy, signal.SIGKILL)
        store.close()
    finally:
        controller.kill()


def _stored_trials(store: Store, name: str) -> list[TrialRecord]:
    try:
        return store.trials(store.get_experiment(name).id)
    except Exception:  # noqa: BLE001 - not stored yet
        return []


BACKEND_WITHOUT_CLOSE = """
import sys, tempfile
from pathlib import Path
import katibx
from katibx.trial import TrialRecord
from katibx.tuning import function_experiment
from katibx.backend import TrialExited, TrialJob
from katibx.workers.local import LocalBackend

def objective(p):
    return {"result": 1}

if __name__ == "__main__":
    tmp = Path(tempfile.mkdtemp())
    experiment = function_experiment("no-close", objective, {"k": katibx.search.int(0, 1)}, objective_metric_name="result")
    backend = LocalBackend()
    backend.start(TrialJob(experiment, TrialRecord("t", 0, {"k": 0}), tmp, tmp / "t", objective))
    while not any(isinstance(e, TrialExited) for e in backend.poll(1.0)):
        pass
    print("trial done; exiting without close()", flush=True)
"""


def test_a_program_that_never_closes_the_backend_still_exits(tmp_path: Path) -> None:
    """An idle worker waits for work forever; the program that forked it must not wait for it at exit."""
    script = tmp_path / "no_close.py"
    script.write_text(BACKEND_WITHOUT_CLOSE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert "trial done" in result.stdout


_FOREIGN_CRASH_HANDLER = """
import faulthandler, signal, sys
sys.path.insert(0, sys.argv[1])
import katibx
from crashing import objective

# What a Ray driver leaves in the process: faulthandler on, then another handler put over it on SIGSEGV.
faulthandler.enable()
signal.signal(signal.SIGSEGV, signal.SIG_DFL)
store = katibx.Store(sys.argv[2])
try:
    katibx.tune(name="crash", objective=objective, parameters={"a": katibx.search.int(1, 2)},
                objective_metric_name="r", max_trial_count=1, parallel_trial_count=1, store=store)
except katibx.TuneError:
    pass  # the one trial crashed: no result

(trial,) = store.trials(store.get_experiment("crash").id)
print(katibx.KatibxClient(store).get_trial_logs("crash", trial.name))
"""


def test_a_native_crash_is_traced_in_the_log_whatever_handlers_the_parent_has(tmp_path: Path) -> None:
    """The function worker puts Python's fault handler back on the fatal signals (it found Ray's there once)."""
    (tmp_path / "crashing.py").write_text("import ctypes\n\ndef objective(p):\n    ctypes.string_at(0)\n")
    run = subprocess.run([sys.executable, "-c", _FOREIGN_CRASH_HANDLER, str(tmp_path), str(tmp_path / "s.db")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Fatal Python error: Segmentation fault" in run.stdout and "crashing.py" in run.stdout


def _rerun_objective(p: dict[str, Any]) -> dict[str, float]:
    print("second run")
    return {"result": 2.0}


def test_a_trial_started_again_in_its_folder_starts_afresh(tmp_path: Path) -> None:
    """A trial run again (a resumed controller restarts what was running) finds no log, metrics, stop request or
    files of its first run; its checkpoint folder is kept for it."""
    from katibx.backend import TrialExited, TrialJob, TrialMetrics
    from katibx.trial import TrialRecord
    from katibx.trial_dir import CHECKPOINT_DIR, FILES_DIR, PUSH_FILE, STDOUT_LOG, STOP_FILE
    from katibx.tuning import function_experiment
    from katibx.workers.local import LocalBackend

    folder = tmp_path / "t"
    (folder / FILES_DIR).mkdir(parents=True)
    (folder / FILES_DIR / "old.txt").write_text("first run")
    (folder / CHECKPOINT_DIR).mkdir()
    (folder / CHECKPOINT_DIR / "model.pt").write_text("weights")
    (folder / STDOUT_LOG).write_text("first run\n")
    (folder / PUSH_FILE).write_text(json.dumps({"result": 1.0, "timestamp": 1.0}) + "\n")
    (folder / STOP_FILE).write_text("")
    experiment = function_experiment("again", _rerun_objective, {"k": katibx.search.int(0, 1)},
                                     objective_metric_name="result")
    backend = LocalBackend()
    try:
        backend.start(TrialJob(experiment, TrialRecord("t", 0, {"k": 0}), tmp_path, folder, _rerun_objective))
        events: list[Any] = []
        while not any(isinstance(e, TrialExited) for e in events):
            events += backend.poll(1.0)
    finally:
        backend.close()
    values = [log.value for e in events if isinstance(e, (TrialMetrics, TrialExited)) for log in e.logs]
    assert values == ["2.0"] and [e.succeeded for e in events if isinstance(e, TrialExited)] == [True]
    assert (folder / STDOUT_LOG).read_text() == "second run\n"
    assert not (folder / STOP_FILE).exists() and not (folder / FILES_DIR).exists()
    assert (folder / CHECKPOINT_DIR / "model.pt").read_text() == "weights"


def test_each_trial_gets_exactly_its_environment_whatever_the_last_one_did(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what differs is set (cheaper than clearing and filling), and what a trial changed, added or removed
    comes back as the next trial's request says."""
    from katibx.workers._function_worker import _set_environment

    monkeypatch.setattr(os, "environ", os.environ.copy())  # (a dict-like stand-in: nothing leaks to this process)
    wanted = {"KEEP": "1", "CHANGED": "before", "REMOVED": "here", "TRIAL": "t1"}
    _set_environment(wanted)
    assert dict(os.environ) == wanted
    os.environ["CHANGED"], os.environ["ADDED"] = "by the trial", "1"
    del os.environ["REMOVED"]
    _set_environment({**wanted, "TRIAL": "t2"})
    assert dict(os.environ) == {**wanted, "TRIAL": "t2"}


def test_a_variable_a_trial_changed_behind_os_environ_is_set_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """os.putenv (or native code) changes the process's environment without os.environ knowing: the next trial's
    programs still see the value its request gives."""
    from katibx.workers._function_worker import _set_environment

    monkeypatch.setenv("KATIBX_TEST_VARIABLE", "for the next trial")
    os.putenv("KATIBX_TEST_VARIABLE", "left by the last trial")
    _set_environment(dict(os.environ))
    seen = subprocess.run([sys.executable, "-c", "import os; print(os.environ['KATIBX_TEST_VARIABLE'])"],
                          capture_output=True, text=True, timeout=60).stdout.strip()
    assert seen == "for the next trial"
