"""The local backend runs real processes: command trials from Katib templates and function trials from ``tune``."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import experiment_doc, katibx_cli, process_gone

import katibx
from katibx.loader import experiment_from_dict
from katibx.runner import run_experiment
from katibx.store import ExperimentRecord, Store
from katibx.trial import TrialRecord, TrialState

# Writes what the trial received (argv, env, cwd, interpreter) into its trial directory; prints the metric.
PROBE_SCRIPT = """
import json, os, sys
info = {
    "argv": sys.argv[1:],
    "executable": sys.executable,
    "cwd": os.getcwd(),
    "env": {k: os.environ.get(k) for k in ("KATIB_TRIAL_NAME", "KATIBX_TRIAL_DIR", "GREETING", "A_VALUE", "PYTHONUNBUFFERED")},
}
with open(os.path.join(os.environ["KATIBX_TRIAL_DIR"], "probe.json"), "w") as f:
    json.dump(info, f)
print("result=1")
"""


def grid_doc(parameters: list[dict[str, Any]], command: list[str], **spec: Any) -> dict[str, Any]:
    """An experiment with grid search over ``parameters``, each passed to ``command`` as a trial parameter."""
    doc = experiment_doc(
        algorithm={"algorithmName": "grid"},
        parameters=parameters,
        **{"maxTrialCount": None, "parallelTrialCount": 3, **spec},
    )
    if doc["spec"]["maxTrialCount"] is None:
        del doc["spec"]["maxTrialCount"]
    template = doc["spec"]["trialTemplate"]
    template["trialParameters"] = [{"name": p["name"], "reference": p["name"]} for p in parameters]
    template["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"] = command
    return doc


def run(doc: dict[str, Any], store: Store, workdir: Path, **options: Any) -> tuple[ExperimentRecord, list[TrialRecord]]:
    """Run an experiment document to completion; the record and its trials as stored."""
    record = run_experiment(experiment_from_dict(doc), store=store, workdir=workdir, **options)
    return record, store.trials(record.id)


def probe(store: Store, record: ExperimentRecord, trial: TrialRecord) -> dict[str, Any]:
    """What PROBE_SCRIPT recorded for a trial."""
    return json.loads((store.trial_dir(record, trial.name) / "probe.json").read_text())


def last_condition(record: ExperimentRecord) -> dict[str, Any]:
    return [c for c in record.conditions if c["status"] == "True"][-1]


# command trials ------------------------------------------------------------------------------------------------


def test_categorical_values_reach_the_program_as_plain_text_without_a_shell(store: Store, tmp_path: Path) -> None:
    values = ["$(touch pwned)", "a; touch pwned2", "`touch pwned3`"]
    (tmp_path / "probe.py").write_text(PROBE_SCRIPT)
    doc = grid_doc(
        [{"name": "v", "parameterType": "categorical", "feasibleSpace": {"list": values}}],
        ["python3", "probe.py", "--value=${trialParameters.v}", "${trialParameters.v}"],
    )
    record, trials = run(doc, store, tmp_path)

    assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 3
    received = sorted(probe(store, record, t)["argv"][1] for t in trials)
    assert received == sorted(values)
    for t in trials:
        assert probe(store, record, t)["argv"] == [f"--value={t.assignments['v']}", t.assignments["v"]]
    for folder in (tmp_path, Path.cwd(), Path.home()):
        assert not list(folder.glob("pwned*")), f"a value was executed by a shell in {folder}"
    assert not list(store.path.parent.rglob("pwned*"))


def test_a_sh_c_command_is_run_as_the_user_wrote_it(store: Store, tmp_path: Path) -> None:
    doc = grid_doc(
        [{"name": "a", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "2"}}],
        ["sh", "-c", "x=${trialParameters.a}; echo result=$((x * 10))"],
    )
    _, trials = run(doc, store, tmp_path)
    assert sorted((t.assignments["a"], t.observation["result"].latest) for t in trials) == [(1, "10"), (2, "20")]


def test_python_runs_this_interpreter_in_the_experiment_folder_with_trial_env(store: Store, tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE_SCRIPT)
    doc = grid_doc(
        [{"name": "a", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "2"}}],
        ["python", "probe.py", "--a=${trialParameters.a}"],
    )
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [
        {"name": "GREETING", "value": "hello; $(whoami) `id`"},
        {"name": "A_VALUE", "value": "a is ${trialParameters.a}"},
    ]
    record, trials = run(doc, store, tmp_path)

    assert len(trials) == 2 and all(t.state is TrialState.SUCCEEDED for t in trials)
    dirs = set()
    for t in trials:
        info = probe(store, record, t)
        assert info["executable"] == sys.executable
        assert Path(info["cwd"]) == tmp_path
        assert info["env"]["KATIB_TRIAL_NAME"] == t.name
        trial_dir = Path(info["env"]["KATIBX_TRIAL_DIR"])
        assert trial_dir == store.trial_dir(record, t.name) and trial_dir.is_dir()
        dirs.add(trial_dir)
        assert info["env"]["GREETING"] == "hello; $(whoami) `id`"
        assert info["env"]["A_VALUE"] == f"a is {t.assignments['a']}"
    assert len(dirs) == 2


def test_cli_runs_trials_in_the_experiment_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "probe.py").write_text(PROBE_SCRIPT)
    doc = grid_doc(
        [{"name": "a", "parameterType": "categorical", "feasibleSpace": {"list": ["1"]}}],
        ["python3", "probe.py", "${trialParameters.a}"],
    )
    import yaml

    (folder / "exp.yaml").write_text(yaml.safe_dump(doc))
    db = tmp_path / "elsewhere" / "katibx.db"
    result = katibx_cli("run", "project/exp.yaml", "-q", cwd=tmp_path, store=db)
    assert result.returncode == 0, result.stdout + result.stderr
    store = Store(db)
    try:
        record = store.get_experiment("exp")
        (trial,) = store.trials(record.id)
        assert Path(probe(store, record, trial)["cwd"]) == folder
    finally:
        store.close()


REPLICA_SCRIPT = """
import os, sys
role = sys.argv[1]
open(os.path.join(os.environ["KATIBX_TRIAL_DIR"], role), "w").close()
if role != "primary":
    sys.exit(1)
