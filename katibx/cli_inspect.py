"""The CLI's reading verbs, as kubectl's: get, describe, list, logs, and delete."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from katibx.cli_common import (
    EXIT_FAILED,
    EXIT_SUCCEEDED,
    backend_options,
    err,
    fail,
    guard,
    metric_names,
    namespace_option,
    out,
    store_option,
    stored_backend_of,
)
from katibx.cli_output import (
    as_list,
    emit,
    label_filter,
    output_option,
    rows_text,
    selector_option,
    sort_key,
    sort_option,
)
from katibx.client import KatibxClient, experiment_object, trial_object
from katibx.display import short, short_metric
from katibx.lease import controller_alive, describe_holder
from katibx.objective import Objective
from katibx.status import TrialCounts, current_condition, is_completed, optimal_trial, timestamp
from katibx.store import ExperimentRecord, Store, resolve_store_path
from katibx.trial import TrialRecord
from katibx.trial_dir import STDOUT_LOG


# get --------------------------------------------------------------------------------------------
def _read_store(store: str | None) -> Store:
    """The store a reading command reads: an error naming it when there is none (reading never creates one)."""
    return Store(store, create=False)


@click.group()
def get() -> None:
    """Show experiments, an experiment, its trials or a trial: a table, or Katib objects (-o json|yaml, several in
    a List), names (-o name) or kubectl's jsonpath (-o jsonpath=TEMPLATE)."""


def _experiment_row(st: Store, record: ExperimentRecord, trials: list[TrialRecord], wide: bool) -> list[str]:
    counts = TrialCounts.of(trials)
    cond = current_condition(record.conditions) or {}
    status = cond.get("type", "")
    if not is_completed(record.conditions) and not controller_alive(st, record):
        status += f" (controller not alive: katibx resume {record.name})"  # killed, or stopped by Ctrl-C
    best = optimal_trial(record.experiment, trials)
    objective = Objective(record.experiment)
    row = [record.namespace, record.name, status, str(counts.trials), str(counts.succeeded), str(counts.failures),
           f"{objective.metric}={short_metric(objective.raw(best))}" if best else ""]
    if wide:
        algorithm = record.experiment.spec.algorithm
        row += [counts.running and str(counts.running) or "0", algorithm.algorithm_name or "" if algorithm else "",
                record.backend or "", timestamp(record.created), timestamp(record.completed) if record.completed else "",
                best.name if best else ""]
    return row


EXPERIMENT_COLUMNS = ("namespace", "name", "status", "trials", "succeeded", "failed", "best")
EXPERIMENT_WIDE_COLUMNS = ("running", "algorithm", "backend", "created", "completed", "best trial")


def _experiments(st: Store, records: list[ExperimentRecord], output: str, sort_by: str | None) -> None:
    wide = output == "wide"
    entries = [(r, st.trials(r.id)) for r in records]
    rows = {r.id: _experiment_row(st, r, trials, wide) for r, trials in entries}
    if sort_by:
        names = EXPERIMENT_COLUMNS + (EXPERIMENT_WIDE_COLUMNS if wide else ())
        columns = {c: (lambda e, i=i: rows[e[0].id][i]) for i, c in enumerate(names)}
        entries.sort(key=sort_key(sort_by, columns, lambda e: experiment_object(*e)))
    if output not in ("table", "wide"):
        emit(as_list([experiment_object(r, trials) for r, trials in entries]), output)
        return
    table = Table()
    for column in EXPERIMENT_COLUMNS + (EXPERIMENT_WIDE_COLUMNS if wide else ()):
        table.add_column(column, **({"overflow": "fold"} if column == "name" else {}))  # a name is never cut
    for record, _ in entries:
        table.add_row(*rows[record.id])
    out.print(table)


@get.command("experiments")
@click.argument("names", nargs=-1)
@namespace_option
@output_option("table")
@sort_option
@store_option
@guard
def get_experiments(names: tuple[str, ...], namespace: str | None, output: str, sort_by: str | None,
                    store: str | None) -> None:
    """All experiments in the store (or those NAMES): their status, counts and best value."""
    _get_experiments(names, namespace, output, sort_by, store)


