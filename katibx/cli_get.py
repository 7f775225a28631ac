"""The CLI's verbs that show what is stored, as kubectl's: get, list and describe (quick to start: nothing here loads
a backend or what running an experiment needs)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click

from katibx.cli_common import EXIT_FAILED, echo, guard, metric_names, namespace_option, read_store, store_option
from katibx.cli_output import (
    as_list,
    emit,
    label_filter,
    output_option,
    rows_text,
    selector_option,
    sort_key,
    sort_option,
    table_text,
)
from katibx.client import KatibxClient, experiment_object, trial_object
from katibx.formatting import short, short_metric
from katibx.lease import controller_alive, describe_holder
from katibx.objective import Objective
from katibx.status import CHOSEN_ALGORITHM_ANNOTATION, current_condition, is_completed, timestamp
from katibx.store import ExperimentRecord, Store, resolve_store_path
from katibx.trial import TrialRecord
from katibx.trial_dir import STDOUT_LOG


# get --------------------------------------------------------------------------------------------
@click.group()
def get() -> None:
    """Show experiments, an experiment, its trials or a trial: a table, or Katib objects (-o json|yaml, several in
    a List), names (-o name) or kubectl's jsonpath (-o jsonpath=TEMPLATE)."""


def _experiment_row(st: Store, record: ExperimentRecord, wide: bool) -> list[str]:
    """An experiment's table row, from the counters and optimal trial the store keeps (no trial is loaded)."""
    summary = st.summary(record, names=False)
    counts, best = summary.counts, summary.best
    cond = current_condition(record.conditions) or {}
    status = cond.get("type", "")
    if not is_completed(record.conditions) and not controller_alive(st, record):
        status += f" (controller not alive: katibx resume {record.name})"  # killed, or stopped by Ctrl-C
    objective = Objective(record.spec)
    row = [record.namespace, record.name, status, str(counts.trials), str(counts.succeeded), str(counts.failures),
           f"{objective.metric}={short_metric(objective.raw(best))}" if best else ""]
    if wide:
        algorithm = (record.spec.get("spec") or {}).get("algorithm") or {}
        row += [counts.running and str(counts.running) or "0", algorithm.get("algorithmName") or "",
                record.backend or "", timestamp(record.created), timestamp(record.completed) if record.completed else "",
                best.name if best else ""]
    return row


EXPERIMENT_COLUMNS = ("namespace", "name", "status", "trials", "succeeded", "failed", "best")
EXPERIMENT_WIDE_COLUMNS = ("running", "algorithm", "backend", "created", "completed", "best trial")


def _experiments(st: Store, records: list[ExperimentRecord], output: str, sort_by: str | None) -> None:
    wide = output == "wide"
    table = output in ("table", "wide")
    rows = {r.id: _experiment_row(st, r, wide) for r in records} if table or sort_by else {}
    objects: dict[int, dict[str, Any]] = {}

    def as_object(record: ExperimentRecord) -> dict[str, Any]:
        if record.id not in objects:
            objects[record.id] = experiment_object(record, st.summary(record))
        return objects[record.id]

    if sort_by:
        names = EXPERIMENT_COLUMNS + (EXPERIMENT_WIDE_COLUMNS if wide else ())
        columns = {c: (lambda r, i=i: rows[r.id][i]) for i, c in enumerate(names)}
        records = sorted(records, key=sort_key(sort_by, columns, as_object))
    if not table:
        emit(as_list([as_object(r) for r in records]), output)
        return
    columns = EXPERIMENT_COLUMNS + (EXPERIMENT_WIDE_COLUMNS if wide else ())
    echo(table_text(columns, [rows[record.id] for record in records], own=columns))


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
            echo(f"No experiments in {resolve_store_path(store)}.")
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
    st = read_store(store)
    record = st.get_experiment(name, namespace)
    if output in ("table", "wide") or watch:
        _experiments(st, [record], "wide" if output == "wide" else "table", None)
    else:
        emit(experiment_object(record, st.summary(record)), output)
    if watch:
        _watch(st, record, lambda r: [_experiment_row(st, r, output == "wide")])


@get.command("trials")
@click.argument("name")
@namespace_option
@output_option("table")
@selector_option
@sort_option
@click.option("--limit", type=click.IntRange(min=0), help="Show at most this many trials (after -l and --sort-by).")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True,
              help="Skip this many trials first: with --limit, pages through a large experiment.")
@click.option("-w", "--watch", is_flag=True, help="Then print a trial's row each time it changes, until the "
                                                  "experiment ends.")
@store_option
@guard
def get_trials(name: str, namespace: str | None, output: str, selector: str | None, sort_by: str | None,
               limit: int | None, offset: int, watch: bool, store: str | None) -> None:
    """The trials of experiment NAME: status, parameters and metrics (wide: times and reasons too)."""
    _watchable(watch, output, "table")
    if watch and (limit is not None or offset):
        raise click.UsageError("-w follows every trial; use it without --limit and --offset")
    st = read_store(store)
    record = st.get_experiment(name, namespace)
    matches = label_filter(selector)
    wide = output == "wide"
    columns = _trial_columns(record, wide)
    if selector or sort_by:  # every trial is read to filter or order them
        trials = [t for t in st.trials(record.id) if matches(t.labels)]
        if sort_by:
            trials.sort(key=sort_key(sort_by, columns, lambda t: trial_object(record, t)))
        trials = trials[offset:None if limit is None else offset + limit]
    else:  # the store reads only the page
        trials = st.trials(record.id, limit=limit, offset=offset)
    if output not in ("table", "wide"):
        emit(as_list([trial_object(record, t) for t in trials]), output)
    else:
        _trials_table(record, trials, columns)
    if watch:
        _watch(st, record, lambda r: [[f(t) for f in columns.values()] for t in st.trials(r.id) if matches(t.labels)],
               per_trial=True)


