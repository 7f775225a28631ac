"""What the CLI's commands share: its consoles, common options, backend options and the one-line error guard."""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any, Callable, NoReturn

import click
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape

from katibx import plugins
from katibx.backend import Backend, BackendUnavailable, ClusterError
from katibx.metric_parsers import MetricsCollectorUnavailable
from katibx.preparation import DEFAULT_BACKEND, backend_class
from katibx.runner import stored_backend
from katibx.store import ExperimentRecord, StoreError
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

class _WarningsToStderr(logging.Handler):
    """The library's warnings, as the CLI shows them: one ``warning: ...`` line on stderr each."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"[yellow]warning:[/yellow] {escape(self.format(record))}", highlight=False, soft_wrap=True)


def show_warnings() -> None:
    """Show katibx's logged warnings on stderr (once per process, however many commands run in it)."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its lines about creating its tables (if it runs)
    logger = logging.getLogger("katibx")
    if not any(isinstance(h, _WarningsToStderr) for h in logger.handlers):
        handler = _WarningsToStderr(logging.WARNING)
        logger.addHandler(handler)


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
        click.option("--mlflow", "mlflow", is_flag=False, flag_value="", default=None, metavar="[URI]",
                     help="Log the experiment into MLflow as it runs: at URI, or without one at MLFLOW_TRACKING_URI "
                          "or MLflow's default (needs mlflow: pip install 'katibx[mlflow]')."),
    ]):
        fn = option(fn)
    return fn


@functools.lru_cache(maxsize=1)
def installed_backends() -> dict[str, type[Backend]]:
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
        declared = {o.flag: (name, o) for name, b in installed_backends().items() for o in b.options
                    if command in o.commands}
        for name, option in reversed(declared.values()):  # click lists the last decorator first
            if command not in COMMANDS_WITH_BACKEND:  # the experiment's stored backend decides: no --backend here
                which = f"For an experiment run on the {name} backend"
            else:
                which = "With the local backend" if name == DEFAULT_BACKEND else f"With --backend {name}"
            fn = click.option(option.flag, envvar=option.envvar, default=None, metavar=option.metavar,
                              help=f"{which}: {option.help[:1].lower()}{option.help[1:]}")(fn)
        return fn

    return decorate


def constructor_options(name: str, given: dict[str, Any], *, environment: bool = False) -> dict[str, Any]:
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


def backend_option_values(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pop the backend options click collected out of a command's keyword arguments: (given as flags, taken from
    environment variables such as RAY_ADDRESS or KUBECONFIG)."""
    context = click.get_current_context()
    flags = {o.param for b in installed_backends().values() for o in b.options}
    given: dict[str, Any] = {}
    from_env: dict[str, Any] = {}
    for key in [k for k in kwargs if k in flags]:
        value = kwargs.pop(key)
        if value is not None:
            source = context.get_parameter_source(key)
            (from_env if source is ParameterSource.ENVIRONMENT else given)[key] = value
    return given, from_env


def fail(lines: list[str], source: str | None = None, code: int = EXIT_INVALID) -> NoReturn:
    prefix = f"{source}: " if source else ""
    for line in lines:
        err.print(f"[red]error:[/red] {escape(prefix + line)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user mistakes raised by the library into one-line messages and exit code 2."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValidationError as exc:
            fail(exc.errors, exc.source)
        except (StoreError, ClusterError, MetricsCollectorUnavailable, BackendUnavailable) as exc:
            fail([str(exc)])

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def stored_backend_of(record: ExperimentRecord, backend: str | None, options: dict[str, Any]) -> Backend:
    """The backend that ran ``record`` with its stored options: flags given here replace them, environment
    variables only fill in what the store does not say (a shell's RAY_ADDRESS must not move a resumed run)."""
    name = backend or record.backend or DEFAULT_BACKEND
    given, from_env = backend_option_values(options)
    return stored_backend(record, backend, given=constructor_options(name, given),
                          fallback=constructor_options(name, from_env, environment=True))


def metric_names(record: ExperimentRecord) -> list[str]:
    objective = record.experiment.spec.objective
    return [objective.objective_metric_name or "", *objective.additional_metric_names] if objective else []
