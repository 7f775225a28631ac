"""bayesianoptimization (scikit-optimize) through real experiments: settings, the space mapping and typed values,
what the model is told, pending points in parallel runs, seeded and resumed runs, and quality against random search."""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from objectives import BRANIN_MIN, branin, hartmann6
from test_algorithms import algorithm_doc

import katibx
from katibx.algorithms import _gp
from katibx.algorithms.bayesian_optimization import BayesianOptimization
from katibx.loader import experiment_from_dict
from katibx.runner import resume_experiment, run_experiment
from katibx.search_space import SearchSpace
from katibx.store import Store
from katibx.trial import MetricSummary, TrialRecord, TrialState

BO = "bayesianoptimization"
SETTINGS = "spec.algorithm.algorithmSettings"
BRANIN = {"x1": katibx.search.double(-5, 10), "x2": katibx.search.double(0, 15)}
HARTMANN6 = {f"x{i}": katibx.search.double(0, 1) for i in range(6)}
CHOICES = ["relu", 3, 0.5, True]
TYPED = {
    "i": katibx.search.int(1, 5),
    "istep": katibx.search.int(0, 20, step=5),
    "ilog": katibx.search.int(1, 1000, distribution="logUniform"),
    "d": katibx.search.double(0.5, 1.5),
    "dstep": katibx.search.double(0, 1, step=0.25),
    "dlog": katibx.search.double(0.0001, 1, distribution="logUniform"),
    "dlogstep": katibx.search.double(0.01, 1, step=0.01, distribution="logUniform"),
    "fixed": katibx.search.double(2, 2),
    "act": katibx.search.categorical(CHOICES),
    "k": katibx.search.discrete([1, 2.5, 10]),
}


def typed_objective(p: dict[str, Any]) -> dict[str, float]:
    """Fails the trial unless every value has its parameter's type and lies in its space."""
    assert type(p["i"]) is int and 1 <= p["i"] <= 5, p
    assert type(p["istep"]) is int and p["istep"] in (0, 5, 10, 15, 20), p
    assert type(p["ilog"]) is int and 1 <= p["ilog"] <= 1000, p
    assert type(p["d"]) is float and 0.5 <= p["d"] <= 1.5, p
    assert type(p["dstep"]) is float and p["dstep"] in (0.0, 0.25, 0.5, 0.75, 1.0), p
    assert type(p["dlog"]) is float and 0.0001 <= p["dlog"] <= 1, p
    assert type(p["dlogstep"]) is float and p["dlogstep"] == round(p["dlogstep"], 2) and 0.01 <= p["dlogstep"] <= 1, p
    assert p["fixed"] == 2.0 and type(p["fixed"]) is float, p
    assert any(type(c) is type(p["act"]) and c == p["act"] for c in CHOICES), p
    assert (p["k"], type(p["k"])) in ((1, int), (2.5, float), (10, int)), p
    index = next(i for i, c in enumerate(CHOICES) if type(c) is type(p["act"]) and c == p["act"])
    return {"loss": (p["i"] - 2) ** 2 + p["istep"] / 5 + abs(math.log(p["ilog"] / 30)) + p["dstep"] + index + p["k"]}


def peak(p: dict[str, Any]) -> dict[str, float]:
    """A score to maximize, best at x = 0.8."""
    return {"score": -((p["x"] - 0.8) ** 2)}


def slow_bowl(p: dict[str, Any]) -> dict[str, float]:
    """A bowl over a 10 x 10 integer grid, slow enough for three trials to run at once."""
    time.sleep(0.2)
    return {"loss": (p["x"] - 7) ** 2 + (p["y"] - 2) ** 2}


def tune(store: Store, name: str, settings: dict[str, Any], algorithm: str = BO, **options: Any) -> list[TrialRecord]:
    """Run ``katibx.tune`` (Branin, 6 trials one at a time unless overridden) and return its stored trials."""
    args: dict[str, Any] = dict(objective=branin, parameters=BRANIN, objective_metric_name="loss",
                                objective_type="minimize", max_trial_count=6, parallel_trial_count=1)
    katibx.tune(name=name, algorithm_name=algorithm, algorithm_settings=settings, store=store, **{**args, **options})
    return store.trials(store.get_experiment(name).id)


