"""The experiment's status kept as trials move: the optimal trial kept by the controller (in any order of results,
the same as Katib's rule over every trial), the counters counted by the store, and the reading verbs answering from
them without loading the trials, with --limit/--offset to page through a large experiment."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import katibx
from katibx.cli import main
from katibx.spec import Experiment
from katibx.status import OptimalTrial, optimal_trial
from katibx.store import Store
from katibx.trial import MetricSummary, TrialRecord, TrialState
from tests.conftest import experiment_doc


def _experiment(objective_type: str) -> Experiment:
    doc = experiment_doc()
    doc["spec"]["objective"]["type"] = objective_type
    return Experiment.model_validate(doc)


def _trial(index: int, state: TrialState, value: str | None) -> TrialRecord:
    observation = {} if value is None else {"result": MetricSummary("result", value, value, value)}
    return TrialRecord(name=f"t{index}", index=index, assignments={}, state=state, observation=observation)


@pytest.mark.parametrize("objective_type", ["minimize", "maximize"])
def test_the_kept_optimal_trial_is_the_one_katibs_rule_picks_whatever_the_order_of_results(objective_type: str) -> None:
    rng = random.Random(3)
    experiment = _experiment(objective_type)
    values = ["1", "2", "2", "0.5", "nan", "inf", "-inf", "genotype-a", "genotype-b", None]
    states = [TrialState.SUCCEEDED, TrialState.EARLY_STOPPED, TrialState.FAILED, TrialState.METRICS_UNAVAILABLE]
    for _ in range(300):
        trials = [_trial(i, rng.choice(states), rng.choice(values)) for i in range(rng.randint(0, 12))]
        expected = optimal_trial(experiment, trials)  # the rule over the trials in creation order
        kept = OptimalTrial(experiment)
        for trial in rng.sample(trials, len(trials)):  # results come in any order
            kept.offer(trial)
        assert kept.trial is expected, [(t.index, t.state.value, t.observation) for t in trials]


def test_ties_go_to_the_earlier_trial_and_a_genotype_wins_outright() -> None:
    kept = OptimalTrial(_experiment("minimize"))
    assert kept.offer(_trial(5, TrialState.SUCCEEDED, "1.0"))
    assert not kept.offer(_trial(6, TrialState.SUCCEEDED, "1.0")) and kept.offer(_trial(2, TrialState.SUCCEEDED, "1"))
    assert not kept.offer(_trial(7, TrialState.FAILED, "0.1"))  # no result: never optimal
    assert kept.offer(_trial(8, TrialState.SUCCEEDED, "conv3x3"))
    assert not kept.offer(_trial(9, TrialState.SUCCEEDED, "-1e9")) and kept.trial.index == 8


def _result_is_x(parameters: dict[str, float]) -> dict[str, float]:
    return {"result": parameters["x"]}


@pytest.fixture
def finished_store(tmp_path: Path) -> Path:
    """A store with one finished experiment of 12 trials (random search of result = x)."""
    store = tmp_path / "katibx.db"
    katibx.tune("kept", _result_is_x, {"x": katibx.search.double(0, 1)}, objective_metric_name="result",
                objective_type="minimize", algorithm_settings={"random_state": 1}, max_trial_count=12,
                parallel_trial_count=3, store=str(store), progress=False)
    return store


def _cli(store: Path, *args: str) -> str:
    result = CliRunner().invoke(main, [*args, "--store", str(store)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_the_reading_verbs_answer_from_the_kept_status_without_loading_trials(finished_store: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(finished_store) as st:
        record = st.get_experiment("kept")
        trials = st.trials(record.id)
    best = optimal_trial(record.experiment, trials)
    assert record.optimal_trial_id == best.id  # kept by the controller as the trials finished

    def no_full_read(*_args: Any, limit: int | None = None, **_kwargs: Any) -> list[TrialRecord]:
        raise AssertionError("every trial was read")

    monkeypatch.setattr(Store, "trials", no_full_read)
    listed = json.loads(_cli(finished_store, "get", "experiments", "-o", "json"))["items"][0]["status"]
    assert listed["currentOptimalTrial"]["bestTrialName"] == best.name
    assert listed["trials"] == listed["trialsSucceeded"] == 12 and len(listed["succeededTrialList"]) == 12
    assert listed["succeededTrialList"] == [t.name for t in trials]
    assert json.loads(_cli(finished_store, "get", "experiment", "kept", "-o", "json"))["status"] == listed
    assert best.name in _cli(finished_store, "get", "experiments", "-o", "wide")
    assert f"Best trial:     {best.name}:" in _cli(finished_store, "describe", "experiment", "kept")
    assert f"name: {trials[4].name}" in _cli(finished_store, "get", "trial", trials[4].name)


def test_get_trials_pages_with_limit_and_offset(finished_store: Path) -> None:
    with Store(finished_store) as st:
        names = [t.name for t in st.trials(st.get_experiment("kept").id)]

    def page(*args: str) -> list[str]:
        return [n.split("/", 1)[1] for n in _cli(finished_store, "get", "trials", "kept", "-o", "name", *args).split()]

    assert page("--limit", "5") == names[:5]
    assert page("--limit", "5", "--offset", "5") == names[5:10]
    assert page("--offset", "10") == names[10:] and page("--offset", "20") == [] and page("--limit", "0") == []
    items = json.loads(_cli(finished_store, "get", "trials", "kept", "-o", "json", "--sort-by", "result",
                            "--limit", "3"))["items"]
    values = [float(i["status"]["observation"]["metrics"][0]["latest"]) for i in items]
    everything = json.loads(_cli(finished_store, "get", "trials", "kept", "-o", "json", "--sort-by", "result"))["items"]
    assert len(items) == 3 and items == everything[:3] and values == sorted(values)  # the page after the sort
    refused = CliRunner().invoke(main, ["get", "trials", "kept", "-w", "--limit", "2", "--store", str(finished_store)])
    assert refused.exit_code == 2 and "-w follows every trial" in refused.output


def test_an_experiment_continued_keeps_its_optimal_trial(finished_store: Path) -> None:
    """tune(load_if_exists=True) with more trials (a resume): the kept optimal trial is the rule's over all of them."""
    katibx.tune("kept", _result_is_x, {"x": katibx.search.double(0, 1)}, objective_metric_name="result",
                objective_type="minimize", algorithm_settings={"random_state": 1}, max_trial_count=4,
                parallel_trial_count=2, store=str(finished_store), progress=False, load_if_exists=True)
    with Store(finished_store) as st:
        record = st.get_experiment("kept")
        trials = st.trials(record.id)
        assert len(trials) == 16 and record.optimal_trial_id == optimal_trial(record.experiment, trials).id
