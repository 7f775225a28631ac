"""``katibx``: kubectl-like verbs over experiments. Exit codes: 0 Succeeded, 1 Failed, 2 invalid input or usage."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, Callable, NoReturn

import click
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from katibx.client import KatibxClient, trial_object
from katibx.collectors import MetricsCollectorUnavailable
from katibx.loader import load_experiment, load_experiments
from katibx.runner import DEFAULT_BACKEND, check_experiment, create_backend, resume_experiment, run_experiment
from katibx.status import TrialCounts, current_condition, objective_strategy, objective_values, optimal_trial, pareto_front
from katibx.store import ExperimentRecord, Store, StoreError
from katibx.trial import TrialRecord
from katibx.validation import ValidationError

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

store_option = click.option(
    "--store", envvar="KATIBX_STORE", default=None, metavar="URL",
    help="SQLite store: a path or sqlite:///path (default ./.katibx/katibx.db, env KATIBX_STORE).",
)
namespace_option = click.option("-n", "--namespace", default=None, help="Namespace of the experiment.")
ray_address_option = click.option(
    "--ray-address", envvar="RAY_ADDRESS", default=None, metavar="ADDR",
    help="With --backend ray: the cluster to connect to (env RAY_ADDRESS); default: start a local one.",
)
kubeconfig_option = click.option(
    "--kubeconfig", envvar="KUBECONFIG", default=None, type=click.Path(dir_okay=False), metavar="FILE",
    help="With --backend kubernetes: the kubeconfig file (env KUBECONFIG; default ~/.kube/config or in-cluster).",
)
context_option = click.option("--context", default=None, help="With --backend kubernetes: the kubeconfig context.")


def run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by ``run`` and ``resume``: backend, store, completion policy, output."""
    for option in reversed([
        click.option("--backend", default=DEFAULT_BACKEND, show_default=True, help="Worker backend plugin."),
        store_option,
        click.option("--kill-running-on-completion", is_flag=True,
                     help="Stop trials still running when the experiment completes."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar."),
        ray_address_option,
        kubeconfig_option,
        context_option,
        click.option("--push-address", default=None, metavar="HOST:PORT",
                     help="With --backend kubernetes: where the push-metrics endpoint listens (default 127.0.0.1, "
                          "any free port)."),
        click.option("--push-url", default=None, metavar="URL",
                     help="With --backend kubernetes: the push endpoint's URL as pods reach it (default: from "
                          "--push-address)."),
    ]):
        fn = option(fn)
    return fn


def _backend(name: str, ray_address: str | None = None, kubeconfig: str | None = None, context: str | None = None,
             push_address: str | None = None, push_url: str | None = None) -> Any:
    """The worker backend plugin, with --ray-address passed to the ray backend and the cluster options to kubernetes."""
    if ray_address and name == "ray":
        return create_backend(name, address=ray_address)
    if name == "kubernetes":
        options: dict[str, Any] = {"kubeconfig": kubeconfig, "context": context, "push_url": push_url}
        if push_address:
            host, _, port = push_address.rpartition(":")
            if not host or not port.isdigit() or int(port) > 65535:
                raise ValidationError([f"--push-address: expected HOST:PORT, got {push_address!r}"])
            options.update(push_host=host.strip("[]"), push_port=int(port))
        return create_backend(name, **options)
    return create_backend(name)


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
        except (StoreError, MetricsCollectorUnavailable) as exc:
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
        metric = spec.objective.objective_metric_name if spec.objective else ""
        best_text = "-"
        if best is not None and metric:
            best_text = f"{metric}={best.metric(metric, objective_strategy(record.experiment, metric))}"
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
    _print_summary(record, trials)
    cond = current_condition(record.conditions) or {}
    sys.exit(EXIT_SUCCEEDED if cond.get("type") == "Succeeded" else EXIT_FAILED)


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
        table.add_row(key, str(value))
    for metric in best.observation.values():
        table.add_row(f"[bold]{metric.name}[/bold] (min / max / latest)",
                      f"{metric.min or '-'} / {metric.max or '-'} / {metric.latest}")
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
    rows = sorted((objective_values(record.experiment, t) or [], t) for t in front)
    for values, trial in rows:
        table.add_row(trial.name, *[str(trial.assignments.get(n, "")) for n in names], *[f"{v:g}" for v in values])
    out.print(table)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-n", "--namespace", default=None,
              help="Namespace of the experiment (replaces metadata.namespace); on Kubernetes, of its trial objects.")
