"""The tests that need the pipelines environment (kfp, and kubernetes client 30.x: see tests/make_pipelines_env.sh),
run in it from the default run: the pipeline step (tests/pipelines) and the Kubernetes backend with the client
version kfp allows (the default run has tested it with the newest)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import PIPELINES_ENV, inner_pytest_runs

REPO = Path(__file__).resolve().parent.parent
PYTHON = Path(os.environ.get("KATIBX_PIPELINES_PYTHON", REPO / ".venv-pipelines" / "bin" / "python"))


@pytest.mark.timeout(1500)  # the run below has its own limit; pytest's default (120 s) would cut it short
def test_pipelines_and_the_kubernetes_backend_pass_in_the_pipelines_environment() -> None:
    assert PYTHON.is_file(), f"no pipelines environment at {PYTHON}: make it with bash tests/make_pipelines_env.sh"
    versions = subprocess.run([str(PYTHON), "-c", "import kfp, kubernetes; print(kfp.__version__, "
                               "kubernetes.__version__)"], capture_output=True, text=True, check=True).stdout.split()
    assert int(versions[1].split(".")[0]) < 31, versions  # the client kfp allows, not the default run's
    # the pipeline steps and the Kubernetes backend's tests side by side: this test only waits for them
    inner_pytest_runs(str(PYTHON), [["tests/pipelines"], ["tests/test_kubernetes.py", "tests/test_kubernetes_render.py"]],
                      {**os.environ, PIPELINES_ENV: "1"}, timeout=1500)