def _get_experiments(names: tuple[str, ...], namespace: str | None, output: str, sort_by: str | None,
                     store: str | None) -> None:
    if not resolve_store_path(store).exists():  # nothing run yet: nothing to list, and no empty store made
        if output in ("table", "wide"):
            out.print(escape(f"No experiments in {resolve_store_path(store)}."), highlight=False)
        else:
            emit(as_list([]), output)
        return
    st = Store(store)
    records = ([st.get_experiment(n, namespace) for n in names] if names else
               KatibxClient(st).records(namespace))
    _experiments(st, records, output, sort_by)


@get.command("experiment")
@click.argument("name")
@namespace_option
@output_option("yaml")
@click.option("-w", "--watch", is_flag=True, help="Then print a row each time its status changes, until it ends.")
@store_option
@guard
def get_experiment(name: str, namespace: str | None, output: str, watch: bool, store: str | None) -> None:
    """Experiment NAME as a Katib object (spec, conditions, counters, currentOptimalTrial), or its table row."""
    _watchable(watch, output, "yaml")
    st = _read_store(store)
    record = st.get_experiment(name, namespace)
    if output in ("table", "wide") or watch:
        _experiments(st, [record], "wide" if output == "wide" else "table", None)
    else:
        emit(experiment_object(record, st.trials(record.id)), output)
    if watch:
        _watch(st, record, lambda r, trials: [_experiment_row(st, r, trials, output == "wide")])


@get.command("trials")
@click.argument("name")
@namespace_option
@output_option("table")
@selector_option
@sort_option
@click.option("-w", "--watch", is_flag=True, help="Then print a trial's row each time it changes, until the "
                                                  "experiment ends.")
@store_option
@guard
def get_trials(name: str, namespace: str | None, output: str, selector: str | None, sort_by: str | None,
               watch: bool, store: str | None) -> None:
    """The trials of experiment NAME: status, parameters and metrics (wide: times and reasons too)."""
    _watchable(watch, output, "table")
    st = _read_store(store)
    record = st.get_experiment(name, namespace)
    matches = label_filter(selector)
    trials = [t for t in st.trials(record.id) if matches(t.labels)]
    wide = output == "wide"
    columns = _trial_columns(record, wide)
    if sort_by:
        trials.sort(key=sort_key(sort_by, columns, lambda t: trial_object(record, t)))
    if output not in ("table", "wide"):
        emit(as_list([trial_object(record, t) for t in trials]), output)
    else:
        _trials_table(record, trials, columns)
    if watch:
        _watch(st, record, lambda _r, now: [[f(t) for f in columns.values()] for t in now if matches(t.labels)],
               per_trial=True)


def _trials_table(record: ExperimentRecord, trials: list[TrialRecord],
                  columns: dict[str, Callable[[TrialRecord], str]]) -> None:
    table = Table()
    for column in columns:
        table.add_column(column, **({"overflow": "fold"} if column == "trial" else {}))  # never cut: logs needs it
    for trial in trials:
        table.add_row(*[f(trial) for f in columns.values()])
    out.print(table)


def _trial_columns(record: ExperimentRecord, wide: bool) -> dict[str, Callable[[TrialRecord], str]]:
    """The trials table's columns: name, status, each parameter and metric (wide: reason, start and end times)."""
    objective = Objective(record.experiment)
    columns: dict[str, Callable[[TrialRecord], str]] = {"trial": lambda t: t.name, "status": lambda t: t.state.value}
    for parameter in record.experiment.spec.parameters:
        columns[parameter.name] = lambda t, n=parameter.name: short(t.assignments.get(n, ""))
    for metric in metric_names(record):
        columns[metric] = lambda t, m=metric: short_metric(objective.raw(t, m))
    if wide:
        columns["reason"] = lambda t: t.reason or ""
        columns["started"] = lambda t: timestamp(t.start_time) if t.start_time else ""
        columns["completed"] = lambda t: timestamp(t.completion_time) if t.completion_time else ""
    return columns


