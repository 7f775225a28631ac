"""``katibx export mlflow``: a stored experiment in MLflow (a local SQLite tracking store here), idempotently."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

import katibx
from katibx.mlflow_export import export_experiment
from katibx.store import Store
from katibx.template import format_value
from tests.conftest import katibx_cli


def curves(p: dict[str, Any]) -> float:
    for step in range(3):
        katibx.report_metrics({"loss": p["x"] ** 2 + 1 / (step + 1), "epoch": step})
    print(f"done x={p['x']}")
    return p["x"] ** 2


def _runs(client: MlflowClient, name: str) -> dict[str, Any]:
    experiment = client.get_experiment_by_name(name)
    return {r.data.tags["katibx.trial"]: r for r in client.search_runs([experiment.experiment_id])}


def test_export_writes_runs_params_metric_histories_tags_and_artifacts_once(tmp_path):
    db, uri = tmp_path / "katibx.db", f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = dict(objective=curves, parameters={"x": katibx.search.double(-1, 1)}, objective_metric_name="loss",
                objective_type="minimize", parallel_trial_count=1, store=db, progress=False)
    katibx.tune("curves", max_trial_count=3, **args)
    exported = katibx_cli("export", "mlflow", "curves", "--tracking-uri", uri, cwd=tmp_path, store=db)
    assert exported.returncode == 0 and "3 runs created" in exported.stdout, exported.stdout + exported.stderr

    client = MlflowClient(uri)
    runs = _runs(client, "curves")
    stored = katibx.KatibxClient(db).get_experiment("curves")
    assert set(runs) == {t.name for t in stored.trials} | {"curves (experiment)"}
    for trial in stored.trials:
        run = runs[trial.name]
        assert run.data.params == {"x": repr(trial.params["x"])} or float(run.data.params["x"]) == trial.params["x"]
        history = client.get_metric_history(run.info.run_id, "loss")
        assert [m.step for m in history] == [0, 1, 2, 3] and [m.value for m in history] == trial.history["loss"]
        assert run.data.tags["katib.state"] == "Succeeded" and run.info.status == "FINISHED"
        assert run.data.tags["katibx.algorithm"] == "auto" and run.data.tags["katibx.backend"] == "local"
        assert "stdout.log" in {a.path for a in client.list_artifacts(run.info.run_id)}
    summary = runs["curves (experiment)"]
    assert summary.data.tags["katib.condition"] == "Succeeded" and summary.data.tags["katib.best_trial"] == \
        stored.best_trial.name
    assert "experiment.yaml" in {a.path for a in client.list_artifacts(summary.info.run_id)}

    again = katibx_cli("export", "mlflow", "curves", "--tracking-uri", uri, cwd=tmp_path, store=db)
    assert "0 runs created, 3 already there, 0 metric values, 0 files" in again.stdout, again.stdout
    katibx.tune("curves", max_trial_count=2, load_if_exists=True, **args)  # two more trials, then export again
    more = katibx_cli("export", "mlflow", "curves", "--tracking-uri", uri, cwd=tmp_path, store=db)
    assert "2 runs created" in more.stdout, more.stdout
    runs = _runs(client, "curves")
    assert len(runs) == 6  # no duplicates: one run per trial and the summary
    for run in runs.values():
        if run.data.tags["katibx.trial"].startswith("curves-"):
            assert len(client.get_metric_history(run.info.run_id, "loss")) == 4


def test_export_mistakes_are_one_line(tmp_path):
    db = tmp_path / "katibx.db"
    katibx.tune("one", curves, {"x": katibx.search.double(-1, 1)}, objective_metric_name="loss", max_trial_count=1,
                parallel_trial_count=1, store=db, progress=False)
    missing = katibx_cli("export", "mlflow", "one", "nope", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                         cwd=tmp_path, store=db)
    assert missing.returncode == 2 and "experiment 'nope' not found" in missing.stderr
    assert not (tmp_path / "m.db").exists()  # nothing written: every name is checked first
    unreachable = katibx_cli("export", "mlflow", "one", "--tracking-uri", "http://127.0.0.1:9", cwd=tmp_path,
                             store=db)  # nothing listens there
    assert unreachable.returncode == 2 and "MLflow at http://127.0.0.1:9" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1 and "Traceback" not in unreachable.stderr


def trains_a_model(p: dict[str, Any]) -> dict[str, Any]:
    """Writes what a training trial writes: the datasets it read and a checkpoint; reports a text value too."""
    folder = Path(os.environ["KATIBX_TRIAL_DIR"])
    (folder / "datasets.json").write_text(json.dumps([{"name": "digits", "digest": "3f2a", "source": "sklearn"}]))
    checkpoint = Path(os.environ["KATIBX_CHECKPOINT_DIR"])
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / "weights.txt").write_text(f"x={p['x']}\n")
    return {"loss": p["x"] ** 2, "cell": f"conv{int(p['x'] * 10)}"}


def test_datasets_text_values_and_the_best_checkpoint_reach_mlflow_once(tmp_path):
    db, uri = tmp_path / "katibx.db", f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = katibx.tune("model", trains_a_model, {"x": katibx.search.double(-1, 1)}, objective_metric_name="loss",
                         objective_type="minimize", additional_metric_names=["cell"], max_trial_count=3,
                         parallel_trial_count=1, store=db, progress=False)
    for _ in range(2):  # the second export adds nothing
        exported = katibx_cli("export", "mlflow", "model", "--tracking-uri", uri, cwd=tmp_path, store=db)
        assert exported.returncode == 0, exported.stderr
    client = MlflowClient(uri)
    runs = _runs(client, "model")
    for trial in result.trials:
        run = runs[trial.name]
        inputs = run.inputs.dataset_inputs
        assert [(i.dataset.name, i.dataset.digest, i.dataset.source) for i in inputs] == [("digits", "3f2a", "sklearn")]
        assert run.data.tags["metric.cell"] == f"conv{int(trial.params['x'] * 10)}"
    experiment = client.get_experiment_by_name("model")
    models = client.search_logged_models([experiment.experiment_id])
    assert len(models) == 1
    best = result.best_trial
    assert models[0].source_run_id == runs[best.name].info.run_id and str(models[0].status) == "READY"
    assert models[0].tags["katibx.trial"] == best.name and models[0].params == {"x": format_value(best.params["x"])}
    assert [a.path for a in client.list_logged_model_artifacts(models[0].model_id)] == ["weights.txt"]


def test_relative_tracking_uris_from_two_folders_and_a_read_only_store_make_no_duplicates(tmp_path, monkeypatch):
    """The store keeps run ids per tracking store: ``sqlite:///mlflow.db`` from two folders is two stores; and a
    store that cannot keep ids (read-only) finds its runs and its model by their tags instead of making them again."""
    db = tmp_path / "katibx.db"
    katibx.tune("curves", trains_a_model, {"x": katibx.search.double(-1, 1)}, objective_metric_name="loss",
                max_trial_count=2, parallel_trial_count=1, store=db, progress=False)
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in (*folders, folders[0]):
        folder.mkdir(exist_ok=True)
        exported = katibx_cli("export", "mlflow", "curves", "--tracking-uri", "sqlite:///mlflow.db", cwd=folder,
                              store=db)
        assert exported.returncode == 0, exported.stderr
    for folder in folders:
        runs = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_runs(
            [MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").get_experiment_by_name("curves").experiment_id])
        assert len(runs) == 3, folder  # two trials and the summary, in each

    uri = f"sqlite:///{tmp_path / 'read-only.db'}"
    monkeypatch.chdir(tmp_path)  # MLflow keeps a SQLite store's artifacts in ./mlruns of the working directory
    with Store(db, read_only=True) as store:
        reports = [export_experiment(store, store.get_experiment("curves"), uri) for _ in range(3)]
    assert [r.runs_created for r in reports] == [2, 0, 0]
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("curves").experiment_id
    assert len(client.search_runs([experiment_id])) == 3 and len(client.search_logged_models([experiment_id])) == 1
