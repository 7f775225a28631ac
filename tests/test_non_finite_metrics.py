"""NaN and infinities (overflow like 1e309 too) are never an objective value: the trial ends MetricsUnavailable
with a message, is never the optimal trial and never reaches an algorithm as a number; other metrics keep their text."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import experiment_doc, set_command

import katibx
from katibx.loader import experiment_from_dict
from katibx.objective import Objective
from katibx.runner import run_experiment
from katibx.status import optimal_trial, optimal_trial_status
from katibx.store import Store
from katibx.trial import TrialState

VALUES = ["1e309", "-1e309", "-inf", "nan", "NaN", "0.5", "2"]
SCRIPT = "import sys\nprint(f'loss={sys.argv[1]}')\nprint(f'extra={sys.argv[1]}')\n"


@pytest.mark.parametrize("strategy", ["latest", "min", "max"])
def test_non_finite_objective_values_make_the_trial_metrics_unavailable(tmp_path: Path, store: Store,
                                                                       write_experiment, strategy: str) -> None:
    doc = experiment_doc(
        objective={"type": "minimize", "objectiveMetricName": "loss", "additionalMetricNames": ["extra"],
                   "metricStrategies": [{"name": "loss", "value": strategy}]},
        algorithm={"algorithmName": "grid"}, maxTrialCount=len(VALUES), parallelTrialCount=2,
        parameters=[{"name": "v", "parameterType": "categorical", "feasibleSpace": {"list": VALUES}}],
    )
    doc["spec"]["trialTemplate"]["trialParameters"] = [{"name": "v", "reference": "v"}]
    set_command(doc, ["python3", "objective.py", "${trialParameters.v}"])
    write_experiment(doc, script=SCRIPT)
    record = run_experiment(experiment_from_dict(doc), store=store, workdir=tmp_path)
    trials = {t.assignments["v"]: t for t in store.trials(record.id)}

    for value in VALUES[:5]:
        trial = trials[value]
        assert trial.state is TrialState.METRICS_UNAVAILABLE, (value, trial.state)
        assert f"not a finite number (loss={value})" in trial.message
        assert trial.observation["extra"].latest == value  # the reported text is kept
        assert Objective(record.experiment).value(trial) is None
    assert trials["0.5"].state is trials["2"].state is TrialState.SUCCEEDED
    best = optimal_trial(record.experiment, list(trials.values()))
    assert best is trials["0.5"]
    assert store.get_experiment(record.name).optimal_trial_id == best.id  # as the controller kept it
    assert optimal_trial_status(store.optimal_trial(record))["bestTrialName"] == best.name


def test_a_trial_that_reported_nan_has_no_min_or_max_that_hides_it(tmp_path: Path, store: Store,
                                                                   write_experiment) -> None:
    doc = experiment_doc(
        objective={"type": "minimize", "objectiveMetricName": "loss",
                   "metricStrategies": [{"name": "loss", "value": "min"}]},
        maxTrialCount=1, parallelTrialCount=1)
    set_command(doc, ["python3", "objective.py", "${trialParameters.a}", "${trialParameters.b}"])
    write_experiment(doc, script="print('loss=3')\nprint('loss=nan')\nprint('loss=1')\n")
    record = run_experiment(experiment_from_dict(doc), store=store, workdir=tmp_path)
    (trial,) = store.trials(record.id)
    assert trial.state is TrialState.METRICS_UNAVAILABLE and trial.observation["loss"].latest == "1"


@pytest.mark.parametrize("returned", [math.nan, math.inf, -math.inf, 1e308 * 10])
def test_tune_objective_returning_non_finite_never_wins(tmp_path: Path, returned: float) -> None:
    def objective(params: dict) -> dict:
        return {"loss": returned if params["x"] == "bad" else {"good": 1.0, "worse": 5.0}[params["x"]]}

    store = Store(tmp_path / "store.db")
    katibx.tune("nonfinite", objective, {"x": katibx.search.categorical(["bad", "good", "worse"])}, store=store,
                objective_metric_name="loss", objective_type="minimize", algorithm_name="grid", max_trial_count=3,
                parallel_trial_count=1)
    trials = {t.assignments["x"]: t for t in store.trials(store.get_experiment("nonfinite").id)}
    assert trials["bad"].state is TrialState.METRICS_UNAVAILABLE and "not a finite number" in trials["bad"].message
    best = katibx.KatibClient(store=store).get_optimal_hyperparameters("nonfinite")
    assert best["bestTrialName"] == trials["good"].name


def test_katibs_default_format_reads_nan_and_infinities_whole() -> None:
    from katibx.metric_parsers import LineParser

    parser = LineParser(["loss"])
    text = "loss=-inf\nloss=+Infinity\nloss=NaN\nloss=-\nloss=1e309 loss=.5\n"
    assert [log.value for log in parser.feed(text)] == ["-inf", "+Infinity", "NaN", "1e309", ".5"]
