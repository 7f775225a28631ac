"""Code written for the Katib SDK (``kubeflow-katib``, installed by the test extra) runs here unchanged: experiments
built from its model classes and written by the Kubernetes client's serializer, ``KatibClient.tune`` with
``katib.search`` objects, its reads and waits, and ``bash -c "python ..."`` trials without a virtualenv on PATH."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeflow import katib
from kubeflow.katib import models as m
from kubernetes import client as k8s
from kubernetes.client import ApiClient

import katibx
from katibx.lease import controller_alive
from katibx.store import Store
from katibx.trial import TrialState
from katibx.validation import ValidationError
from tests.conftest import default_signals, katibx_cli, process_gone, wait_until

# Katib's e2e objective as a trial program: reads --a and --b, prints result=4a-b^2 and loss lines.
PROGRAM = ("import sys; a, b = (float(x.split('=')[1]) for x in sys.argv[1:3]); "
           "[print(f'epoch={e} loss={1 / (e + 1) + b}') for e in range(3)]; print(f'result={4 * a - b ** 2}')")
FILE_PROGRAM = ("import sys; a, b = (float(x.split('=')[1]) for x in sys.argv[1:3]); "
                "open('/var/log/katib/metrics.txt', 'w').write(f'result={4 * a - b ** 2}\\n')")


def _job(program: str, extra: list[str]) -> k8s.V1Job:
    return k8s.V1Job(api_version="batch/v1", kind="Job", spec=k8s.V1JobSpec(template=k8s.V1PodTemplateSpec(
        metadata=k8s.V1ObjectMeta(annotations={"sidecar.istio.io/inject": "false"}, labels={"app_name": "katib"}),
        spec=k8s.V1PodSpec(restart_policy="Never", containers=[k8s.V1Container(
            name="training-container", image="docker.io/kubeflowkatib/pytorch-mnist-cpu:latest",
            command=["python3", "-c", program, "--a=${trialParameters.a}", "--b=${trialParameters.b}", *extra],
            resources=k8s.V1ResourceRequirements(limits={"cpu": "1"}))]))))


def sdk_experiment(name: str, algorithm: str, *, settings: dict[str, str] | None = None, grid: bool = False,
                   early_stopping: str | None = None, file_collector: bool = False,
                   max_trials: int = 4) -> m.V1beta1Experiment:
    """An Experiment as the Katib SDK's users build it, from its model classes with a V1Job trial."""
    step = {"step": "1"} if grid else {}
    parameters = [
        m.V1beta1ParameterSpec(name="a", parameter_type="int",
                               feasible_space=m.V1beta1FeasibleSpace(min="10", max="12", **step)),
        m.V1beta1ParameterSpec(name="b", parameter_type="double",
                               feasible_space=m.V1beta1FeasibleSpace(min="0.1", max="0.2", step="0.1" if grid else None)),
    ]
    collector = None
    if file_collector:
        collector = m.V1beta1MetricsCollectorSpec(
            collector=m.V1beta1CollectorSpec(kind="File"),
            source=m.V1beta1SourceSpec(file_system_path=m.V1beta1FileSystemPath(path="/var/log/katib/metrics.txt", kind="File")))
    trial_parameters = [m.V1beta1TrialParameterSpec(name="a", reference="a", description="a"),
                        m.V1beta1TrialParameterSpec(name="b", reference="b")]
    extra = []
    if algorithm == "hyperband":  # its resource parameter reaches the trial too
        parameters.append(m.V1beta1ParameterSpec(name="epochs", parameter_type="int",
                                                 feasible_space=m.V1beta1FeasibleSpace(min="1", max="4")))
        trial_parameters.append(m.V1beta1TrialParameterSpec(name="epochs", reference="epochs"))
        extra.append("--epochs=${trialParameters.epochs}")
    return m.V1beta1Experiment(
        api_version="kubeflow.org/v1beta1", kind="Experiment",
        metadata=k8s.V1ObjectMeta(name=name, namespace="kubeflow"),
        spec=m.V1beta1ExperimentSpec(
            max_trial_count=max_trials, parallel_trial_count=2, max_failed_trial_count=1,
            objective=m.V1beta1ObjectiveSpec(type="maximize", goal=1000, objective_metric_name="result",
                                             additional_metric_names=["loss"] if not file_collector else None),
            algorithm=m.V1beta1AlgorithmSpec(algorithm_name=algorithm, algorithm_settings=[
                m.V1beta1AlgorithmSetting(name=k, value=v) for k, v in (settings or {}).items()] or None),
            early_stopping=m.V1beta1EarlyStoppingSpec(algorithm_name=early_stopping, algorithm_settings=[
                m.V1beta1EarlyStoppingSetting(name="min_trials_required", value="1")]) if early_stopping else None,
            metrics_collector_spec=collector,
            parameters=parameters,
            trial_template=m.V1beta1TrialTemplate(
                primary_container_name="training-container",
                trial_parameters=trial_parameters,
                trial_spec=_job(FILE_PROGRAM if file_collector else PROGRAM, extra))))


