"""``katibx``: kubectl-like verbs over experiments. Exit codes: 0 Succeeded, 1 Failed, 2 invalid input or usage."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from typing import Any, Callable, NoReturn

import click
import yaml
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from katibx import plugins
from katibx.backend import Backend, BackendUnavailable, ClusterError
from katibx.client import KatibxClient, trial_object
from katibx.lease import controller_alive, stop_for_deletion
from katibx.loader import load_experiment
from katibx.metric_parsers import MetricsCollectorUnavailable
from katibx.objective import Objective
from katibx.preparation import DEFAULT_BACKEND, backend_class, create_backend, file_problems, planned_trials, prepare
from katibx.runner import resume_experiment, run_experiment, stored_backend
from katibx.status import TrialCounts, current_condition, is_completed, optimal_trial, pareto_front
from katibx.store import ExperimentRecord, Store, StoreError, StoreFault, resolve_store_path
from katibx.trial import TrialRecord
from katibx.validation import ValidationError

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130

log = logging.getLogger(__name__)

class _PipeSafe:
    """The CLI's stdout: once its reader has gone (``katibx run exp.yaml | head -1``) the rest of the output is
    dropped, so the command still ends with its own exit code (0 for a Succeeded experiment), not a traceback."""

    @property
    def _stream(self) -> Any:
        return sys.stdout  # looked up at each write: a test runner may have put its own in place

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)  # also for the interpreter's last flush at exit
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# Piped (not a terminal), nothing is cut to a screen's width: names stay whole for scripts and `katibx logs`.
out = Console(file=_PipeSafe(), soft_wrap=True, width=None if sys.stdout.isatty() else 100_000)
err = Console(stderr=True, soft_wrap=True)

store_option = click.option(
    "--store", envvar="KATIBX_STORE", default=None, metavar="URL",
    help="SQLite store: a path or sqlite:///path (default ./.katibx/katibx.db, env KATIBX_STORE).",
)
namespace_option = click.option("-n", "--namespace", default=None, help="Namespace of the experiment.")


def run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by ``run`` and ``resume``: store, completion policy, output."""
    for option in reversed([
        store_option,
        click.option("--kill-running-on-completion", is_flag=True,
                     help="Stop trials still running when the experiment completes."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar."),
    ]):
        fn = option(fn)
    return fn


@functools.lru_cache(maxsize=1)
def _installed_backends() -> dict[str, type[Backend]]:
    """Every installed worker-backend plugin that loads, by name (their modules import no cluster client until used).

    A plugin that fails to load is left out here, so it cannot break the other commands; using it says why."""
    found: dict[str, type[Backend]] = {}
    for name in sorted(plugins.backend_names()):
        try:
            found[name] = backend_class(name)
        except Exception as exc:  # noqa: BLE001 - a third-party plugin may fail in any way
            log.warning("backend plugin %r cannot be loaded: %s", name, exc)
    return found


COMMANDS_WITH_BACKEND = frozenset({"run", "resume"})  # the commands that take --backend


def backend_options(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options every installed backend declares for ``command``, collected into ``backend_options``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        declared = {o.flag: o for b in _installed_backends().values() for o in b.options if command in o.commands}
        for option in reversed(declared.values()):  # click lists the last decorator first
            text = option.help
            if command not in COMMANDS_WITH_BACKEND:  # the experiment's stored backend decides: no --backend here
                text = re.sub(r"^With --backend (\S+):", r"For an experiment run on the \1 backend:", text)
            fn = click.option(option.flag, envvar=option.envvar, default=None, metavar=option.metavar,
                              help=text)(fn)
        return fn

    return decorate


def _constructor_options(name: str, given: dict[str, Any], *, environment: bool = False) -> dict[str, Any]:
    """Constructor keywords for backend ``name`` from the CLI options given (other backends' options are ignored);
    ``environment``: they came from environment variables, which an error then names instead of the flag."""
    keywords: dict[str, Any] = {}
    if not given:  # nothing to convert: the backend need not even be installed (its stored experiment says why)
        return keywords
    for option in backend_class(name).options:
        text = given.get(option.param)
        if text is None:
            continue
        try:
            keywords.update(option.keywords(text))
        except ValueError as exc:
            where = option.envvar if environment and option.envvar else option.flag
            raise ValidationError([f"{where}: {exc}"]) from None
    return keywords


def _backend_option_values(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pop the backend options click collected out of a command's keyword arguments: (given as flags, taken from
    environment variables such as RAY_ADDRESS or KUBECONFIG)."""
    context = click.get_current_context()
    flags = {o.param for b in _installed_backends().values() for o in b.options}
    given: dict[str, Any] = {}
    from_env: dict[str, Any] = {}
    for key in [k for k in kwargs if k in flags]:
        value = kwargs.pop(key)
        if value is not None:
            source = context.get_parameter_source(key)
            (from_env if source is ParameterSource.ENVIRONMENT else given)[key] = value
    return given, from_env


def _fail(lines: list[str], source: str | None = None, code: int = EXIT_INVALID) -> NoReturn:
    prefix = f"{source}: " if source else ""
    for line in lines:
        err.print(f"[red]error:[/red] {escape(prefix + line)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user mistakes raised by the library into one-line messages and exit code 2."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValidationError as exc:
            _fail(exc.errors, exc.source)
        except (StoreError, ClusterError, MetricsCollectorUnavailable, BackendUnavailable) as exc:
            _fail([str(exc)])

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="katibx")
def main() -> None:
    """Run Kubeflow Katib experiments on this machine, a Ray cluster or Kubernetes."""


# run / resume ------------------------------------------------------------------------------
class _ProgressListener:
    """Live progress bar: trial counts and the best objective value so far."""

    # The display refreshes 10 times a second; summing thousands of trials on every change would cost more than
    # running them, so changes between two refreshes are folded into the next one.
    REFRESH_SECONDS = 0.1

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None
        self.shown_at = -math.inf

    def __call__(self, record: ExperimentRecord, trials: list[TrialRecord], final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.shown_at < self.REFRESH_SECONDS:
            return
        self.shown_at = now
        spec = record.experiment.spec
        counts = TrialCounts.of(trials)
        if self.task is None:  # started on the first event, so an early error prints no empty bar
            self.progress.start()
            self.task = self.progress.add_task(record.name, total=spec.max_trial_count)
        best = optimal_trial(record.experiment, trials)
        objective = Objective(record.experiment)
        best_text = f"{objective.metric}={_short(objective.raw(best))}" if best is not None else "-"
        desc = (f"{record.name}  running {counts.running}  succeeded {counts.succeeded}  "
                f"failed {counts.failures}  killed {counts.killed + counts.early_stopped}  best {best_text}")
        self.progress.update(self.task, completed=counts.completed, description=desc)


def _drive(name: str, run: Callable[[Any], ExperimentRecord], store: Store, quiet: bool) -> NoReturn:
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, transient=False, disable=quiet)
    listener = _ProgressListener(progress)
    try:
        try:
            record = run(listener)
            trials = store.trials(record.id)
            listener(record, trials, final=True)
        finally:
            if listener.task is not None:
                progress.stop()
    except KeyboardInterrupt:
        err.print(f"interrupted; the running trials were stopped. Continue with: katibx resume {name}")
        sys.exit(EXIT_INTERRUPTED)
    except StoreFault as exc:  # mid-run: everything committed before it is kept
        if not _stored(store, name):  # it failed before the experiment was stored
            _fail([str(exc)])
        _fail([f"{exc}; the running trials were stopped and what was stored is kept. Once fixed, continue with: "
               f"katibx resume {name}"])
    _print_summary(record, trials)
    if not quiet:
        _print_next_steps(record, store)
    cond = current_condition(record.conditions) or {}
    sys.exit(EXIT_SUCCEEDED if cond.get("type") == "Succeeded" else EXIT_FAILED)


def _print_next_steps(record: ExperimentRecord, store: Store) -> None:
    """Where to look next, on stderr (stdout stays the result): trials, a trial's log, the store."""
    namespace = f" -n {record.namespace}" if record.namespace != "default" else ""
    err.print(escape(f"next: katibx get trials {record.name}{namespace} | katibx logs {record.name}{namespace} "
                     f"TRIAL | store {store.path}"), highlight=False)


def _short(value: Any) -> str:
    """A value as tables show it: numbers to 6 significant digits (0.276849, not 0.27684889992771194); anything else
    as it is. -o json|yaml keeps full precision."""
    if value is None:
        return ""
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    return text if text.lstrip("-").isdigit() else f"{number:.6g}"


def _stored(store: Store, name: str) -> bool:
    """Whether an experiment called ``name`` is in the store (False when the store cannot even say)."""
    try:
        return any(record.name == name for record in store.list_experiments())
    except StoreError:
        return False


def _print_summary(record: ExperimentRecord, trials: list[TrialRecord]) -> None:
    cond = current_condition(record.conditions) or {}
    colour = "green" if cond.get("type") == "Succeeded" else "red"
    out.print(f"experiment [bold]{escape(record.name)}[/bold]: [{colour}]{cond.get('type')}[/{colour}] "
              f"({escape(str(cond.get('reason')))}) - {escape(str(cond.get('message')))}", highlight=False)
    counts = TrialCounts.of(trials)
    out.print(f"trials: {counts.trials} total, {counts.succeeded} succeeded, {counts.failed} failed, "
              f"{counts.metrics_unavailable} metrics unavailable, {counts.killed} killed, {counts.early_stopped} early stopped",
              highlight=False)
    best = optimal_trial(record.experiment, trials)
    if best is None:
        out.print("no trial reported the objective metric")
        return
    table = Table(title=f"best trial {best.name}", title_justify="left")
    table.add_column("name")
    table.add_column("value")
    for key, value in best.assignments.items():
        table.add_row(key, _short(value))
    for metric in best.observation.values():
        table.add_row(f"[bold]{metric.name}[/bold] (min / max / latest)",
                      f"{_short(metric.min) or '-'} / {_short(metric.max) or '-'} / {_short(metric.latest)}")
    out.print(table)
    objective = record.experiment.spec.objective
    if objective is not None and objective.additional_objectives:
        _print_pareto_front(record, trials)


def _print_pareto_front(record: ExperimentRecord, trials: list[TrialRecord]) -> None:
    """The non-dominated trials of a multi-objective experiment, one row each."""
    objective = record.experiment.spec.objective
    assert objective is not None
    front = pareto_front(record.experiment, trials)
    table = Table(title=f"Pareto front ({len(front)} trials)", title_justify="left")
    names = [p.name for p in record.experiment.spec.parameters]
    objectives = objective.objectives()
    for column in ("trial", *names, *[f"{name} ({kind})" for name, kind in objectives]):
        table.add_column(column)
    rows = sorted((Objective(record.experiment).values(t) or [], t) for t in front)
    for values, trial in rows:
        table.add_row(trial.name, *[_short(trial.assignments.get(n, "")) for n in names], *[_short(v) for v in values])
    out.print(table)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-n", "--namespace", default=None,
              help="Namespace of the experiment (replaces metadata.namespace); on Kubernetes, of its trial objects.")
@click.option("--backend", default=DEFAULT_BACKEND, show_default=True,
              help=f"Worker backend plugin: {', '.join(sorted(_installed_backends()))}.")
@run_options
@backend_options("run")
@_guard
def run(file: str, namespace: str | None, backend: str, store: str | None, kill_running_on_completion: bool,
        quiet: bool, **options: Any) -> None:
    """Run the Experiment in FILE until it completes."""
    experiment = load_experiment(file)
    if namespace:
        experiment.metadata.namespace = namespace
    given, from_env = _backend_option_values(options)
    worker = create_backend(backend, **{**_constructor_options(backend, from_env, environment=True),
                                        **_constructor_options(backend, given)})
    try:
        prepared = prepare(experiment, worker)  # every problem of the file before the store is opened
    except ValidationError as exc:
        raise ValidationError(exc.errors, file) from None
    st = Store(store)
    _drive(experiment.name, lambda listener: run_experiment(
        prepared.experiment, store=st, backend=worker, prepared=prepared,
        kill_running_on_completion=kill_running_on_completion, listener=listener), st, quiet)


@main.command()
@click.argument("name")
@namespace_option
@click.option("--max-trial-count", type=click.IntRange(min=1), default=None, help="Raise the trial budget.")
@click.option("--backend", default=None, help=f"Worker backend plugin ({', '.join(sorted(_installed_backends()))}; "
                                              "default: the one that ran the experiment).")
@run_options
@backend_options("resume")
@_guard
def resume(name: str, namespace: str | None, max_trial_count: int | None, backend: str | None, store: str | None,
           kill_running_on_completion: bool, quiet: bool, **options: Any) -> None:
    """Continue experiment NAME after an interruption, or with a larger --max-trial-count."""
    st = Store(store, create=False)
    worker = _stored_backend(st.get_experiment(name, namespace), backend, options)
    _drive(name, lambda listener: resume_experiment(
        name, store=st, namespace=namespace, backend=worker, max_trial_count=max_trial_count,
        kill_running_on_completion=kill_running_on_completion, listener=listener), st, quiet)


def _stored_backend(record: ExperimentRecord, backend: str | None, options: dict[str, Any]) -> Backend:
    """The backend that ran ``record`` with its stored options: flags given here replace them, environment
    variables only fill in what the store does not say (a shell's RAY_ADDRESS must not move a resumed run)."""
    name = backend or record.backend or DEFAULT_BACKEND
    given, from_env = _backend_option_values(options)
    return stored_backend(record, backend, given=_constructor_options(name, given),
                          fallback=_constructor_options(name, from_env, environment=True))


# validate ---------------------------------------------------------------------------------
@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--backend", default=DEFAULT_BACKEND, show_default=True, help="Also check what this backend can run.")
def validate(files: tuple[str, ...], backend: str) -> None:
    """Check Experiment FILES; print every problem, one line each. Exit 2 if any file is invalid."""
    try:
        worker = create_backend(backend)
    except ValidationError as exc:
        _fail(exc.errors)
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


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-c", "--count", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many trials' manifests to print.")
@click.option("-n", "--namespace", default=None, help="Namespace of the objects (default: the experiment's).")
@click.option("--backend", default="kubernetes", show_default=True, help="The backend whose objects to print.")
@_guard
def render(file: str, count: int, namespace: str | None, backend: str) -> None:
    """Print the worker manifests COUNT trials of FILE would create on Kubernetes (YAML documents, no cluster)."""
    experiment = load_experiment(file)
    worker = create_backend(backend)
    try:
        prepared = prepare(experiment)
        objects = worker.render(experiment, planned_trials(prepared, count), namespace)
    except ValidationError as exc:
        raise ValidationError(exc.errors, file) from None
    click.echo(yaml.safe_dump_all(objects, sort_keys=False), nl=False)


