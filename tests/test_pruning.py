"""Pruning inside a function trial (Optuna's ``trial.should_prune()``): the trial reports intermediate values, asks
``katibx.should_prune()`` after each and ends itself with ``TrialPruned`` once the experiment's early-stopping rule
(medianstop) has decided: it ends EarlyStopped, keeps its history, and its worker process runs the next trial."""

from __future__ import annotations

import os
import time
from typing import Any

import katibx
from katibx.trial import TrialState


def objective(p: dict[str, Any]) -> float:
    """x=0 learns well and ends after 4 steps; a larger x is bad and only ends early when it is pruned."""
    katibx.report_metrics({"pid": os.getpid()})
    steps = 4 if p["x"] == 0 else 3000
    for step in range(steps):
        katibx.report_metrics({"loss": 10 * p["x"] + 1 / (step + 1)})
        if katibx.should_prune():
            print(f"pruned at step {step}", flush=True)
            raise katibx.TrialPruned()
        time.sleep(0.01)  # a training step (in the trial, not the test)
    return 10 * p["x"]


def test_should_prune_ends_a_bad_trial_early_and_its_worker_runs_the_next(tmp_path):
    result = katibx.tune("pruning", objective, {"x": katibx.search.int(0, 2)}, objective_metric_name="loss",
                         additional_metric_names=["pid"], objective_type="minimize", algorithm_name="grid",
                         max_trial_count=3, parallel_trial_count=1, early_stopping_algorithm_name="medianstop",
                         early_stopping_settings={"min_trials_required": 1, "start_step": 2},
                         store=tmp_path / "katibx.db", progress=False)
    by_x = {t.params["x"]: t for t in result.trials}
    assert by_x[0].state is TrialState.SUCCEEDED and by_x[0].history["loss"] == [1.0, 0.5, 1 / 3, 0.25, 0.0]  # then its return value
    for x in (1, 2):
        trial = by_x[x]
        assert trial.state is TrialState.EARLY_STOPPED, (trial.state, trial.message)
        assert 2 <= len(trial.history["loss"]) < 3000  # ended by itself, long before its last step
        log = katibx.KatibxClient(tmp_path / "katibx.db").get_trial_logs("pruning", trial.name)
        assert "pruned at step" in log and "Traceback" not in log
    assert by_x[1].history["pid"] == by_x[2].history["pid"]  # not killed: the same worker ran the next trial
