"""Controller semantics through real trial processes and a real SQLite store: Katib's completion rules,
parallelism, conditions, and crash safety (kill -9 of the controller, then resume)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import default_signals, experiment_doc, katibx_cli, set_command

from katibx.loader import experiment_from_dict
from katibx.runner import resume_experiment, run_experiment
from katibx.status import current_condition
from katibx.store import Store
from katibx.trial import TrialState

SLEEPY_SCRIPT = """
import argparse, os, sys, time
p = argparse.ArgumentParser()
p.add_argument("--a", type=int)
p.add_argument("--b", type=float)
p.add_argument("--sleep", type=float, default=0.0)
args = p.parse_args()
with open("starts.log", "a") as f:
    f.write(os.environ["KATIB_TRIAL_NAME"] + "\\n")
time.sleep(args.sleep)
print(f"result={4 * args.a - args.b ** 2}")
"""


def _sleepy(doc: dict, seconds: float) -> dict:
    return set_command(doc, ["python3", "objective.py", "--a=${trialParameters.a}", "--b=${trialParameters.b}",
                             f"--sleep={seconds}"])


def _run(doc: dict, store: Store, workdir: Path, **kwargs):
    record = run_experiment(experiment_from_dict(doc), store=store, workdir=workdir, **kwargs)
    return record, store.trials(record.id)


def test_max_trial_count_reached_with_parallelism_respected(tmp_path, store, write_experiment):
    doc = _sleepy(experiment_doc(maxTrialCount=5, parallelTrialCount=2), 0.2)
    write_experiment(doc, script=SLEEPY_SCRIPT)
    record, trials = _run(doc, store, tmp_path)
    cond = current_condition(record.conditions)
    assert (cond["type"], cond["reason"]) == ("Succeeded", "ExperimentMaxTrialsReached")
    assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 5
    # Never more than parallelTrialCount trials alive at once.
    edges = sorted([(t.start_time, 1) for t in trials] + [(t.completion_time, -1) for t in trials])
    alive = peak = 0
    for _, delta in edges:
        alive += delta
        peak = max(peak, alive)
    assert peak == 2
    assert {c["type"] for c in record.conditions} >= {"Created", "Running", "Succeeded"}
    running = next(c for c in record.conditions if c["type"] == "Running")
    assert running["status"] == "False"


def test_goal_reached_before_max_trial_count(tmp_path, store, write_experiment):
    doc = experiment_doc(maxTrialCount=20, parallelTrialCount=1,
                         objective={"type": "maximize", "objectiveMetricName": "result", "goal": 40})
    write_experiment(doc)
    record, trials = _run(doc, store, tmp_path)
    cond = current_condition(record.conditions)
    assert (cond["type"], cond["reason"]) == ("Succeeded", "ExperimentGoalReached")
    assert len(trials) < 20  # every value 4a - b^2 with a >= 10 is >= 40: the first trial reaches the goal
    assert len(trials) == 1


def test_goal_for_minimize_uses_less_or_equal(tmp_path, store, write_experiment):
    script = "print('loss=0.5')\n"
    doc = set_command(experiment_doc(maxTrialCount=3, parallelTrialCount=1,
                                     objective={"type": "minimize", "objectiveMetricName": "loss", "goal": 0.5}),
                      ["python3", "objective.py", "${trialParameters.a}", "${trialParameters.b}"])
    write_experiment(doc, script=script)
    record, trials = _run(doc, store, tmp_path)
    assert current_condition(record.conditions)["reason"] == "ExperimentGoalReached"
    assert len(trials) == 1


def test_failing_trials_fail_the_experiment_at_max_failed_trial_count(tmp_path, store, write_experiment):
    doc = set_command(experiment_doc(maxTrialCount=10, parallelTrialCount=1, maxFailedTrialCount=2),
                      ["python3", "objective.py", "${trialParameters.a}", "${trialParameters.b}"])
    write_experiment(doc, script="import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)\n")
    record, trials = _run(doc, store, tmp_path)
    cond = current_condition(record.conditions)
    assert (cond["type"], cond["reason"]) == ("Failed", "ExperimentFailed")
    assert "max failed count" in cond["message"]
    assert [t.state for t in trials] == [TrialState.FAILED, TrialState.FAILED]
    assert "exited with code 3" in trials[0].message
    assert trials[0].reason.startswith("TrialFailed")


def test_metrics_unavailable_counts_as_failure(tmp_path, store, write_experiment):
    doc = set_command(experiment_doc(maxTrialCount=5, parallelTrialCount=1, maxFailedTrialCount=1),
                      ["python3", "objective.py", "${trialParameters.a}", "${trialParameters.b}"])
    write_experiment(doc, script="print('accuracy=0.5')\n")
    record, trials = _run(doc, store, tmp_path)
    assert current_condition(record.conditions)["type"] == "Failed"
    assert [t.state for t in trials] == [TrialState.METRICS_UNAVAILABLE]


def test_max_failed_trial_count_zero_fails_on_first_failure(tmp_path, store, write_experiment):
    doc = set_command(experiment_doc(maxTrialCount=3, parallelTrialCount=1, maxFailedTrialCount=0),
                      ["python3", "objective.py", "${trialParameters.a}", "${trialParameters.b}"])
    write_experiment(doc, script="raise SystemExit(1)\n")
    record, trials = _run(doc, store, tmp_path)
    assert current_condition(record.conditions)["type"] == "Failed"
    assert len(trials) == 1


def test_failures_below_the_limit_still_count_toward_max_trials(tmp_path, store, write_experiment):
    script = "import sys\nv = int(sys.argv[1])\nsys.exit(1) if v % 2 else print(f'result={v}')\n"
    doc = set_command(
        experiment_doc(maxTrialCount=6, parallelTrialCount=2, maxFailedTrialCount=6,
                       algorithm={"algorithmName": "grid"},
                       parameters=[{"name": "a", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "6"}},
                                   {"name": "b", "parameterType": "discrete", "feasibleSpace": {"list": ["0"]}}]),
        ["python3", "objective.py", "${trialParameters.a}", "${trialParameters.b}"])
    write_experiment(doc, script=script)
    record, trials = _run(doc, store, tmp_path)
    assert current_condition(record.conditions)["reason"] == "ExperimentMaxTrialsReached"
    states = {t.assignments["a"]: t.state for t in trials}
    assert states == {1: TrialState.FAILED, 2: TrialState.SUCCEEDED, 3: TrialState.FAILED,
                      4: TrialState.SUCCEEDED, 5: TrialState.FAILED, 6: TrialState.SUCCEEDED}


def test_exhausted_grid_ends_with_suggestion_end_reached(tmp_path, store, write_experiment):
    doc = experiment_doc(
        maxTrialCount=None, parallelTrialCount=3, algorithm={"algorithmName": "grid"},
        parameters=[{"name": "a", "parameterType": "int", "feasibleSpace": {"min": "10", "max": "11"}},
                    {"name": "b", "parameterType": "double", "feasibleSpace": {"min": "0.1", "max": "0.2", "step": "0.1"}}])
    del doc["spec"]["maxTrialCount"]
    write_experiment(doc)
    record, trials = _run(doc, store, tmp_path)
    cond = current_condition(record.conditions)
    assert (cond["type"], cond["reason"]) == ("Succeeded", "ExperimentSuggestionEndReached")
    assert sorted((t.assignments["a"], t.assignments["b"]) for t in trials) == [(10, 0.1), (10, 0.2), (11, 0.1), (11, 0.2)]


def _goal_race(slow_seconds: float, tmp_path, store, write_experiment, **kwargs):
    """Two parallel trials: a=20 reaches the goal at once, a=10 is still running for ``slow_seconds``."""
    script = SLEEPY_SCRIPT.replace("time.sleep(args.sleep)", f"time.sleep(0.0 if args.a == 20 else {slow_seconds})")
    doc = experiment_doc(
        maxTrialCount=2, parallelTrialCount=2, algorithm={"algorithmName": "grid"},
        objective={"type": "maximize", "objectiveMetricName": "result", "goal": 79},
        parameters=[{"name": "a", "parameterType": "discrete", "feasibleSpace": {"list": ["20", "10"]}},
                    {"name": "b", "parameterType": "discrete", "feasibleSpace": {"list": ["0"]}}])
    write_experiment(doc, script=script)
    return _run(doc, store, tmp_path, **kwargs)


def test_running_trials_finish_after_completion_by_default(tmp_path, store, write_experiment):
    """Katib's behaviour: when the goal is reached, trials already running run to their end."""
    record, trials = _goal_race(1.0, tmp_path, store, write_experiment)
    assert current_condition(record.conditions)["reason"] == "ExperimentGoalReached"
    assert sorted(t.state.value for t in trials) == ["Succeeded", "Succeeded"]