def points(trials: list[TrialRecord]) -> list[tuple[Any, ...]]:
    return [tuple(t.assignments.values()) for t in trials]


def best(trials: list[TrialRecord], metric: str = "loss") -> float:
    return min(float(t.observation[metric].latest) for t in trials if t.state is TrialState.SUCCEEDED)


# settings -------------------------------------------------------------------------------------------------------

NUMERIC = [{"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}}]
LISTS = [{"name": "c", "parameterType": "categorical", "feasibleSpace": {"list": ["a", "b", "c"]}}]


@pytest.mark.parametrize(("settings", "space", "expected"), [
    ({"base_estimator": "XGB"}, NUMERIC, "[base_estimator]: must be one of GP, RF, ET, GBRT (got 'XGB')"),
    ({"acq_func": "UCB"}, NUMERIC, "[acq_func]: must be one of gp_hedge, LCB, EI, PI, EIps, PIps, LogEI (got 'UCB')"),
    ({"acq_func": "LogEI", "base_estimator": "RF"}, NUMERIC, "[acq_func]: LogEI needs base_estimator GP and an int"),
    ({"acq_func": "LogEI"}, LISTS, "[acq_func]: LogEI needs base_estimator GP and an int or double parameter"),
    ({"acq_optimizer": "adam"}, NUMERIC, "[acq_optimizer]: must be one of auto, sampling, lbfgs (got 'adam')"),
    ({"n_initial_points": "-1"}, NUMERIC, "[n_initial_points]: must be >= 0 (got -1)"),
    ({"n_initial_points": "many"}, NUMERIC, "[n_initial_points]: must be an integer (got 'many')"),
    ({"random_state": "-2"}, NUMERIC, "[random_state]: must be >= 0 (got -2)"),
    ({"base_estimator": "RF", "acq_optimizer": "lbfgs"}, NUMERIC, "[acq_optimizer]: lbfgs needs base_estimator GP"),
    ({"acq_optimizer": "lbfgs"}, LISTS, "[acq_optimizer]: lbfgs needs base_estimator GP and an int or double"),
])
def test_invalid_settings_are_refused_by_name(store: Store, tmp_path: Path, settings: dict[str, str],
                                              space: list[dict[str, Any]], expected: str) -> None:
    with pytest.raises(katibx.ValidationError) as info:
        run_experiment(experiment_from_dict(algorithm_doc(space, BO, settings)), store=store, workdir=tmp_path)
    assert [e for e in info.value.errors if e.startswith(SETTINGS)] == info.value.errors
    assert any(expected in e for e in info.value.errors), info.value.errors
    assert store.list_experiments() == []


def test_every_invalid_setting_is_reported_at_once(store: Store, tmp_path: Path) -> None:
    settings = {"base_estimator": "gp", "acq_func": "ei", "acq_optimizer": "LBFGS", "n_initial_points": "-3"}
    with pytest.raises(katibx.ValidationError) as info:
        run_experiment(experiment_from_dict(algorithm_doc(NUMERIC, BO, settings)), store=store, workdir=tmp_path)
    named = ("acq_func", "acq_optimizer", "base_estimator", "n_initial_points")
    assert sorted(e.split(":")[0] for e in info.value.errors) == [f"{SETTINGS}[{n}]" for n in named]


@pytest.mark.parametrize(("ptype", "distribution"), [("double", "normal"), ("int", "logNormal")])
def test_normal_distributions_are_refused_naming_the_parameter(store: Store, tmp_path: Path, ptype: str,
                                                               distribution: str) -> None:
    space = [*NUMERIC, {"name": "width", "parameterType": ptype,
                        "feasibleSpace": {"min": "1", "max": "9", "distribution": distribution}}]
    with pytest.raises(katibx.ValidationError) as info:
        run_experiment(experiment_from_dict(algorithm_doc(space, BO)), store=store, workdir=tmp_path)
    (error,) = info.value.errors
    assert error.startswith("spec.parameters[1].feasibleSpace.distribution: parameter 'width'"), error
    assert distribution in error
    assert store.list_experiments() == []


# space and types ------------------------------------------------------------------------------------------------


def test_values_keep_their_types_and_lie_in_their_space(store: Store) -> None:
    trials = tune(store, "typed", {"random_state": 3, "n_initial_points": 3}, objective=typed_objective,
                  parameters=TYPED, max_trial_count=7)
    assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 7, [t.message for t in trials]
    for trial in trials:  # as stored, too
        typed_objective(trial.assignments)
    assert len(set(points(trials))) == 7


def test_random_points_follow_each_prior() -> None:
    log = {"distribution": "logUniform"}
    space = [
        {"name": "dlog", "parameterType": "double", "feasibleSpace": {"min": "0.0001", "max": "1", **log}},
        {"name": "d", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}},
        {"name": "ilog", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "1000", **log}},
        {"name": "lstep", "parameterType": "int", "feasibleSpace": {"min": "16", "max": "1024", "step": "16", **log}},
    ]
    experiment = experiment_from_dict(algorithm_doc(space, BO, {"random_state": "1", "n_initial_points": "500"}))
    algorithm = BayesianOptimization(experiment, SearchSpace.from_experiment(experiment))
    draws = [s.assignments for s in algorithm.suggest([], 400)]

    def share(name: str, below: float) -> float:
        return sum(a[name] < below for a in draws) / len(draws)

    # Log-uniform puts half of the mass below the geometric middle; uniform would put 1-6% there.
    assert 0.4 < share("dlog", 0.01) < 0.6 and 0.4 < share("ilog", 32) < 0.6 and 0.4 < share("lstep", 128) < 0.6
    assert 0.4 < share("d", 0.5) < 0.6
    assert {a["lstep"] % 16 for a in draws} == {0} and min(a["lstep"] for a in draws) == 16
    assert len({tuple(a.values()) for a in draws}) == 400  # a batch never repeats a point