@run_options
@_guard
def run(file: str, namespace: str | None, backend: str, store: str | None, kill_running_on_completion: bool,
        quiet: bool, ray_address: str | None, kubeconfig: str | None, context: str | None, push_address: str | None,
        push_url: str | None) -> None:
    """Run the Experiment in FILE until it completes."""
    experiment = load_experiment(file)
    if namespace:
        experiment.metadata.namespace = namespace
    worker = _backend(backend, ray_address, kubeconfig, context, push_address, push_url)
    errors = check_experiment(experiment, worker)
    if errors:
        raise ValidationError(errors, file)
    st = Store(store)
    _drive(experiment.name, lambda listener: run_experiment(
        experiment, store=st, backend=worker,
        kill_running_on_completion=kill_running_on_completion, listener=listener), st, quiet)


@main.command()
@click.argument("name")
@namespace_option
@click.option("--max-trial-count", type=click.IntRange(min=1), default=None, help="Raise the trial budget.")
@run_options
@_guard
def resume(name: str, namespace: str | None, max_trial_count: int | None, backend: str, store: str | None,
           kill_running_on_completion: bool, quiet: bool, ray_address: str | None, kubeconfig: str | None,
           context: str | None, push_address: str | None, push_url: str | None) -> None:
    """Continue experiment NAME after an interruption, or with a larger --max-trial-count."""
    worker = _backend(backend, ray_address, kubeconfig, context, push_address, push_url)
    st = Store(store)
    _drive(name, lambda listener: resume_experiment(
        name, store=st, namespace=namespace, backend=worker, max_trial_count=max_trial_count,
        kill_running_on_completion=kill_running_on_completion, listener=listener), st, quiet)


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
        try:
            errors = [e for exp in load_experiments(file) for e in check_experiment(exp, worker)]
        except ValidationError as exc:
            errors = exc.errors
        if errors:
            bad += 1
            for line in errors:
                err.print(f"[red]invalid[/red] {escape(f'{file}: {line}')}", highlight=False, soft_wrap=True)
        else:
            out.print(f"[green]valid[/green]   {escape(str(file))}", highlight=False)
    sys.exit(EXIT_INVALID if bad else EXIT_SUCCEEDED)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-n", "--count", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many trials' manifests to print.")
@click.option("--namespace", default=None, help="Namespace of the objects (default: the experiment's).")
@_guard
def render(file: str, count: int, namespace: str | None) -> None:
    """Print the worker manifests COUNT trials of FILE would create on Kubernetes (YAML documents, no cluster)."""
    from katibx.workers._manifests import render as render_workers

    experiment = load_experiment(file)
    try:
        workers = render_workers(experiment, count, namespace)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            raise ValidationError(exc.errors, file) from None
        raise ValidationError([f"spec.trialTemplate.trialSpec: {exc}"], file) from None
    click.echo(yaml.safe_dump_all(workers, sort_keys=False), nl=False)


# get / list / delete / logs ---------------------------------------------------------------
def _emit(data: Any, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)


@main.group()
def get() -> None:
    """Show an experiment or its trials."""


@get.command("experiment")
@click.argument("name")
@namespace_option
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@store_option
@_guard
def get_experiment(name: str, namespace: str | None, output: str, store: str | None) -> None:
    """Experiment NAME as a Katib object: spec, conditions, counters, currentOptimalTrial."""
    _emit(KatibxClient(store).get_experiment(name, namespace), output)


@get.command("trials")
@click.argument("name")
@namespace_option
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
@store_option
@_guard
def get_trials(name: str, namespace: str | None, output: str, store: str | None) -> None:
    """The trials of experiment NAME."""
    st = Store(store)
    record = st.get_experiment(name, namespace)
    trials = st.trials(record.id)
    if output != "table":
        _emit([trial_object(record, t) for t in trials], output)
        return
    table = Table()
    metrics = _metric_names(record)
    for column in ("trial", "status", *[p.name for p in record.experiment.spec.parameters], *metrics):
        table.add_column(column)
    for t in trials:
        values = [str(t.assignments.get(p.name, "")) for p in record.experiment.spec.parameters]
        table.add_row(t.name, t.state.value, *values,
                      *[t.metric(m, objective_strategy(record.experiment, m)) or "" for m in metrics])
    out.print(table)


