"""``katibx``: kubectl-like verbs over experiments. Exit codes: 0 Succeeded, 1 Failed, 2 invalid input or usage.

Each verb lives in the module named below and is imported only when it runs (or shows its ``--help``): ``katibx
--help`` imports click alone, and a reading verb never loads what running an experiment needs.
"""

from __future__ import annotations

import importlib

import click
from click.shell_completion import CompletionItem

# verb -> (module, attribute, the summary ``katibx --help`` lists: the first sentence of the verb's own help,
# kept equal to it by tests/test_cli_start.py)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "build": ("katibx.cli_build", "build", "Package SOURCE onto --base as one layer; print the image's digest."),
    "dashboard": ("katibx.cli_inspect", "dashboard", "Serve optuna-dashboard over the store: every experiment a "
                  "study, live (needs optuna-dashboard: pip install 'katibx[dashboard]')."),
    "delete": ("katibx.cli_inspect", "delete", "Delete experiments NAMES (or --all) with their trials and trial "
               "directories (on a cluster, the objects their trials created)."),
    "describe": ("katibx.cli_get", "describe", "Show an experiment or a trial in detail, for people (as kubectl "
                 "describe)."),
    "export": ("katibx.cli_inspect", "export", "Write stored experiments into other tools."),
    "get": ("katibx.cli_get", "get", "Show experiments, an experiment, its trials or a trial: a table, or Katib "
            "objects (-o json|yaml, several in a List), names (-o name) or kubectl's jsonpath (-o "
            "jsonpath=TEMPLATE)."),
    "list": ("katibx.cli_get", "list_experiments", "All experiments in the store with their status and best "
             "value (as katibx get experiments)."),
    "logs": ("katibx.cli_inspect", "logs", "Output (stdout and stderr) of TRIAL of experiment NAME; a running "
             "cluster trial's from where it runs."),
    "plot": ("katibx.cli_inspect", "plot", "Write experiment NAME's plots as PNG files: optimization history, "
             "parallel coordinates, parameter importances, intermediate values (the objective metric per report) "
             "and, with several objectives, the Pareto front (Optuna's visualisations; needs matplotlib: pip install "
             "'katibx[plot]')."),
    "render": ("katibx.cli_run", "render", "Print the worker manifests COUNT trials of FILE would create on "
               "Kubernetes (YAML documents, no cluster)."),
    "resume": ("katibx.cli_run", "resume", "Continue experiment NAME after an interruption, or with a larger "
               "--max-trial-count."),
    "run": ("katibx.cli_run", "run", "Run the Experiment in FILE until it completes."),
    "store": ("katibx.cli_inspect", "store_group", "Inspect the store itself."),
    "validate": ("katibx.cli_run", "validate", "Check Experiment FILES; print every problem, one line each."),
}


def _cut(text: str, limit: int) -> str:
    """``text`` cut at a word to fit ``limit`` characters, ``...`` marking the cut (as click lists commands)."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 3, 0)].rsplit(" ", 1)[0] + "..."


class _Verbs(click.Group):
    """The verbs of :data:`COMMANDS`, each imported when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        """As click's, with its "Did you mean" for a mistyped verb (it looks only at verbs already loaded)."""
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            no_such = getattr(click.exceptions, "NoSuchCommand", None)  # click >= 8.2
            if no_such is None or not isinstance(exc, no_such):
                raise
            raise no_such(exc.command_name, possibilities=list(COMMANDS), ctx=ctx) from None

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """The verbs (from :data:`COMMANDS`, importing none) and the group's own options."""
        return [CompletionItem(name, help=summary) for name, (_, _, summary)
                in sorted(COMMANDS.items()) if name.startswith(incomplete)] + \
            click.Command.shell_complete(self, ctx, incomplete)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The verbs and their summaries, without importing any verb."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        with formatter.section("Commands"):
            formatter.write_dl([(name, _cut(COMMANDS[name][2], limit)) for name in sorted(COMMANDS)])


@click.group(cls=_Verbs, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="katibx")
def main() -> None:
    """Run Kubeflow Katib experiments on this machine, a Ray cluster or Kubernetes."""
    from katibx.cli_common import show_warnings

    show_warnings()


if __name__ == "__main__":  # pragma: no cover
    main()