@get.command("trial")
@click.argument("name")
@namespace_option
@output_option("yaml")
@store_option
@guard
def get_trial(name: str, namespace: str | None, output: str, store: str | None) -> None:
    """Trial NAME (of whichever experiment) as a Katib Trial object, or its table row."""
    client = KatibxClient(_read_store(store), namespace=namespace)
    record, trial = client.find_trial(name)
    if output in ("table", "wide"):
        _trials_table(record, [trial], _trial_columns(record, output == "wide"))
    else:
        emit(trial_object(record, trial), output)


def _watchable(watch: bool, output: str, default: str) -> None:
    """-w prints table rows: with another -o it is a usage error (the command's default -o is fine)."""
    if watch and output not in ("table", "wide", default):
        raise click.UsageError(f"-w prints table rows; use it with -o table or -o wide, not -o {output}")


# How often -w reads the store again for changes.
WATCH_SECONDS = 0.25


def _watch(st: Store, record: ExperimentRecord, rows: Callable[[ExperimentRecord, list[TrialRecord]], list[list[str]]],
           *, per_trial: bool = False) -> None:
    """kubectl's -w: a row for each change (each trial's, with ``per_trial``), until the experiment has ended and
    no trial is active; a controller that is gone before then ends it with a note and exit code 1."""
    shown: dict[str, list[str]] = {}

    def changed(current: ExperimentRecord, trials: list[TrialRecord]) -> list[list[str]]:
        fresh = []
        for row in rows(current, trials):
            if shown.get(row[0] if per_trial else "") != row:
                shown[row[0] if per_trial else ""] = row
                fresh.append(row)
        return fresh

    changed(record, st.trials(record.id))  # what the table showed already
    while True:
        current = st.get_experiment(record.name, record.namespace)
        trials = st.trials(current.id)
        fresh = changed(current, trials)
        if fresh:
            out.print(escape(rows_text(fresh)), highlight=False)
        active = any(not t.state.is_terminal for t in trials)
        if is_completed(current.conditions) and not active:
            return
        if not controller_alive(st, current):
            err.print(escape(f"experiment {record.name}: no controller is running it (katibx resume {record.name})"),
                      highlight=False)
            sys.exit(EXIT_FAILED)
        time.sleep(WATCH_SECONDS)


@click.command("list")
@store_option
@guard
def list_experiments(store: str | None) -> None:
    """All experiments in the store with their status and best value (as katibx get experiments)."""
    _get_experiments((), None, "table", None, store)