# what the model is told -----------------------------------------------------------------------------------------


def record(index: int, state: TrialState, x: float, result: tuple[str, str, str] | None,
           completed: float | None) -> TrialRecord:
    observation = {"result": MetricSummary("result", *result)} if result else {}
    return TrialRecord(name=f"t{index}", index=index, assignments={"x": x}, state=state, observation=observation,
                       creation_time=float(index), completion_time=completed)


def test_completed_trials_are_told_once_in_completion_order() -> None:
    doc = algorithm_doc(NUMERIC, BO, {"random_state": "1", "n_initial_points": "20"})
    doc["spec"]["objective"]["metricStrategies"] = [{"name": "result", "value": "min"}]  # maximize "result"
    experiment = experiment_from_dict(doc)
    algorithm = BayesianOptimization(experiment, SearchSpace.from_experiment(experiment))
    history = [
        record(0, TrialState.SUCCEEDED, 0.1, ("1", "5", "3"), 9.0),
        record(1, TrialState.FAILED, 0.2, ("7", "7", "7"), 2.0),
        record(2, TrialState.METRICS_UNAVAILABLE, 0.3, None, 3.0),
        record(3, TrialState.KILLED, 0.4, None, 4.0),
        record(4, TrialState.EARLY_STOPPED, 0.5, ("2", "8", "8"), 5.0),
        record(5, TrialState.SUCCEEDED, 0.6, (None, None, "n/a"), 6.0),  # type: ignore[arg-type]
        record(6, TrialState.RUNNING, 0.7, None, None),
    ]
    (first,) = algorithm.suggest(history, 1)
    optimizer = algorithm._opt
    assert (optimizer.Xi, optimizer.yi) == ([[0.5], [0.1]], [-2.0, -1.0])  # strategy "min", negated to maximize
    assert first.assignments["x"] not in (0.1, 0.5, 0.7)
    history[6] = record(6, TrialState.SUCCEEDED, 0.7, ("4", "4", "4"), 10.0)
    algorithm.suggest([*history, record(7, TrialState.RUNNING, first.assignments["x"], None, None)], 2)
    assert algorithm._opt is optimizer and optimizer.yi == [-2.0, -1.0, -4.0]


def test_maximize_moves_toward_the_maximum(store: Store) -> None:
    trials = tune(store, "peak", {"random_state": 1, "n_initial_points": 3}, objective=peak, objective_type="maximize",
                  objective_metric_name="score", parameters={"x": katibx.search.double(0, 1)}, max_trial_count=8)
    # The model's points gather around the maximum at 0.8; minimizing would push them to 0 and 1 (mean distance > 0.6).
    assert statistics.fmean(abs(t.assignments["x"] - 0.8) for t in trials[3:]) < 0.2, [t.assignments for t in trials]


