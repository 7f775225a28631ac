"""Live MLflow logging (``katibx run --mlflow``, ``tune(mlflow=...)``): runs appear as the experiment goes, a tracking
server that cannot be reached costs one warning, a controller killed and resumed makes no duplicate runs, and a trial
run again from scratch gets a fresh run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import psutil
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

import katibx
from katibx.store import Store
from tests.conftest import default_signals, experiment_doc, katibx_cli, process_gone, wait_until
from tests.test_cli_kubectl import start_gated_run


def _runs(uri: str, name: str) -> list[Any]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_run_with_mlflow_logs_every_trial_as_it_finishes(tmp_path, write_experiment):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = write_experiment(experiment_doc(maxTrialCount=3, parallelTrialCount=1))
    result = katibx_cli("run", str(path), "-q", "--mlflow", uri, cwd=tmp_path, store=tmp_path / "katibx.db")
    assert result.returncode == 0, result.stderr
    runs = _runs(uri, "exp")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}  # 3 trials and the summary
    assert all("result" in r.data.metrics for r in runs if r.data.tags["katibx.trial"].startswith("exp-"))


def test_tune_with_mlflow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow keeps a SQLite store's artifacts in ./mlruns of the working directory
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    katibx.tune("fn", lambda p: p["x"], {"x": katibx.search.double(0, 1)}, objective_metric_name="y",
                max_trial_count=2, parallel_trial_count=1, store=tmp_path / "katibx.db", mlflow=uri, progress=False)
    assert len(_runs(uri, "fn")) == 3


def test_a_tracking_server_that_is_down_costs_one_warning_and_export_writes_it_later(tmp_path, write_experiment):
    path = write_experiment(experiment_doc(maxTrialCount=2, parallelTrialCount=1))
    db = tmp_path / "katibx.db"
    result = katibx_cli("run", str(path), "-q", "--mlflow", "http://127.0.0.1:9", cwd=tmp_path, store=db)
    assert result.returncode == 0 and "Succeeded" in result.stdout  # the experiment is not hurt
    warnings = [line for line in result.stderr.splitlines() if "MLflow logging" in line]
    assert len(warnings) == 1 and "katibx export mlflow exp" in warnings[0], result.stderr
    uri = f"sqlite:///{tmp_path / 'later.db'}"
    assert katibx_cli("export", "mlflow", "exp", "--tracking-uri", uri, cwd=tmp_path, store=db).returncode == 0
    assert len(_runs(uri, "exp")) == 3


def test_kill_9_and_resume_with_mlflow_makes_no_duplicate_runs(tmp_path, write_experiment):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    db = tmp_path / "katibx.db"
    env = {**os.environ, "KATIBX_STORE": str(db), "GATE_DIR": str(tmp_path)}
    controller = start_gated_run(tmp_path, write_experiment, db, "--mlflow", uri, preexec_fn=default_signals,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: len([r for r in _runs(uri, "exp") if r.data.tags["katibx.trial"].startswith("exp-")]) >= 2,
               what="the running trials' runs in MLflow")
    controller.send_signal(signal.SIGKILL)
    controller.wait(timeout=30)
    assert process_gone(controller.pid)
    (tmp_path / "go").touch()
    resumed = subprocess.run([sys.executable, "-m", "katibx.cli", "resume", "exp", "-q", "--mlflow", uri],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    runs = _runs(uri, "exp")
    names = [r.data.tags["katibx.trial"] for r in runs]
    assert len(names) == len(set(names)) == 3, names  # a run per trial and the summary, none twice
    assert {r.info.status for r in runs} == {"FINISHED"}


ATTEMPT_SCRIPT = """
import argparse, os, signal
p = argparse.ArgumentParser()
p.add_argument("--a", type=int)
p.add_argument("--b", type=float)
args = p.parse_args()
tally = os.path.join(os.environ["GATE_DIR"], f"attempts-{os.environ['KATIB_TRIAL_NAME']}")
with open(tally, "a") as f:
    f.write("x")
attempt = os.path.getsize(tally)
print(f"result={attempt}", flush=True)
if attempt == 1:
    signal.pause()  # the first attempt runs until the test kills it