print("result=" + sys.argv[2])
"""


@pytest.mark.parametrize(
    ("kind", "replica_key", "primary", "container"),
    [("PyTorchJob", "pytorchReplicaSpecs", "Master", "pytorch"), ("TFJob", "tfReplicaSpecs", "Chief", "tensorflow")],
)
def test_training_job_runs_the_primary_replicas_command(
    store: Store, tmp_path: Path, kind: str, replica_key: str, primary: str, container: str
) -> None:
    (tmp_path / "replica.py").write_text(REPLICA_SCRIPT)

    def replica(role: str, replicas: int) -> dict[str, Any]:
        args = [role, "${trialParameters.a}"] if role == "primary" else [role]
        return {"replicas": replicas, "restartPolicy": "OnFailure", "template": {"spec": {"containers": [
            {"name": container, "image": "docker.io/kubeflow/whatever", "command": ["python3", "replica.py", *args]},
        ]}}}

    doc = grid_doc([{"name": "a", "parameterType": "int", "feasibleSpace": {"min": "3", "max": "4"}}], [])
    template = doc["spec"]["trialTemplate"]
    template["primaryContainerName"] = container
    # The non-primary replica comes first: the primary one must still be chosen.
    template["trialSpec"] = {"apiVersion": "kubeflow.org/v1", "kind": kind, "spec": {
        "runPolicy": {"cleanPodPolicy": "None"},
        replica_key: {"Worker": replica("worker", 2), primary: replica("primary", 1)},
    }}
    record, trials = run(doc, store, tmp_path)

    assert sorted((t.state, t.assignments["a"], t.observation["result"].latest) for t in trials) == [
        (TrialState.SUCCEEDED, 3, "3"), (TrialState.SUCCEEDED, 4, "4"),
    ]
    for t in trials:
        assert sorted(p.name for p in store.trial_dir(record, t.name).iterdir() if p.name in ("primary", "worker")) == ["primary"]


def test_trial_metadata_references_are_substituted(store: Store, tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE_SCRIPT)
    refs = {
        "trialName": "${trialSpec.Name}", "trialNamespace": "${trialSpec.Namespace}", "jobKind": "${trialSpec.Kind}",
        "jobAPIVersion": "${trialSpec.APIVersion}", "appLabel": "${trialSpec.Labels[app.kubernetes.io/name]}",
        "note": "${trialSpec.Annotations[katibx.io/note]}",
    }
    doc = grid_doc(
        [{"name": "a", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "2"}}],
        ["python3", "probe.py", "${trialParameters.a}", *(f"--{k}=${{trialParameters.{k}}}" for k in refs)],
    )
    doc["metadata"]["namespace"] = "team-a"
    template = doc["spec"]["trialTemplate"]
    template["trialParameters"] += [{"name": k, "reference": v} for k, v in refs.items()]
    template["trialSpec"]["metadata"] = {
        "labels": {"app.kubernetes.io/name": "mnist"}, "annotations": {"katibx.io/note": "a b; $(c)"},
    }
    record, trials = run(doc, store, tmp_path)

    assert len(trials) == 2
    for t in trials:
        assert t.state is TrialState.SUCCEEDED
        assert probe(store, record, t)["argv"] == [
            str(t.assignments["a"]), f"--trialName={t.name}", "--trialNamespace=team-a", "--jobKind=Job",
            "--jobAPIVersion=batch/v1", "--appLabel=mnist", "--note=a b; $(c)",
        ]


HANG_SCRIPT = """
import json, os, subprocess, sys, time
if sys.argv[1] == "ok":
    print("result=2")
    sys.exit(0)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(os.path.join(os.environ["KATIBX_TRIAL_DIR"], "pids.json"), "w") as f:
    json.dump({"main": os.getpid(), "child": child.pid, "group": os.getpgid(0)}, f)
