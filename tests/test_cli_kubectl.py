"""The CLI as kubectl users expect it, piped (not a terminal): -w ending with the experiment, logs -f following a
running trial, -o name|wide|jsonpath, --sort-by, -l selectors, get trial, describe, and delete of several or all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import pytest

from katibx.store import Store, StoreError
from tests.conftest import experiment_doc, katibx_cli, wait_until

# A trial that prints a line, then waits for the test's `go` file before it prints its metric and ends.
GATED_SCRIPT = """
import argparse, os, sys, time
p = argparse.ArgumentParser()
p.add_argument("--a", type=int)
p.add_argument("--b", type=float)
args = p.parse_args()
print(f"started a={args.a}", flush=True)
while not os.path.exists(os.path.join(os.environ["GATE_DIR"], "go")):
    time.sleep(0.05)
print(f"result={4 * args.a - args.b ** 2}", flush=True)
"""


def _cli(*args: str, cwd: Path, store: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "KATIBX_STORE": str(store), "GATE_DIR": str(cwd)}
    return subprocess.Popen([sys.executable, "-m", "katibx.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _read_until(stream: IO[str], wanted: str) -> list[str]:
    """Lines of ``stream`` up to and including the first that contains ``wanted`` (an event, not a sleep)."""
    lines = []
    for line in stream:
        lines.append(line)
        if wanted in line:
            return lines
    raise AssertionError(f"{wanted!r} never came; got {lines}")


def _stored(store: Path, name: str) -> bool:
    """Whether experiment ``name`` is in the store yet."""
    try:
        with Store(store, create=False) as st:
            return bool(st.get_experiment(name))
    except StoreError:
        return False


def start_gated_run(tmp_path: Path, write_experiment: Any, store: Path, *options: str,
                    **popen: Any) -> subprocess.Popen[str]:
    """`katibx run` (with ``options``) of experiment `exp`: 2 trials at once that print a line, then wait for the
    test's `go` file in ``tmp_path`` before they report their result."""
    path = write_experiment(experiment_doc(maxTrialCount=2, parallelTrialCount=2), script=GATED_SCRIPT)
    env = {**os.environ, "KATIBX_STORE": str(store), "GATE_DIR": str(tmp_path)}
    return subprocess.Popen([sys.executable, "-m", "katibx.cli", "run", str(path), "-q", *options], cwd=tmp_path,
                            env=env, text=True, **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen})


@pytest.fixture
def gated_run(tmp_path, write_experiment):
    """A gated run (see ``start_gated_run``); yields (store, run process) once the experiment is stored."""
    store = tmp_path / "katibx.db"
    run = start_gated_run(tmp_path, write_experiment, store)
    try:
        wait_until(lambda: _stored(store, "exp"), what="the stored experiment")
        yield store, run
    finally:
        (tmp_path / "go").touch()
        run.communicate(timeout=60)


def test_watch_prints_changes_and_ends_when_the_experiment_ends(gated_run, tmp_path):
    store, run = gated_run
    watch = _cli("get", "trials", "exp", "-w", cwd=tmp_path, store=store)
    seen = _read_until(watch.stdout, "Running")  # the table or a later row shows a running trial
    (tmp_path / "go").touch()
    rest, errors = watch.communicate(timeout=60)  # -w ends by itself once the experiment has ended
    assert watch.returncode == 0, errors
    rows = [cells for cells in (line.split() for line in seen + rest.splitlines())
            if cells and cells[0].startswith("exp-")]  # the table's rows, then one line per change
    final = {row[0]: row[1] for row in rows}
    assert len(final) == 2 and set(final.values()) == {"Succeeded"}, rows
    assert any(row[1] == "Running" for row in rows)
    assert run.wait(timeout=60) == 0


