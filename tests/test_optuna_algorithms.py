"""The optuna-backed algorithms (tpe, multivariate-tpe, cmaes, sobol) through the real controller: settings,
types, parallel suggestions, reproducibility, resume and search quality on closed-form objectives."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pytest
from conftest import experiment_doc
from objectives import BRANIN_MIN, branin, branin_value

import katibx
from katibx import plugins
from katibx.loader import experiment_from_dict
from katibx.runner import resume_experiment, run_experiment
from katibx.search_space import SearchSpace
from katibx.store import Store
from katibx.trial import MetricSummary, TrialRecord, TrialState

ALGORITHMS = ["tpe", "multivariate-tpe", "cmaes", "sobol"]
BRANIN = {"x1": katibx.search.double(-5, 10), "x2": katibx.search.double(0, 15)}
# Settings that bring every algorithm past its random start within a dozen trials.
QUICK = {"multivariate-tpe": {"n_startup_trials": "3"}}


def tune(store: Store, name: str, algorithm: str, settings: dict[str, Any] | None = None, *,
         parameters: dict[str, Any] = BRANIN, objective: Any = branin, parallel_trial_count: int = 1,
         **options: Any) -> list[TrialRecord]:
    """Minimise ``loss`` with ``algorithm`` (one trial at a time unless told) and return the stored trials."""
    katibx.tune(name=name, objective=objective, parameters=parameters, objective_metric_name="loss",
                objective_type="minimize", algorithm_name=algorithm, algorithm_settings=settings or {},
                store=store, parallel_trial_count=parallel_trial_count, **options)
    return store.trials(store.get_experiment(name).id)


def best(trials: list[TrialRecord]) -> float:
    return min(float(t.metric("loss")) for t in trials if t.state is TrialState.SUCCEEDED)  # type: ignore[arg-type]


def settings_doc(algorithm: str, settings: dict[str, str], parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    parameters = parameters or [
        {"name": "a", "parameterType": "int", "feasibleSpace": {"min": "10", "max": "20"}},
        {"name": "b", "parameterType": "double", "feasibleSpace": {"min": "0.1", "max": "0.2"}},
    ]
    doc = experiment_doc(parameters=parameters, objective={"type": "minimize", "objectiveMetricName": "loss"}, algorithm={
        "algorithmName": algorithm, "algorithmSettings": [{"name": k, "value": v} for k, v in settings.items()]})
    doc["spec"]["trialTemplate"]["trialParameters"] = [{"name": p["name"], "reference": p["name"]} for p in parameters]
    doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"] = [
        "echo", *(f"${{trialParameters.{p['name']}}}" for p in parameters)]
    return doc


def refused(doc: dict[str, Any], store: Store, tmp_path: Path) -> list[str]:
    with pytest.raises(katibx.ValidationError) as info:
        run_experiment(experiment_from_dict(doc), store=store, workdir=tmp_path)
    assert store.list_experiments() == []
    return info.value.errors


def algorithm(doc: dict[str, Any]) -> Any:
    experiment = experiment_from_dict(doc)
    cls = plugins.load(plugins.ALGORITHMS, experiment.spec.algorithm.algorithm_name)  # type: ignore[union-attr,arg-type]
    return cls(experiment, SearchSpace.from_experiment(experiment))


# settings -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "settings", "expected"), [
    ("tpe", {"gamma": "1.5"}, "[gamma]: gamma should be in the range of (0, 1) (got '1.5')"),
    ("tpe", {"gamma": "0"}, "[gamma]: gamma should be in the range of (0, 1)"),
    ("tpe", {"gamma": "low"}, "[gamma]: must be a number (got 'low')"),
    ("tpe", {"prior_weight": "0"}, "[prior_weight]: prior_weight should be greater than zero"),
    ("tpe", {"n_EI_candidates": "0"}, "[n_EI_candidates]: must be >= 1 (got 0)"),
    ("tpe", {"random_state": "-1"}, "[random_state]: must be >= 0"),
    ("multivariate-tpe", {"n_startup_trials": "-1"}, "[n_startup_trials]: must be >= 0"),
    ("multivariate-tpe", {"n_ei_candidates": "1.5"}, "[n_ei_candidates]: must be an integer"),
    ("cmaes", {"sigma": "0"}, "[sigma]: sigma should be greater than zero"),
    ("cmaes", {"sigma": "nan"}, "[sigma]: sigma should be greater than zero"),
    ("cmaes", {"restart_strategy": "restart"}, "[restart_strategy]: restart_strategy 'restart' is not supported"),
    ("sobol", {"random_state": "seven"}, "[random_state]: must be an integer"),
    ("tpe", {"multivariate": "maybe"}, "[multivariate]: must be true or false (got 'maybe')"),
])
def test_invalid_settings_are_refused_naming_the_setting(store: Store, tmp_path: Path, name: str,
                                                         settings: dict[str, str], expected: str) -> None:
    (error,) = refused(settings_doc(name, settings), store, tmp_path)
    assert error.startswith("spec.algorithm.algorithmSettings" + expected), error


@pytest.mark.parametrize("name", ALGORITHMS)
def test_katib_settings_and_defaults_are_accepted(name: str) -> None:
    settings = {"tpe": {"gamma": "0.3", "prior_weight": "0.5", "n_EI_candidates": "12", "random_state": "1"},
                "multivariate-tpe": {"n_startup_trials": "0", "n_ei_candidates": "8", "random_state": "1"},
                "cmaes": {"sigma": "0.3", "restart_strategy": "bipop", "random_state": "1"},
                "sobol": {}}[name]
    for given in (settings, {}):
        assert len(algorithm(settings_doc(name, given)).suggest([], 2)) == 2


@pytest.mark.parametrize("name", ALGORITHMS)
def test_normal_distributions_are_refused_up_front(store: Store, tmp_path: Path, name: str) -> None:
    parameters = [
        {"name": "a", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}},
        {"name": "b", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1", "distribution": "normal"}},
        {"name": "c", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "9", "distribution": "logNormal"}},
    ]
    assert refused(settings_doc(name, {}, parameters), store, tmp_path) == [
        f"spec.parameters[1].feasibleSpace.distribution: normal is not supported by algorithm {name!r} (supported: uniform, logUniform)",
        f"spec.parameters[2].feasibleSpace.distribution: logNormal is not supported by algorithm {name!r} (supported: uniform, logUniform)",
    ]


def test_cmaes_needs_two_continuous_parameters(store: Store, tmp_path: Path) -> None:
    parameters = [
        {"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.01", "max": "0.1"}},
        {"name": "fixed", "parameterType": "int", "feasibleSpace": {"min": "3", "max": "3"}},
        {"name": "act", "parameterType": "categorical", "feasibleSpace": {"list": ["relu", "tanh"]}},
    ]
    assert refused(settings_doc("cmaes", {}, parameters), store, tmp_path) == [
        "spec.parameters: CMA-ES only supports two or more dimensional continuous search space."]


# types and parallel suggestions ---------------------------------------------------------------------------------

TYPED = {
    "i": katibx.search.int(1, 5),
    "istep": katibx.search.int(0, 22, step=5),
    "ilog": katibx.search.int(1, 1000, distribution="logUniform"),
    "d": katibx.search.double(0.5, 1.5),
    "dstep": katibx.search.double(0.1, 1.05, step=0.25),
    "dlog": katibx.search.double(1e-4, 1, distribution="logUniform"),
    "act": katibx.search.categorical(["relu", "tanh", "gelu"]),
    "flag": katibx.search.categorical([1, True, "one"]),
    "k": katibx.search.discrete([1, 2.5, 10]),
}


def typed_objective(p: dict[str, Any]) -> dict[str, float]:
    """Checks every value's type and range inside the trial (a wrong one fails the trial); loss rewards small values."""
    assert type(p["i"]) is int and 1 <= p["i"] <= 5
    assert type(p["istep"]) is int and p["istep"] in (0, 5, 10, 15, 20)
    assert type(p["ilog"]) is int and 1 <= p["ilog"] <= 1000
    assert type(p["d"]) is float and 0.5 <= p["d"] <= 1.5
    assert type(p["dstep"]) is float and p["dstep"] in (0.1, 0.35, 0.6, 0.85)
    assert type(p["dlog"]) is float and 1e-4 <= p["dlog"] <= 1
    assert p["act"] in ("relu", "tanh", "gelu")
    assert any(type(p["flag"]) is type(c) and p["flag"] == c for c in (1, True, "one"))
    assert p["k"] in (1, 2.5, 10) and type(p["k"]) is (float if p["k"] == 2.5 else int)
    return {"loss": p["i"] + p["istep"] / 5 + math.log10(p["ilog"]) + p["d"] + p["dstep"] - math.log10(p["dlog"])
            + (p["act"] == "relu") + (p["flag"] is True) + p["k"]}