# get / list / delete / logs ---------------------------------------------------------------
def _emit_list(items: list[dict[str, Any]], output: str) -> None:
    """Several objects as kubectl prints them: a ``List`` with ``items``."""
    _emit({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}, output)


def _emit(data: Any, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)


@main.group()
def get() -> None:
    """Show experiments, an experiment or its trials (-o json|yaml: Katib objects; several in a List)."""


@get.command("experiment")
@click.argument("name")
@namespace_option
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@store_option
@_guard
def get_experiment(name: str, namespace: str | None, output: str, store: str | None) -> None:
    """Experiment NAME as a Katib object: spec, conditions, counters, currentOptimalTrial."""
    _emit(KatibxClient(Store(store, create=False)).get_experiment(name, namespace), output)


@get.command("trials")
@click.argument("name")
@namespace_option
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
@store_option
@_guard
def get_trials(name: str, namespace: str | None, output: str, store: str | None) -> None:
    """The trials of experiment NAME."""
    st = Store(store, create=False)
    record = st.get_experiment(name, namespace)
    trials = st.trials(record.id)
    if output != "table":
        _emit_list([trial_object(record, t) for t in trials], output)
        return
    table = Table()
    metrics = _metric_names(record)
    objective = Objective(record.experiment)
    table.add_column("trial", no_wrap=True, overflow="fold")  # never cut: `katibx logs` needs it whole
    for column in ("status", *[p.name for p in record.experiment.spec.parameters], *metrics):
        table.add_column(column)
    for t in trials:
        values = [_short(t.assignments.get(p.name, "")) for p in record.experiment.spec.parameters]
        table.add_row(t.name, t.state.value, *values,
                      *[_short(objective.raw(t, m)) for m in metrics])
    out.print(table)


