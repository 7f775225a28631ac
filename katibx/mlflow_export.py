"""Katib experiments in MLflow (``pip install 'katibx[mlflow]'``): what ``katibx export mlflow`` writes.

Each katibx experiment is an MLflow experiment (its qualified name); each trial a run named after it, with its
assignments as params, every reported metric value as a metric with its step (the report's index) and time, Katib's
state, reason and lineage (experiment, algorithm, backend, katibx version) as tags, its log and the files its
folder holds (each up to :data:`ARTIFACT_LIMIT`) as artifacts, and the run status FINISHED, FAILED or KILLED; a
summary run holds the spec (YAML), the conditions and the best trial. Exporting again adds only what is missing:
runs are found by their ``katibx.trial`` tag, metric histories continued where they end, artifacts not uploaded
twice; so it completes an export that was cut short.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from katibx.metrics import MetricLog, as_float
from katibx.objective import Objective
from katibx.status import current_condition, optimal_trial
from katibx.store import ExperimentRecord, Store
from katibx.template import format_value
from katibx.trial import TrialRecord, TrialState

log = logging.getLogger(__name__)

TRIAL_TAG = "katibx.trial"  # the trial a run is (the summary run has the experiment's name with SUMMARY_SUFFIX)
SUMMARY_SUFFIX = " (experiment)"
ARTIFACT_LIMIT = 10 << 20  # bytes: a larger file of a trial folder is not uploaded (its name is tagged instead)
_STATUS = {TrialState.SUCCEEDED: "FINISHED", TrialState.KILLED: "KILLED", TrialState.EARLY_STOPPED: "KILLED",
           TrialState.FAILED: "FAILED", TrialState.METRICS_UNAVAILABLE: "FAILED"}


class MlflowUnavailable(RuntimeError):
    """mlflow is not installed, or its tracking server cannot be reached."""


@dataclass
class ExportReport:
    """What one export did."""

    experiment_id: str = ""
    runs_created: int = 0
    runs_kept: int = 0
    metric_values: int = 0
    artifacts: int = 0
    skipped_files: list[str] = field(default_factory=list)


def _client(tracking_uri: str | None) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MlflowUnavailable("MLflow tracking needs mlflow: pip install 'katibx[mlflow]'") from None
    return MlflowClient(tracking_uri)


def export_experiment(store: Store, record: ExperimentRecord, tracking_uri: str | None = None, *,
                      client: Any = None, done: set[str] | None = None) -> ExportReport:
    """Write (or complete) the experiment in MLflow at ``tracking_uri`` (default: ``MLFLOW_TRACKING_URI``, else
    MLflow's own default); MlflowUnavailable when mlflow is missing or the server cannot be reached.

    A caller exporting again and again (live logging) passes its ``client`` and a ``done`` set: the trials it names
    are skipped, and the trials this export finished writing (ended ones) are added to it."""
    report = ExportReport()
    try:
        client = client or _client(tracking_uri)  # (it opens a local store at once: a bad path fails here)
        report.experiment_id = _experiment_id(client, record)
        runs = _runs(client, report.experiment_id)
        logs = store.experiment_observation_logs(record.id)
        trials = store.trials(record.id)
        for trial in trials:
            if done is not None and trial.name in done:
                continue
            _export_trial(client, store, record, trial, logs.get(trial.id, []), runs, report)
            if done is not None and trial.state.is_terminal:
                done.add(trial.name)
        _export_summary(client, record, trials, runs, report)
    except MlflowUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow's errors are many (REST, SQL, connection): one line each
        where = getattr(client, "tracking_uri", None) or tracking_uri or "its default tracking URI"
        raise MlflowUnavailable(f"MLflow at {where}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    return report


def _experiment_id(client: Any, record: ExperimentRecord) -> str:
    found = client.get_experiment_by_name(record.qualified_name)
    if found is not None:
        return str(found.experiment_id)
    return str(client.create_experiment(record.qualified_name, tags={
        "katibx.namespace": record.namespace, "katibx.experiment": record.name}))


def _runs(client: Any, experiment_id: str) -> dict[str, Any]:
    """The experiment's runs by the trial (or summary) they are, every page of them."""
    runs: dict[str, Any] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        for run in page:
            key = run.data.tags.get(TRIAL_TAG)
            if key:
                runs[key] = run
        token = page.token
        if not token:
            return runs


def _lineage(record: ExperimentRecord) -> dict[str, str]:
    algorithm = record.experiment.spec.algorithm
    try:
        katibx_version = version("katibx")
    except PackageNotFoundError:
        katibx_version = "unknown"
    return {"katibx.experiment": record.name, "katibx.namespace": record.namespace,
            "katibx.algorithm": (algorithm.algorithm_name or "") if algorithm else "",
            "katibx.backend": record.backend or "", "katibx.version": katibx_version}


def _export_trial(client: Any, store: Store, record: ExperimentRecord, trial: TrialRecord, logs: list[MetricLog],
                  runs: dict[str, Any], report: ExportReport) -> None:
    from mlflow.entities import Param, RunTag

    run = runs.get(trial.name)
    tags = {**_lineage(record), TRIAL_TAG: trial.name, "katib.state": trial.state.value,
            "katib.reason": trial.reason or "", "katib.message": (trial.message or "")[:5000]}
    tags.update({f"katib.label.{k}": v for k, v in trial.labels.items()})
    if run is None:
        run = client.create_run(report.experiment_id, start_time=_ms(trial.start_time or trial.creation_time),
                                tags=tags, run_name=trial.name)
        report.runs_created += 1
    else:
        report.runs_kept += 1
    have = run.data.params if run.data else {}
    params = [Param(name, format_value(value)) for name, value in trial.assignments.items()
              if name not in have]  # (an export cut short after making the run has not logged them)
    run_id = run.info.run_id
    metrics = _new_metrics(client, run_id, logs)
    report.metric_values += len(metrics)
    for start in range(0, max(len(metrics), 1), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=metrics[start:start + 1000], params=params if start == 0 else [],
                         tags=[RunTag(k, v) for k, v in tags.items()] if start == 0 else [])
    _upload_files(client, run_id, store.trial_dir(record, trial.name), report)
    if trial.state.is_terminal:
        client.set_terminated(run_id, _STATUS.get(trial.state, "FINISHED"), end_time=_ms(trial.completion_time))


def _new_metrics(client: Any, run_id: str, logs: list[MetricLog]) -> list[Any]:
    """The reports not in MLflow yet, as MLflow metrics: each metric's values in the order they were reported,
    numbered by step from 0, continued after the last step the run has (values that are not finite numbers, such
    as a genotype's text, have a step but are not logged: MLflow metrics are numbers)."""
    from mlflow.entities import Metric

    by_name: dict[str, list[MetricLog]] = {}
    for entry in sorted(logs, key=lambda e: e.timestamp or 0.0):
        by_name.setdefault(entry.name, []).append(entry)
    out = []
    for name, entries in by_name.items():
        known = max((m.step for m in client.get_metric_history(run_id, name)), default=-1) + 1
        for step, entry in enumerate(entries[known:], start=known):
            number = as_float(entry.value)
            if number is not None:
                out.append(Metric(name, number, _ms(entry.timestamp), step))
    return out


def _upload_files(client: Any, run_id: str, folder: Path, report: ExportReport) -> None:
    """The trial folder's files (its log, what it wrote) as the run's artifacts, those not uploaded before."""
    if not folder.is_dir():
        return
    uploaded = {item.path: item.file_size for item in client.list_artifacts(run_id)}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if uploaded.get(path.name) == path.stat().st_size:
            continue  # the same file (a log that grew since, or a file rewritten, is uploaded again)
        if path.stat().st_size > ARTIFACT_LIMIT:
            report.skipped_files.append(str(path))
            continue
        client.log_artifact(run_id, str(path))
        report.artifacts += 1


def _export_summary(client: Any, record: ExperimentRecord, trials: list[TrialRecord], runs: dict[str, Any],
                    report: ExportReport) -> None:
    """The summary run: the spec as YAML, the experiment's condition and its best trial, brought up to date (the
    best trial's values as tags and as metrics whose step is the trial count when they were exported, so their
    history shows the search improving)."""
    from mlflow.entities import Metric, RunTag

    key = record.name + SUMMARY_SUFFIX
    run = runs.get(key)
    condition = current_condition(record.conditions) or {}
    best = optimal_trial(record.experiment, trials)
    tags = {**_lineage(record), TRIAL_TAG: key, "katib.condition": condition.get("type", ""),
            "katib.reason": condition.get("reason", ""), "katib.best_trial": best.name if best else ""}
    if run is None:
        run = client.create_run(report.experiment_id, start_time=_ms(record.created), tags=tags, run_name=key)
    with tempfile.TemporaryDirectory() as folder:  # every time: a resume may have raised the budget
        spec = Path(folder) / "experiment.yaml"
        spec.write_text(yaml.safe_dump(record.experiment.to_dict(), sort_keys=False))
        client.log_artifact(run.info.run_id, str(spec))
    if best is not None:
        tags.update({f"best.{name}": format_value(value) for name, value in best.assignments.items()})
    objective = Objective(record.experiment)  # each metric's value as the experiment judges it (min, max, latest)
    metrics = [Metric(f"best.{name}", number, _ms(best.completion_time), len(trials))
               for name in best.observation if (number := as_float(objective.raw(best, name))) is not None] if best else []
    client.log_batch(run.info.run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    if record.completed:
        client.set_terminated(run.info.run_id, "FINISHED" if condition.get("type") == "Succeeded" else "FAILED",
                              end_time=_ms(record.completed))


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds else None
