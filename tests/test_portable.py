"""The local backend on systems without Linux's process interfaces (macOS): the portable POSIX path, run on Linux with
``KATIBX_PORTABLE=1`` and tests/support/portable/sitecustomize.py, which takes pidfds away and fails any /proc read
by katibx. The local-backend, function-worker, escaped-process, controller (kill -9 + resume, Ctrl-C) and Python API
modules run again on that path, and the quick start; Windows is refused in one line naming WSL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import experiment_doc, inner_pytest_runs, katibx_cli

from katibx import capabilities
from katibx.backend import BackendUnavailable
from katibx.workers._process_exit import ProcessExit

REPO = Path(__file__).resolve().parent.parent
SUPPORT = REPO / "tests" / "support" / "portable"
MODULES = ["tests/test_local_worker.py", "tests/test_function_workers.py", "tests/test_escaped_processes.py",
           "tests/test_controller.py", "tests/test_python_api.py", "tests/test_log_limit.py"]


def portable_env(**extra: str) -> dict[str, str]:
    """The environment of a run on the portable path, with the sitecustomize that enforces it."""
    path = os.pathsep.join(p for p in (str(SUPPORT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "KATIBX_PORTABLE": "1", "PYTHONPATH": path, **extra}


def test_the_switch_turns_the_linux_interfaces_off(monkeypatch: pytest.MonkeyPatch) -> None:
    linux = sys.platform.startswith("linux")
    assert (capabilities.pidfd(), capabilities.subreaper(), capabilities.proc_fs()) == (linux, linux, linux)
    monkeypatch.setenv("KATIBX_PORTABLE", "1")
    assert (capabilities.pidfd(), capabilities.subreaper(), capabilities.proc_fs()) == (False, False, False)
    process = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    exit_ = ProcessExit(process.pid, lambda: process.poll() is not None)
    try:
        assert not exit_.pidfd and not exit_.ended(0.05)  # a waiter thread and a pipe
        exit_.kill(signal.SIGTERM)
        assert exit_.ended(30)  # the exit is seen without reaping the child ...
        assert process.poll() == -signal.SIGTERM  # ... which its Popen reaps, with its status
        exit_.kill(signal.SIGKILL)  # after the exit: nothing is sent to a pid that may be reused
    finally:
        exit_.close()
        process.kill()
        process.wait()
    taken = subprocess.run([sys.executable, "-c", "import os, signal; print(hasattr(os, 'pidfd_open'), "
                            "hasattr(signal, 'pidfd_send_signal'))"], env=portable_env(), capture_output=True,
                           text=True, check=True)
    assert taken.stdout.split() == ["False", "False"]  # the test runs below really lack them


@pytest.mark.parametrize("portable", ["0", "1"])
def test_a_function_workers_exit_is_seen_at_once(monkeypatch: pytest.MonkeyPatch, portable: str) -> None:
    """The exit descriptor of a forked worker becomes readable when it dies (not only at the next periodic check),
    on both paths; the worker is reaped by multiprocessing, which keeps its exit code."""
    from katibx.workers._function_worker import FunctionWorker

    monkeypatch.setenv("KATIBX_PORTABLE", portable)
    worker = FunctionWorker(multiprocessing.get_context("fork"), "json:dumps", reuse=True)
    try:
        assert not worker.exit.ended(0.05)
        os.kill(worker.pid, signal.SIGKILL)
        assert worker.exit.ended(30)
        assert worker.result() == -signal.SIGKILL
    finally:
        worker.stop()


@pytest.mark.timeout(1200)  # the runs have their own limit; pytest's default (120 s) would cut them short
def test_the_local_backend_keeps_its_promises_on_the_portable_path() -> None:
    """Every test of these modules, except the Ray ones (not the local backend), in a run on the portable path."""
    # anyio's pytest plugin (where installed) imports trio, which on Linux needs the epoll that this path takes away;
    # two halves side by side (this test only waits for them)
    options = ["-p", "no:anyio", "-x", "-k", "not ray"]
    inner_pytest_runs(sys.executable, [[*options, *MODULES[:3]], [*options, *MODULES[3:]]], portable_env())


def test_quick_start_on_the_portable_path(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "katibx.cli", "run", str(REPO / "examples/quickstart/experiment.yaml"),
                             "--store", str(tmp_path / "katibx.db")], cwd=tmp_path, env=portable_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Succeeded" in result.stdout


def test_windows_is_refused_in_one_line_naming_wsl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   write_experiment) -> None:
    from katibx.workers.local import LocalBackend

    monkeypatch.delattr(os, "fork")
    with pytest.raises(BackendUnavailable, match="WSL"):
        LocalBackend()
    monkeypatch.undo()
    (tmp_path / "windows").mkdir()
    (tmp_path / "windows" / "sitecustomize.py").write_text(  # what Windows lacks, as far as katibx uses it
        "import os, signal\ndel os.fork, os.killpg, signal.SIGKILL, signal.SIGHUP\n"
        "for name in ('ITIMER_REAL', 'ITIMER_VIRTUAL', 'ITIMER_PROF', 'setitimer', 'pthread_sigmask'):\n"
        "    delattr(signal, name)\n")
    path = write_experiment(experiment_doc(maxTrialCount=1, parallelTrialCount=1))
    result = katibx_cli("run", str(path), cwd=tmp_path, store=tmp_path / "katibx.db",
                        env={**os.environ, "PYTHONPATH": str(tmp_path / "windows")})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "WSL" in result.stderr and "os.fork, os.killpg" in result.stderr
