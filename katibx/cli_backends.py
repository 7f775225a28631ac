"""The CLI's backend options: what each installed backend plugin declares for a verb, and the backend a stored
experiment ran on (loading the plugins: only the verbs that take such options import this module)."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import click
from click.core import ParameterSource

from katibx import plugins
from katibx.backend import Backend
from katibx.preparation import DEFAULT_BACKEND, backend_class
from katibx.runner import stored_backend
from katibx.store import ExperimentRecord
from katibx.validation import ValidationError

log = logging.getLogger(__name__)


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


def stored_backend_of(record: ExperimentRecord, backend: str | None, options: dict[str, Any]) -> Backend:
    """The backend that ran ``record`` with its stored options: flags given here replace them, environment
    variables only fill in what the store does not say (a shell's RAY_ADDRESS must not move a resumed run)."""
    name = backend or record.backend or DEFAULT_BACKEND
    given, from_env = backend_option_values(options)
    return stored_backend(record, backend, given=constructor_options(name, given),
                          fallback=constructor_options(name, from_env, environment=True))
