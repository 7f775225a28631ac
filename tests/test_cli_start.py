"""The CLI starts quickly: each verb's module is imported only when it runs, and the reading verbs never load
what running an experiment needs (the backends, numpy, YAML for JSON output). Times are measured in
``benchmarks/overhead.py`` (the ``cli-*`` rows), not asserted here; these tests keep the imports from creeping back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import katibx
from katibx.cli import COMMANDS, main

# What running an experiment needs, and a reading verb does not. (YAML is loaded anyway: katibx.katib_object
# registers Katib objects with yaml's SafeDumper when it is imported, so that yaml.safe_dump writes them.)
RUNNING = ("katibx.runner", "katibx.controller", "katibx.preparation", "katibx.plugins", "katibx.workers.local",
           "katibx.workers.kubernetes", "katibx.workers.ray", "katibx.backend", "katibx.validation", "numpy",
           "jsonpath_ng", "optuna")


def _modules_after(args: list[str], store: Path) -> tuple[int, set[str]]:
    """Run ``katibx ARGS`` in a fresh interpreter; its exit code and the modules it imported."""
    code, modules, _ = _run_fresh(args, store)
    return code, modules


def _run_fresh(args: list[str], store: Path) -> tuple[int, set[str], str]:
    """Run ``katibx ARGS`` in a fresh interpreter; its exit code, the modules it imported and its output."""
    code = ("import json, sys\nfrom katibx.cli import main\ntry:\n    main(sys.argv[1:], prog_name='katibx')\n"
            "except SystemExit as exc:\n    code = exc.code or 0\nelse:\n    code = 0\n"
            "spec = sys.modules.get('katibx.spec')\n"  # whether pydantic built the Experiment's schema
            "built = ['katibx.spec.Experiment (validators built)'] if spec and spec.Experiment.__pydantic_complete__ "
            "else []\n"
            "sys.stderr.write('\\nMODULES ' + json.dumps([code, sorted(sys.modules) + built]))")
    ran = subprocess.run([sys.executable, "-c", code, *args, "--store", str(store)] if args != ["--help"] else
                         [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    exit_code, modules = json.loads(ran.stderr.rsplit("MODULES ", 1)[1])
    return exit_code, set(modules), ran.stdout


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-start") / "k.db"
    katibx.tune("start", lambda p: p["x"] ** 2, {"x": katibx.search.double(0, 1)}, objective_metric_name="y",
                max_trial_count=3, store=str(path), progress=False)
    return path


def test_help_lists_every_verb_with_its_own_summary_without_importing_any() -> None:
    for name, (_module, _attribute, summary) in COMMANDS.items():
        command = main.get_command(None, name)  # type: ignore[arg-type]
        assert command is not None and command.name == name
        assert command.get_short_help_str(10_000) == summary, name
    code, modules = _modules_after(["--help"], Path("unused"))
    assert code == 0
    assert not {module for module, _, _ in COMMANDS.values()} & modules
    assert not {"katibx.spec", "katibx.store", "pydantic", "rich", "yaml", *RUNNING} & modules


@pytest.mark.parametrize("args", [["list"], ["get", "experiments", "-o", "json"], ["get", "experiment", "start",
                                                                                     "-o", "json"],
                                  ["get", "trials", "start"], ["describe", "experiment", "start"]])
def test_reading_verbs_load_nothing_that_running_needs(store: Path, args: list[str]) -> None:
    code, modules = _modules_after(args, store)
    assert code == 0
    assert "katibx.store" in modules  # (they did read the store)
    assert not set(RUNNING) & modules
    if args[0] in ("list", "get"):  # the stored spec read as stored: no model, no rich, no yaml, no psutil
        assert not {"katibx.spec", "pydantic", "rich", "yaml", "psutil"} & modules
    else:  # describe builds the model from the stored spec, without pydantic building its validators
        assert "katibx.spec" in modules and "katibx.spec.Experiment (validators built)" not in modules



def test_a_stored_spec_read_without_validation_shows_everything_it_holds(store: Path) -> None:
    """What a table shows comes from the stored spec built without pydantic's validators (every camelCase key)."""
    code, modules, shown = _run_fresh(["describe", "experiment", "start"], store)
    assert code == 0 and "katibx.spec.Experiment (validators built)" not in modules
    for text in ("Objective:      maximize y", "Algorithm:      auto, chose bayesianoptimization", "Parameters:     x (double)",
                 "maxTrialCount 3, parallelTrialCount 3", "3 total, 0 running, 3 succeeded", "Best trial:     start-"):
        assert text in shown, shown


def test_a_mistyped_verb_gets_a_suggestion_and_exit_code_2() -> None:
    ran = subprocess.run([sys.executable, "-m", "katibx.cli", "lst"], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2 and "No such command 'lst'. Did you mean 'list'?" in ran.stderr


def test_shell_completion_of_verbs_imports_none_of_them() -> None:
    code = ("import json, os, sys\nos.environ.update(_KATIBX_COMPLETE='bash_complete', COMP_WORDS='katibx d', "
            "COMP_CWORD='1')\nfrom katibx.cli import main\ntry:\n    main(prog_name='katibx')\nexcept SystemExit:\n"
            "    pass\nsys.stderr.write('\\nMODULES ' + json.dumps(sorted(sys.modules)))")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert ran.stdout.split() == ["plain,dashboard", "plain,delete", "plain,describe"]
    assert not {module for module, _, _ in COMMANDS.values()} & set(json.loads(ran.stderr.rsplit("MODULES ", 1)[1]))
