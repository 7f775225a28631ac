"""Search algorithms run through real experiments: random and grid, their settings and Katib's grid rules."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import experiment_doc

import katibx
from katibx import plugins
from katibx.algorithms.grid_search import GridSearch
from katibx.loader import experiment_from_dict
from katibx.runner import run_experiment
from katibx.search_space import Parameter, SearchSpace
from katibx.store import ExperimentRecord, Store
from katibx.trial import TrialRecord, TrialState

ALL_TYPES = [
    {"name": "i", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "5"}},
    {"name": "istep", "parameterType": "int", "feasibleSpace": {"min": "0", "max": "20", "step": "5"}},
    {"name": "ilog", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "1000", "distribution": "logUniform"}},
    {"name": "d", "parameterType": "double", "feasibleSpace": {"min": "0.5", "max": "1.5"}},
    {"name": "dstep", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1", "step": "0.25"}},
    {"name": "dlog", "parameterType": "double", "feasibleSpace": {"min": "0.0001", "max": "1", "distribution": "logUniform"}},
    {"name": "dnormal", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "10", "distribution": "normal"}},
    {"name": "act", "parameterType": "categorical", "feasibleSpace": {"list": ["relu", "tanh", "gelu"]}},
    {"name": "k", "parameterType": "discrete", "feasibleSpace": {"list": ["1", "2.5", "10"]}},
]


def algorithm_doc(parameters: list[dict[str, Any]], algorithm: str = "random", settings: dict[str, str] | None = None,
                  name: str = "exp", **spec: Any) -> dict[str, Any]:
    """An experiment whose trials only print ``result=1`` (through ``sh``), receiving every parameter."""
    doc = experiment_doc(
        parameters=parameters,
        algorithm={"algorithmName": algorithm,
                   "algorithmSettings": [{"name": k, "value": v} for k, v in (settings or {}).items()]},
        **spec,
    )
    doc["metadata"]["name"] = name
    if spec.get("maxTrialCount", "") is None:
        del doc["spec"]["maxTrialCount"]
    template = doc["spec"]["trialTemplate"]
    template["trialParameters"] = [{"name": p["name"], "reference": p["name"]} for p in parameters]
    template["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"] = [
        "sh", "-c", "echo result=1", "sh", *(f"${{trialParameters.{p['name']}}}" for p in parameters),
    ]
    return doc


def run(doc: dict[str, Any], store: Store, workdir: Path) -> tuple[ExperimentRecord, list[TrialRecord]]:
    record = run_experiment(experiment_from_dict(doc), store=store, workdir=workdir)
    return record, store.trials(record.id)


def last_condition(record: ExperimentRecord) -> dict[str, Any]:
    return [c for c in record.conditions if c["status"] == "True"][-1]


def suggestions(doc: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """``count`` suggestions of the experiment's algorithm for an empty history."""
    experiment = experiment_from_dict(doc)
    cls = plugins.load(plugins.ALGORITHMS, doc["spec"]["algorithm"]["algorithmName"])
    return [s.assignments for s in cls(experiment, SearchSpace.from_experiment(experiment)).suggest([], count)]


def on_step(value: float, low: float, step: float) -> bool:
    return math.isclose((value - low) / step, round((value - low) / step), abs_tol=1e-9)


# random ---------------------------------------------------------------------------------------------------------


def check_assignment(a: dict[str, Any]) -> None:
    """Every value of ALL_TYPES has its parameter's type and lies in its feasible space."""
    assert type(a["i"]) is int and 1 <= a["i"] <= 5
    assert type(a["istep"]) is int and a["istep"] in (0, 5, 10, 15, 20)
    assert type(a["ilog"]) is int and 1 <= a["ilog"] <= 1000
    assert type(a["d"]) is float and 0.5 <= a["d"] <= 1.5
    assert type(a["dstep"]) is float and 0 <= a["dstep"] <= 1 and on_step(a["dstep"], 0, 0.25)
    assert type(a["dlog"]) is float and 0.0001 <= a["dlog"] <= 1
    assert type(a["dnormal"]) is float and 0 <= a["dnormal"] <= 10
    assert a["act"] in ("relu", "tanh", "gelu")
    assert a["k"] in (1, 2.5, 10) and type(a["k"]) is (float if a["k"] == 2.5 else int)