@pytest.mark.parametrize("name", ALGORITHMS)
def test_values_keep_their_type_step_and_bounds(store: Store, name: str) -> None:
    trials = tune(store, f"typed-{name}", name, {"random_state": 3, **QUICK.get(name, {})}, parameters=TYPED,
                  objective=typed_objective, max_trial_count=14, parallel_trial_count=2)
    assert len(trials) == 14 and all(t.state is TrialState.SUCCEEDED for t in trials), [t.message for t in trials]
    assert all(typed_objective(t.assignments) for t in trials)  # the stored values too
    assert len({type(t.assignments["flag"]) for t in trials}) > 1 and len({t.assignments["act"] for t in trials}) > 1


@pytest.mark.parametrize("name", ALGORITHMS)
def test_one_batch_has_no_repeats_in_a_small_space(name: str) -> None:
    space = [{"name": n, "parameterType": "int", "feasibleSpace": {"min": "1", "max": "3"}} for n in ("a", "b")]
    for seed in ("1", "2"):
        batch = [s.assignments for s in algorithm(settings_doc(name, {"random_state": seed}, space)).suggest([], 5)]
        assert len({(a["a"], a["b"]) for a in batch}) == 5, batch


# history: values, reproducibility, resume -----------------------------------------------------------------------


def record(index: int, assignments: dict[str, Any], state: TrialState, loss: dict[str, str] | None = None,
           created: float = 0.0, completed: float | None = None) -> TrialRecord:
    observation = {"loss": MetricSummary("loss", loss["min"], loss["max"], loss["latest"])} if loss else {}
    return TrialRecord(name=f"t{index}", index=index, assignments=assignments, state=state, observation=observation,
                       creation_time=created, completion_time=completed)


