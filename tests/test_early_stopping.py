"""Early stopping (Katib's medianstop) through the real controller: trials are stopped while running."""

from __future__ import annotations

import pytest
from conftest import experiment_doc, set_command

from katibx.loader import experiment_from_dict
from katibx.preparation import check_experiment, create_backend
from katibx.runner import resume_experiment, run_experiment
from katibx.status import current_condition
from katibx.trial import TrialState

# Reports loss = a for 10 steps; waits for the controller between steps only through a short sleep.
SERIES_SCRIPT = """
import sys, time
a = int(sys.argv[1])
for step in range(10):
    print(f"loss={a + step * 0.0}", flush=True)
    time.sleep(0.15)
"""


def _doc(**overrides):
    doc = experiment_doc(
        maxTrialCount=5, parallelTrialCount=1, algorithm={"algorithmName": "grid"},
        objective={"type": "minimize", "objectiveMetricName": "loss"},
        earlyStopping={"algorithmName": "medianstop",
                       "algorithmSettings": [{"name": "min_trials_required", "value": "2"},
                                             {"name": "start_step", "value": "2"}]},
        parameters=[{"name": "a", "parameterType": "discrete", "feasibleSpace": {"list": ["1", "3", "9", "0", "8"]}},
                    {"name": "b", "parameterType": "discrete", "feasibleSpace": {"list": ["0"]}}],
    )
    doc["spec"].update(overrides)
    return set_command(doc, ["python3", "objective.py", "${trialParameters.a}", "${trialParameters.b}"])


def test_medianstop_stops_worse_trials_while_they_run(tmp_path, store, write_experiment):
    doc = _doc()
    write_experiment(doc, script=SERIES_SCRIPT)
    record = run_experiment(experiment_from_dict(doc), store=store, workdir=tmp_path)
    trials = {t.assignments["a"]: t for t in store.trials(record.id)}
    # Threshold after two successes (a=1, a=3): mean of their first-2-step averages = 2.
    assert trials[1].state is TrialState.SUCCEEDED and trials[3].state is TrialState.SUCCEEDED
    assert trials[9].state is TrialState.EARLY_STOPPED
    assert trials[8].state is TrialState.EARLY_STOPPED
    assert trials[0].state is TrialState.SUCCEEDED
    stopped = trials[9]
    assert stopped.reason == "TrialEarlyStopped"
    reports = len(store.observation_logs(stopped.id))
    assert 2 <= reports < 10, "stopped after start_step reports, before the end"
    # EarlyStopped trials count as completed: the budget of 5 is reached.
    assert current_condition(record.conditions)["reason"] == "ExperimentMaxTrialsReached"


def test_medianstop_state_is_rebuilt_from_the_store_on_resume(tmp_path, store, write_experiment):
    doc = _doc(maxTrialCount=2)
    write_experiment(doc, script=SERIES_SCRIPT)
    record = run_experiment(experiment_from_dict(doc), store=store, workdir=tmp_path)
    record = resume_experiment(record.name, store=store, max_trial_count=3)
    trials = {t.assignments["a"]: t for t in store.trials(record.id)}
    assert trials[9].state is TrialState.EARLY_STOPPED


@pytest.mark.parametrize(("name", "value", "message"), [
    ("min_trials_required", "0", "min_trials_required]: must be an integer greater than 0"),
    ("start_step", "x", "start_step]: must be an integer greater than 0"),
    ("bogus", "1", "spec.earlyStopping.algorithmSettings[bogus]: unknown setting for early stopping 'medianstop'"),
])
def test_medianstop_settings_are_validated_up_front(name, value, message):
    doc = _doc(earlyStopping={"algorithmName": "medianstop", "algorithmSettings": [{"name": name, "value": value}]})
    errors = check_experiment(experiment_from_dict(doc), create_backend("local"))
    assert any(message in e and e.startswith("spec.earlyStopping.algorithmSettings") for e in errors), errors
