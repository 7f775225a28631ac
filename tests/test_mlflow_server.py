"""MLflow logging against a real ``mlflow server`` on 127.0.0.1: runs arrive over HTTP; a server killed mid-run
leaves the experiment Succeeded with one warning, and ``katibx export mlflow`` completes it once the server is back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import katibx_cli, wait_until
from tests.test_cli_kubectl import start_gated_run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MlflowServer:
    """``mlflow server`` with one worker over a SQLite file: started, killed and started again on the same port."""

    def __init__(self, folder: Path) -> None:
        self.backend = f"sqlite:///{folder / 'server.db'}"
        self.artifacts = folder / "artifacts"
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", self.backend, "--artifacts-destination", str(self.artifacts)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(self._healthy, 90, "mlflow server's health answer")

    def _healthy(self) -> bool:
        assert self.process is not None and self.process.poll() is None, "mlflow server ended"
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:  # not listening yet
            return False

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)  # the server and its worker
        self.process.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    running = MlflowServer(tmp_path)
    running.start()
    try:
        yield running
    finally:
        if running.process is not None and running.process.poll() is None:
            running.kill()


def _runs(uri: str, name: str) -> list[Any]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_a_server_killed_mid_run_then_export_completes_the_runs(server, tmp_path, write_experiment):
    db = tmp_path / "katibx.db"
    run = start_gated_run(tmp_path, write_experiment, db, "--mlflow", server.uri)
    try:
        wait_until(lambda: len([r for r in _runs(server.uri, "exp") if r.info.status == "RUNNING"]) >= 2,
                   what="the running trials' runs on the server")
        server.kill()
        (tmp_path / "go").touch()
        out, err = run.communicate(timeout=180)
    finally:
        (tmp_path / "go").touch()
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0 and "Succeeded" in out, err
    assert len([line for line in err.splitlines() if "MLflow logging" in line]) == 1, err
    server.start()  # the same port and store, as a server restarted after an outage
    assert {r.info.status for r in _runs(server.uri, "exp")} == {"RUNNING"}  # what it had before it died
    export = katibx_cli("export", "mlflow", "exp", "--tracking-uri", server.uri, cwd=tmp_path, store=db)
    assert export.returncode == 0 and "0 runs created, 2 already there" in export.stdout, export.stdout
    runs = _runs(server.uri, "exp")
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    client = MlflowClient(server.uri)
    for run_ in runs:
        if run_.data.tags["katibx.trial"].startswith("exp-"):  # everything a run holds, over HTTP
            a, b = int(run_.data.params["a"]), float(run_.data.params["b"])
            history = client.get_metric_history(run_.info.run_id, "result")
            assert [(m.step, m.value) for m in history] == [(0, pytest.approx(4 * a - b ** 2))]
            assert run_.data.tags["katib.state"] == "Succeeded" and run_.data.tags["katibx.attempt"] == "1"
            assert "stdout.log" in {a.path for a in client.list_artifacts(run_.info.run_id)}
