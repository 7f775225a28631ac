"""katibx as a Kubeflow pipeline step (``katibx[pipelines]``: kfp), run in the pipelines test environment (see
tests/test_pipelines_env.py): the example pipeline end to end through ``kfp.local`` (no Docker), its IR as KFP
would receive it, the reusable component spec, and a failing sweep and an invalid spec inside a pipeline."""

import json  # (no "from __future__ import annotations": KFP reads the pipelines' annotations as types)
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from kfp import components, dsl, local
from kfp.pipeline_spec import pipeline_spec_pb2
from mlflow.tracking import MlflowClient

import katibx
from katibx import pipelines
from katibx.pipeline_step import best_arguments

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pipelines"


def _run_example(cwd: Path, store: Path) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, str(EXAMPLE / "digits_pipeline.py"), "run", "--pipeline-root",
                           str(cwd / "root"), "--store", str(store)], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={k: v for k, v in os.environ.items() if k != "KATIBX_STEP_IMAGE"})


def _outputs(root: Path, task: str) -> dict[str, Any]:
    """What a task of the (only) local pipeline run under ``root`` wrote: its executor output."""
    [run] = root.iterdir()
    return json.loads((run / task / "executor_output.json").read_text())


def test_the_example_pipeline_runs_locally_end_to_end_and_a_second_run_reuses_the_sweep(tmp_path):
    store = tmp_path / "katibx.db"
    first = _run_example(tmp_path, store)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    result = katibx.KatibxClient(store).get_experiment("digits-svc")
    assert len(result.trials) == 4 and result["status"]["conditions"][-1]["type"] == "Succeeded"
    train = _outputs(tmp_path / "root", "train-best")  # the best parameters flowed into the train step
    assert sorted(train["parameterValues"]["Output"].split()) == sorted(best_arguments(result.best_params))
    [model] = train["artifacts"]["model"]["artifacts"]
    assert Path(model["uri"]).stat().st_size > 1000 and model["metadata"] == pytest.approx(result.best_params)
    evaluation = _outputs(tmp_path / "root", "evaluate")
    [report] = evaluation["artifacts"]["report"]["artifacts"]
    written = json.loads(Path(report["uri"]).read_text())  # the evaluation artifact
    assert written["test_accuracy"] == evaluation["parameterValues"]["Output"] > 0.9
    assert len(written["confusion_matrix"]) == 10
    [record] = _outputs(tmp_path / "root", "katibx-tune")["artifacts"]["experiment_record"]["artifacts"]
    katib = json.loads(Path(record["uri"]).read_text())  # the experiment as Katib's JSON
    assert katib["kind"] == "Experiment" and katib["status"]["currentOptimalTrial"]["bestTrialName"] == \
        result.best_trial.name

    for old in (tmp_path / "root").iterdir():
        old.rename(tmp_path / f"first-{old.name}")
    second = _run_example(tmp_path, store)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert "(the stored experiment, reused)" in second.stdout + second.stderr
    assert len(katibx.KatibxClient(store).get_experiment("digits-svc").trials) == 4  # no trial ran again


