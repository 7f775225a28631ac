"""``katibx plot``: an experiment's plots as PNG files, drawn by Optuna's visualisations over the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import image

import katibx
from tests.conftest import katibx_cli


def curves(p: dict[str, Any]) -> dict[str, float]:
    """A loss curve reported step by step (intermediate values), and a second objective for the Pareto front."""
    for step in range(4):
        katibx.report_metrics({"loss": p["x"] ** 2 + 1 / (step + 1)})
    return {"loss": p["x"] ** 2, "cost": abs(p["y"])}


def _drawn(path: Path) -> None:
    """A real picture: a PNG of some size whose pixels are not all one colour."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(path)
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 450
    assert float(np.std(pixels)) > 0.05, f"{path.name} is blank"


def test_plot_writes_each_plot_of_an_experiment(tmp_path):
    db = tmp_path / "katibx.db"
    katibx.tune("curves", curves, {"x": katibx.search.double(-1, 1), "y": katibx.search.double(-1, 1),
                                   "kind": katibx.search.categorical(["a", "b"])},
                objective_metric_name="loss", objective_type="minimize", additional_metric_names=["cost"],
                max_trial_count=8, parallel_trial_count=2, store=db, progress=False)
    result = katibx_cli("plot", "curves", "-o", str(tmp_path / "plots"), cwd=tmp_path, store=db)
    assert result.returncode == 0, result.stderr
    names = {Path(line).name for line in result.stdout.split()}
    assert names == {f"curves-{p}.png" for p in ("optimization-history", "parallel-coordinate", "param-importances",
                                                  "intermediate-values")}
    for name in names:
        _drawn(tmp_path / "plots" / name)


def test_plot_of_a_multi_objective_experiment_draws_its_pareto_front(tmp_path):
    db = tmp_path / "katibx.db"
    katibx.tune("front", curves, {"x": katibx.search.double(-1, 1), "y": katibx.search.double(-1, 1)},
                objective_metric_name="loss", objective_type="minimize", additional_objectives={"cost": "minimize"},
                algorithm_name="multivariate-tpe", max_trial_count=6, parallel_trial_count=2, store=db, progress=False)
    result = katibx_cli("plot", "front", "-o", str(tmp_path), cwd=tmp_path, store=db)
    assert result.returncode == 0, result.stderr
    _drawn(tmp_path / "front-pareto-front.png")


def test_plot_says_what_it_cannot_draw_yet_and_refuses_what_does_not_exist(tmp_path):
    db = tmp_path / "katibx.db"
    katibx.tune("single", curves, {"x": katibx.search.double(-1, 1), "y": katibx.search.double(-1, 1)},
                objective_metric_name="loss", max_trial_count=1, parallel_trial_count=1, store=db, progress=False)
    result = katibx_cli("plot", "single", "-o", str(tmp_path), cwd=tmp_path, store=db)
    assert result.returncode == 0 and "not drawn: param-importances" in result.stderr, result.stderr
    assert (tmp_path / "single-optimization-history.png").exists()
    missing = katibx_cli("plot", "nope", cwd=tmp_path, store=db)
    assert missing.returncode == 2 and "experiment 'nope' not found" in missing.stderr