# parallel runs --------------------------------------------------------------------------------------------------


def test_parallel_trials_never_share_a_point(store: Store) -> None:
    """Katib's skopt service asks without its running trials and proposes them again (kubeflow/katib#1700)."""
    space = {"x": katibx.search.int(0, 9), "y": katibx.search.int(0, 9)}
    trials = tune(store, "bowl", {"random_state": 5, "n_initial_points": 4}, objective=slow_bowl, parameters=space,
                  max_trial_count=12, parallel_trial_count=3)
    overlapping = 0
    for trial in trials:
        assert trial.creation_time is not None and trial.state is TrialState.SUCCEEDED
        for other in trials[:trial.index]:  # running (or about to) when ``trial`` was created
            if other.completion_time is None or other.completion_time > trial.creation_time:
                overlapping += 1
                assert other.assignments != trial.assignments, (other.name, trial.name)
    assert overlapping >= 12
    assert len(set(points(trials))) == 12  # completed points are not proposed again either


@pytest.mark.parametrize(("estimator", "acq_func"), [("RF", "EIps"), ("ET", "PI"), ("GBRT", "LCB"), ("GP", "PIps")])
def test_every_estimator_and_acquisition_runs(store: Store, estimator: str, acq_func: str) -> None:
    space = {**BRANIN, "unused": katibx.search.categorical(["a", "b"])}
    settings = {"random_state": 1, "n_initial_points": 2, "base_estimator": estimator, "acq_func": acq_func}
    trials = tune(store, "estimators", settings, parameters=space, max_trial_count=4, parallel_trial_count=2)
    assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 4 and len(set(points(trials))) == 4


# seeds, resume and quality --------------------------------------------------------------------------------------


def test_seeded_run_resumed_midway_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    one, two = Store(tmp_path / "one.db"), Store(tmp_path / "two.db")
    settings = {"random_state": 4, "n_initial_points": 2}
    whole = tune(one, "h6", settings, objective=hartmann6, parameters=HARTMANN6)
    tune(two, "h6", settings, objective=hartmann6, parameters=HARTMANN6, max_trial_count=3)
    record = resume_experiment("h6", store=two, max_trial_count=6)
    split = two.trials(record.id)
    assert points(split) == points(whole) and len(set(points(whole))) == 6
    other = tune(one, "h6-other-seed", {**settings, "random_state": 5}, objective=hartmann6, parameters=HARTMANN6,
                 max_trial_count=3)
    assert all(a != b for a, b in zip(points(other), points(whole)))


def test_beats_random_search_on_branin(store: Store) -> None:
    """Median over three seeds of the best of 30 trials: GP-based search lands near the minimum (0.398)."""
    found: dict[str, list[float]] = {}
    for algorithm, settings in ((BO, {"n_initial_points": 8}), ("random", {})):
        found[algorithm] = [best(tune(store, f"{algorithm}-{seed}", {**settings, "random_state": seed}, algorithm,
                                      max_trial_count=30)) for seed in (0, 1, 2)]
    assert statistics.median(found[BO]) < statistics.median(found["random"]), found
    assert statistics.median(found[BO]) < BRANIN_MIN + 0.1, found


# the GP engine against scikit-optimize's GP --------------------------------------------------------------------


def skopt_gp(X: np.ndarray, y: np.ndarray, theta: np.ndarray | None = None) -> Any:
    """skopt's ``cook_estimator("GP")`` for X's dimensions, fitted as skopt fits it, or at fixed log hyperparameters."""
    from skopt.learning import GaussianProcessRegressor
    from skopt.learning.gaussian_process.kernels import ConstantKernel, Matern

    dims = X.shape[1]
    kernel = ConstantKernel(1.0, (0.01, 1000.0)) * Matern(np.ones(dims), [(0.01, 100.0)] * dims, nu=2.5)
    if theta is not None:  # the white noise term skopt adds, with the given noise level, and no fit
        from skopt.learning.gaussian_process.kernels import WhiteKernel

        kernel = (kernel + WhiteKernel()).clone_with_theta(theta)
    gpr = GaussianProcessRegressor(kernel=kernel, normalize_y=True, noise="gaussian", n_restarts_optimizer=2,
                                   optimizer=None if theta is not None else "fmin_l_bfgs_b", random_state=0)
    return gpr.fit(X, y)


