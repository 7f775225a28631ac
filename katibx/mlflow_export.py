"""Katib experiments in MLflow (``pip install 'katibx[mlflow]'``): what ``katibx export mlflow`` writes.

Each katibx experiment is an MLflow experiment (its qualified name); each trial a run named after it, with its
assignments as params, every reported metric value as a metric with its step (the report's index) and time (a text
value, such as a genotype, as a ``metric.<name>`` tag), Katib's state, reason and lineage (experiment, algorithm,
backend, katibx version) as tags, the datasets its ``datasets.json`` names as inputs, its log and the files its folder
holds (each up to :data:`ARTIFACT_LIMIT`) as artifacts, and the run status FINISHED, FAILED or KILLED; a summary run
holds the spec (YAML), the conditions and the best trial, and once the experiment has completed the best trial's
checkpoint folder becomes a logged model. Exporting again adds only what is missing: the store keeps each run's id
(runs made before it kept them are found by their ``katibx.trial`` tag), metric histories are continued where they
end, artifacts not uploaded twice; so it completes an export that was cut short. A trial run again from scratch
after a controller restart gets a new run (its earlier attempt's run is deleted), so attempts never mix.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from katibx.metrics import MetricLog, as_float
from katibx.objective import Objective
from katibx.status import current_condition, optimal_trial
from katibx.store import ExperimentRecord, Store, StoreError
from katibx.template import format_value
from katibx.tracking import PIPELINE_RUN_ANNOTATION
from katibx.trial import TrialRecord, TrialState
from katibx.trial_dir import CHECKPOINT_DIR, DATASETS_FILE

log = logging.getLogger(__name__)

TRIAL_TAG = "katibx.trial"  # the trial a run is (the summary run has the experiment's name with SUMMARY_SUFFIX)
STARTED_TAG = "katibx.started"  # when the trial attempt the run records started: a re-run trial starts again
ATTEMPT_TAG = "katibx.attempt"
SUMMARY_SUFFIX = " (experiment)"
MODEL_KEY = "model "  # + the trial's name: the stored id of the logged model made of that trial's checkpoint
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


@dataclass
class ExportState:
    """What an exporter that writes the same experiment again and again (live logging) remembers between rounds:
    the trials written whole (not looked at again) and the ids of the runs (and models) that stand for them."""

    done: set[str] = field(default_factory=set)
    ids: dict[str, str] | None = None  # by trial name (or summary / model key); None: not read from the store yet
    searched: bool = False  # runs were looked for by their tag once: a run this state does not know is new
    spec: str = ""  # the spec (YAML) last uploaded to the summary run: not uploaded again every round


def new_client(tracking_uri: str | None) -> Any:
    """An MlflowClient for ``tracking_uri``; over HTTP a server that is down is reported in seconds, not after
    MLflow's minutes of retries (where the environment does not set them)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MlflowUnavailable("MLflow tracking needs mlflow: pip install 'katibx[mlflow]'") from None
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    return MlflowClient(tracking_uri)


