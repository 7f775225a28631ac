"""What the pipelines' tune step runs (katibx.pipeline_step, free of kfp), in the default environment: the data
input reaches the trials on the local backend and on a Ray cluster the step starts, and the environment is as it
was afterwards; a cluster that cannot be reached and a stored failed sweep are refused in lines, not tracebacks."""

from __future__ import annotations

import os
import sys

import pytest
import yaml
from conftest import experiment_doc, set_command

from katibx.pipeline_step import DATA_ENV, StepFailed, best_arguments, run_tune_step
from katibx.store import Store

READS_DATA = [sys.executable, "-c", "import os; print('result=' + open(os.environ['KATIBX_DATA']).read())",
              "${trialParameters.a}", "${trialParameters.b}"]


def _experiment(name: str, command: list[str]) -> str:
    doc = set_command(experiment_doc(maxTrialCount=2, parallelTrialCount=1, maxFailedTrialCount=1), command)
    doc["metadata"]["name"] = name
    return yaml.safe_dump(doc)


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_the_data_input_reaches_the_trials_and_the_environment_is_restored(tmp_path, monkeypatch, backend):
    data = tmp_path / "data.txt"
    data.write_text("42")
    monkeypatch.setenv(DATA_ENV, "an older value")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # the step starts its own Ray cluster
    result = run_tune_step(_experiment("reads", READS_DATA), data_path=str(data), backend=backend,
                           store=str(tmp_path / "katibx.db"))
    assert result.best_metrics == {"result": 42.0} and not result.reused
    with Store(tmp_path / "katibx.db") as store:
        assert store.get_experiment("reads").backend == backend
    assert os.environ[DATA_ENV] == "an older value"
    assert best_arguments({"a": 12.0, "b": 0.15}) == ["--a=12", "--b=0.15"]


def test_a_cluster_that_cannot_be_reached_and_a_stored_failed_sweep_are_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nowhere"))
    with pytest.raises(StepFailed) as unreachable:
        run_tune_step(_experiment("k8s", READS_DATA), backend="kubernetes", store=str(tmp_path / "k.db"))
    assert unreachable.value.exit_code == 2 and len(unreachable.value.lines) == 1, unreachable.value.lines

    fails = _experiment("fails", [sys.executable, "-c", "raise SystemExit('no data here')", "${trialParameters.a}",
                                  "${trialParameters.b}"])
    store = str(tmp_path / "katibx.db")
    with pytest.raises(StepFailed) as first:
        run_tune_step(fails, store=store)
    assert first.value.exit_code == 1 and "  | no data here" in first.value.lines
    with pytest.raises(StepFailed) as again:  # the same spec: the stored result, and how to run it anew
        run_tune_step(fails, store=store)
    assert again.value.lines[:-1] == first.value.lines
    assert again.value.lines[-1].endswith(f"to run it again: katibx delete fails --store {tmp_path / 'katibx.db'}")