def _metric_names(record: ExperimentRecord) -> list[str]:
    objective = record.experiment.spec.objective
    return [objective.objective_metric_name or "", *objective.additional_metric_names] if objective else []


@get.command("experiments")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
@store_option
@_guard
def get_experiments(output: str, store: str | None) -> None:
    """All experiments in the store: a table with their status and best value, or Katib objects (a List)."""
    _list_experiments(store, output)


@main.command("list")
@store_option
@_guard
def list_experiments(store: str | None) -> None:
    """All experiments in the store with their status and best value (as katibx get experiments)."""
    _list_experiments(store, "table")


def _list_experiments(store: str | None, output: str) -> None:
    if not resolve_store_path(store).exists():  # nothing run yet: nothing to list, and no empty store made
        if output == "table":
            out.print(escape(f"No experiments in {resolve_store_path(store)}."), highlight=False)
        else:
            _emit_list([], output)
        return
    st = Store(store)
    if output != "table":
        _emit_list(KatibxClient(st).list_experiments(), output)
        return
    table = Table()
    for column in ("namespace", "name", "status", "trials", "succeeded", "failed", "best"):
        table.add_column(column, **({"no_wrap": True, "overflow": "fold"} if column == "name" else {}))
    for record in st.list_experiments():
        trials = st.trials(record.id)
        counts = TrialCounts.of(trials)
        cond = current_condition(record.conditions) or {}
        status = cond.get("type", "")
        if not is_completed(record.conditions) and not controller_alive(st, record):
            status += f" (controller not alive: katibx resume {record.name})"  # killed, or stopped by Ctrl-C
        best = optimal_trial(record.experiment, trials)
        objective = Objective(record.experiment)
        table.add_row(record.namespace, record.name, status, str(counts.trials), str(counts.succeeded),
                      str(counts.failures), f"{objective.metric}={_short(objective.raw(best))}" if best else "")
    out.print(table)