def test_random_trials_get_typed_values_inside_their_feasible_space(store: Store, tmp_path: Path) -> None:
    doc = algorithm_doc(ALL_TYPES, settings={"random_state": "5"}, maxTrialCount=6, parallelTrialCount=3)
    record, trials = run(doc, store, tmp_path)
    assert len(trials) == 6 and all(t.state is TrialState.SUCCEEDED for t in trials)
    assert last_condition(record)["reason"] == "ExperimentMaxTrialsReached"
    for trial in trials:
        assert set(trial.assignments) == {p["name"] for p in ALL_TYPES}
        check_assignment(trial.assignments)


def test_random_draws_follow_each_distribution() -> None:
    draws = suggestions(algorithm_doc(ALL_TYPES, settings={"random_state": "1"}), 600)
    for a in draws:
        check_assignment(a)

    def share(name: str, below: float) -> float:
        return sum(a[name] < below for a in draws) / len(draws)

    # logUniform puts half of the mass below the geometric middle; uniform would put ~1% (dlog) / ~3% (ilog) there.
    assert 0.4 < share("dlog", 0.01) < 0.6
    assert 0.4 < share("ilog", 32) < 0.6
    # normal on [0, 10]: mean 5, sigma 10/6, so about 68% within one sigma; uniform would give 33%.
    assert 0.6 < sum(10 / 3 <= a["dnormal"] <= 20 / 3 for a in draws) / len(draws) < 0.76
    assert 0.4 < share("d", 1.0) < 0.6
    # Every choice and every step value is drawn, and nothing else.
    assert {a["i"] for a in draws} == {1, 2, 3, 4, 5}
    assert {a["istep"] for a in draws} == {0, 5, 10, 15, 20}
    assert {a["dstep"] for a in draws} == {0.0, 0.25, 0.5, 0.75, 1.0}
    assert {a["act"] for a in draws} == {"relu", "tanh", "gelu"}
    assert {a["k"] for a in draws} == {1, 2.5, 10}


def test_random_state_reproduces_the_same_assignments(store: Store, tmp_path: Path) -> None:
    def assignments(name: str, seed: str) -> list[dict[str, Any]]:
        doc = algorithm_doc(ALL_TYPES, settings={"random_state": seed}, name=name, maxTrialCount=4, parallelTrialCount=2)
        _, trials = run(doc, store, tmp_path)
        return [t.assignments for t in trials]

    first = assignments("seeded-a", "11")
    assert assignments("seeded-b", "11") == first
    assert assignments("seeded-c", "12") != first
    assert len({tuple(sorted(a.items())) for a in first}) == 4


def test_random_without_a_seed_differs_between_experiments() -> None:
    doc = algorithm_doc(ALL_TYPES)
    assert suggestions(doc, 5) != suggestions(doc, 5)


# grid -----------------------------------------------------------------------------------------------------------

GRID = [
    {"name": "n", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "2"}},
    {"name": "act", "parameterType": "categorical", "feasibleSpace": {"list": ["relu", "tanh"]}},
    {"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.5", "max": "1.0", "step": "0.25"}},
]
GRID_POINTS = set(itertools.product([1, 2], ["relu", "tanh"], [0.5, 0.75, 1.0]))


def points(trials: list[TrialRecord]) -> list[tuple[Any, ...]]:
    return [(t.assignments["n"], t.assignments["act"], t.assignments["lr"]) for t in trials]


def test_grid_runs_every_combination_exactly_once(store: Store, tmp_path: Path) -> None:
    doc = algorithm_doc(GRID, "grid", maxTrialCount=12, parallelTrialCount=4)
    record, trials = run(doc, store, tmp_path)
    seen = points(trials)
    assert len(seen) == 12 and set(seen) == GRID_POINTS
    assert all(type(n) is int and type(lr) is float for n, _, lr in seen)
    assert last_condition(record)["reason"] == "ExperimentMaxTrialsReached"


