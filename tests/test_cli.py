"""The ``katibx`` CLI end to end: real subprocesses, real trial processes, a real SQLite store.

Katib's e2e case: maximize 4a - b^2, a int in [10, 20], b double in [0.1, 0.2], 4 trials. BASE_EXPERIMENT uses
``random_state: 7``, whose first four draws of ``a`` are 20, 19, 13, 18 (seeds 0..14 tried; 7 is the first whose first
trial already reaches a=20), so a seeded run must end with a=20 as the best trial.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import experiment_doc, katibx_cli, set_command

from katibx.store import Store


def ok(result: subprocess.CompletedProcess[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    assert result.returncode == code, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def get_json(*args: str, cwd: Path, store: Path) -> Any:
    """``katibx get ... -o json``: an object, or the items of a List (which is checked to be one)."""
    data = json.loads(ok(katibx_cli("get", *args, "-o", "json", cwd=cwd, store=store)).stdout)
    if args[0] in ("trials", "experiments"):
        assert data["kind"] == "List" and data["apiVersion"] == "v1"
        return data["items"]
    return data


def named(doc: dict[str, Any], name: str, namespace: str | None = None) -> dict[str, Any]:
    doc["metadata"]["name"] = name
    if namespace:
        doc["metadata"]["namespace"] = namespace
    return doc


def objective_value(trial: dict[str, Any]) -> float:
    values = {p["name"]: p["value"] for p in trial["spec"]["parameterAssignments"]}
    return 4 * int(values["a"]) - float(values["b"]) ** 2


def true_conditions(experiment: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["type"], c["reason"]) for c in experiment["status"]["conditions"] if c["status"] == "True"]


def test_run_e2e_case_shows_progress_best_trial_and_katib_shaped_objects(tmp_path: Path, write_experiment) -> None:
    store = tmp_path / "store.db"
    path = write_experiment(experiment_doc())

    run = ok(katibx_cli("run", str(path), cwd=tmp_path, store=store))
    progress = [line for line in run.stderr.splitlines() if line.startswith("exp: ")]  # piped: lines, not redraws
    assert progress[-1].startswith("exp: 0 running, 4 succeeded, 0 failed; best result=")  # exact final counts
    assert "exp: Succeeded (ExperimentMaxTrialsReached)" in run.stdout
    assert "best trial exp-" in run.stdout and "result (min / max / latest)" in run.stdout

    experiment = get_json("experiment", "exp", cwd=tmp_path, store=store)
    trials = get_json("trials", "exp", cwd=tmp_path, store=store)
    assert experiment["apiVersion"] == "kubeflow.org/v1beta1" and experiment["kind"] == "Experiment"
    assert experiment["metadata"]["name"] == "exp" and experiment["metadata"]["namespace"] == "default"
    assert experiment["spec"]["maxTrialCount"] == 4 and experiment["spec"]["parallelTrialCount"] == 2
    status = experiment["status"]
    assert true_conditions(experiment) == [("Created", "ExperimentCreated"), ("Succeeded", "ExperimentMaxTrialsReached")]
    running = [c for c in status["conditions"] if c["type"] == "Running"]
    assert running and running[0]["status"] == "False"
    assert {k: status[k] for k in ("trials", "trialsSucceeded", "trialsFailed", "trialsKilled", "trialsPending",
                                   "trialsRunning", "trialsEarlyStopped", "trialMetricsUnavailable")} == {
        "trials": 4, "trialsSucceeded": 4, "trialsFailed": 0, "trialsKilled": 0, "trialsPending": 0,
        "trialsRunning": 0, "trialsEarlyStopped": 0, "trialMetricsUnavailable": 0}
    assert sorted(status["succeededTrialList"]) == sorted(t["metadata"]["name"] for t in trials)
    assert "startTime" in status and "completionTime" in status

    # The best trial is the argmax of 4a - b^2 and its reported metric is that value.
    assert len(trials) == 4 and all(t["kind"] == "Trial" for t in trials)
    best = max(trials, key=objective_value)
    optimal = status["currentOptimalTrial"]
    assert optimal["bestTrialName"] == best["metadata"]["name"]
    assert {p["name"]: p["value"] for p in optimal["parameterAssignments"]}["a"] == "20"
    (metric,) = optimal["observation"]["metrics"]
    assert metric["name"] == "result" and float(metric["latest"]) == pytest.approx(objective_value(best))

    # yaml output is the same object; the tables and logs are there too.
    as_yaml = yaml.safe_load(ok(katibx_cli("get", "experiment", "exp", cwd=tmp_path, store=store)).stdout)
    assert as_yaml == experiment
    table = ok(katibx_cli("get", "trials", "exp", cwd=tmp_path, store=store)).stdout
    assert all(t["metadata"]["name"] in table for t in trials) and "Succeeded" in table
    listing = ok(katibx_cli("list", cwd=tmp_path, store=store)).stdout
    assert "exp" in listing and "Succeeded" in listing and "result=" in listing
    logs = ok(katibx_cli("logs", "exp", best["metadata"]["name"], cwd=tmp_path, store=store)).stdout
    assert logs.strip() == f"result={objective_value(best)}"


def test_failed_experiment_exits_1_with_failed_condition_and_trial_logs(tmp_path: Path, write_experiment) -> None:
    store = tmp_path / "store.db"
    doc = set_command(experiment_doc(maxFailedTrialCount=1, parallelTrialCount=1),
                      ["python3", "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)",
                       "${trialParameters.a}", "${trialParameters.b}"])
    run = ok(katibx_cli("run", str(write_experiment(doc)), "-q", cwd=tmp_path, store=store), code=1)
    assert "exp: Failed (ExperimentFailed)" in run.stdout
    experiment = get_json("experiment", "exp", cwd=tmp_path, store=store)
    assert true_conditions(experiment)[-1] == ("Failed", "ExperimentFailed")
    assert experiment["status"]["trials"] == experiment["status"]["trialsFailed"] == 1
    assert experiment["status"]["currentOptimalTrial"]["bestTrialName"] == ""
    (trial,) = experiment["status"]["failedTrialList"]
    assert ok(katibx_cli("logs", "exp", trial, cwd=tmp_path, store=store)).stdout.strip() == "boom"


def test_store_option_env_and_default_relative_to_cwd(tmp_path: Path, write_experiment) -> None:
    path = write_experiment(experiment_doc(maxTrialCount=2))
    env = {k: v for k, v in os.environ.items() if k != "KATIBX_STORE"}
    work = tmp_path / "work"
    work.mkdir()

    def cli(*args: str, cwd: Path = work, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "katibx.cli", *args], cwd=cwd, env={**env, "COLUMNS": "200", **extra},
                              capture_output=True, text=True, timeout=120)

    ok(cli("run", str(path), "-q"))
    assert (work / ".katibx" / "katibx.db").is_file()  # default: ./.katibx/katibx.db under the cwd
    assert "exp" in ok(cli("list")).stdout
    ok(cli("get", "experiment", "exp", cwd=tmp_path), code=2)  # another cwd, another default store

    elsewhere = tmp_path / "elsewhere.db"
    ok(cli("get", "experiment", "exp", "--store", str(work / ".katibx" / "katibx.db"), cwd=tmp_path))
    ok(cli("get", "experiment", "exp", cwd=tmp_path, KATIBX_STORE=str(work / ".katibx" / "katibx.db")))
    # --store wins over KATIBX_STORE; sqlite:/// URLs are accepted
    ok(cli("get", "experiment", "exp", "--store", str(elsewhere), KATIBX_STORE=str(work / ".katibx" / "katibx.db")), code=2)
    ok(cli("get", "experiment", "exp", "--store", f"sqlite:///{work / '.katibx' / 'katibx.db'}", cwd=tmp_path))


def test_same_name_in_a_namespace_is_refused_and_nothing_stored_is_lost(tmp_path: Path, write_experiment) -> None:
    store = tmp_path / "store.db"
    ok(katibx_cli("run", str(write_experiment(experiment_doc())), "-q", cwd=tmp_path, store=store))
    before = get_json("trials", "exp", cwd=tmp_path, store=store)

    again = write_experiment(experiment_doc(maxTrialCount=2), name="again.yaml")
    refused = ok(katibx_cli("run", str(again), cwd=tmp_path, store=store), code=2)
    assert "already exists in namespace 'default'" in refused.stderr and refused.stderr.startswith("error:")
    assert get_json("trials", "exp", cwd=tmp_path, store=store) == before
    assert get_json("experiment", "exp", cwd=tmp_path, store=store)["spec"]["maxTrialCount"] == 4

    # The same name in another namespace is a different experiment; then the name alone is ambiguous.
    other = write_experiment(named(experiment_doc(maxTrialCount=2), "exp", "team-b"), name="other.yaml")
    ok(katibx_cli("run", str(other), "-q", cwd=tmp_path, store=store))
    ambiguous = ok(katibx_cli("get", "experiment", "exp", cwd=tmp_path, store=store), code=2)
    assert "several namespaces" in ambiguous.stderr
    assert len(get_json("trials", "exp", "-n", "default", cwd=tmp_path, store=store)) == 4
    assert len(get_json("trials", "exp", "-n", "team-b", cwd=tmp_path, store=store)) == 2


def test_resume_with_larger_budget_then_delete(tmp_path: Path, write_experiment) -> None:
    store = tmp_path / "store.db"
    ok(katibx_cli("run", str(write_experiment(experiment_doc())), "-q", cwd=tmp_path, store=store))
    before = get_json("trials", "exp", cwd=tmp_path, store=store)

    ok(katibx_cli("resume", "exp", "--max-trial-count", "3", cwd=tmp_path, store=store), code=2)  # not above 4 trials
    resumed = ok(katibx_cli("resume", "exp", "--max-trial-count", "6", cwd=tmp_path, store=store))
    assert "exp: Succeeded" in resumed.stdout and "6 total" in resumed.stdout
    after = get_json("trials", "exp", cwd=tmp_path, store=store)
    assert after[:4] == before  # the first trials are untouched, two new ones follow
    assert len(after) == 6 and len({t["metadata"]["name"] for t in after}) == 6
    experiment = get_json("experiment", "exp", cwd=tmp_path, store=store)
    assert experiment["spec"]["maxTrialCount"] == 6 and experiment["status"]["trialsSucceeded"] == 6
    assert true_conditions(experiment)[-1] == ("Succeeded", "ExperimentMaxTrialsReached")
    assert experiment["status"]["currentOptimalTrial"]["bestTrialName"] == max(after, key=objective_value)["metadata"]["name"]

    trial_dirs = store.parent / "trials" / "default" / "exp"
    assert trial_dirs.is_dir()
    assert "deleted" in ok(katibx_cli("delete", "exp", cwd=tmp_path, store=store)).stdout
    assert not trial_dirs.exists()
    assert "exp" not in ok(katibx_cli("list", cwd=tmp_path, store=store)).stdout
    ok(katibx_cli("delete", "exp", cwd=tmp_path, store=store), code=2)


BAD_DOCS: dict[str, tuple[str | dict[str, Any], str]] = {
    "malformed-yaml": ("apiVersion: kubeflow.org/v1beta1\nmetadata: {name: x\nspec: [\n", "(yaml): line 3"),
    "unknown-field": (experiment_doc(maxTrailCount=3), "spec.maxTrailCount: unknown field (did you mean 'maxTrialCount'?)"),
    "wrong-type": (experiment_doc(maxTrialCount="four"), "spec.maxTrialCount: must be an integer"),
    "not-a-mapping": ("- 1\n- 2\n", "(document): must be a mapping"),
    "empty-file": ("", "(document): the file holds no Experiment"),
    "bad-name": (named(experiment_doc(), "Bad_Name"), "metadata.name: 'Bad_Name'"),
    "unknown-setting": (experiment_doc(algorithm={"algorithmName": "random",
                                                  "algorithmSettings": [{"name": "seed", "value": "1"}]}),
                        "spec.algorithm.algorithmSettings[seed]: unknown setting"),
    # the setting's name in brackets survives the terminal's markup
    "bad-setting-value": (experiment_doc(algorithm={"algorithmName": "tpe",
                                                    "algorithmSettings": [{"name": "n_EI_candidates", "value": "many"}]}),
                          "spec.algorithm.algorithmSettings[n_EI_candidates]: must be an integer (got 'many')"),
}


@pytest.mark.parametrize("case", list(BAD_DOCS))
def test_invalid_experiment_files_exit_2_with_field_path_and_store_nothing(tmp_path: Path, write_experiment, case: str) -> None:
    content, message = BAD_DOCS[case]
    path = tmp_path / "bad.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    write_experiment(experiment_doc())  # the objective script beside it
    store = tmp_path / "store.db"
    run = ok(katibx_cli("run", str(path), cwd=tmp_path, store=store), code=2)
    assert f"error: {path}: {message}" in run.stderr
    assert not store.exists()  # refused before the store is even opened
    check = ok(katibx_cli("validate", str(path), cwd=tmp_path, store=store), code=2)
    assert f"invalid {path}: {message}" in check.stderr


def test_validate_reports_every_file(tmp_path: Path, write_experiment) -> None:
    good = write_experiment(experiment_doc())
    bad = write_experiment(experiment_doc(maxTrialCount=2, parallelTrialCount=3, maxTrailCount=1), name="bad.yaml")
    result = ok(katibx_cli("validate", str(good), str(bad), cwd=tmp_path, store=tmp_path / "s.db"), code=2)
    assert f"valid   {good}" in result.stdout
    assert f"invalid {bad}: spec.maxTrailCount: unknown field" in result.stderr
    assert ok(katibx_cli("validate", str(good), cwd=tmp_path, store=tmp_path / "s.db")).stdout.startswith("valid")


@pytest.mark.parametrize("args, message", [
    (["get", "experiment", "nope"], "experiment 'nope' not found"),
    (["get", "trials", "nope"], "experiment 'nope' not found"),
    (["logs", "nope", "t"], "experiment 'nope' not found"),
    (["resume", "nope"], "experiment 'nope' not found"),
    (["delete", "nope"], "experiment 'nope' not found"),
    (["run", "exp.yaml", "--backend", "no-such-backend"], "--backend: 'no-such-backend' is not installed"),
    (["validate", "exp.yaml", "--backend", "no-such-backend"], "--backend: 'no-such-backend' is not installed"),
    (["run", "missing.yaml"], "missing.yaml: (file): cannot read"),
    (["run", "exp.yaml", "--store", "http://host/db"], "--store: unsupported store URL"),
    (["run", "exp.yaml", "--bogus"], "No such option"),
    (["get", "experiment", "exp", "-o", "xml"], "'xml' is not one of"),
    (["resume", "exp", "--max-trial-count", "many"], "'many' is not a valid integer"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["run"], "Missing argument 'FILE'"),
])
def test_usage_and_lookup_mistakes_exit_2_without_traceback(tmp_path: Path, write_experiment, args: list[str], message: str) -> None:
    write_experiment(experiment_doc(), name="exp.yaml")
    Store(tmp_path / "store.db").close()  # an existing, empty store
    result = ok(katibx_cli(*args, cwd=tmp_path, store=tmp_path / "store.db"), code=2)
    assert message in result.stderr


@pytest.mark.parametrize("args", [["get", "experiment", "exp"], ["get", "trials", "exp"], ["logs", "exp", "t"],
                                  ["resume", "exp"], ["delete", "exp"], ["store", "check"]])
def test_a_mistyped_store_is_named_and_not_created(tmp_path: Path, args: list[str]) -> None:
    typo = tmp_path / "sotre.db"
    result = ok(katibx_cli(*args, cwd=tmp_path, store=typo), code=2)
    assert str(typo) in result.stderr and len(result.stderr.strip().splitlines()) == 1
    listed = ok(katibx_cli("list", cwd=tmp_path, store=typo))
    assert f"No experiments in {typo}" in listed.stdout.replace("\n", "")
    assert not typo.exists() and not list(tmp_path.iterdir())  # no empty store (or -wal/-shm) left behind


def test_logs_of_unknown_trial_and_unreadable_store(tmp_path: Path, write_experiment) -> None:
    store = tmp_path / "store.db"
    ok(katibx_cli("run", str(write_experiment(experiment_doc(maxTrialCount=2))), "-q", cwd=tmp_path, store=store))
    assert "trial 'nope' not found" in ok(katibx_cli("logs", "exp", "nope", cwd=tmp_path, store=store), code=2).stderr
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    assert "cannot open store" in ok(katibx_cli("list", cwd=tmp_path, store=junk), code=2).stderr


def _record_backend(store: Path, name: str, backend: str, options: dict[str, Any]) -> None:
    """Say in the store that experiment ``name`` ran on ``backend`` with ``options`` (as that run would have)."""
    st = Store(store)
    try:
        st.set_backend(st.get_experiment(name), backend, options)
    finally:
        st.close()


_PROBE_BACKEND = """
from katibx import Backend, BackendOption