def test_kill_running_on_completion_option(tmp_path, store, write_experiment):
    record, trials = _goal_race(30.0, tmp_path, store, write_experiment, kill_running_on_completion=True)
    by_a = {t.assignments["a"]: t for t in trials}
    assert by_a[20].state is TrialState.SUCCEEDED
    assert by_a[10].state is TrialState.KILLED
    assert by_a[10].completion_time - by_a[10].start_time < 25


def test_best_trial_uses_metric_strategy(tmp_path, store, write_experiment):
    # Each trial reports the series (a, 25 - a): a=10 -> 10, 15 and a=20 -> 20, 5.
    script = "import sys\na = int(sys.argv[1])\nfor v in (a, 25 - a):\n    print(f'result={v}')\n"
    for strategy, expected in (("max", 20), ("latest", 10), ("min", 10)):
        doc = set_command(
            experiment_doc(maxTrialCount=2, parallelTrialCount=1, algorithm={"algorithmName": "grid"},
                           objective={"type": "maximize", "objectiveMetricName": "result",
                                      "metricStrategies": [{"name": "result", "value": strategy}]},
                           parameters=[{"name": "a", "parameterType": "discrete", "feasibleSpace": {"list": ["10", "20"]}},
                                       {"name": "b", "parameterType": "discrete", "feasibleSpace": {"list": ["0"]}}]),
            ["python3", "objective.py", "${trialParameters.a}", "${trialParameters.b}"])
        doc["metadata"]["name"] = f"strategy-{strategy}"
        write_experiment(doc, script=script)
        record, trials = _run(doc, store, tmp_path)
        best = next(t for t in trials if t.name == _client_best(store, record.name))
        assert best.assignments["a"] == expected
        summary = next(t for t in trials if t.assignments["a"] == 20).observation["result"]
        assert (summary.min, summary.max, summary.latest) == ("5", "20", "5")


