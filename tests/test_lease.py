"""One controller per experiment (katibx.lease): a second run/resume is refused naming the holder, a dead holder's
lease is taken over, ``delete`` of a running experiment needs ``--force``, which stops the controller first; SIGTERM
and SIGHUP stop a controller like Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import default_signals, experiment_doc, katibx_cli
from test_controller import _launch, _states, _trial_processes, _wait_for

from katibx.lease import ExperimentBusy, ExperimentLease, LeaseLost, new_lease
from katibx.loader import experiment_from_dict
from katibx.processes import process_started, this_host
from katibx.runner import resume_experiment, run_experiment
from katibx.store import LeaseRow, Store, StoreFault
from katibx.trial import TrialState


def _holder_pid(probe: Store, name: str) -> int | None:
    records = [r for r in probe.list_experiments() if r.name == name]
    lease = probe.lease(records[0].id) if records else None
    return lease.pid if lease else None


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_second_controller_is_refused_naming_the_holder(tmp_path: Path, write_experiment) -> None:
    probe, store_path, controller = _launch(experiment_doc(maxTrialCount=4, parallelTrialCount=2), "busy", 0.8,
                                            tmp_path, write_experiment)
    _wait_for(lambda: TrialState.RUNNING in _states(probe, "busy"))
    assert _holder_pid(probe, "busy") == controller.pid
    running = {t.name for t in probe.trials(probe.get_experiment("busy").id) if t.state is TrialState.RUNNING}

    second = katibx_cli("resume", "busy", "-q", cwd=tmp_path, store=store_path)
    assert second.returncode == 2, second.stderr
    line = second.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert f"pid {controller.pid} on host {socket.gethostname()}" in line and "katibx delete busy --force" in line
    # the refused controller touched nothing: the first one's trials still run and the budget holds
    record = probe.get_experiment("busy")
    assert running <= {t.name for t in probe.trials(record.id) if t.state in (TrialState.RUNNING, TrialState.SUCCEEDED)}
    with pytest.raises(ExperimentBusy, match=f"pid {controller.pid}"):
        resume_experiment("busy", store=probe)

    assert controller.wait(timeout=120) == 0, controller.stderr.read().decode()
    trials = probe.trials(record.id)
    assert len(trials) == 4 and all(t.state is TrialState.SUCCEEDED for t in trials)
    assert len({tuple(sorted(t.assignments.items())) for t in trials}) == 4
    assert probe.lease(record.id) is None  # released at the end


def test_the_lease_of_a_killed_controller_is_taken_over_at_once(tmp_path: Path, write_experiment) -> None:
    probe, store_path, controller = _launch(experiment_doc(maxTrialCount=4, parallelTrialCount=2), "taken", 0.6,
                                            tmp_path, write_experiment)
    _wait_for(lambda: TrialState.RUNNING in _states(probe, "taken"))
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    record = probe.get_experiment("taken")
    assert probe.lease(record.id).pid == controller.pid  # kill -9 left the lease behind
    result = katibx_cli("resume", "taken", "-q", cwd=tmp_path, store=store_path)
    assert result.returncode == 0, result.stderr
    assert [t.state for t in probe.trials(record.id)] == [TrialState.SUCCEEDED] * 4


def _stored_lease(store: Store, name: str, **fields: object) -> LeaseRow:
    """Replace the experiment's lease with one of this process, changed by ``fields``."""
    record = store.get_experiment(name)
    lease = LeaseRow(**{**new_lease().__dict__, **fields})
    current = store.lease(record.id)
    assert store.take_lease(record.id, lease, current.holder if current else None) is lease
    return lease


def _stopped_experiment(tmp_path: Path, write_experiment, store: Store) -> None:
    """A completed experiment 'held' of 2 trials, whose controller has ended."""
    doc = experiment_doc(maxTrialCount=2, parallelTrialCount=1)
    doc["metadata"]["name"] = "held"
    write_experiment(doc)
    run_experiment(experiment_from_dict(doc), store=store, workdir=tmp_path)