def training_data(n: int = 25, dims: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(0)
    X = rng.rand(n, dims)
    return X, np.sin(X @ np.arange(1.0, dims + 1)) + 0.05 * rng.randn(n)


THETA = np.log([2.0, 0.3, 1.5, 0.7, 0.01])  # constant, three length scales, noise


def test_engine_marginal_likelihood_and_gradient_match_scikit_learn() -> None:
    X, y = training_data()
    reference = skopt_gp(X, y, THETA)
    lml, grad = reference.log_marginal_likelihood(THETA, eval_gradient=True)
    value, gradient = _gp.neg_log_marginal_likelihood(THETA, (X[:, None] - X[None]) ** 2, _gp.normalize(y)[0])
    assert abs(-value - lml) < 1e-6 and np.allclose(-gradient, grad, rtol=0, atol=1e-6)


def test_engine_posterior_and_its_gradient_match_skopt() -> None:
    X, y = training_data()
    reference, engine = skopt_gp(X, y, THETA), _gp.GaussianProcess(X, y, THETA)
    points = np.random.RandomState(1).rand(3000, 3)  # more than one chunk
    mean, std = reference.predict(points, return_std=True)
    ours = engine.predict(points)
    assert np.allclose(ours[0], mean, rtol=0, atol=1e-6) and np.allclose(ours[1], std, rtol=0, atol=1e-6)
    for x in points[:5]:
        expected = reference.predict(x[None], return_std=True, return_mean_grad=True, return_std_grad=True)
        for a, b in zip(engine.predict_gradient(x), expected):
            assert np.allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["EI", "PI", "LCB"])
def test_engine_acquisitions_and_gradients_match_skopt(name: str) -> None:
    from skopt.acquisition import _gaussian_acquisition, gaussian_acquisition_1D

    X, y = training_data()
    reference, engine = skopt_gp(X, y, THETA), _gp.GaussianProcess(X, y, THETA)
    points = np.random.RandomState(2).rand(500, 3)
    expected = _gaussian_acquisition(points, reference, y_opt=y.min(), acq_func=name)
    assert np.allclose(_gp.acquisition(name, *engine.predict(points), float(y.min())), expected, rtol=0, atol=1e-6)
    for x in points[:5]:
        value, grad = gaussian_acquisition_1D(x, reference, y.min(), name)
        ours = _gp.acquisition_gradient(x, engine, name, float(y.min()))
        assert abs(ours[0] - float(np.squeeze(value))) < 1e-6 and np.allclose(ours[1], grad, rtol=0, atol=1e-6)


def test_log_posterior_gradient_matches_finite_differences() -> None:
    from scipy.optimize import approx_fprime

    X, y = training_data()
    diff2, yn = (X[:, None] - X[None]) ** 2, _gp.normalize(y)[0]
    for theta in (THETA, np.log([0.5, 3.0, 0.05, 20.0, 1e-5])):
        value, grad = _gp.neg_log_posterior(theta, diff2, yn)
        numeric = approx_fprime(theta, lambda t: _gp.neg_log_posterior(t, diff2, yn)[0], 1e-6)
        assert np.allclose(grad, numeric, rtol=1e-4, atol=1e-4), (grad, numeric)
        assert value > _gp.neg_log_marginal_likelihood(theta, diff2, yn)[0] - 10  # the prior's share is bounded here
    prior, prior_grad = _gp.log_prior(THETA)
    assert np.allclose(prior_grad, approx_fprime(THETA, lambda t: _gp.log_prior(t)[0], 1e-7), rtol=1e-5, atol=1e-5)


