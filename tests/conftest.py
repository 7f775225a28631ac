"""Shared fixtures: a fresh SQLite store per test and a builder for Katib Experiment documents."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import psutil
import pytest
import yaml

from katibx.store import Store

T = TypeVar("T")

# tests/pipelines needs kfp, which lives in an environment of its own: tests/test_pipelines_env.py runs them there
# (with PIPELINES_ENV set), so the default run leaves the folder to it rather than failing to import kfp.
PIPELINES_ENV = "KATIBX_PIPELINES_ENV"
collect_ignore = [] if os.environ.get(PIPELINES_ENV) else ["pipelines"]
BASE_EXPERIMENT: dict[str, Any] = {
    "apiVersion": "kubeflow.org/v1beta1",
    "kind": "Experiment",
    "metadata": {"name": "exp"},
    "spec": {
        "objective": {"type": "maximize", "objectiveMetricName": "result"},
        "algorithm": {"algorithmName": "random", "algorithmSettings": [{"name": "random_state", "value": "7"}]},
        "parallelTrialCount": 2,
        "maxTrialCount": 4,
        "parameters": [
            {"name": "a", "parameterType": "int", "feasibleSpace": {"min": "10", "max": "20"}},
            {"name": "b", "parameterType": "double", "feasibleSpace": {"min": "0.1", "max": "0.2"}},
        ],
        "trialTemplate": {
            "primaryContainerName": "main",
            "trialParameters": [{"name": "a", "reference": "a"}, {"name": "b", "reference": "b"}],
            "trialSpec": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{
                    "name": "main",
                    "image": "python:3.11",
                    "command": ["python3", "objective.py", "--a=${trialParameters.a}", "--b=${trialParameters.b}"],
                }]}}},
            },
        },
    },
}

# Trial script used by BASE_EXPERIMENT: prints Katib's e2e objective 4a - b^2.
OBJECTIVE_SCRIPT = """
import argparse
p = argparse.ArgumentParser()
p.add_argument("--a", type=int)
p.add_argument("--b", type=float)
args = p.parse_args()
print(f"result={4 * args.a - args.b ** 2}")
"""


def experiment_doc(**spec_overrides: Any) -> dict[str, Any]:
    """A deep copy of BASE_EXPERIMENT with top-level spec keys replaced."""
    doc = copy.deepcopy(BASE_EXPERIMENT)
    doc["spec"].update(copy.deepcopy(spec_overrides))
    return doc


def set_command(doc: dict[str, Any], command: list[str]) -> dict[str, Any]:
    """Replace the primary container's command."""
    doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"] = command
    return doc


@pytest.fixture
def store(tmp_path: Path) -> Store:
    st = Store(tmp_path / "store" / "katibx.db")
    yield st
    st.close()


@pytest.fixture
def write_experiment(tmp_path: Path):
    """Write an experiment document (and the default objective script) into tmp_path; returns the YAML path."""

    def write(doc: dict[str, Any], name: str = "experiment.yaml", script: str = OBJECTIVE_SCRIPT) -> Path:
        (tmp_path / "objective.py").write_text(script)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    return write


def katibx_cli(*args: str, cwd: Path, store: Path, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the real ``katibx`` CLI in a subprocess with a given store."""
    env = {**kwargs.pop("env", os.environ), "KATIBX_STORE": str(store), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "katibx.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def wait_until(condition: Callable[[], T], seconds: float = 60, what: str = "the awaited state") -> T:
    """The first truthy answer of ``condition()``, asked again and again until ``seconds`` have passed: how a test
    waits for a state another process reaches (a file, a store row, a server's answer), never for a fixed time.
    AssertionError naming ``what`` when it never comes."""
    deadline = time.monotonic() + seconds
    while True:
        answer = condition()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never came within {seconds:g} s")
        time.sleep(0.02)


def process_gone(pid: int, seconds: float = 5) -> bool:
    """True once ``pid`` has exited within ``seconds`` (a zombie waiting for an unrelated parent counts as gone)."""
    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    try:
        return wait_until(gone, seconds)
    except AssertionError:
        return False


_EXIT_STATUS: dict[str, int] = {}


def inner_pytest_runs(python: str, groups: list[list[str]], env: dict[str, str], timeout: float = 1200) -> None:
    """Run pytest over each group of arguments in a process of its own, all at once (the calling test only waits,
    so the machine's cores are theirs), and assert that every run passed without a skip."""
    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as folder:
        logs = [Path(folder) / f"run{i}.log" for i in range(len(groups))]
        runs = []
        for group, log in zip(groups, logs):
            with log.open("w") as out:
                runs.append(subprocess.Popen([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *group],
                                             cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        try:
            for run in runs:
                run.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            for run in runs:
                if run.poll() is None:
                    run.kill()
                    run.wait()
        for group, run, log in zip(groups, runs, logs):
            output = log.read_text()
            summary = output.strip().splitlines()[-1] if output.strip() else ""
            assert run.returncode == 0 and " passed" in summary and "failed" not in summary and \
                "skipped" not in summary, f"{' '.join(group)}:\n{output[-6000:]}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Once pytest has reported, end this process with its exit status without tearing the interpreter down.

    This test process hosts a Ray driver (ray.init), gRPC (Ray, kubeflow-katib) and torch; their native threads
    and static destructors race the interpreter's teardown. Once, in CI, the run ended in SIGSEGV after
    "981 passed", past the point where Python's fault handler can report (stop 22; three full runs since were
    clean). What katibx users run is tested in subprocesses whose exit codes the tests assert; the teardown of
    this process is no product behaviour, so it is not left to chance. The fault handler stays on until then."""
    import atexit
    import faulthandler

    faulthandler.enable(file=sys.__stderr__, all_threads=True)
    if "code" in _EXIT_STATUS:
        factory = getattr(config, "_tmp_path_factory", None)
        basetemp = getattr(factory, "_basetemp", None)  # (None when no test asked for a temporary folder)
        if getattr(factory, "_given_basetemp", None) is not None:  # --basetemp: not one of pytest's numbered ones
            basetemp = None
        keep = int(config.getini("tmp_path_retention_count"))
        atexit.register(_exit_now, _EXIT_STATUS["code"], basetemp, keep)  # the last registered, so the first to run


def _exit_now(code: int, basetemp: Path | None, keep: int) -> None:
    """Flush and end, after what pytest's own exit handlers (which this one skips) do for its temporary folders:
    this run's is unlocked and only the newest ``keep`` runs' are kept (the suite leaves about 2 GB a run there;
    skipped, they piled up until the disk was full)."""
    if basetemp is not None:
        (basetemp / ".lock").unlink(missing_ok=True)
        try:
            from _pytest.pathlib import LOCK_TIMEOUT, cleanup_numbered_dir  # (pytest's own, registered at exit)

            cleanup_numbered_dir(basetemp.parent, "pytest-", keep, time.time() - LOCK_TIMEOUT)
        except (ImportError, TypeError, OSError):  # another pytest's internals, or a folder in use: left as it is
            pass
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            continue
    os._exit(code)


def default_signals() -> None:
    """``preexec_fn`` for controllers the tests start: SIGINT, SIGTERM and SIGHUP at their defaults, whatever the
    test run inherited (under ``nohup`` or some CI runners SIGHUP is ignored, and katibx rightly leaves an ignored
    signal alone)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


# A test run started in the background by a shell without job control (`cmd &` in a script) inherits SIGINT ignored,
# and so would every process it starts: a katibx controller then rightly ignores Ctrl-C, and the Ctrl-C tests fail
# for the way the run was started. Python's own SIGINT handler back: the processes the tests start get the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
