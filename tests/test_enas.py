"""ENAS's search algorithm (issue 18, part 1): Katib's settings and nasConfig, the controller's REINFORCE update, valid
and reproducible architectures, and a resumed experiment suggesting what an uninterrupted one does."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml
from matplotlib import image

from katibx.loader import experiment_from_dict
from katibx.nas.enas_controller import Controller, ControllerSettings, Trainer
from katibx.nas.enas_picture import operation_label, plot_architecture
from katibx.nas.enas_space import ARCHITECTURE, NN_CONFIG, read_assignment
from katibx.preparation import create_algorithm
from katibx.search_algorithm import AlgorithmSettingsError
from katibx.store import Store
from katibx.trial import MetricSummary, TrialRecord, TrialState

KATIB_ENAS = Path(__file__).resolve().parent / "data" / "katib-examples" / "nas" / "enas-cpu.yaml"  # Katib's, unchanged


def _doc(layers: int = 2, settings: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    doc = yaml.safe_load(KATIB_ENAS.read_text())
    doc["spec"]["nasConfig"]["graphConfig"]["numLayers"] = layers
    doc["spec"]["algorithm"]["algorithmSettings"] = [{"name": k, "value": v} for k, v in (settings or {}).items()]
    doc["spec"].update(spec)
    return doc


def _algorithm(doc: dict[str, Any]) -> Any:
    return create_algorithm(experiment_from_dict(doc))


def test_katibs_enas_cpu_space_numbers_every_combination_of_each_operations_values() -> None:
    enas = _algorithm(_doc(layers=1, settings={"random_state": "1"}))
    space = enas.nas_space
    # convolution 3 x 5 x 2, separable 3 x 5 x 2 x 2, depthwise 3 x 2 x 2, reduction 2 x 2 (pool_size 2..3)
    assert len(space.operations) == 30 + 60 + 12 + 4
    assert space.operations[0] == {"opt_id": 0, "opt_type": "convolution",
                                   "opt_params": {"filter_size": "3", "num_filter": "32", "stride": "1"}}
    assert space.operations[-1]["opt_params"] == {"reduction_type": "avg_pooling", "pool_size": "3"}
    suggestion = enas.suggest([], 1)[0].assignments
    config = read_assignment(suggestion[NN_CONFIG])  # Katib's form: single quotes, shell-safe
    assert "'" in suggestion[NN_CONFIG] and '"' not in suggestion[NN_CONFIG]
    (row,) = read_assignment(suggestion[ARCHITECTURE])
    assert config["num_layers"] == 1 and config["input_sizes"] == [32, 32, 3]
    assert config["embedding"] == {str(row[0]): space.operations[row[0]]}  # Katib's: the ops the architecture uses


@pytest.mark.parametrize(("settings", "message"), [
    ({"controller_hidden_size": "0"}, "algorithmSettings[controller_hidden_size]: must be >= 1"),
    ({"controller_temperature": "-1"}, "algorithmSettings[controller_temperature]: must be > 0 or None"),
    ({"controller_baseline_decay": "1.5"}, "algorithmSettings[controller_baseline_decay]: must be in (0, 1]"),
    ({"controller_learning_rate": "fast"}, "algorithmSettings[controller_learning_rate]:"),
    ({"controller_train_steps": "0"}, "algorithmSettings[controller_train_steps]: must be >= 1"),
    ({"controller_skip-target": "0.4"}, "algorithmSettings[controller_skip-target]: unknown setting"),
])
def test_settings_are_checked_naming_the_setting(settings: dict[str, str], message: str) -> None:
    with pytest.raises(AlgorithmSettingsError) as raised:
        _algorithm(_doc(settings=settings))
    assert any(message in line for line in raised.value.errors), raised.value.errors


def test_none_turns_a_term_off_and_nas_config_mistakes_are_named() -> None:
    enas = _algorithm(_doc(settings={"controller_temperature": "None", "controller_skip_weight": "None"}))
    assert enas.controller_settings.temperature is None and enas.controller_settings.skip_weight is None
    doc = _doc()
    doc["spec"]["nasConfig"]["graphConfig"]["numLayers"] = 0
    doc["spec"]["nasConfig"]["operations"][0]["operationType"] = "dilated_convolution"
    doc["spec"]["nasConfig"]["operations"][3]["parameters"][1] = {
        "name": "pool_size", "parameterType": "double", "feasibleSpace": {"min": "2", "max": "3"}}
    with pytest.raises(AlgorithmSettingsError) as raised:
        _algorithm(doc)
    errors = "\n".join(raised.value.errors)
    assert "spec.nasConfig.graphConfig.numLayers: must be at least 1" in errors
    assert "spec.nasConfig.operations[0].operationType: 'dilated_convolution' is not an enas operation" in errors
    assert "spec.nasConfig.operations[3].parameters[1].feasibleSpace: needs min <= max and a step > 0 (a double " \
           "needs a step)" in errors


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_architectures_are_valid_for_the_graph_and_reproducible_with_a_seed(layers: int) -> None:
    first = _algorithm(_doc(layers=layers, settings={"random_state": "3"})).suggest([], 4)
    again = _algorithm(_doc(layers=layers, settings={"random_state": "3"})).suggest([], 4)
    other = _algorithm(_doc(layers=layers, settings={"random_state": "4"})).suggest([], 4)
    assert [s.assignments for s in first] == [s.assignments for s in again] != [s.assignments for s in other]
    space = _algorithm(_doc(layers=layers)).nas_space
    for suggestion in first:
        architecture = read_assignment(suggestion.assignments[ARCHITECTURE])
        space.check_architecture(architecture)
        assert [len(row) for row in architecture] == list(range(1, layers + 1))


def test_reinforce_moves_probability_toward_the_rewarded_architecture() -> None:
    settings = ControllerSettings(hidden_size=16, temperature=None, learning_rate=0.05, train_steps=30)
    torch.manual_seed(0)
    controller = Controller(num_layers=2, num_operations=4, settings=settings)
    rewarded = [[3], [3, 1]]

    def probability() -> float:
        with torch.no_grad():
            _, log_prob, _, _ = controller(rewarded)
        return float(log_prob.exp())

    before = probability()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sampled = [controller(generator=generator)[0] for _ in range(24)]
    history = [(architecture, 1.0 if architecture == rewarded else 0.0) for architecture in sampled + [rewarded] * 3]
    Trainer(controller).train_round(history)
    assert probability() > 2 * before, (before, probability())


def test_training_accumulates_over_rounds_as_katibs_controller_does() -> None:
    settings = ControllerSettings(hidden_size=16, learning_rate=0.01, train_steps=10)
    trainer = Trainer(Controller(2, 4, settings).initialise(torch.Generator().manual_seed(0)))
    rewarded, other = [[3], [3, 1]], [[0], [0, 0]]

    def probability() -> float:
        with torch.no_grad():
            return float(trainer.controller(rewarded)[1].exp())

    seen = [probability()]
    for _ in range(4):  # a round per block of finished trials; the optimiser and baseline carry over
        trainer.train_round([(rewarded, 0.9), (other, 0.1)])
        seen.append(probability())
    assert trainer.rounds == 4 and seen == sorted(seen) and seen[-1] > 1.5 * seen[0], seen


def _run(enas_of: Callable[[], Any], trials: int, reward: Callable[[list[list[int]]], float],
         restart_at: int | None = None) -> list[str]:
    """Suggest and finish trials one at a time (a new algorithm object at ``restart_at``, as a resume makes)."""
    enas, history = enas_of(), []
    for index in range(trials):
        if index == restart_at:
            enas = enas_of()
        assignments = enas.suggest(history, 1)[0].assignments
        value = reward(read_assignment(assignments[ARCHITECTURE]))
        history.append(TrialRecord(name=f"t{index}", index=index, assignments=assignments,
                                    state=TrialState.SUCCEEDED,
                                    observation={"Validation-Accuracy": MetricSummary(
                                        "Validation-Accuracy", str(value), str(value), str(value))}))
    return [t.assignments[ARCHITECTURE] for t in history]


def test_a_resumed_experiment_suggests_what_an_uninterrupted_one_does() -> None:
    def enas() -> Any:
        return _algorithm(_doc(layers=2, settings={"random_state": "11", "controller_train_steps": "5"}))

    def reward(architecture: list[list[int]]) -> float:
        return sum(row[0] for row in architecture) / 200

    assert _run(enas, 6, reward) == _run(enas, 6, reward, restart_at=3)


def test_katibs_enas_cpu_example_runs_end_to_end_on_digits(tmp_path: Path) -> None:
    """Katib's enas-cpu.yaml with the data switched (8x8x1 digits instead of CIFAR-10's 32x32x3) and its two
    parallel trials run once (maxTrialCount 2 instead of 3: the suite's time)."""
    doc = yaml.safe_load(KATIB_ENAS.read_text())
    doc["spec"]["nasConfig"]["graphConfig"]["inputSizes"] = [8, 8, 1]
    doc["spec"]["maxTrialCount"] = 2
    doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"].append(
        "--dataset=digits")
    (tmp_path / "enas-cpu.yaml").write_text(yaml.safe_dump(doc))
    shutil.copy(Path(__file__).resolve().parents[1] / "examples" / "nas" / "RunTrial.py", tmp_path)
    ran = subprocess.run([sys.executable, "-m", "katibx.cli", "run", "enas-cpu.yaml", "-q", "--store", "k.db"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    with Store(tmp_path / "k.db") as store:
        record = store.get_experiment("enas-cpu", "kubeflow")
        trials = store.trials(record.id)
        assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 2
        for trial in trials:
            accuracy = float(trial.metric("Validation-Accuracy") or "nan")
            assert 0.0 <= accuracy <= 1.0
            folder = store.trial_dir(record, trial.name)
            assert read_assignment(trial.assignments[ARCHITECTURE]) == \
                json.loads((folder / "architecture.json").read_text())["architecture"]
            assert _drawn(folder / "architecture.png")


def _drawn(path: Path) -> bool:
    """A PNG with something on it (not one flat colour)."""
    pixels = image.imread(path)
    return bool(pixels[..., :3].std() > 0.01)


def _orange_pixels(path: Path) -> int:
    """Pixels in the colour of the skip arcs (matplotlib's tab:orange)."""
    rgb = image.imread(path)[..., :3]
    return int(((abs(rgb[..., 0] - 1.0) < 0.1) & (abs(rgb[..., 1] - 0.5) < 0.1) & (rgb[..., 2] < 0.2)).sum())


def test_the_architecture_picture_names_each_operation_and_draws_the_skips(tmp_path: Path) -> None:
    ops = [{"opt_type": "separable_convolution", "opt_params": {"filter_size": "3", "num_filter": "96", "stride": "2",
                                                                 "depth_multiplier": "2"}},
           {"opt_type": "reduction", "opt_params": {"reduction_type": "avg_pooling", "pool_size": "3"}},
           {"opt_type": "depthwise_convolution", "opt_params": {"filter_size": "5", "stride": "1",
                                                                "depth_multiplier": "1"}}]
    assert [operation_label(op) for op in ops] == ["sep conv 3x3\n96 filters, x2, stride 2", "avg pool\n3x3",
                                                   "depthwise conv 5x5"]
    chain = [{"layer": i, "operation": op, "skips_from": []} for i, op in enumerate(ops)]
    skips = [*chain[:2], {**chain[2], "skips_from": ["input", "layer 0"]}]
    assert plot_architecture(chain, tmp_path / "chain.png") == tmp_path / "chain.png"
    plot_architecture(skips, tmp_path / "skips.png")
    assert _drawn(tmp_path / "chain.png") and _orange_pixels(tmp_path / "chain.png") == 0
    assert _orange_pixels(tmp_path / "skips.png") > 200