class Probe(Backend):
    name = "probe"
    options = (BackendOption("--probe-address", "address", envvar="PROBE_ADDRESS", help="Where the probe cluster is."),)

    def __init__(self, address=None):
        self.address = address

    def settings(self):
        return {"address": self.address}

    def check(self, experiment):
        return [f"probe: would run on {self.address}"]

    # check() refuses every experiment, so no trial ever reaches these.
    def start(self, job): raise AssertionError("the probe backend never starts a trial")
    def poll(self, timeout): return []
    def kill(self, trial_name): pass
    def release(self, handle): pass
"""


def _probe_plugin(tmp_path: Path) -> dict[str, str]:
    """An environment with a third-party backend plugin ``probe`` that declares --probe-address (env PROBE_ADDRESS)."""
    site = tmp_path / "site"
    dist = site / "probe_backend-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: probe-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[katibx.workers]\nprobe = probe_backend:Probe\n")
    (site / "probe_backend.py").write_text(_PROBE_BACKEND)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_environment_variables_do_not_move_a_stored_experiment(tmp_path: Path, write_experiment) -> None:
    """A flag replaces a stored backend option; an environment variable (RAY_ADDRESS, KUBECONFIG...) only fills in
    what the store does not say, so a shell's setting never moves a resumed run to another cluster."""
    env = _probe_plugin(tmp_path)
    store = tmp_path / "store.db"
    ok(katibx_cli("run", str(write_experiment(experiment_doc())), "-q", cwd=tmp_path, store=store))
    assert "--probe-address" in ok(katibx_cli("resume", "--help", cwd=tmp_path, store=store, env=env)).stdout
    _record_backend(store, "exp", "probe", {"address": "stored:1"})
    resume = ("resume", "exp", "--max-trial-count", "6")
    from_env = ok(katibx_cli(*resume, cwd=tmp_path, store=store, env={**env, "PROBE_ADDRESS": "env:2"}), code=2)
    assert "would run on stored:1" in from_env.stderr
    flag = ok(katibx_cli(*resume, "--probe-address", "flag:3", cwd=tmp_path, store=store, env=env), code=2)
    assert "would run on flag:3" in flag.stderr
    _record_backend(store, "exp", "probe", {})
    fills_in = ok(katibx_cli(*resume, cwd=tmp_path, store=store, env={**env, "PROBE_ADDRESS": "env:2"}), code=2)
    assert "would run on env:2" in fills_in.stderr


