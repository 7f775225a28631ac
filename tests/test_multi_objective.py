"""Multi-objective experiments (katibx extension ``spec.objective.additionalObjectives``)."""

from __future__ import annotations

import pytest
from conftest import experiment_doc

import katibx
from katibx.loader import experiment_from_dict
from katibx.preparation import check_experiment, create_backend
from katibx.search_algorithm import AlgorithmSettingsError, SearchAlgorithm
from katibx.search_space import SearchSpace
from katibx.status import pareto_front
from katibx.validation import ValidationError


def two_objectives(p: dict) -> dict:
    """A trade-off: x small is cheap but inaccurate."""
    return {"error": (1 - p["x"]) ** 2, "cost": p["x"], "extra": 1.0}


def test_pareto_front_of_a_tradeoff(store):
    result = katibx.tune(
        name="mo", objective=two_objectives, parameters={"x": katibx.search.double(0, 1)},
        objective_metric_name="error", objective_type="minimize", additional_objectives={"cost": "minimize"},
        additional_metric_names=["extra"], algorithm_settings={"random_state": 3}, max_trial_count=12,
        parallel_trial_count=2, store=store)
    front = result["status"]["paretoFront"]
    trials = katibx.KatibxClient(store).list_trials("mo")
    # Every trial trades error against cost, so on this monotone trade-off every trial is Pareto-optimal.
    assert {t["trialName"] for t in front} == {t["metadata"]["name"] for t in trials}
    strategies = {s["name"]: s["value"] for s in result["spec"]["objective"]["metricStrategies"]}
    assert strategies == {"error": "min", "cost": "min", "extra": "min"}


def dominated_mix(p: dict) -> dict:
    return {"a": p["x"], "b": abs(p["x"] - 5)}


def test_dominated_trials_are_left_out_and_directions_are_respected(store):
    result = katibx.tune(
        name="mo-grid", objective=dominated_mix, parameters={"x": katibx.search.int(1, 9)},
        algorithm_name="grid", objective_metric_name="a", objective_type="maximize",
        additional_objectives={"b": "minimize"}, max_trial_count=9, parallel_trial_count=3, store=store)
    front = {int(t["parameterAssignments"][0]["value"]) for t in result["status"]["paretoFront"]}
    # Maximise a = x, minimise b = |x - 5|: x < 5 is dominated by x = 5; x = 5..9 trade a against b.
    assert front == {5, 6, 7, 8, 9}


def test_single_objective_yaml_is_unchanged():
    doc = experiment_doc()
    exp = experiment_from_dict(doc)
    assert "additionalObjectives" not in exp.to_dict()["spec"]["objective"]


@pytest.mark.parametrize(("extra", "message"), [
    ({"objectiveMetricName": "result", "type": "minimize"}, "'result' is already an objective"),
    ({"objectiveMetricName": "cost", "type": "sideways"}, "type: must be minimize or maximize"),
    ({"type": "minimize"}, "objectiveMetricName: Required value"),
])
def test_additional_objectives_are_validated(extra, message):
    doc = experiment_doc(objective={"type": "maximize", "objectiveMetricName": "result", "additionalObjectives": [extra]})
    with pytest.raises(ValidationError) as err:
        experiment_from_dict(doc)
    assert any(line.startswith("spec.objective.additionalObjectives[0]") and message in line for line in err.value.errors)


def test_single_objective_algorithms_refuse_several_objectives():
    doc = experiment_doc(objective={"type": "maximize", "objectiveMetricName": "result",
                                    "additionalObjectives": [{"objectiveMetricName": "cost", "type": "minimize"}]})
    exp = experiment_from_dict(doc)
    assert check_experiment(exp, create_backend("local")) == []  # random supports several objectives
    assert pareto_front(exp, []) == []

    class SingleObjective(SearchAlgorithm):
        name = "single"
        default_settings = {"random_state": None}

        def suggest(self, trials, count):
            return []

    with pytest.raises(AlgorithmSettingsError, match="algorithm 'single' optimises a single objective"):
        SingleObjective(exp, SearchSpace.from_experiment(exp))


@pytest.mark.parametrize("algorithm", ["tpe", "multivariate-tpe", "sobol"])
def test_optuna_algorithms_optimise_several_objectives(store, algorithm):
    result = katibx.tune(
        name=f"mo-{algorithm}", objective=two_objectives, parameters={"x": katibx.search.double(0, 1)},
        algorithm_name=algorithm, algorithm_settings={"random_state": 5}, objective_metric_name="error",
        objective_type="minimize", additional_objectives={"cost": "minimize"}, max_trial_count=14,
        parallel_trial_count=2, store=store)
    assert result["status"]["trialsSucceeded"] == 14
    assert len(result["status"]["paretoFront"]) >= 2


def test_cmaes_refuses_several_objectives():
    doc = experiment_doc(objective={"type": "maximize", "objectiveMetricName": "result",
                                    "additionalObjectives": [{"objectiveMetricName": "cost", "type": "minimize"}]},
                         algorithm={"algorithmName": "cmaes"})
    errors = check_experiment(experiment_from_dict(doc), create_backend("local"))
    assert any("algorithm 'cmaes' optimises a single objective" in e for e in errors), errors