def _metric_names(record: ExperimentRecord) -> list[str]:
    objective = record.experiment.spec.objective
    return [objective.objective_metric_name or "", *objective.additional_metric_names] if objective else []


@main.command("list")
@store_option
@_guard
def list_experiments(store: str | None) -> None:
    """All experiments in the store with their status and best value."""
    st = Store(store)
    table = Table()
    for column in ("namespace", "name", "status", "trials", "succeeded", "failed", "best"):
        table.add_column(column)
    for record in st.list_experiments():
        trials = st.trials(record.id)
        counts = TrialCounts.of(trials)
        cond = current_condition(record.conditions) or {}
        best = optimal_trial(record.experiment, trials)
        metric = _metric_names(record)[0]
        best_text = best.metric(metric, objective_strategy(record.experiment, metric)) if best else ""
        table.add_row(record.namespace, record.name, cond.get("type", ""), str(counts.trials), str(counts.succeeded),
                      str(counts.failures), f"{metric}={best_text}" if best else "")
    out.print(table)


# Retries of the one-shot API calls of `delete` before the cluster counts as unreachable.
DELETE_RETRY_SECONDS = 5.0


def _is_kubernetes_handle(handle: dict[str, Any] | None) -> bool:
    """Whether a stored trial handle is the kubernetes backend's (older handles carry no backend name)."""
    if not handle:
        return False
    backend = handle.get("backend")
    return backend == "kubernetes" or (backend is None and bool(handle.get("kind")) and "uid" in handle)


@main.command()
@click.argument("name")
@namespace_option
@store_option
@kubeconfig_option
@context_option
@click.option("--force", is_flag=True,
              help="Delete it from the store even when its Kubernetes cluster cannot be reached.")
@_guard
def delete(name: str, namespace: str | None, store: str | None, kubeconfig: str | None, context: str | None,
           force: bool) -> None:
    """Delete experiment NAME with its trials and trial directories (on Kubernetes, its trial objects too)."""
    client = KatibxClient(store)
    record = client.store.get_experiment(name, namespace)
    handles = [h for h in map(client.store.trial_handle, client.store.trials(record.id))
               if h is not None and _is_kubernetes_handle(h)]
    cleaned = ""
    if handles:
        namespaces = sorted({str(h.get("namespace") or "default") for h in handles})
        worker: Any = create_backend("kubernetes", kubeconfig=kubeconfig, context=context,
                                     retry_seconds=DELETE_RETRY_SECONDS)
        try:
            found = worker.delete_experiment(record.name, namespaces)
        except StoreError as exc:  # the cluster cannot be reached or refused
            if not force:
                _fail([f"{exc}; experiment {name} is kept (katibx delete {name} --force deletes it from the store "
                       "anyway, leaving its Kubernetes objects)"])
            err.print(f"[yellow]warning:[/yellow] {escape(str(exc))}; its Kubernetes objects are left", highlight=False)
        else:
            if found:
                cleaned = f"; its Kubernetes objects in namespace {', '.join(found)} are being garbage-collected"
        finally:
            worker.close()
    client.delete_experiment(name, namespace)
    out.print(escape(f"experiment {name} deleted{cleaned}"), highlight=False)


@main.command()
@click.argument("name")
@click.argument("trial")
@namespace_option
@store_option
@kubeconfig_option
@context_option
@_guard
def logs(name: str, trial: str, namespace: str | None, store: str | None, kubeconfig: str | None,
         context: str | None) -> None:
    """Output (stdout and stderr) of TRIAL of experiment NAME; a running Kubernetes trial's from its pods."""
    client = KatibxClient(store)
    text = client.get_trial_logs(name, trial, namespace)
    if not text:
        record = client.store.get_experiment(name, namespace)
        found = [t for t in client.store.trials(record.id) if t.name == trial]
        handle = client.store.trial_handle(found[0]) if found else None
        if _is_kubernetes_handle(handle):
            text = _backend("kubernetes", kubeconfig=kubeconfig, context=context).pod_logs(handle)
    click.echo(text, nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