def test_delete_when_the_stored_backend_cannot_be_created(tmp_path: Path, write_experiment) -> None:
    store = tmp_path / "store.db"
    ok(katibx_cli("run", str(write_experiment(experiment_doc())), "-q", cwd=tmp_path, store=store))
    _record_backend(store, "exp", "local", {"retired_option": 1})  # an option a later version no longer takes
    kept = ok(katibx_cli("delete", "exp", cwd=tmp_path, store=store), code=2)
    assert "retired_option" in kept.stderr and "experiment exp is kept" in kept.stderr
    forced = ok(katibx_cli("delete", "exp", "--force", cwd=tmp_path, store=store))
    assert "retired_option" in forced.stderr and "experiment exp deleted" in forced.stdout
    gone = ok(katibx_cli("get", "experiment", "exp", cwd=tmp_path, store=store), code=2)
    assert "not found" in gone.stderr


def test_an_experiment_of_a_backend_not_installed_here_says_so(tmp_path: Path, write_experiment) -> None:
    store = tmp_path / "store.db"
    ok(katibx_cli("run", str(write_experiment(experiment_doc())), "-q", cwd=tmp_path, store=store))
    _record_backend(store, "exp", "slurm", {})
    expected = "experiment 'exp' ran on the slurm backend, which is not installed here"
    assert expected in ok(katibx_cli("resume", "exp", "--max-trial-count", "6", cwd=tmp_path, store=store), code=2).stderr
    assert expected in ok(katibx_cli("delete", "exp", cwd=tmp_path, store=store), code=2).stderr
    assert "exp" in ok(katibx_cli("list", cwd=tmp_path, store=store)).stdout  # kept


