"""The CLI's verbs over a stored experiment's other sides: logs, delete, plot, dashboard, export and store."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from katibx.cli_backends import backend_options, stored_backend_of
from katibx.cli_common import (
    EXIT_FAILED,
    EXIT_SUCCEEDED,
    err,
    fail,
    guard,
    namespace_option,
    out,
    read_store,
    store_option,
)
from katibx.client import KatibxClient
from katibx.objective import Objective
from katibx.store import ExperimentRecord, Store


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
    client = KatibxClient(read_store(store))
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
    client = KatibxClient(read_store(store), namespace=namespace)
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

    st = read_store(store)
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

    st = read_store(store)
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

    st = read_store(store)
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
