"""``python -m benchmarks.gpu --quick``: the GPU benchmark at tiny sizes on the CPU, so it never rots between the
runs on a GPU node (its sweep schedules two simulated GPUs through ``KATIBX_GPUS``)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_the_gpu_benchmark_runs_every_section_and_writes_json_and_markdown(tmp_path: Path) -> None:
    ran = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--quick", "--out", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=280)
    assert ran.returncode == 0, ran.stderr[-3000:]
    written = sorted(p.name for p in tmp_path.iterdir())
    assert len(written) == 2 and written[0].endswith("-quick.json") and written[1].endswith("-quick.md")  # its own name
    result = json.loads((tmp_path / written[0]).read_text())
    darts, enas, sweep = (result["sections"][name] for name in ("darts", "enas", "sweep"))
    assert [row["order"] for row in darts["search"]] == ["first", "second"]
    assert all(_positive(row["seconds_per_step"]) and row["steps"] == 2 for row in darts["search"])
    assert _positive(darts["evaluation"]["estimated_seconds_per_full_epoch"])
    # Katib's enas-gpu.yaml: 8 layers; each child is a valid architecture of them
    assert enas["layers"] == 8 and enas["round_size"] == 3 and len(enas["children"]) == 3
    assert all(len(child["architecture"]) == 8 and _positive(child["seconds_per_step"]) for child in enas["children"])
    assert _positive(enas["controller_step_seconds"]) and _positive(enas["controller_sample_seconds"])
    assert sweep["gpus"] == 2
    scheduled, shared = sweep["arms"]
    assert (scheduled["parallel_trial_count"], scheduled["gpus_per_trial"]) == (2, 1)
    assert (shared["parallel_trial_count"], shared["gpus_per_trial"]) == (4, 0)
    assert all(arm["succeeded"] == arm["trials"] == 4 and _positive(arm["trials_per_hour"]) for arm in sweep["arms"])
    report = (tmp_path / written[1]).read_text()
    for row in ("DARTS search, first order", "DARTS search, second order", "DARTS evaluation network",
                "ENAS controller", "ENAS child training step", "HPO sweep, scheduled", "HPO sweep, shared"):
        assert row in report
    assert "failed" not in report


def test_a_section_that_fails_is_named_and_the_run_exits_1(tmp_path: Path) -> None:
    ran = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--quick", "--only", "darts", "--data-dir",
                          str(tmp_path / "missing"), "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 1
    assert "darts: " in ran.stderr and "missing" in ran.stderr and "Traceback" not in ran.stderr
    (report,) = tmp_path.glob("*-quick-darts.md")  # a run of some sections never replaces a full one
    assert "| darts | failed: " in report.read_text()