@main.command()
@click.argument("name")
@namespace_option
@store_option
@backend_options("delete")
@click.option("--force", is_flag=True,
              help="Stop the controller running it first; delete it from the store even when its cluster cannot be "
                   "reached (its objects are left there).")
@_guard
def delete(name: str, namespace: str | None, store: str | None, force: bool, **options: Any) -> None:
    """Delete experiment NAME with its trials and trial directories (on a cluster, the objects its trials created)."""
    client = KatibxClient(Store(store, create=False))
    record = client.store.get_experiment(name, namespace)
    stop_for_deletion(client.store, record, force=force)  # its controller would go on creating trials
    handles = [h for h in map(client.store.trial_handle, client.store.trials(record.id)) if h is not None]
    cleaned = _delete_outside_store(record, handles, force, options) if handles else ""
    client.delete_experiment(name, namespace, force=force)
    out.print(escape(f"experiment {name} deleted" + (f"; {cleaned}" if cleaned else "")), highlight=False)


def _delete_outside_store(record: ExperimentRecord, handles: list[dict[str, Any]], force: bool,
                          options: dict[str, Any]) -> str:
    """What the experiment's backend created outside the store (cluster objects), deleted; with ``force`` a backend
    that cannot be created or reached only gets a warning, so the store entry can always be deleted."""
    backend = record.backend or DEFAULT_BACKEND
    try:
        worker = _stored_backend(record, None, options)
        try:
            return worker.delete_experiment(record.experiment, handles)
        finally:
            worker.close()
    except (ClusterError, ValidationError) as exc:
        problem = "; ".join(exc.errors) if isinstance(exc, ValidationError) else str(exc)
        if not force:
            _fail([f"{problem}; experiment {record.name} is kept (katibx delete {record.name} --force deletes it from "
                   f"the store anyway, leaving what its trials created on the {backend} backend)"])
        err.print(f"[yellow]warning:[/yellow] {escape(problem)}; what its trials created on the {backend} backend "
                  "is left", highlight=False)
        return ""


