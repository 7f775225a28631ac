"""The Python API: ``katibx.tune`` (Katib's ``KatibClient.tune`` with typed values), the client, YAML from Python and
``katibx.report_metrics``. Real trial processes (forked by the local backend) and a real SQLite store.

Katib's e2e tune case: maximize 4a - b^2, a int in [10, 20], b double in [0.1, 0.2], 4 trials. With
``random_state: 7`` the first four draws of ``a`` are 20, 19, 13, 18 (seeds 0..14 tried; 7 is the first whose first
trial reaches a=20); a categorical ``c`` drawn after ``a`` and ``b`` does not change them.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import experiment_doc

import katibx
from katibx.template import format_value
from katibx.trial_dir import METRICS_FILE_ENV, TRIAL_NAME_ENV

CHOICES = ["adam", 3, 0.5]
FIXED = {"epochs": 2, "tags": ["x", "y"], "note": None}


def e2e_objective(p: dict[str, Any]) -> dict[str, float]:
    """Returns its metrics; fails the trial unless every value arrives typed and the fixed values unchanged."""
    assert type(p["a"]) is int and 10 <= p["a"] <= 20, p
    assert type(p["b"]) is float and 0.1 <= p["b"] <= 0.2, p
    assert p["c"] in CHOICES and type(p["c"]) is type(CHOICES[CHOICES.index(p["c"])]), p
    assert {k: p[k] for k in FIXED} == FIXED, p
    print(f"a={p['a']} b={p['b']} c={p['c']!r}")
    return {"result": 4 * p["a"] - p["b"] ** 2}


def reporting_objective(p: dict[str, Any]) -> None:
    """Calls report_metrics once per 'epoch' instead of returning."""
    for epoch in range(3):
        katibx.report_metrics({"loss": p["x"] * (3 - epoch), "epoch": epoch})


def bad_metric_objective(p: dict[str, Any]) -> dict[str, Any]:
    return {"result": True}


def crashing_objective(p: dict[str, Any]) -> None:
    raise RuntimeError("objective crashed on purpose")


def tune_args(store: Path, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        name="tune-e2e", objective=e2e_objective,
        parameters={"a": katibx.search.int(10, 20), "b": katibx.search.double(0.1, 0.2),
                    "c": katibx.search.categorical(CHOICES), **FIXED},
        objective_metric_name="result", objective_type="maximize", algorithm_name="random",
        algorithm_settings={"random_state": 7}, max_trial_count=4, parallel_trial_count=2, max_failed_trial_count=1,
        store=str(store),
    )
    args.update(overrides)
    return args


def assignments(trial_or_optimal: dict[str, Any]) -> dict[str, str]:
    items = trial_or_optimal.get("parameterAssignments") or trial_or_optimal["spec"]["parameterAssignments"]
    return {p["name"]: p["value"] for p in items}


def test_tune_e2e_typed_values_and_client(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    experiment = katibx.tune(**tune_args(store))

    assert experiment["kind"] == "Experiment" and experiment["metadata"]["name"] == "tune-e2e"
    status = experiment["status"]
    assert status["trials"] == status["trialsSucceeded"] == 4  # every typed-value assertion held
    client = katibx.KatibxClient(store)
    assert client.is_experiment_created("tune-e2e") and client.is_experiment_succeeded("tune-e2e")
    assert not client.is_experiment_failed("tune-e2e") and not client.is_experiment_running("tune-e2e")
    assert [c["reason"] for c in client.get_experiment_conditions("tune-e2e") if c["type"] == "Succeeded"] == [
        "ExperimentMaxTrialsReached"]

    trials = client.list_trials("tune-e2e")
    assert len(trials) == 4

    def value(t: dict[str, Any]) -> float:
        a = assignments(t)
        return 4 * int(a["a"]) - float(a["b"]) ** 2

    best = max(trials, key=value)
    optimal = client.get_optimal_hyperparameters("tune-e2e")
    assert optimal == status["currentOptimalTrial"]
    assert optimal["bestTrialName"] == best["metadata"]["name"]
    assert assignments(optimal)["a"] == "20" and set(assignments(optimal)) == {"a", "b", "c"}
    assert float(optimal["observation"]["metrics"][0]["latest"]) == pytest.approx(value(best))
    details = client.get_success_trial_details("tune-e2e")
    assert sorted(d["name"] for d in details) == sorted(t["metadata"]["name"] for t in trials)
    logs = client.get_trial_logs("tune-e2e", best["metadata"]["name"])
    assert logs.startswith(f"a=20 b={assignments(best)['b']}")
    assert issubclass(katibx.KatibClient, katibx.KatibxClient)  # the SDK-shaped client reads the same way

    with pytest.raises(katibx.StoreError, match="already exists"):
        katibx.tune(**tune_args(store, max_trial_count=1, parallel_trial_count=1))
    assert len(client.list_trials("tune-e2e")) == 4
    with pytest.raises(katibx.StoreError, match="not found"):
        client.get_experiment("nope")


def test_tune_with_a_closure_and_report_metrics(tmp_path: Path) -> None:
    seen_scale = 10.0

    def objective(p: dict[str, Any]) -> None:  # a closure: the local backend forks, so it needs no import
        katibx.report_metrics({"loss": seen_scale * p["x"]})
        katibx.report_metrics({"loss": seen_scale * p["x"] / 2, "accuracy": 0.5})

    experiment = katibx.tune(
        name="closure", objective=objective, parameters={"x": katibx.search.discrete([1, 2, 4])},
        objective_metric_name="loss", additional_metric_names=["accuracy"], objective_type="minimize",
        algorithm_name="grid", max_trial_count=3, parallel_trial_count=3, store=tmp_path / "s.db",
    )
    assert experiment["status"]["trialsSucceeded"] == 3
    optimal = experiment["status"]["currentOptimalTrial"]
    assert assignments(optimal) == {"x": "1"}
    metrics = {m["name"]: m for m in optimal["observation"]["metrics"]}
    assert metrics["loss"] == {"name": "loss", "min": "5.0", "max": "10.0", "latest": "5.0"}
    assert metrics["accuracy"]["latest"] == "0.5"


def test_report_metrics_series_gives_min_max_latest(tmp_path: Path) -> None:
    experiment = katibx.tune(
        name="series", objective=reporting_objective, parameters={"x": katibx.search.double(1.0, 2.0)},
        objective_metric_name="loss", objective_type="minimize", max_trial_count=1, parallel_trial_count=1,
        store=tmp_path / "s.db",
    )
    (loss,) = [m for m in experiment["status"]["currentOptimalTrial"]["observation"]["metrics"] if m["name"] == "loss"]
    x = float(assignments(experiment["status"]["currentOptimalTrial"])["x"])
    assert float(loss["min"]) == pytest.approx(x) and float(loss["max"]) == pytest.approx(3 * x)
    assert float(loss["latest"]) == pytest.approx(x)


@pytest.mark.parametrize("objective, text", [
    (bad_metric_objective, "ValueError: metric 'result': value must be a number or a string, got bool"),
    (crashing_objective, "RuntimeError: objective crashed on purpose"),
])
def test_failing_objective_fails_trial_and_experiment(tmp_path: Path, objective: Any, text: str) -> None:
    store = tmp_path / "s.db"
    with pytest.raises(katibx.TuneError) as failed:  # no trial produced the objective metric
        katibx.tune(**tune_args(store, name="fails", objective=objective, parallel_trial_count=1))
    assert text in str(failed.value)  # quoted from the trial's output
    experiment = failed.value.result
    assert experiment["status"]["trialsFailed"] == 1 and experiment["status"]["trials"] == 1
    client = katibx.KatibxClient(store)
    assert client.is_experiment_failed("fails") and client.get_optimal_hyperparameters("fails") is None
    (trial,) = experiment["status"]["failedTrialList"]
    assert text in client.get_trial_logs("fails", trial)


def test_yaml_experiment_from_python_load_run_resume(tmp_path: Path, write_experiment, store: katibx.Store) -> None:
    path = write_experiment(experiment_doc())
    experiment = katibx.load_experiment(path)
    assert isinstance(experiment, katibx.Experiment) and experiment.spec.parallel_trial_count == 2
    record = katibx.run_experiment(experiment, store=store, workdir=path.parent)
    client = katibx.KatibxClient(store)
    assert record.name == "exp" and client.is_experiment_succeeded("exp")
    assert assignments(client.get_optimal_hyperparameters("exp"))["a"] == "20"

    katibx.resume_experiment("exp", store=store, max_trial_count=5)
    assert len(client.list_trials("exp")) == 5 and client.is_experiment_succeeded("exp")
    client.delete_experiment("exp")
    assert client.list_experiments() == []

    bad = write_experiment(experiment_doc(maxTrailCount=1), name="bad.yaml")
    with pytest.raises(katibx.ValidationError) as info:
        katibx.load_experiment(bad)
    assert info.value.errors == ["spec.maxTrailCount: unknown field (did you mean 'maxTrialCount'?)"]


def two_arguments(a: dict[str, Any], b: int) -> None:
    pass


@pytest.mark.parametrize("overrides, message", [
    ({"objective": "not a function"}, "objective: must be a callable taking one dict argument, got str"),
    ({"objective": two_arguments}, "objective: must accept exactly one positional argument"),
    ({"objective_type": "max"}, "spec.objective.type (objective_type): must be minimize or maximize (got 'max')"),
    ({"objective_metric_name": None}, "spec.objective.objectiveMetricName (objective_metric_name): Required value"),
    ({"algorithm_settings": {"seed": 1}},
     "spec.algorithm.algorithmSettings[seed] (algorithm_settings): unknown setting for algorithm 'random'"),
    ({"algorithm_settings": {"random_state": "x"}},
     "spec.algorithm.algorithmSettings[random_state] (algorithm_settings): must be an integer (got 'x')"),
    ({"algorithm_name": "nope"}, "spec.algorithm.algorithmName (algorithm_name): unknown algorithm 'nope'"),
    ({"max_trial_count": "4"}, "spec.maxTrialCount (max_trial_count): must be an integer (got '4')"),
    ({"parallel_trial_count": 5}, "spec.parallelTrialCount (parallel_trial_count): should be less than or equal"),
    ({"name": "Bad_Name"}, "metadata.name (name): 'Bad_Name' must consist of lower case"),
    ({"parameters": {"a": katibx.search.int(20, 10)}},
     "spec.parameters[0].feasibleSpace (parameters): min (20)"),
    ({"parameters": {"a": katibx.search.int(1, 5), "f": object()}}, "parameters: values that are not katibx.search"),
    ({"parameters": [("a", 1)]}, "parameters: must be a dict, got list"),
])
def test_bad_tune_input_raises_validation_error_before_anything_is_stored(
        tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    store = tmp_path / "s.db"
    with pytest.raises(katibx.ValidationError) as info:
        katibx.tune(**tune_args(store, **overrides))
    assert any(line.startswith(message) for line in info.value.errors), info.value.errors
    assert not store.exists()


def test_search_helpers_refuse_unusable_categorical_values() -> None:
    with pytest.raises(katibx.ValidationError, match=r"categorical\[1\]: must be a string, number or bool, got dict"):
        katibx.search.categorical(["a", {"b": 1}])
    with pytest.raises(katibx.ValidationError, match="values must be a list"):
        katibx.search.categorical("abc")
    domain = katibx.search.categorical([True, 2, "x"])
    assert domain.values == (True, 2, "x") and domain.feasible_space.list == [format_value(v) for v in (True, 2, "x")]


def test_report_metrics_outside_a_trial_and_bad_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRIAL_NAME_ENV, raising=False)
    monkeypatch.delenv(METRICS_FILE_ENV, raising=False)
    with pytest.raises(RuntimeError, match="must be called inside a katibx trial"):
        katibx.report_metrics({"loss": 0.1})

    metrics_file = tmp_path / "metrics.jsonl"
    monkeypatch.setenv(TRIAL_NAME_ENV, "t-1")
    monkeypatch.setenv(METRICS_FILE_ENV, str(metrics_file))
    for value in (True, None, [1.0]):
        with pytest.raises(ValueError, match="value must be a number or a string"):
            katibx.report_metrics({"loss": value})
    assert not metrics_file.exists()
    katibx.report_metrics({"loss": 1})
    (line,) = metrics_file.read_text().splitlines()
    assert json.loads(line)["loss"] == 1
    assert os.environ[TRIAL_NAME_ENV] == "t-1"


def test_an_objective_may_return_a_number_or_one_per_objective(tmp_path: Path) -> None:
    """As in Optuna: a number is the objective metric's value; several objectives take a tuple, in their order."""
    store = tmp_path / "store.db"
    single = katibx.tune(name="floaty", objective=lambda p: (p["x"] - 1) ** 2,
                         parameters={"x": katibx.search.double(-2, 2)}, objective_metric_name="loss",
                         objective_type="minimize", max_trial_count=3, parallel_trial_count=1, store=store)
    assert single["status"]["trialsSucceeded"] == 3
    client = katibx.KatibxClient(store)
    for trial in client.list_trials("floaty"):
        x = float(assignments(trial)["x"])
        assert float(trial["status"]["observation"]["metrics"][0]["latest"]) == pytest.approx((x - 1) ** 2)
    pair = katibx.tune(name="pair", objective=lambda p: (p["x"], 1 - p["x"]),
                       parameters={"x": katibx.search.double(0, 1)}, objective_metric_name="a",
                       objective_type="minimize", additional_objectives={"b": "minimize"}, max_trial_count=2,
                       parallel_trial_count=1, store=store)
    assert pair["status"]["trialsSucceeded"] == 2
    with pytest.raises(katibx.TuneError, match=r"returned 3 values for 2 objectives \(a, b\)"):
        katibx.tune(name="wrong", objective=lambda p: (p["x"], 1, 2), parameters={"x": katibx.search.double(0, 1)},
                    objective_metric_name="a", objective_type="minimize", additional_objectives={"b": "minimize"},
                    max_trial_count=1, parallel_trial_count=1, max_failed_trial_count=1, store=store)


