"""The CLI's verbs that run experiments or check files: run, resume, validate and render."""

from __future__ import annotations

import sys
from typing import Any, Callable, NoReturn, Sequence

import click
import yaml
from rich.markup import escape
from rich.table import Table

from katibx import cli_build
from katibx.backend import WorkspaceError
from katibx.cli_backends import (
    backend_option_values,
    backend_options,
    constructor_options,
    installed_backends,
    stored_backend_of,
)
from katibx.cli_common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_SUCCEEDED,
    err,
    fail,
    guard,
    namespace_option,
    out,
    run_options,
)
from katibx.display import ProgressDisplay
from katibx.formatting import short, short_metric
from katibx.loader import load_experiment
from katibx.objective import Objective
from katibx.preparation import DEFAULT_BACKEND, create_backend, file_problems, planned_trials, prepare
from katibx.runner import resume_experiment, run_experiment
from katibx.status import ExperimentSummary, current_condition, forget_chosen_algorithm
from katibx.store import ExperimentRecord, Store, StoreError, StoreFault
from katibx.tracking import mlflow_target
from katibx.trial import TrialRecord
from katibx.validation import ValidationError


# run / resume ------------------------------------------------------------------------------
def _drive(name: str, run: Callable[[Any], ExperimentRecord], store: Store, quiet: bool) -> NoReturn:
    display = ProgressDisplay(err)
    try:
        try:
            record = run(None if quiet else display)
            summary = store.summary(record, names=False)  # (one read: counts, the optimal trial, a Pareto front)
            if not quiet:
                display.show(record, summary)
        finally:
            display.close()
    except KeyboardInterrupt:
        err.print(f"interrupted; the running trials were stopped. Continue with: katibx resume {name}")
        sys.exit(EXIT_INTERRUPTED)
    except (StoreFault, WorkspaceError) as exc:  # mid-run: everything committed before it is kept
        if not _stored(store, name):  # it failed before the experiment was stored
            fail([str(exc)])
        fail([f"{exc}; the running trials were stopped and what was stored is kept. Once fixed, continue with: "
               f"katibx resume {name}"])
    _print_summary(record, summary)
    if not quiet:
        _print_next_steps(record, store)
    cond = current_condition(record.conditions) or {}
    sys.exit(EXIT_SUCCEEDED if cond.get("type") == "Succeeded" else EXIT_FAILED)


def _print_next_steps(record: ExperimentRecord, store: Store) -> None:
    """Where to look next, on stderr (stdout stays the result): trials, a trial's log, the store."""
    namespace = f" -n {record.namespace}" if record.namespace != "default" else ""
    err.print(escape(f"next: katibx get trials {record.name}{namespace} | katibx logs {record.name}{namespace} "
                     f"TRIAL | store {store.path}"), highlight=False)


def _stored(store: Store, name: str) -> bool:
    """Whether an experiment called ``name`` is in the store (False when the store cannot even say)."""
    try:
        return any(record.name == name for record in store.list_experiments())
    except StoreError:
        return False


def _print_summary(record: ExperimentRecord, summary: ExperimentSummary) -> None:
    """How the run ended: its condition, trial counts, best trial (and Pareto front), as the store keeps them."""
    cond = current_condition(record.conditions) or {}
    colour = "green" if cond.get("type") == "Succeeded" else "red"
    out.print(f"experiment [bold]{escape(record.name)}[/bold]: [{colour}]{cond.get('type')}[/{colour}] "
              f"({escape(str(cond.get('reason')))}) - {escape(str(cond.get('message')))}", highlight=False)
    counts = summary.counts
    out.print(f"trials: {counts.trials} total, {counts.succeeded} succeeded, {counts.failed} failed, "
              f"{counts.metrics_unavailable} metrics unavailable, {counts.killed} killed, {counts.early_stopped} early stopped",
              highlight=False)
    best = summary.best
    if best is None:
        out.print("no trial reported the objective metric")
        return
    table = Table(title=f"best trial {best.name}", title_justify="left")
    table.add_column("name")
    table.add_column("value")
    for key, value in best.assignments.items():
        table.add_row(key, short(value))
    for metric in best.observation.values():
        table.add_row(f"[bold]{metric.name}[/bold] (min / max / latest)",
                      f"{short_metric(metric.min) or '-'} / {short_metric(metric.max) or '-'} / {short_metric(metric.latest)}")
    out.print(table)
    if summary.pareto is not None:
        _print_pareto_front(record, summary.pareto)