def test_log_ei_is_the_log_of_expected_improvement_and_finite_where_that_underflows() -> None:
    mean = np.array([0.0, 1.0, 2.0, 40.0, 80.0, 1e6, 0.5])
    std = np.array([1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.0])
    values = _gp.acquisition("LogEI", mean, std, y_opt=0.5, scale=2.0)
    ei = -_gp.acquisition("EI", mean, std, y_opt=0.5 + _gp.XI)  # skopt's EI less its xi: EI over y_opt itself
    assert np.allclose(values[:3], -np.log(ei[:3] / 2.0), rtol=1e-9, atol=0)  # in y's normalised units
    assert ei[3] == 0.0 and np.all(np.isfinite(values[3:6])) and np.all(np.diff(values[2:6]) > 0)
    assert np.isfinite(values[6]) and values[6] > values[0]  # no std: finite, and worse than some doubt at the best
    z = np.concatenate([np.linspace(-1e4, -101, 50), np.linspace(-100, 8, 500)])
    step = 1e-6 * np.maximum(1.0, np.abs(z))
    slope = (_gp.log_h(z + step) - _gp.log_h(z - step)) / (2 * step)
    assert np.allclose(_gp.log_h_slope(z), slope, rtol=1e-4, atol=1e-6)


def test_log_ei_gradient_matches_finite_differences() -> None:
    from scipy.optimize import approx_fprime

    X, y = training_data()
    model = _gp.GaussianProcess(X, y, THETA)
    for x in np.random.RandomState(3).rand(5, 3):
        value, grad = _gp.acquisition_gradient(x, model, "LogEI", float(y.min()))
        assert abs(value - _gp.acquisition("LogEI", *model.predict(x[None]), float(y.min()), model.y_std)[0]) < 1e-9
        numeric = approx_fprime(x, lambda p: _gp.acquisition_gradient(p, model, "LogEI", float(y.min()))[0], 1e-7)
        assert np.allclose(grad, numeric, rtol=1e-4, atol=1e-4), (grad, numeric)


def test_engine_fit_reaches_skopt_likelihood() -> None:
    """From skopt's three starts, the engine's hyperparameters are at least as likely as skopt's own fit."""
    X, y = training_data(40)
    reference = skopt_gp(X, y)
    optimizer = _gp.GPOptimizer([(0.0, 1.0)] * 3, "EI", "sampling", 1, seed=0)  # type: ignore[list-item]
    theta = _gp.fit_hyperparameters(X, _gp.normalize(y)[0], optimizer._starts(3))
    ours = reference.log_marginal_likelihood(theta)
    assert ours >= reference.log_marginal_likelihood_value_ - 1e-4, (theta, reference.kernel_.theta)


def drive(settings: dict[str, Any], trials: int, history: list[TrialRecord] | None = None) -> list[TrialRecord]:
    """The plugin on Branin as the controller drives it (one finished trial in, one suggestion out)."""
    space = [{"name": n, "parameterType": "double", "feasibleSpace": {"min": low, "max": high}}
             for n, low, high in (("x1", "-5", "10"), ("x2", "0", "15"))]
    doc = algorithm_doc(space, BO, {k: str(v) for k, v in settings.items()})
    doc["spec"]["objective"] = {"type": "minimize", "objectiveMetricName": "loss"}
    experiment = experiment_from_dict(doc)
    algorithm = BayesianOptimization(experiment, SearchSpace.from_experiment(experiment))
    history = list(history or [])
    while len(history) < trials:
        (suggestion,) = algorithm.suggest(history, 1)
        value = repr(branin(suggestion.assignments)["loss"])
        observation = {"loss": MetricSummary("loss", value, value, value)}
        history.append(TrialRecord(name=f"t{len(history)}", index=len(history), assignments=suggestion.assignments,
                                   state=TrialState.SUCCEEDED, observation=observation,
                                   creation_time=float(len(history)), completion_time=len(history) + 0.5))
    assert isinstance(algorithm._opt, _gp.GPOptimizer)  # base_estimator GP runs on the engine
    assert len(algorithm._opt.yi) == trials - 1 and algorithm._opt.theta_ is not None
    return history


@pytest.mark.parametrize("acq_optimizer", ["sampling", "lbfgs"])
@pytest.mark.parametrize("acq_func", ["gp_hedge", "LCB", "EI", "PI", "LogEI"])
def test_every_gp_acquisition_runs_reproducibly(acq_func: str, acq_optimizer: str) -> None:
    settings = {"random_state": 3, "n_initial_points": 4, "acq_func": acq_func, "acq_optimizer": acq_optimizer}
    first, again = drive(settings, 9), drive(settings, 9)
    assert points(first) == points(again) and len(set(points(first))) == 9
    assert points(drive({**settings, "random_state": 4}, 9))[4:] != points(first)[4:]