def test_the_study_sees_the_metric_strategy_value_and_katib_states() -> None:
    doc = settings_doc("tpe", {"random_state": "1"})
    doc["spec"]["objective"] = {"type": "maximize", "objectiveMetricName": "loss",
                                "metricStrategies": [{"name": "loss", "value": "max"}]}
    search = algorithm(doc)
    points = [s.assignments for s in search.suggest([], 6)]
    loss = {"min": "1", "max": "5", "latest": "2"}
    states = [TrialState.SUCCEEDED, TrialState.EARLY_STOPPED, TrialState.FAILED, TrialState.METRICS_UNAVAILABLE,
              TrialState.RUNNING, TrialState.KILLED]
    history = [record(i, p, s, loss if i < 3 else None, 0.0, None if s.is_active else 1.0)
               for i, (p, s) in enumerate(zip(points, states))]
    search.suggest(history, 1)
    study = search._study
    assert study.direction.name == "MAXIMIZE"
    assert [(t.state.name, t.value) for t in study.trials[:6]] == [
        ("COMPLETE", 5.0), ("COMPLETE", 5.0), ("FAIL", None), ("FAIL", None), ("RUNNING", None), ("FAIL", None)]


@pytest.mark.parametrize("name", ALGORITHMS)
def test_random_state_reproduces_the_same_trials(store: Store, name: str) -> None:
    def run(experiment: str, seed: int) -> list[dict[str, Any]]:
        settings = {"random_state": seed, **QUICK.get(name, {})}
        return [t.assignments for t in tune(store, experiment, name, settings, max_trial_count=12)]

    first = run("seeded-a", 11)
    assert run("seeded-b", 11) == first
    assert run("seeded-c", 12) != first
    assert len({(a["x1"], a["x2"]) for a in first}) == 12