def _tasks(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["root"]["dag"]["tasks"]


def test_the_compiled_ir_is_what_kfp_receives(tmp_path):
    """The committed IR is the one the code compiles; it parses strictly as KFP's PipelineSpec; every task's
    component exists, every input is wired to an output its producer declares, and the tune step runs katibx."""
    compiled = tmp_path / "digits_pipeline.yaml"
    env = {k: v for k, v in os.environ.items() if k != "KATIBX_STEP_IMAGE"}
    subprocess.run([sys.executable, str(EXAMPLE / "digits_pipeline.py"), "compile", "-o", str(compiled)], env=env,
                   check=True, capture_output=True, timeout=120)
    assert compiled.read_text() == (EXAMPLE / "digits_pipeline.yaml").read_text(), \
        "examples/pipelines/digits_pipeline.yaml is stale: python examples/pipelines/digits_pipeline.py compile"
    spec = yaml.safe_load(compiled.read_text())
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())  # strict: an unknown field is an error

    components_ = spec["components"]
    executors = spec["deploymentSpec"]["executors"]
    tasks = _tasks(spec)
    assert set(tasks) == {"prepare-data", "katibx-tune", "train-best", "evaluate"}
    for name, task in tasks.items():
        component = components_[task["componentRef"]["name"]]
        assert component["executorLabel"] in executors, name
        declared = component.get("inputDefinitions", {})
        for kind, key, output_key in (("parameters", "taskOutputParameter", "outputParameterKey"),
                                      ("artifacts", "taskOutputArtifact", "outputArtifactKey")):
            for input_name, given in task.get("inputs", {}).get(kind, {}).items():
                assert input_name in declared.get(kind, {}), (name, input_name)
                if key in given:
                    producer = given[key]["producerTask"]
                    assert producer in task.get("dependentTasks", []), (name, producer)
                    made = components_[tasks[producer]["componentRef"]["name"]].get("outputDefinitions", {})
                    assert given[key][output_key] in made.get(kind, {}), (name, input_name, producer)
    assert tasks["train-best"]["inputs"]["parameters"]["best_parameters"]["taskOutputParameter"] == \
        {"producerTask": "katibx-tune", "outputParameterKey": "best_parameters"}
    tune = executors[components_[tasks["katibx-tune"]["componentRef"]["name"]]["executorLabel"]]["container"]
    program = " ".join(tune["command"] + tune["args"])
    assert tune["image"] == "python:3.11" and "from katibx.pipeline_step import" in program  # (KATIBX_STEP_IMAGE unset)
    assert "katibx_tune" in tune["args"]


def _small_experiment(name: str, command: list[str]) -> str:
    doc = {"apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment", "metadata": {"name": name}, "spec": {
        "objective": {"type": "maximize", "objectiveMetricName": "score"},
        "algorithm": {"algorithmName": "random"}, "maxTrialCount": 2, "parallelTrialCount": 1,
        "maxFailedTrialCount": 1,
        "parameters": [{"name": "x", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "9"}}],
        "trialTemplate": {"primaryContainerName": "main", "trialParameters": [{"name": "x", "reference": "x"}],
                          "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
                              "restartPolicy": "Never",
                              "containers": [{"name": "main", "image": "python:3.11", "command": command}]}}}}}}}
    return yaml.safe_dump(doc)


SCORES = [sys.executable, "-c", "import sys; print(f'score={int(sys.argv[1]) * 2}')", "${trialParameters.x}"]


def test_the_component_spec_loads_without_katibx_in_the_pipeline_code(tmp_path, capfd, monkeypatch):
    """The committed component YAML is the code's; a pipeline that loads it (and imports nothing from katibx) runs,
    with the typed best parameters out and the pipeline run as a lineage tag of its MLflow runs."""
    written = pipelines.write_component(tmp_path / "tune.yaml", image="python:3.11")
    assert written.read_text() == (EXAMPLE / "katibx_tune_component.yaml").read_text(), \
        "examples/pipelines/katibx_tune_component.yaml is stale: see README, Pipelines"
    tune = components.load_component_from_file(str(EXAMPLE / "katibx_tune_component.yaml"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    @dsl.pipeline(name="loaded")
    def loaded(experiment: str) -> dict:
        return tune(experiment=experiment, store=str(tmp_path / "katibx.db"), mlflow=uri,
                    pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER).outputs["best_parameters"]

    monkeypatch.chdir(tmp_path)  # MLflow keeps a SQLite store's artifacts in ./mlruns of the working directory
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    best = loaded(experiment=_small_experiment("loaded", SCORES)).output
    stored = katibx.KatibxClient(tmp_path / "katibx.db").get_experiment("loaded")
    assert best == pytest.approx(stored.best_params) and best_arguments(best) == [f"--x={stored.best_params['x']}"]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("loaded").experiment_id])
    [run_name] = [p.name for p in (tmp_path / "root").iterdir()]
    assert len(runs) == 3 and {r.data.tags["katibx.pipeline_run"] for r in runs} == {run_name}