def test_a_lease_from_another_host_is_honoured_until_its_heartbeat_expires(tmp_path: Path, write_experiment,
                                                                           store: Store) -> None:
    _stopped_experiment(tmp_path, write_experiment, store)
    _stored_lease(store, "held", host="gpu-node-7", pid=4242, heartbeat=time.time())
    with pytest.raises(ExperimentBusy, match="pid 4242 on host gpu-node-7"):
        resume_experiment("held", store=store, max_trial_count=3)
    _stored_lease(store, "held", host="gpu-node-7", pid=4242, heartbeat=time.time() - 60)
    record = resume_experiment("held", store=store, max_trial_count=3)
    assert len(store.trials(record.id)) == 3 and store.lease(record.id) is None


def test_a_reused_pid_is_not_taken_for_the_holder(tmp_path: Path, write_experiment, store: Store) -> None:
    _stopped_experiment(tmp_path, write_experiment, store)
    # this very process is alive, but it is not the process that took the lease (another start time)
    _stored_lease(store, "held", pid=os.getpid(), pid_started=new_lease().pid_started - 1000,
                  heartbeat=time.time() - 10)
    record = resume_experiment("held", store=store, max_trial_count=3)
    assert len(store.trials(record.id)) == 3
    _stored_lease(store, "held", heartbeat=time.time() - 10)  # the same process, silent: alive, refused
    with pytest.raises(ExperimentBusy):
        resume_experiment("held", store=store, max_trial_count=4)
    # a controller in another pid namespace under this host name (a container) cannot be seen: its heartbeat counts
    _stored_lease(store, "held", host=f"{socket.gethostname()}/pidns:1", pid=4242, heartbeat=time.time())
    with pytest.raises(ExperimentBusy, match=f"pid 4242 on host {socket.gethostname()}, since"):
        resume_experiment("held", store=store, max_trial_count=4)
    # a lease from before a reboot (start times restart with the boot): its old heartbeat says it is gone
    _stored_lease(store, "held", host=f"{this_host().rpartition('/boot:')[0]}/boot:an-earlier-boot",
                  heartbeat=time.time() - 60)
    record = resume_experiment("held", store=store, max_trial_count=4)
    assert len(store.trials(record.id)) == 4