print("result=1", flush=True)
time.sleep(60)
"""


def test_active_deadline_fails_the_trial_and_stops_its_process_group(store: Store, tmp_path: Path) -> None:
    (tmp_path / "hang.py").write_text(HANG_SCRIPT)
    doc = grid_doc(
        [{"name": "mode", "parameterType": "categorical", "feasibleSpace": {"list": ["hang", "ok"]}}],
        ["python3", "hang.py", "${trialParameters.mode}"],
        parallelTrialCount=1,
    )
    doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["activeDeadlineSeconds"] = 1
    record, trials = run(doc, store, tmp_path)

    by_mode = {t.assignments["mode"]: t for t in trials}
    hung = by_mode["hang"]
    assert hung.state is TrialState.FAILED
    assert "DeadlineExceeded" in hung.reason
    assert "deadline" in hung.message
    pids = json.loads((store.trial_dir(record, hung.name) / "pids.json").read_text())
    assert process_gone(pids["main"]) and process_gone(pids["child"])
    assert not [p.pid for p in psutil.process_iter() if _in_group(p, pids["group"])]
    # The experiment went on to the next trial and completed.
    assert by_mode["ok"].state is TrialState.SUCCEEDED
    assert last_condition(record)["reason"] == "ExperimentSuggestionEndReached"


def _in_group(proc: psutil.Process, group: int) -> bool:
    try:
        return os.getpgid(proc.pid) == group and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, ProcessLookupError):
        return False


def test_training_job_run_policy_deadline(store: Store, tmp_path: Path) -> None:
    doc = grid_doc([{"name": "a", "parameterType": "categorical", "feasibleSpace": {"list": ["1"]}}], [])
    template = doc["spec"]["trialTemplate"]
    template["primaryContainerName"] = "pytorch"
    template["trialSpec"] = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "spec": {
        "runPolicy": {"activeDeadlineSeconds": 1},
        "pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {"spec": {"containers": [{
            "name": "pytorch", "image": "x", "command": ["sleep", "30"], "args": ["${trialParameters.a}"],
        }]}}}},
    }}
    _, (trial,) = run(doc, store, tmp_path)
    assert trial.state is TrialState.FAILED and "DeadlineExceeded" in trial.reason


def test_a_program_that_cannot_start_fails_its_trial_and_the_experiment_goes_on(store: Store, tmp_path: Path) -> None:
    doc = grid_doc(
        [{"name": "prog", "parameterType": "categorical", "feasibleSpace": {"list": ["./no-such-program", "sh"]}}],
        ["${trialParameters.prog}", "-c", "echo result=5"],
        parallelTrialCount=1,
    )
    record, trials = run(doc, store, tmp_path)
    by_prog = {t.assignments["prog"]: t for t in trials}
    missing = by_prog["./no-such-program"]
    assert missing.state is TrialState.FAILED
    assert "StartError" in missing.reason and "no-such-program" in missing.message
    assert by_prog["sh"].state is TrialState.SUCCEEDED
    assert record.completed is not None


@pytest.mark.parametrize(
    ("container_patch", "message"),
    [
        ({"command": None, "args": ["train.py"]}, "has no command"),
        ({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}, "valueFrom"),
        ({"envFrom": [{"configMapRef": {"name": "settings"}}]}, "envFrom"),
    ],
)
def test_templates_that_need_a_cluster_are_refused_before_anything_runs(
    store: Store, tmp_path: Path, container_patch: dict[str, Any], message: str
) -> None:
    doc = experiment_doc()
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    for key, value in container_patch.items():
        if value is None:
            container.pop(key)
        else:
            container[key] = value
    if "command" not in container:
        container["args"] += ["--a=${trialParameters.a}", "--b=${trialParameters.b}"]
    with pytest.raises(katibx.ValidationError) as info:
        run(doc, store, tmp_path)
    assert message in str(info.value)
    assert store.list_experiments() == []


# function trials -----------------------------------------------------------------------------------------------


def unruly_objective(params: dict[str, Any]) -> dict[str, float]:
    """Misbehaves in the way ``params["mode"]`` says."""
    mode = params["mode"]
    if mode == "raise":
        raise RuntimeError("objective blew up")
    if mode == "exit":
        os._exit(3)
    if mode == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if mode == "hang":
        time.sleep(60)
    return {"result": 1.0}


def test_function_trials_that_crash_or_hang_never_take_the_controller_down(tmp_path: Path) -> None:
    store = Store(tmp_path / "katibx.db")
    controller_pid = os.getpid()
    modes = ["raise", "exit", "segv", "hang", "ok"]
    experiment = katibx.tune(
        name="unruly", objective=unruly_objective, parameters={"mode": katibx.search.categorical(modes)},
        objective_metric_name="result", algorithm_name="grid", parallel_trial_count=5,
        trial_active_deadline_seconds=1, store=store,
    )
    assert os.getpid() == controller_pid
    assert experiment["status"]["conditions"][-1]["type"] == "Succeeded"
    record = store.get_experiment("unruly")
    trials = {t.assignments["mode"]: t for t in store.trials(record.id)}
    assert sorted(trials) == sorted(modes)
    assert {m: t.state for m, t in trials.items()} == {
        "raise": TrialState.FAILED, "exit": TrialState.FAILED, "segv": TrialState.FAILED,
        "hang": TrialState.FAILED, "ok": TrialState.SUCCEEDED,
    }
    assert "code 1" in trials["raise"].message
    client = katibx.KatibxClient(store)
    assert "RuntimeError: objective blew up" in client.get_trial_logs("unruly", trials["raise"].name)
    assert "code 3" in trials["exit"].message
    assert "SIGSEGV" in trials["segv"].message
    assert "Fatal Python error: Segmentation fault" in client.get_trial_logs("unruly", trials["segv"].name)
    assert "DeadlineExceeded" in trials["hang"].reason
    assert trials["ok"].observation["result"].latest == "1.0"
    store.close()


def typed_objective(params: dict[str, Any]) -> dict[str, float]:
    """Records the received values and their types in the trial directory."""
    seen = {k: [repr(v), type(v).__name__] for k, v in params.items()}
    with open(os.path.join(os.environ["KATIBX_TRIAL_DIR"], "params.json"), "w") as f:
        json.dump(seen, f)
    return {"result": float(params["a"]) + params["b"]}


def _received(store: Store, name: str) -> list[tuple[TrialRecord, dict[str, list[str]]]]:
    record = store.get_experiment(name)
    return [(t, json.loads((store.trial_dir(record, t.name) / "params.json").read_text())) for t in store.trials(record.id)]


def test_function_objective_receives_typed_values(tmp_path: Path) -> None:
    store = Store(tmp_path / "katibx.db")
    katibx.tune(
        name="typed", objective=typed_objective,
        parameters={
            "a": katibx.search.int(10, 20), "b": katibx.search.double(0.1, 0.2),
            "act": katibx.search.categorical(["relu", "tanh"]), "fixed": {"layers": [1, 2]}, "tag": "x",
        },
        objective_metric_name="result", max_trial_count=3, parallel_trial_count=3,
        algorithm_settings={"random_state": 3}, store=store,
    )
    received = _received(store, "typed")
    assert len(received) == 3
    for trial, seen in received:
        assert trial.state is TrialState.SUCCEEDED
        assert seen["a"][1] == "int" and 10 <= int(seen["a"][0]) <= 20
        assert seen["b"][1] == "float" and 0.1 <= float(seen["b"][0]) <= 0.2
        assert seen["act"][1] == "str" and seen["act"][0] in ("'relu'", "'tanh'")
        assert seen["fixed"] == ["{'layers': [1, 2]}", "dict"]
        assert seen["tag"] == ["'x'", "str"]
        assert trial.assignments == {"a": int(seen["a"][0]), "b": float(seen["b"][0]), "act": seen["act"][0].strip("'")}


def mixed_objective(params: dict[str, Any]) -> dict[str, float]:
    """Records the categorical value it received, with its type."""
    with open(os.path.join(os.environ["KATIBX_TRIAL_DIR"], "params.json"), "w") as f:
        json.dump({"c": [repr(params["c"]), type(params["c"]).__name__]}, f)
    return {"result": 1.0}


def test_categorical_choices_keep_their_python_types(tmp_path: Path) -> None:
    store = Store(tmp_path / "katibx.db")
    katibx.tune(
        name="mixed", objective=mixed_objective, parameters={"c": katibx.search.categorical([1, True, "x"])},
        objective_metric_name="result", algorithm_name="grid", max_trial_count=3, parallel_trial_count=1, store=store,
    )
    received = sorted(tuple(seen["c"]) for _, seen in _received(store, "mixed"))
    assert received == [("'x'", "str"), ("1", "int"), ("True", "bool")]


FUNCTION_MODULE = """
import os


