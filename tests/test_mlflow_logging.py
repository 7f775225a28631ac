"""Live MLflow logging (``katibx run --mlflow``, ``tune(mlflow=...)``): runs appear as the experiment goes, a tracking
server that cannot be reached costs one warning, and a controller killed and resumed makes no duplicate runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from mlflow.tracking import MlflowClient

import katibx
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