def _print_pareto_front(record: ExperimentRecord, front: Sequence[TrialRecord]) -> None:
    """The non-dominated trials of a multi-objective experiment, one row each."""
    objective = record.experiment.spec.objective
    assert objective is not None
    table = Table(title=f"Pareto front ({len(front)} trials)", title_justify="left")
    names = [p.name for p in record.experiment.spec.parameters]
    objectives = objective.objectives()
    for column in ("trial", *names, *[f"{name} ({kind})" for name, kind in objectives]):
        table.add_column(column)
    rows = sorted((Objective(record.experiment).values(t) or [], t) for t in front)
    for values, trial in rows:
        table.add_row(trial.name, *[short(trial.assignments.get(n, "")) for n in names], *[short(v) for v in values])
    out.print(table)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-n", "--namespace", default=None,
              help="Namespace of the experiment (replaces metadata.namespace); on Kubernetes, of its trial objects.")
@click.option("--backend", default=DEFAULT_BACKEND, show_default=True,
              help=f"Worker backend plugin: {', '.join(sorted(installed_backends()))}.")
@click.option("--build", default=None, metavar="REGISTRY/REPOSITORY[:TAG]",
              help="Package FILE's folder onto the trial container's image, push it there (tag: the experiment's "
                   "name) and run the trials on it, pinned to its digest (a backend that runs images: kubernetes).")
@run_options
@backend_options("run")
@guard
def run(file: str, namespace: str | None, backend: str, build: str | None, store: str | None,
        kill_running_on_completion: bool, quiet: bool, mlflow: str | None, **options: Any) -> None:
    """Run the Experiment in FILE until it completes."""
    experiment = forget_chosen_algorithm(load_experiment(file))  # a new experiment: auto chooses afresh
    if namespace:
        experiment.metadata.namespace = namespace
    given, from_env = backend_option_values(options)
    worker = create_backend(backend, **{**constructor_options(backend, from_env, environment=True),
                                        **constructor_options(backend, given)})
    mlflow_target(mlflow, name="--mlflow")  # the flag named when mlflow is missing
    try:
        prepared = prepare(experiment, worker, mlflow)  # every problem of the file before the store is opened
    except ValidationError as exc:
        raise ValidationError(exc.errors, file) from None
    if build is not None:
        prepared = cli_build.with_built_image(prepared, build, worker, store)
    st = Store(store)
    _drive(experiment.name, lambda listener: run_experiment(
        prepared.experiment, store=st, backend=worker, prepared=prepared,
        kill_running_on_completion=kill_running_on_completion, listener=listener, mlflow=mlflow), st, quiet)


@click.command()
@click.argument("name")
@namespace_option
@click.option("--max-trial-count", type=click.IntRange(min=1), default=None, help="Raise the trial budget.")
@click.option("--backend", default=None, help=f"Worker backend plugin ({', '.join(sorted(installed_backends()))}; "
                                              "default: the one that ran the experiment).")
@run_options
@backend_options("resume")
@guard
def resume(name: str, namespace: str | None, max_trial_count: int | None, backend: str | None, store: str | None,
           kill_running_on_completion: bool, quiet: bool, mlflow: str | None, **options: Any) -> None:
    """Continue experiment NAME after an interruption, or with a larger --max-trial-count."""
    mlflow_target(mlflow, name="--mlflow")
    st = Store(store, create=False)
    worker = stored_backend_of(st.get_experiment(name, namespace), backend, options)
    _drive(name, lambda listener: resume_experiment(
        name, store=st, namespace=namespace, backend=worker, max_trial_count=max_trial_count,
        kill_running_on_completion=kill_running_on_completion, listener=listener, mlflow=mlflow), st, quiet)


# validate ---------------------------------------------------------------------------------
@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--backend", default=DEFAULT_BACKEND, show_default=True, help="Also check what this backend can run.")
def validate(files: tuple[str, ...], backend: str) -> None:
    """Check Experiment FILES; print every problem, one line each. Exit 2 if any file is invalid."""
    try:
        worker = create_backend(backend)
    except ValidationError as exc:
        fail(exc.errors)
    bad = 0
    for file in files:
        errors = file_problems(file, worker)
        if errors:
            bad += 1
            for line in errors:
                err.print(f"[red]invalid[/red] {escape(f'{file}: {line}')}", highlight=False, soft_wrap=True)
        else:
            out.print(f"[green]valid[/green]   {escape(str(file))}", highlight=False)
    sys.exit(EXIT_INVALID if bad else EXIT_SUCCEEDED)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-c", "--count", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many trials' manifests to print.")
@click.option("-n", "--namespace", default=None, help="Namespace of the objects (default: the experiment's).")
@click.option("--backend", default="kubernetes", show_default=True, help="The backend whose objects to print.")
@guard
def render(file: str, count: int, namespace: str | None, backend: str) -> None:
    """Print the worker manifests COUNT trials of FILE would create on Kubernetes (YAML documents, no cluster)."""
    experiment = load_experiment(file)
    worker = create_backend(backend)
    try:
        prepared = prepare(experiment, mlflow=False)  # (it runs nothing)
        objects = worker.render(experiment, planned_trials(prepared, count), namespace)
    except ValidationError as exc:
        raise ValidationError(exc.errors, file) from None
    click.echo(yaml.safe_dump_all(objects, sort_keys=False), nl=False)