@dsl.pipeline(name="from-a-file")
def from_a_file(path: str, store: str) -> dict:
    given = dsl.importer(artifact_uri=path, artifact_class=dsl.Artifact)
    return pipelines.tune(experiment_file=given.output, store=store).outputs["best_parameters"]


def test_the_experiment_can_be_a_file_artifact(tmp_path):
    (tmp_path / "experiment.yaml").write_text(_small_experiment("from-file", SCORES))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    best = from_a_file(path=str(tmp_path / "experiment.yaml"), store=str(tmp_path / "katibx.db")).output
    assert best == pytest.approx(katibx.KatibxClient(tmp_path / "katibx.db").get_experiment("from-file").best_params)


def test_tune_arguments_make_the_steps_experiment(tmp_path, monkeypatch):
    """An Optuna-style objective, importable where the step runs, swept through katibx.tune's arguments."""
    (tmp_path / "objective_module.py").write_text("def objective(p):\n    return -(p['x'] - 3) ** 2\n")
    monkeypatch.chdir(tmp_path)  # the step and its trials run here, where the module is
    monkeypatch.syspath_prepend(str(tmp_path))
    from objective_module import objective

    experiment = pipelines.experiment_of("fn", objective, {"x": katibx.search.int(0, 5)}, objective_metric_name="y",
                                         max_trial_count=3, parallel_trial_count=1)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    best = one_step(experiment=experiment, store=str(tmp_path / "katibx.db")).output
    stored = katibx.KatibxClient(tmp_path / "katibx.db").get_experiment("fn")
    assert len(stored.trials) == 3 and best == pytest.approx(stored.best_params)


@dsl.pipeline(name="one-step")
def one_step(experiment: str, store: str) -> dict:
    return pipelines.tune(experiment=experiment, store=store).outputs["best_parameters"]


def _failing_step(tmp_path: Path, capfd: "pytest.CaptureFixture[str]", experiment: str) -> str:
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    with pytest.raises(RuntimeError, match="katibx-tune"):
        one_step(experiment=experiment, store=str(tmp_path / "katibx.db"))
    captured = capfd.readouterr()
    return captured.out + captured.err


def test_a_failing_sweep_fails_the_step_with_the_experiments_reason(tmp_path, capfd):
    log = _failing_step(tmp_path, capfd, _small_experiment(
        "fails", [sys.executable, "-c", "import sys; sys.exit('no data here')", "${trialParameters.x}"]))
    assert "error: experiment fails: Failed (ExperimentFailed: Experiment has failed because max failed count" \
        in log, log[-3000:]
    assert "error: no trial of experiment fails produced score (1 Failed)" in log
    assert "error:   | no data here" in log  # the failing trial's last words
    assert "Traceback" not in log


def test_an_invalid_spec_fails_the_step_before_any_trial_runs(tmp_path, capfd):
    bad = yaml.safe_load(_small_experiment("bad", SCORES))
    bad["spec"]["parameters"][0]["feasibleSpace"] = {"min": "9", "max": "1"}
    bad["spec"]["algorithm"]["algorithmName"] = "nope"
    log = _failing_step(tmp_path, capfd, yaml.safe_dump(bad))
    errors = [line.strip() for line in log.splitlines() if line.strip().startswith("error: ")]
    assert len(errors) >= 2 and any("spec.parameters[0]" in e for e in errors) and \
        any("spec.algorithm" in e for e in errors), log[-3000:]
    assert "Traceback" not in log
    assert not (tmp_path / "katibx.db").exists()  # nothing stored, no trial ran