@pytest.mark.parametrize("parallel", [3, 5])
def test_exhausted_grid_ends_the_experiment_succeeded(store: Store, tmp_path: Path, parallel: int) -> None:
    space = [
        {"name": "n", "parameterType": "discrete", "feasibleSpace": {"list": ["1", "2"]}},
        {"name": "act", "parameterType": "categorical", "feasibleSpace": {"list": ["relu", "tanh"]}},
    ]
    doc = algorithm_doc(space, "grid", maxTrialCount=None, parallelTrialCount=parallel)
    record, trials = run(doc, store, tmp_path)
    assert sorted((t.assignments["n"], t.assignments["act"]) for t in trials) == [
        (1, "relu"), (1, "tanh"), (2, "relu"), (2, "tanh"),
    ]
    assert all(t.state is TrialState.SUCCEEDED for t in trials)
    condition = last_condition(record)
    assert (condition["type"], condition["reason"]) == ("Succeeded", "ExperimentSuggestionEndReached")
    assert record.completed is not None
    status = katibx.KatibxClient(store).get_experiment("exp")["status"]
    assert status["trials"] == 4 and status["trialsSucceeded"] == 4


def test_grid_random_state_shuffles_the_order_reproducibly() -> None:
    plain = suggestions(algorithm_doc(GRID, "grid", maxTrialCount=12), 12)
    seeded = suggestions(algorithm_doc(GRID, "grid", {"random_state": "3"}, maxTrialCount=12), 12)
    again = suggestions(algorithm_doc(GRID, "grid", {"random_state": "3"}, maxTrialCount=12), 12)
    as_points = [(a["n"], a["act"], a["lr"]) for a in seeded]
    assert seeded == again and seeded != plain
    assert len(as_points) == 12 and set(as_points) == GRID_POINTS


def test_grid_tells_true_from_one_in_the_history() -> None:
    doc = algorithm_doc([{"name": "c", "parameterType": "categorical", "feasibleSpace": {"list": ["1", "True"]}}],
                        "grid", maxTrialCount=2, parallelTrialCount=1)
    # The Python API keeps typed choices: 1 and True are two grid points, though 1 == True in Python.
    grid = GridSearch(experiment_from_dict(doc), SearchSpace((Parameter("c", "categorical", values=(1, True)),)))
    done = [TrialRecord(name="t1", index=0, assignments={"c": 1}, state=TrialState.SUCCEEDED)]
    assert [s.assignments for s in grid.suggest(done, 2)] == [{"c": True}]
    assert type(grid.suggest(done, 1)[0].assignments["c"]) is bool


def test_grid_refuses_a_double_without_step(store: Store, tmp_path: Path) -> None:
    space = [*GRID[:2], {"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.1", "max": "0.2"}}]
    with pytest.raises(katibx.ValidationError) as info:
        run(algorithm_doc(space, "grid", maxTrialCount=4, parallelTrialCount=2), store, tmp_path)
    assert any("lr" in e and "step is nil" in e for e in info.value.errors), info.value.errors
    assert store.list_experiments() == []


def test_grid_refuses_more_trials_than_combinations(store: Store, tmp_path: Path) -> None:
    space = GRID[:2]
    with pytest.raises(katibx.ValidationError) as info:
        run(algorithm_doc(space, "grid", maxTrialCount=5, parallelTrialCount=2), store, tmp_path)
    assert any("Max Trial Count: 5 > all possible search combinations: 4" in e for e in info.value.errors)
    assert store.list_experiments() == []


# settings -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "abc", "1.5"])
@pytest.mark.parametrize("algorithm", ["random", "grid"])
def test_invalid_random_state_is_refused(store: Store, tmp_path: Path, algorithm: str, value: str) -> None:
    doc = algorithm_doc(GRID, algorithm, {"random_state": value}, maxTrialCount=4, parallelTrialCount=2)
    with pytest.raises(katibx.ValidationError) as info:
        run(doc, store, tmp_path)
    assert any(e.startswith("spec.algorithm.algorithmSettings[random_state]") for e in info.value.errors), info.value.errors
