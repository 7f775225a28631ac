"""Every experiment under examples/ validates and passes the local backend's checks; one runs through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import katibx_cli
from test_katib_examples import reasons

from katibx import plugins

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Every Experiment YAML under examples/ (the KFP pipeline and component specs compiled beside the pipeline example
# are KFP's, checked by tests/pipelines).
FILES = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.yaml")
               if not p.read_text().startswith("# PIPELINE DEFINITION"))


def test_every_installed_algorithm_has_an_example() -> None:
    """Users learn an algorithm from its example: each search and early-stopping plugin has one under examples/."""
    used: set[str] = set()
    for name in FILES:
        spec = yaml.safe_load((EXAMPLES / name).read_text())["spec"]
        used.add(spec["algorithm"]["algorithmName"])
        used.add((spec.get("earlyStopping") or {}).get("algorithmName", ""))
    missing = (plugins.algorithm_names() | plugins.early_stopping_names()) - used
    assert not missing, f"no example uses {sorted(missing)}"


@pytest.mark.parametrize("name", FILES)
def test_example_is_valid(name: str) -> None:
    assert reasons(EXAMPLES / name) == []


def test_tpe_example_runs_with_the_cli(tmp_path: Path) -> None:
    doc = yaml.safe_load((EXAMPLES / "hp-tuning/tpe.yaml").read_text())
    doc["spec"]["maxTrialCount"] = 12  # the same file with a smaller budget, to keep the test short
    (tmp_path / "tpe.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(EXAMPLES / "hp-tuning/branin.py", tmp_path)
    store = tmp_path / "store.db"

    run = katibx_cli("run", "tpe.yaml", cwd=tmp_path, store=store)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "tpe: Succeeded (ExperimentMaxTrialsReached)" in run.stdout
    trials = json.loads(katibx_cli("get", "trials", "tpe", "-o", "json", cwd=tmp_path, store=store).stdout)["items"]
    assert len(trials) == 12
    for trial in trials:
        values = {p["name"]: float(p["value"]) for p in trial["spec"]["parameterAssignments"]}
        assert -5 <= values["x1"] <= 10 and 0 <= values["x2"] <= 15
        assert trial["status"]["observation"]["metrics"][0]["name"] == "loss"