def test_a_broken_backend_plugin_does_not_break_the_cli(tmp_path: Path, write_experiment) -> None:
    """A third-party backend whose module cannot be imported leaves every other command working."""
    dist = tmp_path / "site" / "broken_backend-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[katibx.workers]\nslurm = no_such_module_here:Slurm\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    store = tmp_path / "store.db"
    ok(katibx_cli("run", str(write_experiment(experiment_doc())), "-q", cwd=tmp_path, store=store, env=env))
    assert "exp" in ok(katibx_cli("list", cwd=tmp_path, store=store, env=env)).stdout
    used = ok(katibx_cli("run", "exp.yaml", "--backend", "slurm", cwd=tmp_path, store=store, env=env), code=2)
    assert "no_such_module_here" in used.stderr


def test_validate_reports_rules_and_plugin_settings_together(tmp_path: Path, write_experiment) -> None:
    doc = experiment_doc(maxFailedTrialCount=9)
    doc["spec"]["algorithm"]["algorithmSettings"] = [{"name": "seed", "value": "1"}]
    result = ok(katibx_cli("validate", str(write_experiment(doc)), cwd=tmp_path, store=tmp_path / "s.db"), code=2)
    assert "spec.maxFailedTrialCount: should be less than or equal to spec.maxTrialCount" in result.stderr
    assert "spec.algorithm.algorithmSettings[seed]: unknown setting for algorithm 'random'" in result.stderr