def test_sobol_without_a_seed_is_the_plain_sequence_from_the_centre() -> None:
    doc = settings_doc("sobol", {}, [{"name": "x1", "parameterType": "double", "feasibleSpace": {"min": "-5", "max": "10"}},
                                     {"name": "x2", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "15"}}])
    first = [s.assignments for s in algorithm(doc).suggest([], 4)]
    assert first == [{"x1": 2.5, "x2": 7.5}, {"x1": 6.25, "x2": 3.75}, {"x1": -1.25, "x2": 11.25}, {"x1": 0.625, "x2": 5.625}]
    assert [s.assignments for s in algorithm(doc).suggest([], 4)] == first


@pytest.mark.parametrize("name", ALGORITHMS)
def test_resume_continues_exactly_like_an_uninterrupted_run(store: Store, name: str) -> None:
    settings = {"random_state": 5, **QUICK.get(name, {})}
    full = tune(store, "whole", name, settings, max_trial_count=12)
    part = tune(store, "split", name, settings, max_trial_count=6)
    assert [t.assignments for t in part] == [t.assignments for t in full[:6]]
    resume_experiment("split", store=store, max_trial_count=12, function=branin)
    assert [t.assignments for t in store.trials(store.get_experiment("split").id)] == [t.assignments for t in full]


def test_an_unseeded_resume_keeps_the_trials_that_ran() -> None:
    doc = settings_doc("cmaes", {})
    first = algorithm(doc)
    history = [record(i, s.assignments, TrialState.SUCCEEDED, {"min": str(i), "max": str(i), "latest": str(i)}, i, i + 0.5)
               for i, s in enumerate(first.suggest([], 8))]
    rebuilt = algorithm(doc)
    assert len(rebuilt.suggest(history, 2)) == 2
    study = rebuilt._study
    assert [rebuilt._from_optuna(t.params) for t in study.trials[:8]] == [t.assignments for t in history]


@pytest.mark.parametrize(("strategy", "restarts", "sizes"), [
    ("none", 0, {6}), ("ipop", 1, {12}), ("bipop", 1, set(range(6, 12))),
])
def test_cmaes_restarts_when_it_converges(strategy: str, restarts: int, sizes: set[int]) -> None:
    search = algorithm(settings_doc("cmaes", {"restart_strategy": strategy, "random_state": "0"}))
    history: list[TrialRecord] = []
    while len(history) < 200:  # a flat objective: CMA-ES (population 6 in 2-D) stops after about 21 generations
        (s,) = search.suggest(history, 1)
        history.append(record(len(history), s.assignments, TrialState.SUCCEEDED, {"min": "1", "max": "1", "latest": "1"}))
    cma = search._cma  # IPOP doubles the population; BIPOP's second run is a small one, between 6 and 12
    assert (cma._restarts, cma._optimizer.population_size in sizes) == (restarts, True)


# quality --------------------------------------------------------------------------------------------------------

QUALITY_SEEDS = (3, 4, 5)
QUALITY_BUDGET = 50


def sequential_best(name: str, seed: int) -> float:
    """Best Branin value after QUALITY_BUDGET trials run one at a time, driving the plugin as the controller does.

    A sequential run through the controller gives the same trials (checked when written) in 20 times the time.
    """
    space = [{"name": "x1", "parameterType": "double", "feasibleSpace": {"min": "-5", "max": "10"}},
             {"name": "x2", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "15"}}]
    search = algorithm(settings_doc(name, {"random_state": str(seed)}, space))
    history: list[TrialRecord] = []
    for index in range(QUALITY_BUDGET):
        (s,) = search.suggest(history, 1)
        loss = str(branin(s.assignments)["loss"])
        history.append(record(index, s.assignments, TrialState.SUCCEEDED, {"min": loss, "max": loss, "latest": loss},
                              created=2 * index, completed=2 * index + 1))
    return best(history)