def _client_best(store: Store, name: str) -> str:
    from katibx.client import KatibxClient

    return KatibxClient(store).get_optimal_hyperparameters(name)["bestTrialName"]


def test_duplicate_experiment_is_refused_and_nothing_is_lost(tmp_path, store, write_experiment):
    doc = experiment_doc()
    write_experiment(doc)
    record, trials = _run(doc, store, tmp_path)
    from katibx.store import ExperimentExists

    with pytest.raises(ExperimentExists, match="already exists"):
        _run(doc, store, tmp_path)
    assert [t.name for t in store.trials(record.id)] == [t.name for t in trials]


def test_resume_completed_experiment_with_larger_budget(tmp_path, store, write_experiment):
    doc = experiment_doc(maxTrialCount=2, parallelTrialCount=1)
    write_experiment(doc)
    record, first = _run(doc, store, tmp_path)
    record = resume_experiment("exp", store=store, max_trial_count=5)
    trials = store.trials(record.id)
    assert len(trials) == 5
    assert [t.name for t in trials[:2]] == [t.name for t in first]
    assert current_condition(record.conditions)["reason"] == "ExperimentMaxTrialsReached"
    assert any(c["type"] == "Restarting" for c in record.conditions)


def test_seeded_random_resume_matches_uninterrupted_run(tmp_path, write_experiment):
    """The history in the store is the algorithm's only state: 2 trials then 3 more equal 5 at once."""
    doc = experiment_doc(maxTrialCount=5, parallelTrialCount=1)
    write_experiment(doc)
    s1, s2 = Store(tmp_path / "one.db"), Store(tmp_path / "two.db")
    whole = run_experiment(experiment_from_dict(doc), store=s1, workdir=tmp_path)
    doc["spec"]["maxTrialCount"] = 2
    run_experiment(experiment_from_dict(doc), store=s2, workdir=tmp_path)
    split = resume_experiment("exp", store=s2, max_trial_count=5)
    assert [t.assignments for t in s1.trials(whole.id)] == [t.assignments for t in s2.trials(split.id)]


