"""Multi-fidelity search: Katib's ``hyperband`` and katibx's ``asha``, run through the real controller.

The objectives take the resource parameter ``epochs``: the loss is the configuration's distance to an optimum plus
a term that shrinks with more epochs, so a configuration ranks the same at every resource.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import katibx
from katibx.algorithms._resource import PARENT_LABEL
from katibx.algorithms.asha import RUNG_LABEL as ASHA_RUNG
from katibx.algorithms.asha import Asha
from katibx.algorithms.hyperband import BRACKET_LABEL, RUNG_LABEL, Hyperband, schedule
from katibx.algorithms.random_search import RandomSearch
from katibx.preparation import check_experiment, create_backend
from katibx.runner import resume_experiment
from katibx.search_space import SearchSpace
from katibx.store import Store
from katibx.trial import MetricSummary, TrialRecord, TrialState
from katibx.tuning import function_experiment


def loss_of(p: dict[str, Any]) -> float:
    return (p["x"] - 0.3) ** 2 + 1.0 / p["epochs"]


def bowl(p: dict[str, Any]) -> dict[str, float]:
    assert type(p["epochs"]) is int, p
    return {"loss": loss_of(p)}


def fragile_bowl(p: dict[str, Any]) -> dict[str, float]:
    """Fails at one epoch for x < 0.3: some of the best configurations never get a result."""
    if p["epochs"] == 1 and p["x"] < 0.3:
        raise RuntimeError("diverged")
    return bowl(p)


def slow_bowl(p: dict[str, Any]) -> dict[str, float]:
    """Takes longer with more epochs and with x, so trials of one rung finish at different times."""
    time.sleep(0.005 * p["epochs"] + 0.15 * p["x"])
    return bowl(p)


EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "hp-tuning"
PARAMETERS = {"x": katibx.search.double(0, 1), "epochs": katibx.search.int(1, 9)}
HB_SETTINGS = {"resource_name": "epochs", "r_l": 9, "eta": 3, "random_state": 1}
# r_l=9, eta=3: s_max=2. (bracket, rung) -> (trials, epochs); brackets run 2, 1, 0.
HB_SCHEDULE = {
    (2, 0): (9, 1), (2, 1): (3, 3), (2, 2): (1, 9),  # n = ceil(3 * 9 / 3) = 9 at r = 9 / 9
    (1, 0): (5, 3), (1, 1): (1, 9),                  # n = ceil(3 * 3 / 2) = 5 at r = 9 / 3; floor(5 / 3) = 1
    (0, 0): (3, 9),                                  # n = ceil(3 * 1 / 1) = 3 at r = 9
}


def tune(store: Store, name: str, algorithm: str, settings: dict[str, Any], objective: Any = bowl,
         **options: Any) -> list[TrialRecord]:
    options = {"parallel_trial_count": 9, **options}
    katibx.tune(name=name, objective=objective, parameters=PARAMETERS, objective_metric_name="loss",
                objective_type="minimize", algorithm_name=algorithm, algorithm_settings=settings, store=store,
                **options)
    return trials_of(store, name)


def trials_of(store: Store, name: str) -> list[TrialRecord]:
    return store.trials(store.get_experiment(name).id)


def final_reason(store: Store, name: str) -> tuple[str, str]:
    condition = [c for c in store.get_experiment(name).conditions if c["status"] == "True"][-1]
    return condition["type"], condition["reason"]


def hb_rungs(trials: list[TrialRecord]) -> dict[tuple[int, int], list[TrialRecord]]:
    rungs: dict[tuple[int, int], list[TrialRecord]] = {}
    for t in trials:
        rungs.setdefault((int(t.labels[BRACKET_LABEL]), int(t.labels[RUNG_LABEL])), []).append(t)
    return rungs


def loss(t: TrialRecord) -> float:
    return float(t.observation["loss"].latest)


def algorithm(cls: type, settings: dict[str, Any], parameters: dict[str, Any] = PARAMETERS, **options: Any) -> Any:
    options = {"parallel_trial_count": 9, **options}
    experiment = function_experiment("unit", bowl, parameters, objective_metric_name="loss", objective_type="minimize",
                                     algorithm_name=cls.name, algorithm_settings=settings, **options)
    return cls(experiment, SearchSpace.from_experiment(experiment))


def record(index: int, suggestion: Any, state: TrialState = TrialState.SUCCEEDED,
           value: float | None = None) -> TrialRecord:
    """A stored-trial stand-in for a suggestion, with its loss (computed from the assignments unless given)."""
    trial = TrialRecord(name=f"t{index}", index=index, assignments=dict(suggestion.assignments),
                        labels=dict(suggestion.labels), state=state)
    if state is TrialState.SUCCEEDED:
        v = str(loss_of(trial.assignments) if value is None else value)
        trial.observation = {"loss": MetricSummary("loss", v, v, v)}
    return trial


# hyperband: settings ----------------------------------------------------------------------------------------------


def at(setting: str) -> str:
    return f"spec.algorithm.algorithmSettings[{setting}] (algorithm_settings): "


@pytest.mark.parametrize("settings, options, expected", [
    ({"resource_name": "epochs"}, {}, [at("r_l") + "required"]),
    ({"r_l": 9}, {}, [at("resource_name") + "required"]),
    ({"r_l": 9, "resource_name": "steps"}, {}, ["resource_name setting must be in parameters: 'steps'"]),
    ({"r_l": 9, "resource_name": "opt"}, {}, ["resource parameter 'opt' must be of type int or double"]),
    ({"r_l": 9, "resource_name": "epochs"}, {"parallel_trial_count": 8},
     ["spec.parallelTrialCount (parallel_trial_count): parallelTrialCount must be not less than 9"]),
    ({"r_l": 8, "eta": 2, "resource_name": "epochs"}, {"parallel_trial_count": 7}, ["must be not less than 8"]),
    # Katib: eta <= 0 means 3
    ({"r_l": 9, "eta": 0, "resource_name": "epochs"}, {"parallel_trial_count": 3}, ["must be not less than 9"]),
    ({"r_l": 9, "eta": 1, "resource_name": "epochs"}, {}, [at("eta") + "must be greater than 1"]),
    ({"r_l": 9, "eta": "fast", "resource_name": "epochs"}, {}, [at("eta") + "must be a number"]),
    ({"r_l": 9, "eta": 1.001, "resource_name": "epochs"}, {}, [at("eta") + "too close to 1 for r_l=9: 2199 brackets (at most 100)"]),
    ({"r_l": 0, "resource_name": "epochs"}, {}, [at("r_l") + "must be greater than 0"]),
    ({"r_l": "lots", "resource_name": "epochs"}, {}, [at("r_l") + "must be a number"]),
    ({"r_l": 0.5, "resource_name": "epochs"}, {}, [at("r_l") + "must be at least 1 for the int parameter 'epochs'"]),
])
def test_hyperband_refuses_bad_settings_before_anything_is_stored(
        store: Store, settings: dict[str, Any], options: dict[str, Any], expected: list[str]) -> None:
    parameters = {**PARAMETERS, "opt": katibx.search.categorical(["sgd", "adam"])}
    with pytest.raises(katibx.ValidationError) as info:
        katibx.tune(name="bad", objective=bowl, parameters=parameters, objective_metric_name="loss",
                    objective_type="minimize", algorithm_name="hyperband", algorithm_settings=settings, store=store,
                    **{"parallel_trial_count": 9, **options})
    for text in expected:
        assert any(text in e for e in info.value.errors), (text, info.value.errors)
    assert store.list_experiments() == []


def test_hyperband_schedule_follows_the_paper() -> None:
    assert [(b.s, b.sizes, b.resources) for b in schedule(9, 3, "int")] == [
        (2, (9, 3, 1), (1, 3, 9)), (1, (5, 1), (3, 9)), (0, (3,), (9,))]
    # Li et al. (2018), table 1: R = 81, eta = 3.
    assert [(b.sizes, b.resources) for b in schedule(81, 3, "int")] == [
        ((81, 27, 9, 3, 1), (1, 3, 9, 27, 81)), ((34, 11, 3, 1), (3, 9, 27, 81)), ((15, 5, 1), (9, 27, 81)),
        ((8, 2), (27, 81)), ((5,), (81,))]
    # s_max without floating-point surprises: log(1000) / log(10) is 2.9999999999999996.
    assert [b.s for b in schedule(1000, 10)] == [3, 2, 1, 0]
    # A double resource gets exact fractions; an int one Katib's truncation.
    assert schedule(10, 3)[0].resources == pytest.approx((10 / 9, 10 / 3, 10))
    assert schedule(10, 3, "int")[0].resources == (1, 3, 10)


# hyperband: runs --------------------------------------------------------------------------------------------------


def check_hyperband_run(trials: list[TrialRecord]) -> None:
    """The exact r_l=9, eta=3 schedule, synchronous rungs, brackets in order, and the best promoted each time."""
    rungs = hb_rungs(trials)
    assert {key: (len(ts), {t.assignments["epochs"] for t in ts}) for key, ts in rungs.items()} == {
        key: (n, {epochs}) for key, (n, epochs) in HB_SCHEDULE.items()}
    assert all(type(t.assignments["epochs"]) is int for t in trials)
    by_name = {t.name: t for t in trials}
    for (s, i), rung in rungs.items():
        if i == 0:
            assert all(PARENT_LABEL not in t.labels for t in rung)
            continue
        previous = rungs[(s, i - 1)]
        # promoted only once the whole previous rung is done...
        assert min(t.creation_time for t in rung) >= max(t.completion_time for t in previous)
        # ...the best of it, as new trials with the same configuration
        best = sorted((t for t in previous if t.state is TrialState.SUCCEEDED), key=loss)[: len(rung)]
        assert {t.labels[PARENT_LABEL] for t in rung} == {t.name for t in best}
        for t in rung:
            assert t.assignments["x"] == by_name[t.labels[PARENT_LABEL]].assignments["x"]
    # Bracket s - 1 starts once bracket s has created its last rung (Katib's order).
    for s in (2, 1):
        last = max(t.index for t in rungs[(s, s)])
        assert min(t.index for (b, _), ts in rungs.items() if b == s - 1 for t in ts) > last


@pytest.fixture(scope="module")
def hyperband_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[TrialRecord]]:
    """One uninterrupted r_l=9, eta=3 run (no maxTrialCount: the schedule ends it)."""
    store = Store(tmp_path_factory.mktemp("hyperband") / "katibx.db")
    trials = tune(store, "hb", "hyperband", HB_SETTINGS)
    yield store, trials
    store.close()


def test_hyperband_runs_the_exact_schedule_and_ends_with_suggestion_end_reached(hyperband_run: Any) -> None:
    store, trials = hyperband_run
    assert len(trials) == 22 and all(t.state is TrialState.SUCCEEDED for t in trials)
    check_hyperband_run(trials)
    assert final_reason(store, "hb") == ("Succeeded", "ExperimentSuggestionEndReached")
    status = katibx.KatibxClient(store).get_experiment("hb")["status"]
    assert status["trials"] == status["trialsSucceeded"] == 22
    best = status["currentOptimalTrial"]["parameterAssignments"]
    assert {p["name"]: p["value"] for p in best}["epochs"] == "9"


def test_hyperband_never_promotes_failed_trials(store: Store) -> None:
    trials = tune(store, "hb-fragile", "hyperband", HB_SETTINGS, objective=fragile_bowl)
    check_hyperband_run(trials)  # the schedule is unchanged: 9 configs leave at least 3 that succeed
    rungs = hb_rungs(trials)
    failed = [t for t in rungs[(2, 0)] if t.state is TrialState.FAILED]
    promoted = [t for t in rungs[(2, 0)] if t.name in {c.labels[PARENT_LABEL] for c in rungs[(2, 1)]}]
    assert failed and all(t.assignments["x"] < 0.3 for t in failed)
    assert all(t.state is TrialState.SUCCEEDED for t in promoted)
    # a failed configuration was closer to the optimum than one that was promoted: failure, not rank, kept it out
    assert min(abs(t.assignments["x"] - 0.3) for t in failed) < max(abs(t.assignments["x"] - 0.3) for t in promoted)
    assert final_reason(store, "hb-fragile") == ("Succeeded", "ExperimentSuggestionEndReached")


def test_hyperband_resumed_mid_bracket_continues_the_same_schedule(store: Store, hyperband_run: Any) -> None:
    partial = tune(store, "hb-resume", "hyperband", HB_SETTINGS, max_trial_count=11)
    assert final_reason(store, "hb-resume") == ("Succeeded", "ExperimentMaxTrialsReached")
    assert {k: len(v) for k, v in hb_rungs(partial).items()} == {(2, 0): 9, (2, 1): 2}  # 2 of the 3 promotions
    resume_experiment("hb-resume", store=store, max_trial_count=30)
    trials = trials_of(store, "hb-resume")
    assert [t.name for t in trials[:11]] == [t.name for t in partial]
    check_hyperband_run(trials)
    assert final_reason(store, "hb-resume") == ("Succeeded", "ExperimentSuggestionEndReached")
    # exactly the trials of the uninterrupted run with the same random_state

    def shape(ts: list[TrialRecord]) -> list[tuple[Any, ...]]:
        return sorted((t.labels[BRACKET_LABEL], t.labels[RUNG_LABEL], t.assignments["x"], t.assignments["epochs"])
                      for t in ts)

    assert shape(trials) == shape(hyperband_run[1])


def test_hyperband_with_katibs_example_settings(store: Store) -> None:
    """Katib's hp-tuning/hyperband.yaml: the resource pinned to min == max == 1, eta=2, r_l=2, 2 trials in parallel.
    The resource takes values outside its feasible space; the run ends instead of hanging."""
    pinned = {"x": katibx.search.double(0, 1), "epochs": katibx.search.int(1, 1)}
    katibx.tune(name="katib-hb", objective=bowl, parameters=pinned, objective_metric_name="loss",
                objective_type="minimize", algorithm_name="hyperband", store=store, parallel_trial_count=2,
                algorithm_settings={"resource_name": "epochs", "eta": "2", "r_l": "2"})
    trials = trials_of(store, "katib-hb")
    assert [(t.labels[BRACKET_LABEL], t.labels[RUNG_LABEL], t.assignments["epochs"]) for t in trials] == [
        ("1", "0", 1), ("1", "0", 1), ("1", "1", 2), ("0", "0", 2), ("0", "0", 2)]
    assert final_reason(store, "katib-hb") == ("Succeeded", "ExperimentSuggestionEndReached")


@pytest.mark.parametrize("name", ["hyperband.yaml", "asha.yaml"])
def test_examples_are_valid(name: str) -> None:
    experiment = katibx.load_experiment(EXAMPLES / name)
    assert check_experiment(experiment, create_backend("local")) == []


def test_hyperband_bracket_whose_rung_all_failed_ends_and_the_next_starts() -> None:
    hb = algorithm(Hyperband, HB_SETTINGS)
    first = hb.suggest([], 20)
    assert len(first) == 9 and {(s.labels[BRACKET_LABEL], s.labels[RUNG_LABEL]) for s in first} == {("2", "0")}
    running = [record(i, s, TrialState.RUNNING) for i, s in enumerate(first)]
    assert hb.suggest(running, 5) == []  # wait for the rung
    failed = [record(i, s, TrialState.FAILED) for i, s in enumerate(first)]
    nxt = hb.suggest(failed, 20)
    assert [(s.labels[BRACKET_LABEL], s.labels[RUNG_LABEL], s.assignments["epochs"]) for s in nxt] == [
        ("1", "0", 3)] * 5
    done = failed + [record(9 + i, s) for i, s in enumerate(nxt)]
    (promotion, *last) = hb.suggest(done, 20)
    best = min(done[9:], key=loss)
    assert promotion.labels == {BRACKET_LABEL: "1", RUNG_LABEL: "1", PARENT_LABEL: best.name}
    assert promotion.assignments == {**best.assignments, "epochs": 9}
    # the last rung of bracket 1 is created, so bracket 0 starts at once (Katib's order)
    assert [(s.labels[BRACKET_LABEL], s.assignments["epochs"]) for s in last] == [("0", 9)] * 3
    everything = done + [record(14 + i, s) for i, s in enumerate([promotion, *last])]
    assert hb.suggest(everything, 20) == []


# asha -------------------------------------------------------------------------------------------------------------

ASHA_SETTINGS = {"resource_name": "epochs", "reduction_factor": 3, "random_state": 3}


@pytest.mark.parametrize("settings, expected", [
    ({"resource_name": ""}, at("resource_name") + "required"),
    ({"resource_name": "x2"}, "resource_name setting must be in parameters: 'x2'"),
    ({"reduction_factor": 1}, at("reduction_factor") + "must be greater than 1"),
    ({"min_resource": 0}, at("min_resource") + "must be greater than 0"),
    ({"min_resource": 1.5}, at("min_resource") + "must be an integer for the int parameter 'epochs'"),
    ({"min_resource": 9}, at("max_resource") + "must be greater than min_resource"),
    ({"max_resource": 1.5, "min_resource": 1}, at("max_resource") + "must be an integer for the int parameter"),
    ({"max_resource": 2, "reduction_factor": 5},
     at("max_resource") + "must be at least min_resource * sqrt(reduction_factor) = 2.236068 (got 2)"),
    ({"max_resource": "many"}, at("max_resource") + "must be a number"),
    ({"reduction_factor": 1.01}, at("reduction_factor") + "too close to 1 for resources 1 to 9: 222 rungs"),
])
def test_asha_refuses_bad_settings_before_anything_is_stored(store: Store, settings: dict[str, Any],
                                                            expected: str) -> None:
    settings = {"resource_name": "epochs", **settings}
    with pytest.raises(katibx.ValidationError) as info:
        katibx.tune(name="bad", objective=bowl, parameters=PARAMETERS, objective_metric_name="loss",
                    objective_type="minimize", algorithm_name="asha", algorithm_settings=settings, store=store,
                    max_trial_count=10)
    assert any(expected in e for e in info.value.errors), info.value.errors
    assert store.list_experiments() == []


def test_asha_rungs_default_to_the_resource_parameter_bounds() -> None:
    assert algorithm(Asha, ASHA_SETTINGS).resources == [1, 3, 9]
    # the top rung runs max_resource even off the geometric grid
    assert algorithm(Asha, {**ASHA_SETTINGS, "max_resource": 10}).resources == [1, 3, 10]
    assert algorithm(Asha, {**ASHA_SETTINGS, "min_resource": 2, "max_resource": 50}).resources == [2, 6, 18, 50]
    assert algorithm(Asha, {**ASHA_SETTINGS, "max_resource": 2}).resources == [1, 2]
    double = {"x": katibx.search.double(0, 1), "epochs": katibx.search.double(0.1, 1)}
    assert algorithm(Asha, ASHA_SETTINGS, double).resources == pytest.approx([0.1, 0.3, 1.0])


def test_asha_promotes_as_soon_as_a_rung_has_enough_results() -> None:
    asha = algorithm(Asha, ASHA_SETTINGS)
    first = asha.suggest([], 6)
    assert [(s.labels, s.assignments["epochs"]) for s in first] == [({ASHA_RUNG: "0"}, 1)] * 6
    trials = [record(0, first[0], value=0.5), record(1, first[1], value=0.2), record(2, first[2], value=0.9)]
    trials += [record(i, s, TrialState.RUNNING) for i, s in enumerate(first[3:], 3)]
    promotion, new = asha.suggest(trials, 2)  # 3 results out of 6 trials: the best third is promotable now
    assert promotion.labels == {ASHA_RUNG: "1", PARENT_LABEL: "t1"}
    assert promotion.assignments == {**first[1].assignments, "epochs": 3}
    assert new.labels == {ASHA_RUNG: "0"} and new.assignments["epochs"] == 1
    assert new.assignments["x"] not in {s.assignments["x"] for s in first}
    # each configuration is promoted once; the next one needs 6 results
    trials.append(record(6, promotion, TrialState.RUNNING))
    assert [s.labels for s in asha.suggest(trials, 1)] == [{ASHA_RUNG: "0"}]
    # failures are results that rank last and are never promoted; killed trials are no results
    fails = [record(i, s, TrialState.FAILED) for i, s in enumerate(first[:2])] + [record(2, first[2], value=0.7)]
    assert asha.suggest(fails, 1)[0].labels == {ASHA_RUNG: "1", PARENT_LABEL: "t2"}
    assert asha.suggest(fails[:2] + [record(2, first[2], TrialState.KILLED)], 1)[0].labels == {ASHA_RUNG: "0"}


def test_asha_checks_the_highest_rung_first() -> None:
    asha = algorithm(Asha, ASHA_SETTINGS)
    trials = [record(i, s, value=float(i)) for i, s in enumerate(asha.suggest([], 9))]
    ups = asha.suggest(trials, 3)  # the top third of 9 results, best first
    assert [(s.labels[PARENT_LABEL], s.labels[ASHA_RUNG], s.assignments["epochs"]) for s in ups] == [
        ("t0", "1", 3), ("t1", "1", 3), ("t2", "1", 3)]
    trials += [record(9 + i, s, value=v) for i, (s, v) in enumerate(zip(ups, [0.3, 0.1, 0.2]))]
    others = algorithm(Asha, {**ASHA_SETTINGS, "random_state": 4}).suggest([], 3)
    trials += [record(12 + i, s, value=v) for i, (s, v) in enumerate(zip(others, [-1.0, 10.0, 11.0]))]
    # rung 1 (3 results) can promote t10 and rung 0 (12 results, top 4) t12: the higher rung goes first
    top, up = asha.suggest(trials, 2)
    assert (top.labels, top.assignments["epochs"]) == ({ASHA_RUNG: "2", PARENT_LABEL: "t10"}, 9)
    assert (up.labels, up.assignments["epochs"]) == ({ASHA_RUNG: "1", PARENT_LABEL: "t12"}, 3)


def check_asha_run(trials: list[TrialRecord]) -> None:
    """Every promotion copies a parent of the rung below that was in the top third of that rung's results when the
    promotion was created; each configuration is promoted at most once."""
    by_name = {t.name: t for t in trials}
    parents = [t.labels[PARENT_LABEL] for t in trials if PARENT_LABEL in t.labels]
    assert len(parents) == len(set(parents))
    for child in trials:
        k = int(child.labels[ASHA_RUNG])
        assert child.assignments["epochs"] == [1, 3, 9][k]
        if k == 0:
            assert PARENT_LABEL not in child.labels
            continue
        parent = by_name[child.labels[PARENT_LABEL]]
        assert int(parent.labels[ASHA_RUNG]) == k - 1 and parent.state is TrialState.SUCCEEDED
        assert child.assignments == {**parent.assignments, "epochs": [1, 3, 9][k]}
        done = [t for t in trials if t.labels[ASHA_RUNG] == str(k - 1) and t.completion_time is not None
                and t.completion_time <= child.creation_time]
        assert parent in done
        top = sorted((t for t in done if t.state is TrialState.SUCCEEDED), key=loss)[: len(done) // 3]
        assert parent in top


def test_asha_promotes_without_waiting_for_the_rung_and_stops_at_max_trial_count(store: Store) -> None:
    trials = tune(store, "asha", "asha", ASHA_SETTINGS, objective=slow_bowl, max_trial_count=30, parallel_trial_count=4)
    assert len(trials) == 30 and all(t.state is TrialState.SUCCEEDED for t in trials)
    assert final_reason(store, "asha") == ("Succeeded", "ExperimentMaxTrialsReached")
    check_asha_run(trials)
    rungs = [sum(t.labels[ASHA_RUNG] == str(k) for t in trials) for k in range(3)]
    assert rungs[1] >= 3 and rungs[2] >= 1, rungs
    # asynchronous: some promotion was created while a trial of the rung below, created earlier, was still running
    promotions = [t for t in trials if PARENT_LABEL in t.labels]
    assert any(
        t.labels[ASHA_RUNG] == str(int(p.labels[ASHA_RUNG]) - 1)
        and t.creation_time < p.creation_time < t.completion_time
        for p in promotions for t in trials
    )
    best = min(trials, key=loss)
    assert best.assignments["epochs"] == 9


def test_asha_resumes_from_its_labels(store: Store) -> None:
    first = tune(store, "asha-resume", "asha", ASHA_SETTINGS, max_trial_count=10, parallel_trial_count=3)
    assert len(first) == 10
    resume_experiment("asha-resume", store=store, max_trial_count=25)
    trials = trials_of(store, "asha-resume")
    assert len(trials) == 25 and final_reason(store, "asha-resume") == ("Succeeded", "ExperimentMaxTrialsReached")
    check_asha_run(trials)
    assert any(PARENT_LABEL in t.labels and t.index >= 10 for t in trials)


# asha against random search at the same budget ----------------------------------------------------------------------

CENTRE = (0.2, 0.5, 0.7)
BUDGET = 270  # epochs: ten trials of random search at the full 27


def loss3(p: dict[str, Any]) -> float:
    return sum((p[f"x{j}"] - c) ** 2 for j, c in enumerate(CENTRE)) + (0.5 + 0.3 * p["x0"]) / p["epochs"]


def space3(epochs: Any) -> dict[str, Any]:
    return {**{f"x{j}": katibx.search.double(0, 1) for j in range(3)}, "epochs": epochs}


def asha_best(seed: int) -> float:
    """ASHA, one trial at a time, until the budget of epochs is spent; the best loss at the full 27 epochs."""
    asha = algorithm(Asha, {"resource_name": "epochs", "random_state": seed}, space3(katibx.search.int(1, 27)),
                     parallel_trial_count=1)
    trials: list[TrialRecord] = []
    spent = 0
    while True:
        (s,) = asha.suggest(trials, 1)
        spent += s.assignments["epochs"]
        if spent > BUDGET:
            break
        trials.append(record(len(trials), s, value=loss3(s.assignments)))
    return min((loss(t) for t in trials if t.assignments["epochs"] == 27), default=math.inf)


def random_best(seed: int) -> float:
    rs = algorithm(RandomSearch, {"random_state": seed}, space3(katibx.search.int(27, 27)), parallel_trial_count=1)
    return min(loss3(s.assignments) for s in rs.suggest([], BUDGET // 27))


def test_asha_beats_random_search_at_max_resource_for_the_same_budget() -> None:
    seeds = range(20)
    asha = np.array([asha_best(seed) for seed in seeds])
    rand = np.array([random_best(seed + 100) for seed in seeds])  # other configurations than asha's first ones
    assert np.isfinite(asha).all()
    assert (asha < rand).sum() >= 15, (asha, rand)
    assert asha.mean() < 0.7 * rand.mean(), (asha.mean(), rand.mean())