def plugin(settings: dict[str, str], space: list[dict[str, Any]] = NUMERIC) -> BayesianOptimization:
    doc = algorithm_doc(space, BO, settings)
    doc["spec"]["objective"] = {"type": "minimize", "objectiveMetricName": "loss"}
    experiment = experiment_from_dict(doc)
    return BayesianOptimization(experiment, SearchSpace.from_experiment(experiment))


def test_unset_acq_func_is_log_ei_and_katibs_values_keep_skopts_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    """No acq_func: LogEI with the prior on the GP engine. An acq_func written as Katib's default (gp_hedge) is
    skopt's gp_hedge with skopt's maximum-likelihood fit, as before; where the engine does not run (a tree estimator,
    categorical parameters only) the default stays gp_hedge."""
    default, hedge = plugin({"n_initial_points": "2"}), plugin({"n_initial_points": "2", "acq_func": "gp_hedge"})
    assert isinstance(default._opt, _gp.GPOptimizer) and default._opt.cand_acq_funcs == ("LogEI",)
    assert isinstance(hedge._opt, _gp.GPOptimizer) and hedge._opt.cand_acq_funcs == _gp.HEDGE
    assert plugin({"base_estimator": "RF"})._opt.acq_func == "gp_hedge"
    assert plugin({}, LISTS)._opt.acq_func == "gp_hedge"
    fits: list[bool] = []
    monkeypatch.setattr(_gp, "fit_hyperparameters", lambda X, y, starts, prior=False: fits.append(prior) or THETA[:3])
    for algorithm, prior in ((default, True), (hedge, False)):
        fits.clear()
        for x in (0.1, 0.9, 0.4):
            algorithm._opt.tell([x], x * x)
        assert fits == [prior, prior]  # a fit at each tell after the two initial points
    # explicit gp_hedge draws exactly what skopt's hedge draws: test_engine_optimizer_matches_skopt_optimizer_*


def test_engine_state_rebuilt_from_the_history_matches_an_uninterrupted_run() -> None:
    """Past several full-restart fits: a fresh plugin told the stored history proposes what the running one did."""
    settings = {"random_state": 7, "n_initial_points": 5}
    whole = drive(settings, 2 * _gp.RESTART_EVERY + 3)
    resumed = drive(settings, len(whole), history=whole[:-1])
    assert points(resumed) == points(whole)


def fixed_pair(monkeypatch: pytest.MonkeyPatch, acq_func: str, seed: int) -> tuple[_gp.GPOptimizer, Any]:
    """The engine and ``skopt.Optimizer`` on [0, 1]^3 with the GP at THETA (no fit), sampling, one seed each."""
    from skopt import Optimizer

    monkeypatch.setattr(_gp, "fit_hyperparameters", lambda X, y, starts, prior=False: THETA)
    dims = [(0.0, 1.0)] * 3
    engine = _gp.GPOptimizer(dims, acq_func, "sampling", 3, seed=seed)  # type: ignore[arg-type]
    engine.rng = np.random.RandomState(seed)  # skopt draws nothing before its first candidates
    X, y = training_data()
    reference = Optimizer(dims, skopt_gp(X, y, THETA), acq_func=acq_func, acq_optimizer="sampling",
                          n_initial_points=3, random_state=seed)
    return engine, reference


@pytest.mark.parametrize("acq_func", ["gp_hedge", "EI"])
def test_engine_optimizer_matches_skopt_optimizer_at_fixed_hyperparameters(monkeypatch: pytest.MonkeyPatch,
                                                                           acq_func: str) -> None:
    """Same tells, same candidates: the same hedge gains and the same next point as skopt's Optimizer."""
    engine, reference = fixed_pair(monkeypatch, acq_func, seed=5)
    X, y = training_data(12)
    for x, v in zip(X.tolist(), y.tolist()):
        engine.tell(x, v)
        reference.tell(x, v)
        if len(engine.yi) >= 3:
            assert np.allclose(engine._next_x, reference._next_x, rtol=0, atol=1e-9), len(engine.yi)
            if acq_func == "gp_hedge":
                assert np.allclose(engine.gains_, reference.gains_, rtol=0, atol=1e-6), len(engine.yi)
    if acq_func == "gp_hedge":
        assert np.ptp(engine.gains_) > 0  # the gains moved: a zeroed update would not match