def test_tune_returns_optuna_style_results(tmp_path: Path) -> None:
    result = katibx.tune(name="results", objective=lambda p: {"loss": (p["x"] - 2) ** 2 + (p["opt"] == "b"),
                                                              "acc": 1.0},
                         parameters={"x": katibx.search.int(0, 3), "opt": katibx.search.categorical(["a", "b"])},
                         objective_metric_name="loss", additional_metric_names=["acc"], objective_type="minimize",
                         algorithm_name="grid", max_trial_count=8, parallel_trial_count=2, store=tmp_path / "s.db")
    assert isinstance(result, dict) and result["status"]["trialsSucceeded"] == 8  # still the Katib-shaped object
    assert result.best_params == {"x": 2, "opt": "a"} and isinstance(result.best_params["x"], int)
    assert result.best_value == 0.0 and result.best_trial is not None
    assert result.best_trial.name == result["status"]["currentOptimalTrial"]["bestTrialName"]
    assert len(result.trials) == 8 and {t.state for t in result.trials} == {katibx.TrialState.SUCCEEDED}
    assert result.trials[0].metrics["acc"] == 1.0
    frame = result.trials_dataframe()
    assert len(frame) == 8 and {"number", "name", "state", "value", "params_x", "params_opt", "metrics_acc"} <= set(
        frame.columns)
    assert frame.loc[frame["value"].idxmin(), "params_x"] == 2
    assert type(result.to_dict()) is dict and result.to_dict()["kind"] == "Experiment"