def objective(params):
    with open(os.path.join(os.environ["KATIBX_TRIAL_DIR"], "pid"), "w") as f:
        f.write(str(os.getpid()))
    return {"result": params["a"] * 2}
"""


def test_function_named_by_reference_runs_in_a_trial_process(store: Store, tmp_path: Path) -> None:
    (tmp_path / "worker_objectives.py").write_text(FUNCTION_MODULE)
    doc = grid_doc([{"name": "a", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "2"}}], [])
    doc["spec"]["trialTemplate"] = {
        "primaryContainerName": "function",
        "trialParameters": [{"name": "a", "reference": "a"}],
        "trialSpec": {"apiVersion": "katibx.io/v1alpha1", "kind": "Function", "spec": {"function": "worker_objectives:objective"}},
    }
    record, trials = run(doc, store, tmp_path)
    assert sorted((t.assignments["a"], t.observation["result"].latest) for t in trials) == [(1, "2"), (2, "4")]
    for t in trials:
        assert int((store.trial_dir(record, t.name) / "pid").read_text()) != os.getpid()


def test_templates_the_local_backend_cannot_run_are_refused_up_front():
    from katibx.preparation import check_experiment, create_backend

    backend = create_backend("local")
    doc = experiment_doc()
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    container["command"] = "python3 objective.py --a=${trialParameters.a} --b=${trialParameters.b}"
    errors = check_experiment(experiment_from_dict(doc), backend)
    assert any("command must be a list of strings" in e for e in errors), errors
    doc = experiment_doc()
    doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["activeDeadlineSeconds"] = -5
    errors = check_experiment(experiment_from_dict(doc), backend)
    assert any("activeDeadlineSeconds must be a positive number" in e for e in errors), errors


def test_release_after_a_crash_spares_a_process_that_reused_the_trials_pid() -> None:
    """A stored handle names the trial's process by pid and start (not by wall-clock time, which an NTP step moves):
    another process with that pid is left alone, the trial's own process group is stopped."""
    import subprocess

    from katibx.processes import process_started
    from katibx.workers.local import LocalBackend

    backend = LocalBackend()
    process = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"], start_new_session=True)
    try:
        started = process_started(process.pid)
        assert started is not None
        backend.release({"pid": process.pid, "started": started + 1})  # its pid, another start: not the trial's
        assert process.poll() is None and not process_gone(process.pid, 0)
        backend.release({"pid": process.pid, "started": started})
        assert process.wait(10) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait()
        backend.close()


