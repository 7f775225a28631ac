"""Every process a trial starts is stopped when the trial ends, including one that left the trial's process group
with ``setsid`` (command and function trials; after a controller crash, on resume)."""

from __future__ import annotations

import signal
from pathlib import Path

from conftest import experiment_doc, katibx_cli, process_gone
from test_controller import SLEEPY_SCRIPT, _launch, _states, _wait_for

import katibx
from katibx.loader import experiment_from_dict
from katibx.runner import run_experiment
from katibx.store import Store
from katibx.trial import TrialState

# SLEEPY_SCRIPT that first starts a process waiting for a signal in a session of its own (out of the trial's
# process group), noting its pid.
ESCAPING_SCRIPT = SLEEPY_SCRIPT.replace("time.sleep(args.sleep)", """
import subprocess
child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"], start_new_session=True)
with open("escaped.pids", "a") as f:
    f.write(f"{child.pid}\\n")
time.sleep(args.sleep)""")


def _escaped(folder: Path) -> list[int]:
    return [int(line) for line in (folder / "escaped.pids").read_text().split()]


def _all_gone(pids: list[int]) -> bool:
    return all(process_gone(pid, 10) for pid in pids)


def test_a_setsid_grandchild_of_a_command_trial_is_stopped_with_it(tmp_path: Path, store: Store,
                                                                    write_experiment) -> None:
    doc = experiment_doc(maxTrialCount=3, parallelTrialCount=2)
    write_experiment(doc, script=ESCAPING_SCRIPT)
    record = run_experiment(experiment_from_dict(doc), store=store, workdir=tmp_path)
    assert [t.state for t in store.trials(record.id)] == [TrialState.SUCCEEDED] * 3
    pids = _escaped(tmp_path)
    assert len(pids) == 3 and _all_gone(pids)


def test_a_setsid_grandchild_of_a_function_trial_is_stopped_with_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)

    def objective(params: dict) -> dict:
        import subprocess
        import sys

        child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"], start_new_session=True)
        with open(tmp_path / "escaped.pids", "a") as f:
            f.write(f"{child.pid}\n")
        return {"loss": params["x"]}

    katibx.tune("escaping", objective, {"x": katibx.search.double(0, 1)}, store=Store(tmp_path / "s.db"),
                objective_metric_name="loss", max_trial_count=3, parallel_trial_count=1)
    pids = _escaped(tmp_path)
    assert len(pids) == 3 and _all_gone(pids)


def test_resume_stops_what_a_killed_controllers_trials_started_outside_their_group(tmp_path: Path,
                                                                                    write_experiment) -> None:
    doc = experiment_doc(maxTrialCount=2, parallelTrialCount=2)
    doc["metadata"]["name"] = "escapes"
    probe, store_path, controller = _launch(doc, "escapes", 30, tmp_path, lambda d, script: write_experiment(
        d, script=ESCAPING_SCRIPT))
    _wait_for(lambda: _states(probe, "escapes").count(TrialState.RUNNING) == 2
              and (tmp_path / "escaped.pids").exists() and len(_escaped(tmp_path)) == 2)
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    first = _escaped(tmp_path)
    assert not any(process_gone(pid, 0) for pid in first)  # alive after the controller died

    # resume stops the orphans (group and escaped) and re-runs the trials; make the re-runs quick
    record = probe.get_experiment("escapes")
    spec = record.experiment.to_dict()
    command = spec["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"]
    command[-1] = "--sleep=0"
    record.experiment = experiment_from_dict(spec)
    probe.save_experiment(record)
    result = katibx_cli("resume", "escapes", "-q", cwd=tmp_path, store=store_path)
    assert result.returncode == 0, result.stderr
    assert _all_gone(_escaped(tmp_path))


def test_only_processes_started_since_the_trial_are_looked_at_unless_the_ids_wrapped(monkeypatch) -> None:
    """Linux: the processes with ids newer than the one noted when the trial started (a few, not every process);
    every process when no newer id shows (ids wrapped around, or a /proc that never says: gVisor's reports 0), on
    the portable path, or without a note. (Run by the portable suite too, where only the last holds.)"""
    import os
    import subprocess
    import sys
    import time

    from katibx import capabilities
    from katibx.workers import _escaped

    child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    try:
        since = time.time() - 1
        assert os.getpid() in {p.pid for p in _escaped._younger(since, None)}  # no note: every process
        if not capabilities.proc_fs():  # the portable path (and macOS): no note to take, every process looked at
            assert _escaped.last_pid() is None
            assert {os.getpid(), child.pid} <= {p.pid for p in _escaped._younger(since, 1)}
            return
        assert isinstance(_escaped.last_pid(), int)
        monkeypatch.setattr(_escaped, "last_pid", lambda: child.pid)  # the newest id now: the child's
        assert {p.pid for p in _escaped._younger(since, child.pid - 1)} == {child.pid}
        for noted in (child.pid, child.pid + 1):  # no newer id than the note: ids wrapped, or /proc says nothing new
            assert {os.getpid(), child.pid} <= {p.pid for p in _escaped._younger(since, noted)}
        monkeypatch.setattr(_escaped, "last_pid", lambda: 0)  # gVisor's /proc/loadavg
        assert os.getpid() in {p.pid for p in _escaped._younger(since, 0)}
    finally:
        child.kill()
        child.wait()