CASES = {
    "random": {"algorithm": "random", "settings": {"random_state": "3"}},
    "grid": {"algorithm": "grid", "grid": True},
    "tpe": {"algorithm": "tpe", "settings": {"random_state": "4"}},
    "bayesianoptimization": {"algorithm": "bayesianoptimization", "settings": {"n_initial_points": "2"}},
    "hyperband": {"algorithm": "hyperband", "settings": {"resource_name": "epochs", "eta": "2", "r_l": "2"},
                  "max_trials": 6},
    "medianstop": {"algorithm": "random", "early_stopping": "medianstop"},
    "file-collector": {"algorithm": "random", "file_collector": True},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_experiments_serialized_by_the_sdk_run_unchanged_from_the_cli(case, tmp_path):
    built = sdk_experiment(f"sdk-{case}", **CASES[case])
    written = ApiClient().sanitize_for_serialization(built)  # the Kubernetes client 37 writes snake_case and nulls
    assert "max_trial_count" in written["spec"] and written["metadata"]["labels"] is None
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(written))
    db = tmp_path / "katibx.db"
    result = katibx_cli("run", str(path), "-q", cwd=tmp_path, store=db)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "snake_case keys" in result.stderr and "max_trial_count" in result.stderr  # the note names them
    with Store(db) as store:
        record = store.get_experiment(f"sdk-{case}", "kubeflow")
        trials = store.trials(record.id)
        assert trials and all(t.state in (TrialState.SUCCEEDED, TrialState.EARLY_STOPPED) for t in trials), \
            [(t.name, t.state, t.message) for t in trials]
        assert record.experiment.spec.trial_template.trial_spec["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        labels = record.experiment.spec.trial_template.trial_spec["spec"]["template"]["metadata"]["labels"]
        assert labels == {"app_name": "katib"}  # a label key is data, never renamed
        for trial in trials:
            if trial.state is TrialState.SUCCEEDED:
                a, b = trial.assignments["a"], trial.assignments["b"]
                assert float(trial.observation["result"].latest) == pytest.approx(4 * a - b ** 2)


def test_a_v1beta1_experiment_object_is_created_and_waited_for_with_the_sdk_calls(tmp_path, capsys):
    client = katibx.KatibClient(namespace="kubeflow", store=tmp_path / "katibx.db")
    created = client.create_experiment(sdk_experiment("from-object", "random", max_trials=3))
    assert created.metadata.name == "from-object" and created.metadata.namespace == "kubeflow"
    done = client.wait_for_experiment_condition(name="from-object", timeout=120, polling_interval=1, progress=True)
    assert client.is_experiment_succeeded("from-object") and done.status.trials_succeeded == 3
    assert "from-object: 0 running, 3 succeeded, 0 failed; best result=" in capsys.readouterr().err  # lines, piped
    best = client.get_optimal_hyperparameters("from-object")
    assert best.best_trial_name in {t.metadata.name for t in client.list_trials("from-object")}
    assert {p.name for p in best.parameter_assignments} == {"a", "b"}
    history = client.get_trial_metrics(best.best_trial_name, namespace="kubeflow")
    assert [h.metric.name for h in history].count("loss") == 3  # every reported value, in order
    logs = list(client.get_job_logs("from-object", best.best_trial_name))
    assert logs[-1].startswith("result=")
    with pytest.raises(Exception, match="already exists"):
        client.create_experiment(sdk_experiment("from-object", "random"))


def objective(parameters: dict[str, Any]) -> None:
    """Katib's tune-API e2e objective, written as for the SDK: values may arrive as strings there."""
    result = 4 * int(parameters["a"]) - float(parameters["b"]) ** 2
    print(f"result={result}")
    print(f"kind={parameters['kind']}")


def test_tune_with_katib_search_objects_runs_and_the_sdk_reads_answer(tmp_path):
    client = katibx.KatibClient(namespace="kubeflow", store=tmp_path / "katibx.db")
    client.tune(name="tune-api", objective=objective,
                parameters={"a": katib.search.int(min=10, max=20), "b": katib.search.double(min=0.1, max=0.2),
                            "kind": katib.search.categorical(["x", "y"])},  # the SDK's own (kubeflow/katib#2625)
                objective_metric_name="result", additional_metric_names=["kind"], max_trial_count=4,
                parallel_trial_count=2, resources_per_trial=k8s.V1ResourceRequirements(limits={"cpu": "1"}),
                algorithm_settings=[m.V1beta1AlgorithmSetting(name="random_state", value="5")])
    experiment = client.wait_for_experiment_condition(name="tune-api", timeout=120)
    assert experiment.status.trials_succeeded == 4
    assert experiment.best_params["kind"] in ("x", "y") and 10 <= experiment.best_params["a"] <= 20
    assert experiment.best_value == pytest.approx(4 * experiment.best_params["a"] - experiment.best_params["b"] ** 2)
    client.edit_experiment_budget("tune-api", max_trial_count=6)
    more = client.wait_for_experiment_condition(name="tune-api", timeout=120)
    assert more.status.trials_succeeded == 6 and more.spec.max_trial_count == 6
    client.delete_experiment("tune-api")
    assert client.list_experiments() == []


def test_sdk_arguments_without_meaning_here_are_refused_with_one_line_each(tmp_path):
    client = katibx.KatibClient(store=tmp_path / "katibx.db")
    with pytest.raises(ValidationError) as refused:
        client.tune(name="refused", objective=objective, parameters={"a": katib.search.int(1, 2)},
                    base_image="my/image:1", packages_to_install=["numpy"],
                    resources_per_trial=katib.TrainerResources(num_workers=2, num_procs_per_worker=1,
                                                               resources_per_worker={"cpu": 1}),
                    metrics_collector_config={"kind": "Prometheus"})
    fields = [line.partition(":")[0] for line in refused.value.errors]
    assert fields == ["base_image", "packages_to_install", "metrics_collector_config", "resources_per_trial"]
    with pytest.raises(ValidationError, match="config_file"):
        katibx.KatibClient(config_file="~/.kube/config", store=tmp_path / "katibx.db")
    assert not (tmp_path / "experiments").exists() and client.list_experiments() == []


def test_katib_search_objects_are_accepted_by_katibx_tune(tmp_path):
    result = katibx.tune("plain-tune", lambda p: float(p["x"]), {"x": katib.search.double(0, 1)},
                         objective_metric_name="score", max_trial_count=3, store=tmp_path / "katibx.db")
    assert 0 <= result.best_params["x"] <= 1


def test_a_bash_c_trial_finds_katibx_python_with_no_virtualenv_on_path(tmp_path):
    """The SDK's trials run ``bash -c "... python ..."``: ``python`` is katibx's interpreter (here one that can
    import katibx), even where PATH has no python at all (Debian) or another one."""
    path = tmp_path / "experiment.yaml"
    built = sdk_experiment("bash-c", "random", max_trials=2)
    container = built.spec.trial_template.trial_spec.spec.template.spec.containers[0]
    container.command = ["bash", "-c", "cd . && python -c 'import katibx, sys; print(\"result=\" + sys.argv[1])' "
                                       "${trialParameters.a} ${trialParameters.b}"]
    path.write_text(yaml.safe_dump(ApiClient().sanitize_for_serialization(built)))
    env = {**os.environ, "PATH": os.pathsep.join(p for p in ("/usr/bin", "/bin") if Path(p).is_dir())}
    env.pop("VIRTUAL_ENV", None)
    result = katibx_cli("run", str(path), "-q", cwd=tmp_path, store=tmp_path / "katibx.db", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    with Store(tmp_path / "katibx.db") as store:
        trials = store.trials(store.get_experiment("bash-c").id)
        assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 2, [t.message for t in trials]
    assert Path(sys.executable).exists()


SCRIPT_THAT_ENDS_BEFORE_ITS_EXPERIMENT = """
import os, time, katibx

def objective(p):
    with open("trial.pid.tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace("trial.pid.tmp", "trial.pid")  # whole when it appears
    while not os.path.exists("go"):  # the trial waits; the test never creates the file
        time.sleep(0.05)
    return 1.0

client = katibx.KatibClient(store="katibx.db")
client.tune(name="left", objective=objective, parameters={"x": katibx.search.double(0, 1)},
            objective_metric_name="score", max_trial_count=2, parallel_trial_count=1)
print("tuned", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_a_script_that_ends_waits_for_its_experiment_and_ctrl_c_stops_it(tmp_path, signum):
    (tmp_path / "script.py").write_text(SCRIPT_THAT_ENDS_BEFORE_ITS_EXPERIMENT)
    script = subprocess.Popen([sys.executable, "script.py"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    assert script.stdout.readline().strip() == "tuned"  # tune() returned while the trial runs
    for line in script.stderr:  # the script has ended its own code: it says what it waits for
        if "waiting for experiment(s) left" in line:
            break
    wait_until((tmp_path / "trial.pid").exists, what="the trial's pid file")  # the trial has started
    script.send_signal(signum)
    _, errors = script.communicate(timeout=60)
    assert "stopped experiment(s) left and their trials" in errors and "Traceback" not in errors, errors
    with Store(tmp_path / "katibx.db") as store:
        record = store.get_experiment("left")
        assert not controller_alive(store, record)
        trial = store.trials(record.id)[0]
        assert not trial.state.is_terminal or trial.state is TrialState.KILLED  # left to `katibx resume left`
    assert process_gone(int((tmp_path / "trial.pid").read_text()))  # the stop ended the trial's process too