def test_best_trials_is_the_pareto_front(tmp_path: Path) -> None:
    result = katibx.tune(name="front", objective=lambda p: (p["x"], (1 - p["x"]) ** 2 + (p["x"] == 3)),
                         parameters={"x": katibx.search.int(0, 3)}, objective_metric_name="a",
                         objective_type="minimize", additional_objectives={"b": "minimize"}, algorithm_name="grid",
                         max_trial_count=4, parallel_trial_count=1, store=tmp_path / "s.db")
    front = sorted(t.params["x"] for t in result.best_trials)
    assert front == [0, 1]  # x=2: (2, 1) is dominated by x=1: (1, 0); x=3: (3, 5) by both


def test_tune_raises_with_the_first_failing_trials_output_when_no_trial_has_a_result(tmp_path: Path) -> None:
    def broken(params: dict[str, Any]) -> float:
        print("loading data ...")
        raise ValueError(f"bad learning rate {params['lr']}")

    with pytest.raises(katibx.TuneError) as failed:
        katibx.tune(name="broken", objective=broken, parameters={"lr": katibx.search.double(0.1, 0.2)},
                    objective_metric_name="loss", max_trial_count=2, parallel_trial_count=1, store=tmp_path / "s.db")
    message = str(failed.value)
    assert "no trial of experiment broken produced loss" in message and "2 Failed" in message
    assert "loading data ..." in message and "ValueError: bad learning rate" in message  # the trial's last lines
    assert failed.value.result["status"]["trialsFailed"] == 2  # the result is kept on the error