def test_process_start_times_on_linux_and_elsewhere_agree_on_who_is_alive() -> None:
    """The lease's liveness check reads /proc on Linux (clock ticks since boot: an NTP step cannot move them) and
    psutil elsewhere; both tell a live process from a finished one, and give one process one value."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(done.stdout)
    for use_proc in (True, False):
        me = process_started(os.getpid(), use_proc=use_proc)
        assert me is not None and me == process_started(os.getpid(), use_proc=use_proc)
        assert process_started(gone, use_proc=use_proc) is None


def test_a_controller_whose_lease_is_taken_over_stops(tmp_path: Path, write_experiment, store: Store) -> None:
    _stopped_experiment(tmp_path, write_experiment, store)
    record = store.get_experiment("held")
    lease = ExperimentLease(store, record, renew_seconds=0.05)
    with lease:
        lease.check()
        _stored_lease(store, "held", host="elsewhere")
        _wait_for(lambda: lease._thread is None or not lease._thread.is_alive(), 10)
        with pytest.raises(LeaseLost, match="lost its lease .*host elsewhere"):
            lease.check()
    assert store.lease(record.id).host == "elsewhere"  # releasing a lost lease leaves the new holder's alone


def test_delete_of_a_running_experiment_needs_force_which_stops_its_controller(tmp_path: Path,
                                                                                write_experiment) -> None:
    probe, store_path, controller = _launch(experiment_doc(maxTrialCount=6, parallelTrialCount=2), "doomed", 30,
                                            tmp_path, write_experiment)
    _wait_for(lambda: _states(probe, "doomed").count(TrialState.RUNNING) == 2)
    trials = _trial_processes("doomed")
    assert trials

    refused = katibx_cli("delete", "doomed", cwd=tmp_path, store=store_path)
    assert refused.returncode == 2 and f"pid {controller.pid}" in refused.stderr and "--force" in refused.stderr
    assert probe.get_experiment("doomed") and controller.poll() is None

    forced = katibx_cli("delete", "doomed", "--force", cwd=tmp_path, store=store_path)
    assert forced.returncode == 0, forced.stderr
    assert "experiment doomed deleted" in forced.stdout
    assert controller.wait(timeout=30) == 2
    assert "stopped at the request of katibx delete --force" in controller.stderr.read().decode()
    assert not [r for r in probe.list_experiments() if r.name == "doomed"]
    assert not _alive(trials)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_controller_like_ctrl_c(tmp_path: Path, write_experiment, signum: int) -> None:
    name = f"signalled-{signum}"
    probe, store_path, controller = _launch(experiment_doc(maxTrialCount=3, parallelTrialCount=2), name, 30,
                                            tmp_path, write_experiment)
    _wait_for(lambda: _states(probe, name).count(TrialState.RUNNING) == 2)
    trials = _trial_processes(name)
    assert trials
    controller.send_signal(signum)
    assert controller.wait(timeout=30) == 130
    assert f"katibx resume {name}" in controller.stderr.read().decode()
    assert not _alive(trials)
    record = probe.get_experiment(name)
    assert probe.lease(record.id) is None  # released: resume may start at once


def test_signals_handled_by_the_program_are_left_alone(tmp_path: Path, write_experiment) -> None:
    """A program that handles SIGTERM itself keeps its handler during a run."""
    doc = experiment_doc(maxTrialCount=1, parallelTrialCount=1)
    write_experiment(doc)
    program = (
        "import signal, sys\n"
        "from katibx.loader import load_experiment\nfrom katibx.runner import run_experiment\nfrom katibx.store import Store\n"
        "def mine(*_): pass\n"
        "signal.signal(signal.SIGTERM, mine)\n"
        f"run_experiment(load_experiment({str(tmp_path / 'experiment.yaml')!r}), store=Store({str(tmp_path / 'p.db')!r}))\n"
        "assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGHUP) is signal.SIG_DFL\n"
        "print('kept')\n"
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            preexec_fn=default_signals)
    assert result.returncode == 0 and "kept" in result.stdout, result.stderr


def test_a_controller_that_cannot_renew_its_lease_stops(tmp_path: Path, write_experiment, store: Store,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _stopped_experiment(tmp_path, write_experiment, store)
    record = store.get_experiment("held")

    def locked(self: Store, experiment_id: int, holder: str) -> None:
        raise StoreFault(f"store {self.path}: database is locked")

    monkeypatch.setattr(Store, "renew_lease", locked)
    with ExperimentLease(store, record, renew_seconds=0.02, lease_seconds=0.2) as lease:
        _wait_for(lambda: lease._thread is None or not lease._thread.is_alive(), 10)
        with pytest.raises(LeaseLost, match="could not be renewed for 0 s .*database is locked"):
            lease.check()


def test_list_says_when_a_running_experiments_controller_is_gone(tmp_path: Path, write_experiment) -> None:
    probe, store_path, controller = _launch(experiment_doc(maxTrialCount=4, parallelTrialCount=2), "gone", 30,
                                            tmp_path, write_experiment)
    _wait_for(lambda: _states(probe, "gone").count(TrialState.RUNNING) == 2)
    alive = katibx_cli("list", cwd=tmp_path, store=store_path)
    assert "Running" in alive.stdout and "not alive" not in alive.stdout
    trials = _trial_processes("gone")
    controller.kill()
    controller.wait(timeout=30)
    listed = katibx_cli("list", cwd=tmp_path, store=store_path)
    assert "Running (controller not alive: katibx resume gone)" in listed.stdout, listed.stdout
    for process in trials:  # what the killed controller left behind (a resume would stop them)
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