# delete -----------------------------------------------------------------------------------------
@click.command()
@click.argument("names", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Delete every experiment in the store (of -n NAMESPACE).")
@namespace_option
@store_option
@backend_options("delete")
@click.option("--force", is_flag=True,
              help="Stop the controller running it first; delete it from the store even when its cluster cannot be "
                   "reached (its objects are left there).")
@guard
def delete(names: tuple[str, ...], every: bool, namespace: str | None, store: str | None, force: bool,
           **options: Any) -> None:
    """Delete experiments NAMES (or --all) with their trials and trial directories (on a cluster, the objects their
    trials created). Each is found before any is deleted: a wrong name deletes nothing."""
    if bool(names) == every:
        fail(["give experiment NAMES or --all (not both)"])
    client = KatibxClient(_read_store(store))
    records = (client.records(namespace)
               if every else [client.store.get_experiment(name, namespace) for name in names])
    for record in records:
        cleaned = client.delete_experiment(record.name, record.namespace, force=force,
                                           make_backend=lambda r: stored_backend_of(r, None, options))
        out.print(escape(f"experiment {record.name} deleted" + (f"; {cleaned}" if cleaned else "")), highlight=False)


@click.group("store")
def store_group() -> None:
    """Inspect the store itself."""


@store_group.command("check")
@store_option
@guard
def store_check(store: str | None) -> None:
    """Run SQLite's integrity check and say which experiments can be read in full. Exit 1 if the file is damaged."""
    report = Store(store, read_only=True).check()  # a damaged file is read, never migrated or written
    out.print(f"integrity: {'ok' if report.integrity == ['ok'] else 'DAMAGED'}", highlight=False)
    for line in report.integrity if report.integrity != ["ok"] else []:
        out.print(f"  {escape(line)}", highlight=False)
    if report.listing_problem is not None:
        out.print(f"experiments: the list cannot be read ({escape(report.listing_problem)})", highlight=False)
    for namespace, name, problem in report.experiments:
        state = "readable" if problem is None else f"NOT readable: {problem}"
        out.print(escape(f"{namespace}/{name}: {state}"), highlight=False)
    sys.exit(EXIT_SUCCEEDED if report.ok else EXIT_FAILED)


# logs and describe -------------------------------------------------------------------------------
@click.command()
@click.argument("name")
@click.argument("trial")
@namespace_option
@click.option("-f", "--follow", is_flag=True, help="Then print each new line as the trial writes it, until it ends.")
@click.option("--tail", type=click.IntRange(min=-1), default=-1, show_default=True,
              help="Only the last N lines (-1: all).")
@store_option
@backend_options("logs")
@guard
def logs(name: str, trial: str, namespace: str | None, follow: bool, tail: int, store: str | None,
         **options: Any) -> None:
    """Output (stdout and stderr) of TRIAL of experiment NAME; a running cluster trial's from where it runs."""
    client = KatibxClient(_read_store(store), namespace=namespace)
    path = client.trial_log_path(name, trial)
    record, found = client.find_trial(trial)
    handle = client.store.trial_handle(found)
    if handle and not path.exists():
        _cluster_log(client, record, trial, handle, options, follow=follow, tail=tail)  # kept here once it ends
    elif follow or tail >= 0:
        for line in client.trial_log_lines(name, trial, tail=None if tail < 0 else tail, follow=follow):
            out.file.write(line + "\n")  # the CLI's stdout: a closed pipe (| head) ends the output, not the command
    elif path.exists():  # streamed: a trial's log can be larger than memory
        with path.open("rb") as log_file:
            try:
                shutil.copyfileobj(log_file, sys.stdout.buffer)
                sys.stdout.flush()
            except BrokenPipeError:  # katibx logs ... | head
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# How often `logs -f` reads a running cluster trial's log again.
CLUSTER_LOG_SECONDS = 2.0


def _cluster_log(client: KatibxClient, record: ExperimentRecord, trial: str, handle: dict[str, Any],
                 options: dict[str, Any], *, follow: bool, tail: int) -> None:
    """A running cluster trial's log read from its pods (the controller keeps it once the trial ends): its last
    ``tail`` lines, then with ``follow`` what it adds, read again every few seconds until the trial has ended."""
    worker = stored_backend_of(record, None, options)
    shown = ""
    try:
        while True:
            ended = client.trial_ended(record, trial)
            text = worker.trial_logs(handle)
            new = text[len(shown):] if text.startswith(shown) else text  # a restarted container logs anew
            if not shown and tail >= 0:
                new = "".join(new.splitlines(keepends=True)[-tail:]) if tail else ""
            out.file.write(new)
            shown = text
            if not follow or ended:
                return
            time.sleep(CLUSTER_LOG_SECONDS)
    finally:
        worker.close()


@click.command()
@click.argument("name")
@namespace_option
@click.option("-o", "--output-dir", "output_dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder the PNG files are written to.")
@store_option
@guard
def plot(name: str, namespace: str | None, output_dir: str, store: str | None) -> None:
    """Write experiment NAME's plots as PNG files: optimization history, parallel coordinates, parameter
    importances, intermediate values (the objective metric per report) and, with several objectives, the Pareto
    front (Optuna's visualisations; needs matplotlib: pip install 'katibx[plot]')."""
    from katibx.optuna_study import experiment_study  # imported here: the other commands start without them
    from katibx.plots import PlotsUnavailable, write_plots

    st = _read_store(store)
    record = st.get_experiment(name, namespace)
    try:
        study = experiment_study(record, st.trials(record.id), st.experiment_observation_logs(record.id))
    except (ValueError, TypeError) as exc:
        fail([f"experiment {name}: cannot be drawn: {exc}"])
    try:
        written, skipped = write_plots(study, Objective(record.experiment).metric, Path(output_dir))
    except PlotsUnavailable as exc:
        fail([str(exc)])
    except OSError as exc:
        fail([f"--output-dir: cannot write to {output_dir}: {exc.strerror or exc}"])
    for path in written:
        out.print(escape(str(path)), highlight=False)
    for line in skipped:
        err.print(escape(f"not drawn: {line}"), highlight=False)


@click.command()
@store_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on; another than this machine's loopback lets others see (and change) it.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0: any free one).")
@guard
def dashboard(store: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard over the store: every experiment a study, live (needs optuna-dashboard: pip install
    'katibx[dashboard]'). The store is only read."""
    from katibx.dashboard import DashboardUnavailable, dashboard_server  # imported here, as plot's

    st = _read_store(store)
    if host not in ("127.0.0.1", "localhost"):
        err.print(escape(f"warning: serving on {host}: whoever reaches it sees the experiments and can change what "
                         "the dashboard shows"), highlight=False)
    try:
        server = dashboard_server(st, host, port)
    except DashboardUnavailable as exc:
        fail([str(exc)])
    except OSError as exc:
        fail([f"--host, --port: cannot serve on {host}:{port}: {exc.strerror or exc}"])
    out.print(f"katibx dashboard: http://{host}:{server.server_port}/dashboard (store {st.path}; Ctrl-C stops it)",
              highlight=False)
    out.file.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


@click.group()
def export() -> None:
    """Write stored experiments into other tools."""


@export.command("mlflow")
@click.argument("names", nargs=-1, required=True)
@namespace_option
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None, metavar="URI",
              help="MLflow tracking server or store (env MLFLOW_TRACKING_URI; default MLflow's own, a local "
                   "sqlite:///mlflow.db).")
@store_option
@guard
def export_mlflow(names: tuple[str, ...], namespace: str | None, tracking_uri: str | None, store: str | None) -> None:
    """Write experiments NAMES into MLflow: an MLflow experiment each, a run per trial (params, every metric value
    with its step, Katib's state as tags, its log and files as artifacts) and a summary run. Running it again adds
    only what is missing (needs mlflow: pip install 'katibx[mlflow]')."""
    from katibx.mlflow_export import ARTIFACT_LIMIT, MlflowUnavailable, export_experiment  # imported here, as plot's

    st = _read_store(store)
    records = [st.get_experiment(name, namespace) for name in names]  # every name found before anything is written
    for record in records:
        try:
            report = export_experiment(st, record, tracking_uri)
        except MlflowUnavailable as exc:
            fail([str(exc)])
        out.print(escape(f"experiment {record.name}: MLflow experiment {report.experiment_id}, {report.runs_created} "
                         f"runs created, {report.runs_kept} already there, {report.metric_values} metric values, "
                         f"{report.artifacts} files"), highlight=False)
        for path in report.skipped_files:
            err.print(escape(f"warning: not uploaded (over {ARTIFACT_LIMIT >> 20} MiB): {path}"), highlight=False)


@click.group()
def describe() -> None:
    """Show an experiment or a trial in detail, for people (as kubectl describe)."""


def _fields(pairs: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs) + 2
    for key, value in pairs:
        out.print(escape(f"{key + ':':<{width}}{'' if value is None else value}"), highlight=False)


def _conditions(conditions: list[dict[str, Any]]) -> None:
    out.print("Conditions:", highlight=False)
    rows = [["Type", "Status", "Reason", "Last transition", "Message"]]
    rows += [[c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("lastTransitionTime", ""),
              c.get("message", "")] for c in conditions]
    out.print(escape("\n".join("  " + line for line in rows_text(rows).splitlines())), highlight=False)


@describe.command("experiment")
@click.argument("name")
@namespace_option
@store_option
@guard
def describe_experiment(name: str, namespace: str | None, store: str | None) -> None:
    """Experiment NAME: its search, budget, where it runs, conditions, trial counts and best trial."""
    st = _read_store(store)
    record = st.get_experiment(name, namespace)
    trials = st.trials(record.id)
    spec = record.experiment.spec
    objective = Objective(record.experiment)
    algorithm = spec.algorithm
    settings = ", ".join(f"{s.name}={s.value}" for s in algorithm.algorithm_settings) if algorithm else ""
    counts = TrialCounts.of(trials)
    lease = st.lease(record.id)
    best = optimal_trial(record.experiment, trials)
    _fields([
        ("Name", record.name), ("Namespace", record.namespace), ("Created", timestamp(record.created)),
        ("Completed", timestamp(record.completed) if record.completed else "-"),
        ("Objective", " and ".join(f"{kind} {metric}" for metric, kind in spec.objective.objectives()) +
         (f" (goal {spec.objective.goal})" if spec.objective and spec.objective.goal is not None else "")),
        ("Algorithm", f"{algorithm.algorithm_name if algorithm else ''}" + (f" ({settings})" if settings else "")),
        ("Early stopping", spec.early_stopping.algorithm_name if spec.early_stopping else "-"),
        ("Parameters", ", ".join(f"{p.name} ({p.parameter_type})" for p in spec.parameters)),
        ("Budget", f"maxTrialCount {spec.max_trial_count or '-'}, parallelTrialCount {spec.parallel_trial_count}, "
                   f"maxFailedTrialCount {spec.max_failed_trial_count if spec.max_failed_trial_count is not None else '-'}"),
        ("Backend", record.backend or "-"), ("Working dir", record.workdir), ("Store", st.path),
        ("Controller", (describe_holder(lease) if lease and controller_alive(st, record) else
                        "none running" + ("" if is_completed(record.conditions) else f" (katibx resume {record.name})"))),
        ("Trials", f"{counts.trials} total, {counts.running} running, {counts.succeeded} succeeded, {counts.failed} "
                   f"failed, {counts.killed} killed, {counts.early_stopped} early stopped"),
        ("Best trial", f"{best.name}: {objective.metric}={short_metric(objective.raw(best))} "
                       + " ".join(f"{k}={short(v)}" for k, v in best.assignments.items()) if best else "-"),
    ])
    _conditions(record.conditions)


@describe.command("trial")
@click.argument("name")
@namespace_option
@store_option
@guard
def describe_trial(name: str, namespace: str | None, store: str | None) -> None:
    """Trial NAME: its parameters, metrics (with every value reported), times, conditions and log."""
    client = KatibxClient(_read_store(store), namespace=namespace)
    record, trial = client.find_trial(name)
    history = client.store.observation_logs(trial.id)
    log_path = client.store.trial_dir(record, trial.name) / STDOUT_LOG
    _fields([
        ("Name", trial.name), ("Experiment", record.name), ("Namespace", record.namespace),
        ("Status", trial.state.value + (f" ({trial.reason})" if trial.reason else "")),
        ("Message", trial.message or "-"),
        ("Started", timestamp(trial.start_time) if trial.start_time else "-"),
        ("Completed", timestamp(trial.completion_time) if trial.completion_time else "-"),
        ("Labels", ", ".join(f"{k}={v}" for k, v in trial.labels.items()) or "-"),
        ("Log", f"{log_path} (katibx logs {record.name} {trial.name})"),
    ])
    out.print("Parameters:", highlight=False)
    out.print(escape(rows_text([["  " + k, short(v)] for k, v in trial.assignments.items()])), highlight=False)
    out.print("Metrics:", highlight=False)
    rows = [["  Name", "Min", "Max", "Latest", "Values"]]
    for metric in trial.observation.values():
        values = [short_metric(h.value) for h in history if h.name == metric.name]
        shown = ", ".join(values[-8:]) + (f" (last 8 of {len(values)})" if len(values) > 8 else "")
        rows.append(["  " + metric.name, short_metric(metric.min), short_metric(metric.max), short_metric(metric.latest), shown])
    out.print(escape(rows_text(rows)), highlight=False)
    _conditions(trial.conditions)
