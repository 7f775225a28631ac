"""Packaging: katibx installs one top-level import name, so it lives beside distributions that own
``algorithms``, ``workers`` or ``nas`` (PyPI has such), and a user's own folders of those names never shadow it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A distribution that owns the top-level names katibx's plugin folders have in the source tree.
_RIVAL_SETUP = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"
[project]
name = "rival-names"
version = "1.0"
[tool.setuptools]
packages = ["algorithms", "workers", "nas"]
"""


def _pip_install(target: Path, source: Path) -> None:
    """Install ``source`` into the environment of the interpreter ``target``, with this interpreter's pip."""
    run = subprocess.run([sys.executable, "-m", "pip", "--python", str(target), "install", "--quiet", "--no-deps",
                          "--no-build-isolation", "--no-index", str(source)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.fixture(scope="module")
def venv_with_rival(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A virtual environment (seeing this interpreter's packages for katibx's dependencies) with katibx installed
    from a wheel built from this tree, and then a rival distribution with top-level algorithms/workers/nas."""
    root = tmp_path_factory.mktemp("coinstall")
    env_dir = root / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    rival = root / "rival"
    for name in ("algorithms", "workers", "nas"):
        (rival / name).mkdir(parents=True)
        (rival / name / "__init__.py").write_text(f"OWNER = 'rival-{name}'\n")
    (rival / "pyproject.toml").write_text(_RIVAL_SETUP)
    _pip_install(python, REPO)  # a wheel built from this tree, not an editable install
    _pip_install(python, rival)
    return env_dir, python


def test_only_katibx_is_installed_at_top_level(venv_with_rival: tuple[Path, Path]) -> None:
    env_dir, python = venv_with_rival
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    dist_info = next(site.glob("katibx-*.dist-info"))
    tops = {line.split(",")[0].split("/")[0] for line in (dist_info / "RECORD").read_text().splitlines() if line}
    tops = {t for t in tops if not t.startswith("..")}  # console scripts live in the venv's bin
    assert tops == {"katibx", dist_info.name}
    assert (site / "katibx" / "algorithms" / "tpe.py").is_file()
    assert (site / "katibx" / "py.typed").is_file()
    assert "Apache License" in next(dist_info.rglob("LICENSE")).read_text()


def test_katibx_and_a_rival_distribution_both_work(venv_with_rival: tuple[Path, Path], tmp_path: Path) -> None:
    env_dir, python = venv_with_rival
    # A user's own nas/ and workers/ folders next to the experiment file, first on sys.path for function trials.
    for name in ("nas", "workers", "algorithms"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the user folder was imported')\n")
    probe = textwrap.dedent("""
        import json, algorithms, workers, nas, katibx, katibx.algorithms, katibx.nas, katibx.workers
        from katibx.plugins import load, ALGORITHMS, WORKERS
        print(json.dumps({
            "rival": [algorithms.OWNER, workers.OWNER, nas.OWNER],
            "katibx": katibx.__file__,
            "tpe": load(ALGORITHMS, "tpe").__module__,
            "local": load(WORKERS, "local").__module__,
        }))
    """)
    run = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=REPO.parent, timeout=120)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["rival"] == ["rival-algorithms", "rival-workers", "rival-nas"]
    assert seen["katibx"].startswith(str(env_dir))
    assert seen["tpe"] == "katibx.algorithms.tpe" and seen["local"] == "katibx.workers.local"
    # A whole experiment runs from the folder with the user's rival folders in it.
    (tmp_path / "objective.py").write_text("import sys\nprint('result=%s' % sys.argv[1])\n")
    (tmp_path / "exp.yaml").write_text(textwrap.dedent("""
        apiVersion: kubeflow.org/v1beta1
        kind: Experiment
        metadata: {name: coinstalled}
        spec:
          objective: {type: maximize, objectiveMetricName: result}
          algorithm: {algorithmName: tpe}
          maxTrialCount: 2
          parallelTrialCount: 1
          parameters:
            - {name: x, parameterType: double, feasibleSpace: {min: "0", max: "1"}}
          trialTemplate:
            primaryContainerName: main
            trialParameters: [{name: x, reference: x}]
            trialSpec:
              apiVersion: batch/v1
              kind: Job
              spec: {template: {spec: {containers: [{name: main, image: x, command: [python, objective.py, "${trialParameters.x}"]}]}}}
    """))
    env = {**os.environ, "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run([str(env_dir / "bin" / "katibx"), "run", "exp.yaml", "-q", "--store", str(tmp_path / "s.db")],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 succeeded" in run.stdout