# crash safety ------------------------------------------------------------------------------
def _start_controller(args: list[str], cwd: Path, store_path: Path) -> subprocess.Popen:
    env = {**os.environ, "KATIBX_STORE": str(store_path)}
    return subprocess.Popen([sys.executable, "-m", "katibx.cli", *args, "-q"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=default_signals)


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def _trial_processes(experiment: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("KATIBX_EXPERIMENT") == experiment:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _states(probe: Store, name: str) -> list[TrialState]:
    """Trial states of a stored experiment, [] while it is not stored yet."""
    records = [r for r in probe.list_experiments() if r.name == name]
    return [t.state for t in probe.trials(records[0].id)] if records else []


def _launch(doc: dict, name: str, sleep: float, tmp_path: Path, write_experiment) -> tuple[Store, Path, subprocess.Popen]:
    """Write a sleepy experiment called ``name`` and start ``katibx run`` on it in a subprocess."""
    doc = _sleepy(doc, sleep)
    doc["metadata"]["name"] = name
    path = write_experiment(doc, script=SLEEPY_SCRIPT)
    store_path = tmp_path / f"{name}.db"
    return Store(store_path), store_path, _start_controller(["run", str(path)], tmp_path, store_path)


def test_kill_9_mid_run_then_resume_loses_nothing_and_duplicates_nothing(tmp_path, write_experiment):
    probe, store_path, controller = _launch(experiment_doc(maxTrialCount=6, parallelTrialCount=2), "crashy", 0.6,
                                            tmp_path, write_experiment)

    def some_done_some_running() -> bool:
        states = _states(probe, "crashy")
        return states.count(TrialState.SUCCEEDED) >= 2 and TrialState.RUNNING in states

    _wait_for(some_done_some_running)
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    record = probe.get_experiment("crashy")
    before = {t.name: t.state for t in probe.trials(record.id)}
    orphans = _trial_processes("crashy")
    assert orphans, "the killed controller's trials keep running until resume stops them"

    result = katibx_cli("resume", "crashy", "-q", cwd=tmp_path, store=store_path)
    assert result.returncode == 0, result.stderr
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in orphans)
    trials = probe.trials(record.id)
    assert len(trials) == 6 and len({t.name for t in trials}) == 6
    assert all(t.state is TrialState.SUCCEEDED for t in trials)
    for name, state in before.items():  # finished trials kept their results; in-flight ones re-ran under their name
        assert name in {t.name for t in trials}
    starts = (tmp_path / "starts.log").read_text().split()
    in_flight = [n for n, s in before.items() if s.is_active]
    assert sorted(set(starts)) == sorted(t.name for t in trials)
    assert all(starts.count(n) == 1 for n, s in before.items() if s is TrialState.SUCCEEDED)
    assert all(starts.count(n) <= 2 for n in in_flight)
    assert current_condition(probe.get_experiment("crashy").conditions)["reason"] == "ExperimentMaxTrialsReached"


@pytest.mark.parametrize(("algorithm", "kind"), [("random", "command"), ("tpe", "function"), ("sobol", "ray")])
def test_repeated_kill_9_on_store_events_ends_with_exact_counts(tmp_path, algorithm, kind):
    """benchmarks/soak.py's iteration: kill -9 on random store events (not after sleeps), resume, three times (twice
    on Ray, whose every resume starts a local cluster: the suite's time)."""
    import random

    from benchmarks.soak import MAX_TRIALS, run_iteration

    kills = 2 if kind == "ray" else 3
    result = run_iteration(tmp_path, algorithm, kind, kills, random.Random(1234))
    assert result.kills == kills, result  # each kill hit a live controller with work left
    assert result.left_running > 0, result  # ...leaving processes behind, which resume stopped
    assert result.exact and result.trials == MAX_TRIALS, result
    assert result.duplicates == 0 and result.orphans == 0 and not result.problems, result


def test_ctrl_c_stops_trials_and_resume_finishes(tmp_path, write_experiment):
    probe, store_path, controller = _launch(experiment_doc(maxTrialCount=3, parallelTrialCount=2), "interrupted", 1.0,
                                            tmp_path, write_experiment)
    _wait_for(lambda: TrialState.RUNNING in _states(probe, "interrupted"))
    controller.send_signal(signal.SIGINT)
    assert controller.wait(timeout=30) == 130
    assert "katibx resume interrupted" in controller.stderr.read().decode()
    _wait_for(lambda: not [p for p in _trial_processes("interrupted") if p.status() != psutil.STATUS_ZOMBIE], 10)
    result = katibx_cli("resume", "interrupted", "-q", cwd=tmp_path, store=store_path)
    assert result.returncode == 0, result.stderr
    record = probe.get_experiment("interrupted")
    assert [t.state for t in probe.trials(record.id)] == [TrialState.SUCCEEDED] * 3


def test_controller_in_thread_sees_observations_committed_before_trial_ends(tmp_path, store, write_experiment):
    """Metrics reach the store while the trial is still running."""
    script = ("import os, time\nprint('result=1', flush=True)\n"
              "while not os.path.exists('release'):\n    time.sleep(0.02)\nprint('result=2')\n")
    doc = set_command(experiment_doc(maxTrialCount=1, parallelTrialCount=1),
                      ["python3", "objective.py", "${trialParameters.a}", "${trialParameters.b}"])
    write_experiment(doc, script=script)
    thread = threading.Thread(target=_run, args=(doc, Store(store.path), tmp_path))
    thread.start()
    try:
        def observed() -> bool:
            try:
                record = store.get_experiment("exp")
            except Exception:  # noqa: BLE001
                return False
            trials = store.trials(record.id)
            return bool(trials) and trials[0].state is TrialState.RUNNING and bool(store.observation_logs(trials[0].id))

        _wait_for(observed, 30)
    finally:
        (tmp_path / "release").write_text("")
        thread.join(60)
    record = store.get_experiment("exp")
    assert store.trials(record.id)[0].observation["result"].latest == "2"


def test_trials_run_in_the_experiment_files_folder_by_default(tmp_path, store, write_experiment, monkeypatch):
    from katibx.loader import load_experiment

    path = write_experiment(experiment_doc(maxTrialCount=1, parallelTrialCount=1))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # objective.py is only found relative to the YAML file
    record = run_experiment(load_experiment(path), store=store)
    assert [t.state for t in store.trials(record.id)] == [TrialState.SUCCEEDED]


def test_conditions_follow_katib_order_after_a_restart(tmp_path, store, write_experiment):
    doc = experiment_doc(maxTrialCount=1, parallelTrialCount=1)
    write_experiment(doc)
    run_experiment(experiment_from_dict(doc), store=store, workdir=tmp_path)
    seen = []
    record = resume_experiment("exp", store=store, max_trial_count=2,
                               listener=lambda rec, trials: seen.append(current_condition(rec.conditions)["type"]))
    assert "Running" in seen and "Restarting" not in seen[seen.index("Running"):]
    types = [(c["type"], c["status"]) for c in record.conditions]
    assert types[-1] == ("Succeeded", "True")
    assert ("Restarting", "False") in types


def _earlier_trials_stored(p: dict) -> dict:
    """Reports how many of the trials created before it the store shows finished as it starts (from its own
    connection, as another process would see them)."""
    with Store(p["store"]) as store:
        record = store.get_experiment("commits")
        finished = sum(t.state.is_terminal for t in store.trials(record.id))
    return {"loss": p["x"], "finished": finished}


@pytest.mark.parametrize("isolation", ["process", "none"])
def test_a_trial_is_stored_as_finished_before_the_next_starts_and_trials_cost_one_commit_each(
        tmp_path: Path, isolation: str) -> None:
    """A trial's end is written together with the next trial's creation (one commit), never after it starts; a trial
    on a thread (no worker to find after a crash) is not stored as Running separately, a worker process's is."""
    import katibx

    commits: list[str] = []  # the transactions the controller's connection commits, explicit or not

    def traced(sql: str) -> None:
        if sql == "COMMIT" or (sql.split()[0] in ("INSERT", "UPDATE", "DELETE") and not store._db.in_transaction):
            commits.append(sql)

    with Store(tmp_path / "katibx.db") as store:
        store._db.set_trace_callback(traced)
        result = katibx.tune("commits", _earlier_trials_stored,
                             {"x": katibx.search.double(0, 1), "store": str(tmp_path / "katibx.db")},
                             objective_metric_name="loss", additional_metric_names=["finished"], max_trial_count=12,
                             parallel_trial_count=1, store=store, progress=False, isolation=isolation)
    assert sorted(t.metrics["finished"] for t in result.trials) == list(range(12))
    per_trial = 1 if isolation == "none" else 2  # (+ a worker process's Running, with its handle)
    assert 12 * per_trial <= len(commits) <= 12 * per_trial + 5  # (+ the experiment's creation and conditions)


def test_a_drawn_trial_name_the_experiment_has_already_is_drawn_again(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The store checks a new trial's name as it takes the trial (a finished trial's name is not in the controller's
    memory): the same draw twice gives the second trial another name, not a failed insert."""
    import katibx
    import katibx.trial_book

    draws = iter([5, 5, 6])
    monkeypatch.setattr(katibx.trial_book.secrets, "randbelow", lambda _n: next(draws))
    result = katibx.tune("clash", lambda p: p["x"], {"x": katibx.search.double(0, 1)}, objective_metric_name="loss",
                         max_trial_count=2, parallel_trial_count=1, store=tmp_path / "katibx.db", progress=False,
                         isolation="none")
    names = [t.name for t in result.trials]
    assert len(set(names)) == 2 and all(t.state is TrialState.SUCCEEDED for t in result.trials)
    assert next(draws, None) is None  # the third draw was taken: the second was the first's name


def test_a_trial_waiting_for_its_resources_starts_only_once_the_earlier_ends_are_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Created trial the backend could not start yet (its GPUs were taken) starts when a trial ends, before any
    new trial is created: that end is stored before it starts too."""
    import katibx
    from katibx.workers.local import LocalBackend

    finished_at_start: list[int] = []
    start = LocalBackend.start

    def recorded_start(backend: LocalBackend, job: Any) -> Any:
        with Store(tmp_path / "katibx.db") as other:  # what another process (or a restart) would find then
            finished_at_start.append(sum(t.state.is_terminal
                                         for t in other.trials(other.get_experiment("waiting").id)))
        return start(backend, job)

    # one trial at a time, though two may run: the second waits Created until the first has ended
    monkeypatch.setattr(LocalBackend, "can_start", lambda self, job: not (self._threads and bool(self._threads)))
    monkeypatch.setattr(LocalBackend, "start", recorded_start)
    katibx.tune("waiting", lambda p: p["x"], {"x": katibx.search.double(0, 1)}, objective_metric_name="loss",
                max_trial_count=3, parallel_trial_count=2, store=tmp_path / "katibx.db", progress=False,
                isolation="none")
    assert finished_at_start == [0, 1, 2]


def test_callbacks_see_each_finished_trial_stored_before_the_next_trial_is_created(tmp_path: Path) -> None:
    import katibx

    seen: list[tuple[int, list[float]]] = []
    katibx.tune("callbacks", lambda p: p["x"], {"x": katibx.search.double(0, 1)}, objective_metric_name="loss",
                max_trial_count=4, parallel_trial_count=1, store=tmp_path / "katibx.db", progress=False,
                isolation="none", callbacks=[lambda result, trial: seen.append((len(result.trials),
                                                                                trial.history.get("loss", [])))])
    assert [count for count, _ in seen] == [1, 2, 3, 4]  # no trial created after the one that finished
    assert all(len(history) == 1 for _, history in seen)  # its metrics read back from the store