print(f"result={10 * attempt}", flush=True)
"""


def test_a_trial_run_again_after_a_crash_gets_a_fresh_run(tmp_path, write_experiment):
    """Controller and trials killed -9 after the trials' first reports reached MLflow: on resume each trial runs
    again from scratch, and its run holds only that attempt (the first attempt's run is deleted, not mixed in)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    db = tmp_path / "katibx.db"
    env = {**os.environ, "KATIBX_STORE": str(db), "GATE_DIR": str(tmp_path)}
    path = write_experiment(experiment_doc(maxTrialCount=2, parallelTrialCount=2), script=ATTEMPT_SCRIPT)
    controller = subprocess.Popen([sys.executable, "-m", "katibx.cli", "run", str(path), "-q", "--mlflow", uri],
                                  cwd=tmp_path, env=env, preexec_fn=default_signals, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    client = MlflowClient(uri)
    wait_until(lambda: len([r for r in _runs(uri, "exp") if "result" in r.data.metrics]) == 2,
               what="both trials' first reports in MLflow")
    trials = [p for p in psutil.Process(controller.pid).children(recursive=True) if "objective.py" in " ".join(p.cmdline())]
    assert len(trials) == 2
    controller.send_signal(signal.SIGKILL)
    for process in trials:
        process.kill()
    controller.wait(timeout=30)
    assert all(process_gone(p.pid) for p in [controller, *trials])
    resumed = subprocess.run([sys.executable, "-m", "katibx.cli", "resume", "exp", "-q", "--mlflow", uri],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    runs = {r.data.tags["katibx.trial"]: r for r in _runs(uri, "exp")}
    trial_runs = [r for key, r in runs.items() if key.startswith("exp-")]
    assert len(runs) == 3 and len(trial_runs) == 2  # active runs: one per trial and the summary
    for run in trial_runs:
        history = [m.value for m in client.get_metric_history(run.info.run_id, "result")]
        assert history == [2.0, 20.0] and run.data.tags["katibx.attempt"] == "2", history  # the second attempt only
        assert run.info.status == "FINISHED"
    experiment = client.get_experiment_by_name("exp")
    deleted = client.search_runs([experiment.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert sorted(r.data.tags["katibx.trial"] for r in deleted) == sorted(r.data.tags["katibx.trial"] for r in trial_runs)
    with Store(db) as store:
        kept = store.tracking_runs(store.get_experiment("exp").id, uri)
    assert {kept[r.data.tags["katibx.trial"]] for r in runs.values()} == {r.info.run_id for r in runs.values()}


def test_the_annotation_turns_logging_on_and_katib_client_takes_mlflow(tmp_path, write_experiment, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    doc = experiment_doc(maxTrialCount=2, parallelTrialCount=1)
    doc["metadata"]["annotations"] = {"katibx.io/mlflow": "true"}  # at MLFLOW_TRACKING_URI
    result = katibx_cli("run", str(write_experiment(doc)), "-q", cwd=tmp_path, store=tmp_path / "katibx.db",
                        env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert result.returncode == 0, result.stderr
    assert len(_runs(uri, "exp")) == 3
    doc["metadata"].update(name="off", annotations={"katibx.io/mlflow": "false"})
    result = katibx_cli("run", str(write_experiment(doc)), "-q", cwd=tmp_path, store=tmp_path / "katibx.db",
                        env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert result.returncode == 0 and not _runs(uri, "off"), result.stderr

    monkeypatch.chdir(tmp_path)
    other = f"sqlite:///{tmp_path / 'client.db'}"
    katib = katibx.KatibClient(store=tmp_path / "sdk.db", mlflow=other)
    katib.tune("sdk", lambda p: print(f"y={p['x']}"), {"x": katibx.search.double(0, 1)}, objective_metric_name="y",
               max_trial_count=2, parallel_trial_count=1)
    katib.wait_for_experiment_condition("sdk", timeout=120)
    wait_until(lambda: len(_runs(other, "sdk")) == 3 and all(r.info.status == "FINISHED" for r in _runs(other, "sdk")),
               what="the SDK experiment's runs finished in MLflow")
    with pytest.raises(katibx.ValidationError, match="mlflow: must be True or a tracking URI, got int"):
        katibx.KatibClient(store=tmp_path / "sdk.db", mlflow=3)


HIDE_MLFLOW = """
import sys


class _Hidden:
    \"\"\"The path finder, minus mlflow: this interpreter runs as one where mlflow is not installed.\"\"\"

    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        return None if name.split(".")[0] == "mlflow" else self.inner.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self.inner, name)


sys.meta_path[:] = [_Hidden(f) if getattr(f, "__name__", "") == "PathFinder" else f for f in sys.meta_path]
"""


def test_an_annotation_asking_for_mlflow_without_mlflow_is_refused_before_anything_is_stored(tmp_path,
                                                                                           write_experiment):
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "sitecustomize.py").write_text(HIDE_MLFLOW)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "hide")}
    doc = experiment_doc(maxTrialCount=1, parallelTrialCount=1)
    doc["metadata"]["annotations"] = {"katibx.io/mlflow": "true"}
    path = write_experiment(doc)
    db = tmp_path / "store" / "katibx.db"
    line = "metadata.annotations.katibx.io/mlflow: needs mlflow: pip install 'katibx[mlflow]'"
    checked = katibx_cli("validate", str(path), cwd=tmp_path, store=db, env=env)
    assert checked.returncode == 2 and line in checked.stderr, checked.stdout + checked.stderr
    ran = katibx_cli("run", str(path), cwd=tmp_path, store=db, env=env)
    assert ran.returncode == 2 and ran.stderr.strip() == f"error: {path}: {line}", ran.stderr
    flag = katibx_cli("run", str(path), "--mlflow", cwd=tmp_path, store=db, env=env)
    assert flag.returncode == 2 and flag.stderr.strip() == "error: --mlflow: needs mlflow: pip install 'katibx[mlflow]'"
    assert not db.parent.exists()  # nothing stored
    rendered = katibx_cli("render", str(path), cwd=tmp_path, store=db, env=env)  # runs nothing: no MLflow needed
    assert rendered.returncode == 0 and "kind: Job" in rendered.stdout, rendered.stderr
    off = subprocess.run([sys.executable, "-c", "import katibx, sys; from katibx.loader import load_experiment; "
                          "r = katibx.run_experiment(load_experiment(sys.argv[1]), store=katibx.Store(sys.argv[2]), "
                          "mlflow=False); print(r.conditions[-1]['type'])", str(path), str(tmp_path / "off.db")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert off.returncode == 0 and off.stdout.strip() == "Succeeded", off.stderr  # False wins over the annotation
