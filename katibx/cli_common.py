"""What the CLI's commands share: its output, common options and the one-line error guard (light: every verb
imports it, so it imports only click; rich's consoles, ``out`` and ``err``, are made when a verb first uses them)."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, NoReturn

import click

if TYPE_CHECKING:
    from rich.console import Console

    from katibx.store import ExperimentRecord, Store

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


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


_stdout = _PipeSafe()


def echo(text: str = "") -> None:
    """A line on stdout as it is: no markup, never cut to a screen's width (names stay whole for scripts)."""
    click.echo(text, file=_stdout)


def _labelled(label: str, color: str, text: str) -> None:
    """``label: text`` on stderr, the label colored on a terminal."""
    plain = bool(os.environ.get("NO_COLOR"))  # https://no-color.org, as rich honours it
    click.echo(f"{click.style(label + ':', fg=color)} {text}", err=True, color=False if plain else None)


def __getattr__(name: str) -> Console:
    """``out`` and ``err``: rich consoles on stdout and stderr for the verbs that draw (progress, markup), made on
    first use so that a verb that only prints lines never imports rich."""
    if name not in ("out", "err"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    # Piped (not a terminal), nothing is cut to a screen's width: names stay whole for scripts and `katibx logs`.
    console = (Console(file=_stdout, soft_wrap=True, width=None if sys.stdout.isatty() else 100_000) if name == "out"
               else Console(stderr=True, soft_wrap=True))
    globals()[name] = console
    return console


class _WarningsToStderr(logging.Handler):
    """The library's warnings, as the CLI shows them: one ``warning: ...`` line on stderr each."""

    def emit(self, record: logging.LogRecord) -> None:
        _labelled("warning", "yellow", self.format(record))


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


def fail(lines: list[str], source: str | None = None, code: int = EXIT_INVALID) -> NoReturn:
    prefix = f"{source}: " if source else ""
    for line in lines:
        _labelled("error", "red", prefix + line)
    sys.exit(code)


def _loaded(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """Exception classes of ``module`` if it has been imported (an exception of a module never imported cannot have
    been raised), so that the guard imports nothing a verb did not need."""
    loaded = sys.modules.get(module)
    return tuple(getattr(loaded, name) for name in names) if loaded is not None else ()


def _user_errors() -> tuple[type[BaseException], ...]:
    """The library's errors that are the user's or the environment's doing: one line each, never a traceback."""
    return (_loaded("katibx.store", "StoreError")
            + _loaded("katibx.backend", "ClusterError", "BackendUnavailable", "WorkspaceError")
            + _loaded("katibx.metric_parsers", "MetricsCollectorUnavailable"))


def read_store(store: str | None) -> Store:
    """The store a reading command reads: an error naming it when there is none (reading never creates one)."""
    from katibx.store import Store

    return Store(store, create=False)


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user mistakes raised by the library into one-line messages and exit code 2."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if isinstance(exc, _loaded("katibx.validation", "ValidationError")):
                fail(exc.errors, exc.source)
            if isinstance(exc, _user_errors()):
                fail([str(exc)])
            raise

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def metric_names(record: ExperimentRecord) -> list[str]:
    """The objective metric and the additional metrics, as stored (no model is built)."""
    objective = (record.spec.get("spec") or {}).get("objective")
    if not objective:
        return []
    return [objective.get("objectiveMetricName") or "", *(objective.get("additionalMetricNames") or [])]