def test_piped_output_keeps_names_whole_and_a_closed_pipe_is_not_a_failure(tmp_path: Path, write_experiment) -> None:
    store = tmp_path / "store.db"
    path = write_experiment(experiment_doc(maxTrialCount=2, parallelTrialCount=1))
    env = {**os.environ, "KATIBX_STORE": str(store), "COLUMNS": "40"}
    # the reader is gone before anything is printed (`| true`), as `| head -1` is after its line
    closed = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m katibx.cli run {path} | true"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert closed.returncode == 0 and "Traceback" not in closed.stderr and "Broken pipe" not in closed.stderr
    st = Store(store)
    names = [t.name for t in st.trials(st.get_experiment("exp").id)]
    st.close()
    shown = {}
    for args in (["get", "trials", "exp"], ["list"]):
        result = subprocess.run([sys.executable, "-m", "katibx.cli", *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "…" not in result.stdout, result.stdout  # never cut to 40 columns
        shown[args[0]] = result.stdout
    assert all(name in shown["get"] for name in names)


def test_get_experiments_like_kubectl(tmp_path: Path, write_experiment) -> None:
    store = tmp_path / "store.db"
    assert get_json("experiments", cwd=tmp_path, store=store) == []  # nothing run yet, and no store made
    assert not store.exists()
    ok(katibx_cli("run", str(write_experiment(experiment_doc(maxTrialCount=2, parallelTrialCount=1))), "-q",
                  cwd=tmp_path, store=store))
    (experiment,) = get_json("experiments", cwd=tmp_path, store=store)
    assert experiment["kind"] == "Experiment" and experiment["metadata"]["name"] == "exp"
    table = ok(katibx_cli("get", "experiments", cwd=tmp_path, store=store)).stdout
    assert "exp" in table and "Succeeded" in table
    assert ok(katibx_cli("list", cwd=tmp_path, store=store)).stdout == table


def test_help_names_only_options_that_exist_and_the_backends(tmp_path: Path) -> None:
    for command in ("delete", "logs"):  # they take the experiment's stored backend: no --backend option
        text = ok(katibx_cli(command, "--help", cwd=tmp_path, store=tmp_path / "s.db")).stdout
        assert "--backend" not in text and "For an experiment run on the kubernetes backend" in text
    text = ok(katibx_cli("run", "--help", cwd=tmp_path, store=tmp_path / "s.db")).stdout
    assert "Worker backend plugin: kubernetes, local, ray." in " ".join(text.split())


def test_tables_show_numbers_short_and_json_keeps_them_whole(tmp_path: Path, write_experiment) -> None:
    store = tmp_path / "store.db"
    ok(katibx_cli("run", str(write_experiment(experiment_doc(maxTrialCount=2, parallelTrialCount=1))), "-q",
                  cwd=tmp_path, store=store))
    trials = get_json("trials", "exp", cwd=tmp_path, store=store)
    long_values = [a["value"] for t in trials for a in t["spec"]["parameterAssignments"] if len(a["value"]) > 8]
    assert long_values  # b is a double: full precision in -o json
    table = ok(katibx_cli("get", "trials", "exp", cwd=tmp_path, store=store)).stdout
    for value in long_values:
        assert value not in table and f"{float(value):.6g}" in table


def test_run_ends_with_a_hint_at_the_next_commands(tmp_path: Path, write_experiment) -> None:
    store = tmp_path / "store.db"
    path = write_experiment(experiment_doc(maxTrialCount=1, parallelTrialCount=1))
    result = ok(katibx_cli("run", str(path), cwd=tmp_path, store=store))
    assert f"next: katibx get trials exp | katibx logs exp TRIAL | store {store}" in " ".join(result.stderr.split())
    assert "next:" not in ok(katibx_cli("resume", "exp", "--max-trial-count", "2", "-q", cwd=tmp_path,
                                        store=store)).stderr  # not with -q