def test_returned_values_and_the_error_travel_as_users_expect() -> None:
    """NumPy scalars and 0-d arrays count as numbers (as report_metrics takes them); a TuneError survives pickling
    (tune() in a process pool) with its result."""
    import pickle

    import numpy

    from katibx.report import returned_metrics

    assert returned_metrics(numpy.float32(0.5), ["loss"]) == {"loss": 0.5}
    assert returned_metrics((numpy.array(1.5), numpy.int64(2)), ["a", "b"]) == {"a": 1.5, "b": 2}
    with pytest.raises(TypeError, match="returned str"):
        returned_metrics("0.5", ["loss"])
    with pytest.raises(TypeError, match="returned bool"):
        returned_metrics(True, ["loss"])
    error = pickle.loads(pickle.dumps(katibx.TuneError("no trial produced loss", {"status": {}})))  # type: ignore[arg-type]
    assert str(error) == "no trial produced loss" and error.result == {"status": {}}


def test_each_callback_sees_every_finished_trial_with_its_whole_history(tmp_path: Path) -> None:
    """The results given to callbacks are made once per finished trial and kept: each call still shows every trial
    so far with the values it reported, as the final result does."""
    rounds: list[dict[str, list[Any]]] = []

    def record(result: katibx.TuneResult, trial: katibx.TrialResult) -> None:
        rounds.append({t.name: t.history.get("loss", []) for t in result.trials if t.state.is_terminal})

    final = katibx.tune(name="histories", objective=reporting_objective, parameters={"x": katibx.search.double(1, 2)},
                        objective_metric_name="loss", objective_type="minimize", max_trial_count=4,
                        parallel_trial_count=2, store=tmp_path / "s.db", callbacks=[record])
    histories = {t.name: t.history["loss"] for t in final.trials}
    assert len(rounds) == 4 and all(len(h) == 3 for h in histories.values())
    for seen in rounds:
        assert seen == {name: histories[name] for name in seen}
    assert rounds[-1] == histories