@main.group("store")
def store_group() -> None:
    """Inspect the store itself."""


@store_group.command("check")
@store_option
@_guard
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


@main.command()
@click.argument("name")
@click.argument("trial")
@namespace_option
@store_option
@backend_options("logs")
@_guard
def logs(name: str, trial: str, namespace: str | None, store: str | None, **options: Any) -> None:
    """Output (stdout and stderr) of TRIAL of experiment NAME; a running cluster trial's from where it runs."""
    client = KatibxClient(Store(store, create=False))
    path = client.trial_log_path(name, trial, namespace)
    if path.exists() and path.stat().st_size:  # streamed: a trial's log can be larger than memory
        with path.open("rb") as log_file:
            try:
                shutil.copyfileobj(log_file, sys.stdout.buffer)
                sys.stdout.flush()
            except BrokenPipeError:  # katibx logs ... | head
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    record = client.store.get_experiment(name, namespace)
    found = [t for t in client.store.trials(record.id) if t.name == trial]
    handle = client.store.trial_handle(found[0]) if found else None
    if handle:  # nothing here yet: a cluster trial's log is where it runs
        worker = _stored_backend(record, None, options)
        try:
            click.echo(worker.trial_logs(handle), nl=False)
        finally:
            worker.close()


if __name__ == "__main__":  # pragma: no cover
    main()