def export_experiment(store: Store, record: ExperimentRecord, tracking_uri: str | None = None, *,
                      client: Any = None, state: ExportState | None = None) -> ExportReport:
    """Write (or complete) the experiment in MLflow at ``tracking_uri`` (default: ``MLFLOW_TRACKING_URI``, else
    MLflow's own default); MlflowUnavailable when mlflow is missing or the server cannot be reached.

    A caller exporting again and again (live logging) passes its ``client`` and ``state``; the trials the state names
    as done are skipped, and those this export finished writing (ended ones) are added to it."""
    report = ExportReport()
    state = state or ExportState()
    try:
        client = client or new_client(tracking_uri)  # (it opens a local store at once: a bad path fails here)
        report.experiment_id = _experiment_id(client, record)
        runs = _Runs(client, store, record, report.experiment_id, state)
        logs = store.experiment_observation_logs(record.id)
        trials = store.trials(record.id)
        for trial in trials:
            if trial.name in state.done:
                continue
            _export_trial(client, store, record, trial, logs.get(trial.id, []), runs, report)
            if trial.state.is_terminal:
                state.done.add(trial.name)
        _export_summary(client, store, record, trials, runs, report)
    except MlflowUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow's errors are many (REST, SQL, connection): one line each
        where = getattr(client, "tracking_uri", None) or tracking_uri or "its default tracking URI"
        raise MlflowUnavailable(f"MLflow at {where}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    return report


def _experiment_id(client: Any, record: ExperimentRecord) -> str:
    found = client.get_experiment_by_name(record.qualified_name)
    if found is not None:
        if found.lifecycle_stage == "deleted":  # deleted in MLflow, exported again: brought back (with its runs)
            client.restore_experiment(found.experiment_id)
        return str(found.experiment_id)
    return str(client.create_experiment(record.qualified_name, tags={
        "katibx.namespace": record.namespace, "katibx.experiment": record.name}))


class _Runs:
    """The runs (and models) that stand for an experiment's trials in one tracking server: their ids are kept in the
    katibx store as they are made. A run made before the store kept ids, or by an export cut short between making
    it and keeping its id, is found by its ``katibx.trial`` tag: a search of every run once per exporter when a
    trial has no id yet, or of that trial's runs when its kept id is gone (a read-only store could not keep it)."""

    def __init__(self, client: Any, store: Store, record: ExperimentRecord, experiment_id: str,
                 state: ExportState) -> None:
        self.client, self.store, self.record, self.experiment_id, self.state = client, store, record, experiment_id, state
        self.uri = store_key(str(client.tracking_uri))
        if state.ids is None:
            state.ids = store.tracking_runs(record.id, self.uri)
        self.ids: dict[str, str] = state.ids

    def find(self, key: str) -> Any:
        """The active run standing for ``key``, or None."""
        if key not in self.ids and not self.state.searched:
            self._search_all()
        run_id = self.ids.get(key)
        if run_id is None:
            return None
        run = self._get(run_id)
        if run is None:  # deleted since, or replaced by an attempt this store could not keep
            run = self._search_one(key)
        return run

    def _get(self, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise  # a server that does not answer: not a reason to make the run again
        return run if run.info.lifecycle_stage == "active" else None

    def _search_all(self) -> None:
        """Every run of the experiment with a ``katibx.trial`` tag, kept by that tag (every page of them)."""
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token)
            for run in page:
                key = run.data.tags.get(TRIAL_TAG)
                if key and key not in self.ids:
                    self.keep(key, run.info.run_id)
            token = page.token
            if not token:
                self.state.searched = True  # (only once it has answered: a failed search is tried again)
                return

    def _search_one(self, key: str) -> Any:
        """The newest active run tagged as ``key`` (kept from now on), or None."""
        found = self.client.search_runs([self.experiment_id], filter_string=_tag_filter(key),
                                        order_by=["attributes.start_time DESC"], max_results=1)
        if not found:
            return None
        self.keep(key, found[0].info.run_id)
        return found[0]

    def keep(self, key: str, run_id: str) -> None:
        self.ids[key] = run_id
        try:
            self.store.save_tracking_run(self.record.id, self.uri, key, run_id)
        except StoreError as exc:  # a read-only store: the tag finds the run next time
            log.debug("run %s of %s not kept in the store: %s", run_id, key, exc)


def store_key(uri: str) -> str:
    """A tracking URI as the katibx store keeps it: a relative SQLite or local path made absolute, so that exports
    from two folders keep apart the two tracking stores they write."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////") and ":memory:" not in uri:
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).absolute())
    if uri and ":" not in uri and not uri.startswith("databricks"):  # a folder: MLflow's file store
        return str(Path(uri).absolute())
    return uri


def _tag_filter(key: str) -> str:
    """An MLflow search filter for the runs tagged as ``key`` (a trial name or the summary's: no quotes in them)."""
    return f"tags.`{TRIAL_TAG}` = '{key}'"


def _lineage(record: ExperimentRecord) -> dict[str, str]:
    algorithm = record.experiment.spec.algorithm
    try:
        katibx_version = version("katibx")
    except PackageNotFoundError:
        katibx_version = "unknown"
    lineage = {"katibx.experiment": record.name, "katibx.namespace": record.namespace,
               "katibx.algorithm": (algorithm.algorithm_name or "") if algorithm else "",
               "katibx.backend": record.backend or "", "katibx.version": katibx_version}
    pipeline_run = (record.experiment.metadata.annotations or {}).get(PIPELINE_RUN_ANNOTATION)
    if pipeline_run:
        lineage["katibx.pipeline_run"] = pipeline_run
    return lineage


def _export_trial(client: Any, store: Store, record: ExperimentRecord, trial: TrialRecord, logs: list[MetricLog],
                  runs: _Runs, report: ExportReport) -> None:
    from mlflow.entities import Param, RunTag

    started = repr(trial.start_time) if trial.start_time else ""
    tags = {**_lineage(record), TRIAL_TAG: trial.name, "katib.state": trial.state.value,
            "katib.reason": trial.reason or "", "katib.message": (trial.message or "")[:5000]}
    tags.update({f"katib.label.{k}": v for k, v in trial.labels.items()})
    tags.update({f"metric.{name}": value[:5000] for name, value in _text_values(logs).items()})
    if started:
        tags[STARTED_TAG] = started
    run = runs.find(trial.name)
    attempt = int(run.data.tags.get(ATTEMPT_TAG, "1")) if run is not None else 1
    if run is not None and started and run.data.tags.get(STARTED_TAG, started) != started:
        client.delete_run(run.info.run_id)  # the trial ran again from scratch: its first attempt's run goes
        run, attempt = None, attempt + 1
    tags[ATTEMPT_TAG] = str(attempt)
    if run is None:
        run = client.create_run(report.experiment_id, start_time=_ms(trial.start_time or trial.creation_time),
                                tags=tags, run_name=trial.name)
        runs.keep(trial.name, run.info.run_id)
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
    folder = store.trial_dir(record, trial.name)
    _log_datasets(client, run, folder / DATASETS_FILE)
    _upload_files(client, run_id, folder, report)
    if trial.state.is_terminal:
        client.set_terminated(run_id, _STATUS.get(trial.state, "FINISHED"), end_time=_ms(trial.completion_time))


def _text_values(logs: list[MetricLog]) -> dict[str, str]:
    """The latest value of each metric whose latest value is not a number (a genotype, a label)."""
    latest = {entry.name: entry.value for entry in sorted(logs, key=lambda e: e.timestamp or 0.0)}
    return {name: value for name, value in latest.items() if as_float(value) is None}


def _log_datasets(client: Any, run: Any, listing: Path) -> None:
    """The datasets a trial names in its ``datasets.json`` (a list of ``{"name", "digest", "source"}``, optionally
    ``"source_type"`` and ``"context"``) as the run's inputs, those it does not have yet; a listing that cannot be
    read is named in a warning and skipped."""
    if not listing.is_file():
        return
    from mlflow.entities import Dataset, DatasetInput, InputTag

    try:
        entries = json.loads(listing.read_text())
        datasets = [DatasetInput(Dataset(str(e["name"]), str(e["digest"]), str(e.get("source_type", "local")),
                                         str(e["source"])),
                                 [InputTag("mlflow.data.context", str(e.get("context", "training")))])
                    for e in entries]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("%s: not a list of datasets with name, digest and source (%s); not logged", listing, exc)
        return
    inputs = run.inputs.dataset_inputs if run.inputs else []
    have = {(i.dataset.name, i.dataset.digest) for i in inputs}
    new = [d for d in datasets if (d.dataset.name, d.dataset.digest) not in have]
    if new:
        client.log_inputs(run.info.run_id, datasets=new)


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
    uploaded = {item.path: item.file_size or 0 for item in client.list_artifacts(run_id) if not item.is_dir}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if uploaded.get(path.name) == path.stat().st_size:
            continue  # the same file (a log that grew since, or a file rewritten, is uploaded again)
        if path.stat().st_size > ARTIFACT_LIMIT:
            report.skipped_files.append(str(path))
            continue
        client.log_artifact(run_id, str(path))
        report.artifacts += 1


def _export_summary(client: Any, store: Store, record: ExperimentRecord, trials: list[TrialRecord], runs: _Runs,
                    report: ExportReport) -> None:
    """The summary run: the spec as YAML, the experiment's condition and its best trial, brought up to date (the
    best trial's values as tags and as metrics whose step is the trial count when they were exported, so their
    history shows the search improving)."""
    from mlflow.entities import Metric, RunTag

    key = record.name + SUMMARY_SUFFIX
    run = runs.find(key)
    condition = current_condition(record.conditions) or {}
    best = optimal_trial(record.experiment, trials)
    tags = {**_lineage(record), TRIAL_TAG: key, "katib.condition": condition.get("type", ""),
            "katib.reason": condition.get("reason", ""), "katib.best_trial": best.name if best else ""}
    if run is None:
        run = client.create_run(report.experiment_id, start_time=_ms(record.created), tags=tags, run_name=key)
        runs.keep(key, run.info.run_id)
    text = yaml.safe_dump(record.experiment.to_dict(), sort_keys=False)
    if text != runs.state.spec:  # once per exporter, and again when a resume has changed it (a larger budget)
        with tempfile.TemporaryDirectory() as folder:
            spec = Path(folder) / "experiment.yaml"
            spec.write_text(text)
            client.log_artifact(run.info.run_id, str(spec))
        runs.state.spec = text
    if best is not None:
        tags.update({f"best.{name}": format_value(value) for name, value in best.assignments.items()})
    objective = Objective(record.experiment)  # each metric's value as the experiment judges it (min, max, latest)
    metrics = [Metric(f"best.{name}", number, _ms(best.completion_time), len(trials))
               for name in best.observation if (number := as_float(objective.raw(best, name))) is not None] if best else []
    client.log_batch(run.info.run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    if record.completed:
        client.set_terminated(run.info.run_id, "FINISHED" if condition.get("type") == "Succeeded" else "FAILED",
                              end_time=_ms(record.completed))
        if best is not None:
            _log_best_model(client, store, record, best, runs, report)


def _log_best_model(client: Any, store: Store, record: ExperimentRecord, best: TrialRecord, runs: _Runs,
                    report: ExportReport) -> None:
    """The best trial's checkpoint folder (what it saved in ``$KATIBX_CHECKPOINT_DIR``, up to
    :data:`ARTIFACT_LIMIT` in all) as an MLflow logged model of the experiment, made once, linked to the trial's run.
    A server that cannot take it (MLflow before 3) costs a warning, not the export."""
    folder = store.trial_dir(record, best.name) / CHECKPOINT_DIR
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    key = MODEL_KEY + best.name
    if not files or key in runs.ids:
        return
    if sum(p.stat().st_size for p in files) > ARTIFACT_LIMIT:
        report.skipped_files.append(str(folder))
        return
    model = None
    try:
        made = client.search_logged_models([report.experiment_id], filter_string=_tag_filter(best.name))
        ready = [m for m in made if str(m.status) == "READY"]
        if ready:  # made by an export that could not keep its id (a read-only store)
            runs.keep(key, ready[0].model_id)
            return
        model = client.create_logged_model(report.experiment_id, name=f"{record.name}-best",
                                           source_run_id=runs.ids.get(best.name),
                                           params={k: format_value(v) for k, v in best.assignments.items()},
                                           tags={**_lineage(record), TRIAL_TAG: best.name})
        client.log_model_artifacts(model.model_id, str(folder))
        client.finalize_logged_model(model.model_id, "READY")
    except Exception as exc:  # noqa: BLE001 - an older server, an upload cut short: the runs are written already
        log.warning("MLflow: the best trial's checkpoint of %s is not logged as a model: %s", record.name,
                    str(exc).splitlines()[0] if str(exc) else repr(exc))
        if model is not None:
            with contextlib.suppress(Exception):
                client.finalize_logged_model(model.model_id, "FAILED")
        return
    runs.keep(key, model.model_id)
    report.artifacts += len(files)


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds else None