def test_callbacks_timeout_and_load_if_exists(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    seen: list[tuple[str, int, float | None]] = []

    def record(result: katibx.TuneResult, trial: katibx.TrialResult) -> None:
        seen.append((trial.name, len([t for t in result.trials if t.state.is_terminal]), trial.value))

    args = dict(objective=lambda p: p["x"] ** 2, parameters={"x": katibx.search.double(-1, 1)},
                objective_metric_name="loss", objective_type="minimize", parallel_trial_count=1, store=store)
    first = katibx.tune(name="cb", max_trial_count=3, callbacks=[record], **args)
    assert [count for _, count, _ in seen] == [1, 2, 3]  # once per trial, as it finished, with the results so far
    assert sorted(name for name, _, _ in seen) == sorted(t.name for t in first.trials)
    assert all(value is not None for _, _, value in seen)

    more = katibx.tune(name="cb", max_trial_count=2, load_if_exists=True,
                       callbacks=(c for c in [record]), **args)  # 2 more, as Optuna's; any iterable of callbacks
    assert len(more.trials) == 5 and more["status"]["trialsSucceeded"] == 5
    assert len(seen) == 5 and {name for name, _, _ in seen[3:]} == {t.name for t in more.trials[3:]}  # new ones only
    with pytest.raises(katibx.ValidationError, match="load_if_exists: experiment 'cb' exists with other parameters"):
        katibx.tune(name="cb", max_trial_count=1, load_if_exists=True,
                    **{**args, "parameters": {"x": katibx.search.double(-2, 2)}})
    with pytest.raises(katibx.StoreError, match="already exists"):
        katibx.tune(name="cb", max_trial_count=1, **args)

    def slow(p: dict[str, Any]) -> float:
        # the first trial returns, the next one waits until the time limit ends the experiment (and kills it)
        if not Path(p["flag"]).exists():
            Path(p["flag"]).touch()
            return 1.0
        signal.pause()
        return 0.0

    flag = tmp_path / "started"
    timed = katibx.tune(name="timed", objective=slow, parameters={"x": katibx.search.double(0, 1), "flag": str(flag)},
                        objective_metric_name="loss", max_trial_count=50, parallel_trial_count=1, store=store,
                        timeout=1.0, kill_running_on_completion=True, max_failed_trial_count=50)
    reasons = [c["reason"] for c in timed["status"]["conditions"] if c["type"] == "Succeeded"]
    assert reasons == ["ExperimentTimeLimitReached"]
    states = [t.state for t in timed.trials]  # (a machine too slow to start the second trial in time stops at one)
    assert states in ([katibx.TrialState.SUCCEEDED, katibx.TrialState.KILLED], [katibx.TrialState.SUCCEEDED])