def test_logs_follow_prints_a_running_trials_new_lines_until_it_ends(gated_run, tmp_path):
    store, run = gated_run
    watch = _cli("get", "trials", "exp", "-w", "-o", "wide", cwd=tmp_path, store=store)
    running = _read_until(watch.stdout, "Running")
    trial = next(line.split()[0] for line in running if "Running" in line)
    follow = _cli("logs", "exp", trial, "-f", cwd=tmp_path, store=store)
    assert _read_until(follow.stdout, "started a=")[-1].startswith("started a=")
    assert follow.poll() is None  # still following: the trial is waiting
    (tmp_path / "go").touch()
    rest, errors = follow.communicate(timeout=60)
    assert follow.returncode == 0, errors
    assert rest.splitlines()[-1].startswith("result=")
    watch.communicate(timeout=60)


def test_outputs_selectors_sorting_describe_and_delete(tmp_path, write_experiment):
    store = tmp_path / "katibx.db"
    for name in ("first", "second", "third"):
        doc = experiment_doc(maxTrialCount=3, parallelTrialCount=3)
        doc["metadata"]["name"] = name
        assert katibx_cli("run", str(write_experiment(doc, name=f"{name}.yaml")), "-q", cwd=tmp_path,
                          store=store).returncode == 0

    def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = katibx_cli(*args, cwd=tmp_path, store=store)
        assert result.returncode == code, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        return result

    names = cli("get", "trials", "first", "-o", "name").stdout.split()
    assert len(names) == 3 and all(n.startswith("trial.kubeflow.org/first-") for n in names)
    assert cli("get", "experiments", "-o", "name").stdout.split() == [
        "experiment.kubeflow.org/first", "experiment.kubeflow.org/second", "experiment.kubeflow.org/third"]
    listed = cli("get", "trials", "first", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    assert listed == [n.split("/")[1] for n in names]
    by_result = cli("get", "trials", "first", "--sort-by", "result").stdout.splitlines()
    assert by_result[0].split()[:2] == ["TRIAL", "STATUS"]  # kubectl's plain table: a header, then rows
    results = [float(line.split()[-1]) for line in by_result if "first-" in line]
    assert results == sorted(results) and len(results) == 3
    assert cli("get", "trials", "first", "--sort-by", "RESULT").stdout == "\n".join(by_result) + "\n"  # as shown
    trials = json.loads(cli("get", "trials", "first", "-o", "json").stdout)["items"]
    by_a = cli("get", "trials", "first", "--sort-by", ".spec.parameterAssignments[0].value", "-o", "name").stdout.split()
    assert by_a == [f"trial.kubeflow.org/{t['metadata']['name']}" for t in
                    sorted(trials, key=lambda t: int(t["spec"]["parameterAssignments"][0]["value"]))]
    assert len(cli("get", "trials", "first", "-l", "katib.kubeflow.org/experiment=first", "-o", "name").stdout.split()) == 3
    assert cli("get", "trials", "first", "-l", "katib.kubeflow.org/experiment!=first", "-o", "name").stdout == ""
    wide = cli("get", "trials", "first", "-o", "wide").stdout
    assert "STARTED" in wide and "COMPLETED" in wide and "TrialSucceeded" in wide
    one = names[0].split("/")[1]
    assert f"name: {one}" in cli("get", "trial", one).stdout
    described = cli("describe", "trial", one).stdout
    assert "Parameters:" in described and "result" in described and f"katibx logs first {one}" in described
    assert "maxTrialCount 3" in cli("describe", "experiment", "first").stdout
    assert "'xml' is not one of" in cli("get", "trials", "first", "-o", "xml", code=2).stderr
    assert "-l" in cli("get", "trials", "first", "-l", "a b", code=2).stderr
    assert "not found" in cli("delete", "second", "nope", code=2).stderr  # nothing deleted: names checked first
    cli("delete", "first", "second")
    assert cli("get", "experiments", "-o", "name").stdout.split() == ["experiment.kubeflow.org/third"]
    cli("delete", "--all")
    assert cli("get", "experiments", "-o", "json").stdout.count('"items": []') == 1