def _trials_table(record: ExperimentRecord, trials: list[TrialRecord],
                  columns: dict[str, Callable[[TrialRecord], str]]) -> None:
    echo(table_text(list(columns), [[f(trial) for f in columns.values()] for trial in trials], own=TRIAL_COLUMNS))


TRIAL_COLUMNS = ("trial", "status", "reason", "started", "completed")  # the others are parameters and metrics


def _trial_columns(record: ExperimentRecord, wide: bool) -> dict[str, Callable[[TrialRecord], str]]:
    """The trials table's columns: name, status, each parameter and metric (wide: reason, start and end times)."""
    objective = Objective(record.spec)
    columns: dict[str, Callable[[TrialRecord], str]] = {"trial": lambda t: t.name, "status": lambda t: t.state.value}
    for parameter in (record.spec.get("spec") or {}).get("parameters") or []:
        columns[parameter["name"]] = lambda t, n=parameter["name"]: short(t.assignments.get(n, ""))
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
    client = KatibxClient(read_store(store), namespace=namespace)
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


def _watch(st: Store, record: ExperimentRecord, rows: Callable[[ExperimentRecord], list[list[str]]],
           *, per_trial: bool = False) -> None:
    """kubectl's -w: a row for each change (each trial's, with ``per_trial``), until the experiment has ended and
    no trial is active; a controller that is gone before then ends it with a note and exit code 1."""
    shown: dict[str, list[str]] = {}

    def changed(current: ExperimentRecord) -> list[list[str]]:
        fresh = []
        for row in rows(current):
            if shown.get(row[0] if per_trial else "") != row:
                shown[row[0] if per_trial else ""] = row
                fresh.append(row)
        return fresh

    changed(record)  # what the table showed already
    while True:
        current = st.get_experiment(record.name, record.namespace)
        active = st.trial_counts(current.id).active  # before the rows: they are then at least as new
        fresh = changed(current)
        if fresh:
            echo(rows_text(fresh))
        if is_completed(current.conditions) and not active:
            return
        if not controller_alive(st, current):
            click.echo(f"experiment {record.name}: no controller is running it (katibx resume {record.name})",
                       err=True)
            sys.exit(EXIT_FAILED)
        time.sleep(WATCH_SECONDS)


@click.command("list")
@store_option
@guard
def list_experiments(store: str | None) -> None:
    """All experiments in the store with their status and best value (as katibx get experiments)."""
    _get_experiments((), None, "table", None, store)


# describe ---------------------------------------------------------------------------------------
@click.group()
def describe() -> None:
    """Show an experiment or a trial in detail, for people (as kubectl describe)."""


def _fields(pairs: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs) + 2
    for key, value in pairs:
        echo(f"{key + ':':<{width}}{'' if value is None else value}")


def _conditions(conditions: list[dict[str, Any]]) -> None:
    echo("Conditions:")
    rows = [["Type", "Status", "Reason", "Last transition", "Message"]]
    rows += [[c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("lastTransitionTime", ""),
              c.get("message", "")] for c in conditions]
    echo("\n".join("  " + line for line in rows_text(rows).splitlines()))


@describe.command("experiment")
@click.argument("name")
@namespace_option
@store_option
@guard
def describe_experiment(name: str, namespace: str | None, store: str | None) -> None:
    """Experiment NAME: its search, budget, where it runs, conditions, trial counts and best trial."""
    st = read_store(store)
    record = st.get_experiment(name, namespace)
    spec = record.experiment.spec
    objective = Objective(record.experiment)
    algorithm = spec.algorithm
    settings = ", ".join(f"{s.name}={s.value}" for s in algorithm.algorithm_settings) if algorithm else ""
    summary = st.summary(record, names=False)
    counts, best = summary.counts, summary.best
    lease = st.lease(record.id)
    _fields([
        ("Name", record.name), ("Namespace", record.namespace), ("Created", timestamp(record.created)),
        ("Completed", timestamp(record.completed) if record.completed else "-"),
        ("Objective", " and ".join(f"{kind} {metric}" for metric, kind in spec.objective.objectives()) +
         (f" (goal {spec.objective.goal})" if spec.objective and spec.objective.goal is not None else "")),
        ("Algorithm", f"{algorithm.algorithm_name if algorithm else ''}" + (f" ({settings})" if settings else "")
         + (f", chose {chosen}" if (chosen := record.experiment.metadata.annotations.get(CHOSEN_ALGORITHM_ANNOTATION))
            else "")),
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
    client = KatibxClient(read_store(store), namespace=namespace)
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
    echo("Parameters:")
    echo(rows_text([["  " + k, short(v)] for k, v in trial.assignments.items()]))
    echo("Metrics:")
    rows = [["  Name", "Min", "Max", "Latest", "Values"]]
    for metric in trial.observation.values():
        values = [short_metric(h.value) for h in history if h.name == metric.name]
        shown = ", ".join(values[-8:]) + (f" (last 8 of {len(values)})" if len(values) > 8 else "")
        rows.append(["  " + metric.name, short_metric(metric.min), short_metric(metric.max), short_metric(metric.latest), shown])
    echo(rows_text(rows))
    _conditions(trial.conditions)