def test_hedge_probabilities_are_skopts_softmax_and_equal_when_not_finite() -> None:
    gains = np.array([-1.0, 0.5, 2.0])
    expected = np.exp(gains - 2.0) / np.exp(gains - 2.0).sum()
    assert np.allclose(_gp.hedge_probabilities(gains), expected, rtol=0, atol=1e-15)
    assert np.allclose(_gp.hedge_probabilities(np.array([np.nan, 1.0, 0.0])), 1 / 3)


def test_engine_candidates_follow_each_dimensions_distribution() -> None:
    """Per-dimension draws: log-uniform Real and Integer, uniform Integer, 2- and 3-category Categorical."""
    from skopt.space import Categorical, Integer, Real

    dims = [Real(1e-3, 1e3, prior="log-uniform"), Integer(1, 1000, prior="log-uniform"), Integer(0, 4),
            Categorical(["a", "b"]), Categorical(["a", "b", "c"])]
    space = _gp.GPOptimizer(dims, "EI", "sampling", 1, seed=0).space
    n = 20000
    columns = list(zip(*space.inverse_transform(_gp.sample(space, n, np.random.RandomState(0)))))
    real, log_int, uniform_int = (np.asarray(c, float) for c in columns[:3])
    q = np.linspace(0.1, 0.9, 9)
    assert real.min() >= 1e-3 and real.max() <= 1e3
    assert np.allclose(np.quantile(np.log10(real), q), -3 + 6 * q, rtol=0, atol=0.1)
    assert log_int.min() >= 1 and log_int.max() <= 1000 and np.all(log_int == np.round(log_int))
    assert np.allclose(np.quantile(np.log10(log_int), q[2:]), 3 * q[2:], rtol=0, atol=0.1)
    assert set(uniform_int) == {0, 1, 2, 3, 4}  # skopt's normalised Integer rounds uniform [0, 1]: ends half as often
    assert np.allclose(np.bincount(uniform_int.astype(int)) / n, np.array([1, 2, 2, 2, 1]) / 8, rtol=0, atol=0.02)
    for column, categories in zip(columns[3:], (["a", "b"], ["a", "b", "c"])):
        counts = [column.count(c) / n for c in categories]
        assert np.allclose(counts, 1 / len(categories), rtol=0, atol=0.02), counts


def test_engine_survives_a_huge_finite_value() -> None:
    """A value whose square overflows leaves gains finite, and the next suggestions come as usual."""
    engine = _gp.GPOptimizer([(0.0, 1.0)] * 2, "gp_hedge", "sampling", 2, seed=0)  # type: ignore[list-item]
    rng = np.random.RandomState(1)
    engine.tell(rng.rand(2).tolist(), 1e200)
    for _ in range(6):
        x = rng.rand(2).tolist()
        engine.tell(x, float(np.sum(np.square(x))))
        assert np.all(np.isfinite(engine.gains_)) and np.all(np.isfinite(engine._next_x))
        assert all(0.0 <= v <= 1.0 for v in engine._next_x)
    assert np.isfinite(_gp.normalize(np.array([1e200, -1e200, 3.0]))[0]).all()


def test_batch_tell_restarts_where_single_tells_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """Telling across a multiple of ``RESTART_EVERY`` at once adds the random starts, as one at a time would."""
    fit = _gp.fit_hyperparameters
    counts: list[tuple[int, int]] = []

    def recording(X: np.ndarray, y: np.ndarray, starts: Any, prior: bool = False) -> np.ndarray:
        counts.append((len(y), len(starts)))
        return fit(X, y, starts, prior)

    monkeypatch.setattr(_gp, "fit_hyperparameters", recording)
    X, y = training_data(_gp.RESTART_EVERY + 2, dims=2)
    engine = _gp.GPOptimizer([(0.0, 1.0)] * 2, "EI", "sampling", 3, seed=0)  # type: ignore[list-item]
    for x, v in zip(X[:-4].tolist(), y[:-4].tolist()):
        engine.tell(x, v)
    engine.tell(X[-4:].tolist(), y[-4:].tolist())
    assert counts[-1] == (_gp.RESTART_EVERY + 2, 2 + _gp.N_RESTARTS) and counts[-2][1] == 2
