"""``algorithmName: auto`` (and ``katibx.tune``'s default): the choice for representative experiments, recorded in
the experiment's status and kept by a resume whatever its new budget; ``random_state`` handed to the one chosen.

Real runs through ``katibx.tune`` on a real SQLite store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import katibx
from katibx.algorithms.auto import choose
from katibx.plugins import algorithm_names
from katibx.search_space import SearchSpace
from katibx.store import Store
from katibx.trial import TrialState
from katibx.tuning import function_experiment

NUMERIC = {"x": katibx.search.double(-1, 1), "n": katibx.search.int(1, 5)}
MIXED = {**NUMERIC, "kind": katibx.search.categorical(["a", "b"])}


def loss(p: dict[str, Any]) -> float:
    return p["x"] ** 2 + p["n"] + (0.5 if p.get("kind") == "b" else 0.0)


def _chosen(parameters: dict[str, Any], **options: Any) -> str:
    experiment = function_experiment("choice", loss, parameters, objective_metric_name="loss", **options)
    return choose(experiment, SearchSpace.from_experiment(experiment), algorithm_names())[0]


@pytest.mark.parametrize(("parameters", "options", "expected"), [
    (NUMERIC, {"max_trial_count": 40}, "multivariate-tpe"),  # half of them integers
    ({**NUMERIC, "y": katibx.search.double(0, 1)}, {"max_trial_count": 40}, "bayesianoptimization"),
    (MIXED, {"max_trial_count": 40}, "bayesianoptimization"),
    (NUMERIC, {"max_trial_count": 1000}, "cmaes"),
    (NUMERIC, {}, "cmaes"),  # no maxTrialCount: a budget no Gaussian process affords
    (MIXED, {"max_trial_count": 1000}, "multivariate-tpe"),
    ({f"x{i}": katibx.search.double(0, 1) for i in range(20)}, {"max_trial_count": 40}, "multivariate-tpe"),
    (NUMERIC, {"max_trial_count": 40, "additional_objectives": {"size": "minimize"}}, "multivariate-tpe"),
    (NUMERIC, {"max_trial_count": 40, "early_stopping_algorithm_name": "medianstop"}, "multivariate-tpe"),
    ({"x": katibx.search.double(0, 1)}, {"max_trial_count": 1000}, "multivariate-tpe"),  # CMA-ES needs 2 dimensions
    ({"x": katibx.search.double(0, 1), "c": katibx.search.int(3, 3)}, {}, "multivariate-tpe"),  # c is fixed
    ({"x": katibx.search.double(0, 1), "c": katibx.search.int(0, 4, step=10)}, {}, "multivariate-tpe"),  # one value
    ({"c": katibx.search.int(3, 3), "k": katibx.search.categorical(["a"])}, {"max_trial_count": 40}, "random"),
    ({"x": katibx.search.double(0.2, 0.3, step=0.1), "y": katibx.search.double(0, 1)}, {"max_trial_count": 40},
     "bayesianoptimization"),  # 0.3 - 0.2 < 0.1 in floats: still two values
    ({"x": katibx.search.double(0.1, 1, distribution="normal"), "y": katibx.search.double(0, 1)},
     {"max_trial_count": 40}, "random"),  # the only one that draws from a normal distribution
    ({"x": katibx.search.double(0, 1), "y": katibx.search.double(0, 1),
      "z": katibx.search.double(1, 1, distribution="normal")}, {"max_trial_count": 40}, "random"),  # fixed, still
])
def test_the_choice_for_representative_experiments(parameters: dict[str, Any], options: dict[str, Any],
                                                   expected: str) -> None:
    assert _chosen(parameters, **options) == expected


def test_the_reason_when_no_parameter_has_a_choice_says_so() -> None:
    fixed = {"x": katibx.search.double(2, 2), "n": katibx.search.int(1, 3, step=5)}
    experiment = function_experiment("fixed", loss, fixed, objective_metric_name="loss", max_trial_count=3)
    assert choose(experiment, SearchSpace.from_experiment(experiment), algorithm_names()) == (
        "random", "no parameter with more than one value, 3 trials: there is nothing for a model to learn")


def test_tune_uses_auto_by_default_and_the_status_says_what_it_chose_and_why(tmp_path: Path) -> None:
    result = katibx.tune("default", loss, MIXED, objective_metric_name="loss", objective_type="minimize",
                         max_trial_count=4, store=tmp_path / "katibx.db", progress=False)
    chosen = result["status"]["chosenAlgorithm"]
    assert chosen["algorithmName"] == "bayesianoptimization"
    assert chosen["reason"].startswith("3 parameters (1 categorical, 1 integer), 4 trials")
    assert result["spec"]["algorithm"]["algorithmName"] == "auto"  # the spec says what the user asked for
    assert all(t.state is TrialState.SUCCEEDED for t in result.trials)
    client = katibx.KatibClient(store=str(tmp_path / "katibx.db"))
    assert client.get_experiment("default").status.chosen_algorithm["algorithmName"] == "bayesianoptimization"


class _Stop(Exception):
    pass


def _stop_after_three(result: Any, _trial: Any) -> None:
    if len(result.trials) >= 3:
        raise _Stop


def test_a_resumed_auto_experiment_goes_on_with_the_algorithm_it_chose_whatever_its_new_budget(
        tmp_path: Path) -> None:
    options = {"objective_metric_name": "loss", "objective_type": "minimize", "store": tmp_path / "katibx.db",
               "progress": False, "isolation": "none", "parallel_trial_count": 1}
    with pytest.raises(_Stop):  # a budget of 300 chooses CMA-ES; the run stops after 3 trials
        katibx.tune("resumed", loss, NUMERIC, max_trial_count=300, callbacks=[_stop_after_three], **options)
    with Store(tmp_path / "katibx.db") as store:
        stored = store.get_experiment("resumed")
        assert stored.spec["metadata"]["annotations"]["katibx.io/chosen-algorithm"] == "cmaes"
        before = store.trial_counts(stored.id).trials
    # 2 more trials: a budget that alone would choose a Gaussian process
    result = katibx.tune("resumed", loss, NUMERIC, max_trial_count=2, load_if_exists=True, **options)
    assert result["status"]["chosenAlgorithm"]["algorithmName"] == "cmaes"
    assert len(result.trials) == before + 2 and all(t.state is TrialState.SUCCEEDED for t in result.trials)


def test_random_state_is_handed_to_the_algorithm_chosen(tmp_path: Path) -> None:
    runs = [katibx.tune(f"seeded-{i}", loss, NUMERIC, objective_metric_name="loss", max_trial_count=12,
                        algorithm_settings={"random_state": 5}, store=tmp_path / "katibx.db", progress=False,
                        isolation="none", parallel_trial_count=1) for i in range(2)]
    assert [t.params for t in runs[0].trials] == [t.params for t in runs[1].trials]
    other = katibx.tune("seeded-other", loss, NUMERIC, objective_metric_name="loss", max_trial_count=12,
                        algorithm_settings={"random_state": 6}, store=tmp_path / "katibx.db", progress=False,
                        isolation="none", parallel_trial_count=1)
    assert [t.params for t in other.trials] != [t.params for t in runs[0].trials]


def test_a_new_experiment_chooses_afresh_whatever_choice_it_carries(tmp_path: Path) -> None:
    """An experiment exported from another (``get experiment -o yaml``) carries that one's choice: run as a new one,
    it chooses for its own space and budget."""
    from katibx.runner import run_experiment

    experiment = function_experiment("exported", loss, {**NUMERIC, "y": katibx.search.double(0, 1)},
                                     objective_metric_name="loss", max_trial_count=3, parallel_trial_count=1,
                                     algorithm_name="auto")
    experiment.metadata.annotations["katibx.io/chosen-algorithm"] = "cmaes"
    with Store(tmp_path / "katibx.db") as store:
        run_experiment(experiment, store=store, function=loss)
        annotations = store.get_experiment("exported").spec["metadata"]["annotations"]
    assert annotations["katibx.io/chosen-algorithm"] == "bayesianoptimization"


def test_tune_without_an_algorithm_goes_on_with_the_stored_one(tmp_path: Path) -> None:
    """A store written when tune's default was random (or any experiment stored with another algorithm) goes on with
    it: the call names none, so nothing differs."""
    options = {"objective_metric_name": "loss", "store": tmp_path / "katibx.db", "progress": False,
               "isolation": "none", "parallel_trial_count": 1}
    katibx.tune("older", loss, NUMERIC, algorithm_name="random", max_trial_count=2, **options)
    result = katibx.tune("older", loss, NUMERIC, max_trial_count=2, load_if_exists=True, **options)
    assert result["spec"]["algorithm"]["algorithmName"] == "random" and len(result.trials) == 4


def test_an_exported_experiment_run_as_new_with_the_cli_or_the_client_chooses_afresh(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``katibx run`` and ``KatibClient.create_experiment`` start new experiments: a choice an exported one carries is
    not theirs."""
    import shutil

    import yaml
    from conftest import katibx_cli, wait_until

    examples = Path(__file__).resolve().parent.parent / "examples" / "hp-tuning"
    shutil.copy(examples / "branin.py", tmp_path)
    doc = yaml.safe_load((examples / "auto.yaml").read_text())
    doc["spec"]["maxTrialCount"] = 3
    doc["metadata"]["annotations"] = {"katibx.io/chosen-algorithm": "cmaes", "katibx.io/chosen-algorithm-reason": "x"}
    (tmp_path / "exported.yaml").write_text(yaml.safe_dump(doc))
    store = tmp_path / "katibx.db"
    ran = katibx_cli("run", "exported.yaml", "-q", cwd=tmp_path, store=store)
    assert ran.returncode == 0, ran.stderr
    with Store(store) as st:
        assert st.get_experiment("auto").spec["metadata"]["annotations"]["katibx.io/chosen-algorithm"] == \
            "bayesianoptimization"
    monkeypatch.chdir(tmp_path)  # the client's trials run here, beside branin.py
    client = katibx.KatibClient(store=str(store))
    doc["metadata"]["name"] = "from-client"
    client.create_experiment(doc)
    with Store(store) as st:
        annotations = wait_until(lambda: st.get_experiment("from-client").spec["metadata"]["annotations"],
                                 what="the client's experiment stored")
    assert annotations["katibx.io/chosen-algorithm"] == "bayesianoptimization"
    client.wait_for_experiment_condition("from-client")


def test_settings_given_to_a_resumed_tune_are_compared_not_replaced(tmp_path: Path) -> None:
    options = {"objective_metric_name": "loss", "store": tmp_path / "katibx.db", "progress": False,
               "isolation": "none", "parallel_trial_count": 1, "max_trial_count": 2}
    katibx.tune("seeded", loss, NUMERIC, algorithm_settings={"random_state": 1}, **options)
    with pytest.raises(katibx.ValidationError, match="exists with other algorithm"):
        katibx.tune("seeded", loss, NUMERIC, algorithm_settings={"random_state": 2}, load_if_exists=True, **options)