def test_the_python_scripts_on_a_trials_path_are_rewritten_when_changed_or_gone(tmp_path: Path) -> None:
    """One set per experiment folder, checked by two stat calls a trial: another interpreter's resume rewriting them
    (or someone deleting them) is noticed, and each is replaced whole (never a truncated script for a running trial)."""
    from katibx.workers._python_path import BIN_DIR, with_python_on_path

    env: dict[str, str] = {"PATH": "/usr/bin"}
    with_python_on_path(tmp_path, env)
    script = tmp_path / BIN_DIR / "python"
    assert env["PATH"] == f"{tmp_path / BIN_DIR}{os.pathsep}/usr/bin"
    mine = script.read_text()
    assert sys.executable in mine and os.access(script, os.X_OK)
    script.write_text("#!/bin/sh\nexec /another/python \"$@\"\n")  # another process's katibx resumed the experiment
    with_python_on_path(tmp_path, {})
    assert script.read_text() == mine
    (tmp_path / BIN_DIR / "python3").unlink()
    with_python_on_path(tmp_path, {})
    assert (tmp_path / BIN_DIR / "python3").read_text() == mine
    assert sorted(p.name for p in (tmp_path / BIN_DIR).iterdir()) == ["python", "python3"]  # no partial files left


@pytest.mark.parametrize("kind", ["Job", "Function"])
def test_a_worker_spec_that_is_not_a_mapping_is_one_line_naming_it(tmp_path: Path, write_experiment, kind: str) -> None:
    doc = experiment_doc()
    doc["spec"]["trialTemplate"]["trialSpec"]["kind"] = kind
    doc["spec"]["trialTemplate"]["trialSpec"]["spec"] = 5
    ran = katibx_cli("validate", str(write_experiment(doc)), cwd=tmp_path, store=tmp_path / "k.db")
    assert ran.returncode == 2 and "Traceback" not in ran.stderr, ran.stderr
    assert "spec.trialTemplate.trialSpec.spec: must be a mapping, got int" in ran.stdout + ran.stderr