def test_model_based_algorithms_beat_random_search_on_branin() -> None:
    # Seeded sequential runs are deterministic, so these medians are fixed numbers: random 1.23, tpe 0.62,
    # multivariate-tpe 0.53, cmaes 0.54 when written (over seeds 0-19: random 1.20, tpe 0.54, multivariate-tpe
    # 0.54, cmaes 0.82; at 40 trials cmaes is no better than random, 1.40 vs 1.33).
    medians = {name: statistics.median(sequential_best(name, seed) for seed in QUALITY_SEEDS)
               for name in ("random", "tpe", "multivariate-tpe", "cmaes")}
    for name in ("tpe", "multivariate-tpe", "cmaes"):
        assert BRANIN_MIN < medians[name] < 0.75 * medians["random"], medians


@pytest.mark.parametrize("name", ["tpe", "multivariate-tpe"])
def test_the_kept_sampler_draws_what_a_new_one_per_trial_would(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TPE samplers are built once and reseeded per trial (a new one costs 0.3-0.5 ms a suggestion): the
    trials are exactly those of a sampler built for each trial, in sequence and in parallel batches."""
    from katibx.algorithms import _optuna

    def run() -> list[dict[str, Any]]:
        search = algorithm(settings_doc(name, {"random_state": "7"}))
        history: list[TrialRecord] = []
        for batch in (3, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1):  # past the 10 startup trials into TPE proper
            for suggestion in search.suggest(history, batch):
                a = suggestion.assignments
                loss = str(branin_value(float(a["b"]) * 50, float(a["a"])))
                history.append(record(len(history), a, TrialState.SUCCEEDED, {"min": loss, "max": loss, "latest": loss},
                                      float(len(history)), float(len(history)) + 0.5))
        return [t.assignments for t in history]

    reseeds: list[int] = []
    reseed = _optuna._reseed
    monkeypatch.setattr(_optuna, "_reseed", lambda sampler, seed: reseeds.append(seed) or reseed(sampler, seed))
    kept = run()
    assert len(reseeds) >= len(kept) - 1  # the installed optuna took the fast path
    monkeypatch.setattr(_optuna, "_reseed", lambda sampler, seed: False)  # a new sampler for every trial
    assert run() == kept


def test_tpe_takes_a_tenth_of_the_trials_as_good_when_gamma_is_unset_and_a_given_gamma_keeps_its_meaning() -> None:
    """The default that measured best on the black-box suite (optuna's 10 %, at most 25) applies only when gamma is
    not given: Katib's 0.25 written out is still a quarter of the finished trials."""
    unset = algorithm(settings_doc("tpe", {}))
    assert [unset.good(n) for n in (1, 10, 60, 1000)] == [1, 1, 6, 25]
    katibs = algorithm(settings_doc("tpe", {"gamma": "0.25"}))
    assert [katibs.good(n) for n in (1, 10, 60, 1000)] == [1, 3, 15, 25]


def test_tpe_models_the_parameters_together_unless_told_not_to() -> None:
    """optuna 5's default for one objective, which measured better on the black-box suite; ``multivariate: false`` is
    Katib's (hyperopt's) independent TPE."""
    assert algorithm(settings_doc("tpe", {})).sampler(0)._multivariate is True
    assert algorithm(settings_doc("tpe", {"multivariate": "false"})).sampler(0)._multivariate is False
    several = settings_doc("tpe", {})
    several["spec"]["objective"]["additionalObjectives"] = [{"objectiveMetricName": "cost", "type": "minimize"}]
    assert algorithm(several).sampler(0)._multivariate is False  # optuna 5's default for several objectives
