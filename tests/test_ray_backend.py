"""The ``ray`` backend against a real local Ray head (one per module: starting Ray takes ~9 s).

Ray is a test dependency (``katibx[test]`` installs it): without it these tests fail, they never skip.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",  # Ray >= 2.59 turns on token auth for local clusters; head and clients must agree
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # every Ray listener on loopback only (read when ray is imported)
}
os.environ.update(RAY_ENV)

import ray  # noqa: E402 - a missing ray must fail this module, not skip it
from conftest import experiment_doc, katibx_cli, process_gone, set_command
from test_early_stopping import SERIES_SCRIPT
from test_early_stopping import _doc as medianstop_doc

import katibx  # noqa: E402
from katibx.loader import experiment_from_dict
from katibx.quantities import quantity
from katibx.runner import run_experiment
from katibx.store import Store, StoreError
from katibx.trial import TrialState
from katibx.workers.ray_backend import RayBackend, trial_resources


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(logs: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``ray start --head`` on loopback with 2 CPUs, in its own process group; returns it once it accepts clients.

    ``env``: extra environment of the head's processes (its workers inherit it)."""
    port = _free_port()
    with open(logs, "wb") as out:
        head = subprocess.Popen(
            ["ray", "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
             "--include-dashboard=false", "--disable-usage-stats"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})},
        )
    address = f"127.0.0.1:{port}"
    # The GCS port opens before the head's node has registered (a client then gets "No node info found"): wait
    # until a separate driver can connect, so neither this process nor a controller races the start-up.
    probe = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); ray.shutdown()"
    deadline = time.monotonic() + 90
    while True:
        assert head.poll() is None, logs.read_text()
        if subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60).returncode == 0:
            return head, address
        if time.monotonic() > deadline:
            stop_head(head)
            pytest.fail("the Ray head did not come up:\n" + logs.read_text())
        time.sleep(0.5)


def stop_head(head: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop the head's whole process group (GCS, raylet, workers); SIGKILL after 5 s."""
    try:
        os.killpg(head.pid, sig)
        head.wait(5)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory):
    """A 2-CPU Ray head on loopback for the whole module; this process is connected to it."""
    saved = {"RAY_ADDRESS": os.environ.get("RAY_ADDRESS")}
    head, address = start_head(tmp_path_factory.mktemp("ray") / "head.log")
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        os.environ["RAY_ADDRESS"] = address
        yield address
    finally:
        ray.shutdown()
        stop_head(head)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# end to end -----------------------------------------------------------------------------------------------------


def test_command_trials_run_on_ray_from_the_cli_and_their_logs_are_kept(ray_address, tmp_path, write_experiment):
    path = write_experiment(experiment_doc(maxTrialCount=4, parallelTrialCount=2))
    db = tmp_path / "db" / "katibx.db"
    result = katibx_cli("run", str(path), "--backend", "ray", "--ray-address", ray_address, "-q", cwd=tmp_path, store=db)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Succeeded" in result.stdout
    store = Store(db)
    try:
        record = store.get_experiment("exp")
        trials = store.trials(record.id)
        assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 4
        for t in trials:  # Katib's e2e objective 4a - b^2, computed by the trial process on a Ray worker
            assert float(t.observation["result"].latest) == pytest.approx(4 * t.assignments["a"] - t.assignments["b"] ** 2)
            assert (store.trial_dir(record, t.name) / "ray-worker.json").is_file()
    finally:
        store.close()
    logs = katibx_cli("logs", "exp", trials[0].name, cwd=tmp_path, store=db)
    assert logs.returncode == 0 and logs.stdout.startswith("result="), logs.stdout + logs.stderr


def test_an_experiment_on_ray_is_logged_into_mlflow(ray_address, tmp_path, write_experiment):
    """The controller logs what the store receives, whichever backend ran the trials."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = write_experiment(experiment_doc(maxTrialCount=2, parallelTrialCount=2))
    result = katibx_cli("run", str(path), "--backend", "ray", "--ray-address", ray_address, "-q", "--mlflow", uri,
                        cwd=tmp_path, store=tmp_path / "katibx.db")
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    trial_runs = [r for r in runs if r.data.tags["katibx.trial"].startswith("exp-")]
    assert len(runs) == 3 and len(trial_runs) == 2
    for run in trial_runs:
        assert run.data.tags["katibx.backend"] == "ray" and run.info.status == "FINISHED"
        params = run.data.params
        assert run.data.metrics["result"] == pytest.approx(4 * int(params["a"]) - float(params["b"]) ** 2)
        assert "stdout.log" in {a.path for a in client.list_artifacts(run.info.run_id)}


def e2e_objective(params: dict[str, Any]) -> dict[str, float]:
    sockets = sum(1 for fd in range(3, 1024) if _is_socket(fd))  # the worker's pipe to the actor (a socket pair)
    return {"result": 4 * params["a"] - params["b"] ** 2, "worker_pid": float(os.getppid()),
            "trial_pid": float(os.getpid()), "sockets": float(sockets)}


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def test_function_trials_run_on_reused_ray_workers(ray_address, tmp_path):
    store = Store(tmp_path / "katibx.db")
    try:
        experiment = katibx.tune(
            name="fn", objective=e2e_objective, backend="ray", store=store,
            parameters={"a": katibx.search.int(10, 20), "b": katibx.search.double(0.1, 0.2)},
            objective_metric_name="result", additional_metric_names=["worker_pid", "trial_pid", "sockets"],
            max_trial_count=8, parallel_trial_count=2,
        )
        assert experiment["status"]["conditions"][-1]["type"] == "Succeeded"
        trials = store.trials(store.get_experiment("fn").id)
        assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 8
        for t in trials:
            assert float(t.observation["result"].latest) == pytest.approx(4 * t.assignments["a"] - t.assignments["b"] ** 2)
        workers = {t.observation["worker_pid"].latest for t in trials}
        assert len(workers) <= 2, "trials run in a pool of parallelTrialCount long-lived actors"
        assert str(float(os.getpid())) not in workers
        # each actor's trials run in one reused worker process, which kept none of the actor's connections to Ray
        processes = {t.observation["trial_pid"].latest for t in trials}
        assert len(processes) <= 2 and not processes & workers
        assert {t.observation["sockets"].latest for t in trials} == {"1.0"}
    finally:
        store.close()


# resources --------------------------------------------------------------------------------------------------------

TIMED_SCRIPT = """
import json, os, sys, time
start = time.time()
time.sleep(0.6)
with open(os.path.join(os.environ["KATIBX_TRIAL_DIR"], "span.json"), "w") as f:
    json.dump([start, time.time()], f)
print("result=" + sys.argv[1])
"""


def test_resource_quantities():
    assert quantity("500m") == 0.5 and quantity("2") == 2 and quantity(3) == 3 and quantity("1Gi") == 2**30
    job = {"kind": "Job", "spec": {"template": {"spec": {"containers": [{"name": "main", "resources": {
        "requests": {"cpu": "1500m", "memory": "1Gi"}, "limits": {"cpu": "4", "nvidia.com/gpu": 1}}}]}}}}
    assert trial_resources(job, "main") == {"CPU": 1.5, "memory": 2.0**30, "GPU": 1.0}
    assert trial_resources({"kind": "Function", "spec": {"resources": {"cpu": 2, "gpu": "1"}}}, None) == {"CPU": 2, "GPU": 1}
    assert trial_resources({"kind": "Function", "spec": {}}, None) == {"CPU": 1.0}
    with pytest.raises(ValueError, match="resources cpu"):
        trial_resources({"kind": "Function", "spec": {"resources": {"cpu": "lots"}}}, None)


def test_trials_wait_for_cpus_and_a_trial_no_node_can_hold_is_refused(ray_address, tmp_path, store):
    (tmp_path / "objective.py").write_text(TIMED_SCRIPT)
    doc = experiment_doc(
        algorithm={"algorithmName": "grid"}, maxTrialCount=3, parallelTrialCount=3,
        parameters=[{"name": "a", "parameterType": "categorical", "feasibleSpace": {"list": ["1", "2", "3"]}}],
    )
    doc["spec"]["trialTemplate"]["trialParameters"] = [{"name": "a", "reference": "a"}]
    set_command(doc, ["python3", "objective.py", "${trialParameters.a}"])
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    # The 2-CPU cluster holds one 2-CPU trial at a time: three in parallel must take turns.
    container["resources"] = {"requests": {"cpu": "2"}}
    record = run_experiment(experiment_from_dict(doc), store=store, workdir=tmp_path, backend=RayBackend())
    trials = store.trials(record.id)
    assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 3
    spans = sorted(json.loads((store.trial_dir(record, t.name) / "span.json").read_text()) for t in trials)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end - 0.05, f"2-CPU trials overlapped on a 2-CPU cluster: {spans}"

    container["resources"] = {"limits": {"cpu": "16"}}
    doc["metadata"]["name"] = "too-big"
    doc["spec"]["maxTrialCount"] = doc["spec"]["parallelTrialCount"] = 1
    record = run_experiment(experiment_from_dict(doc), store=store, workdir=tmp_path, backend=RayBackend())
    (trial,) = store.trials(record.id)
    assert trial.state is TrialState.FAILED and "StartError" in trial.reason
    assert "needs CPU 16 but no node of the Ray cluster has that much (nodes: CPU 2)" in trial.message


def timed_objective(params: dict[str, Any]) -> dict[str, float]:
    """Sleeps a little and reports when it ran, so a test can see whether trials overlapped."""
    start = time.time()
    time.sleep(0.6)
    return {"result": params["a"], "start": start, "end": time.time()}


def test_resources_per_trial_from_the_python_api(ray_address, tmp_path, store):
    options = {"objective": timed_objective, "backend": "ray", "store": store, "objective_metric_name": "result",
               "parameters": {"a": katibx.search.categorical([1, 2, 3])}, "algorithm_name": "grid",
               "additional_metric_names": ["start", "end"], "max_trial_count": 3, "parallel_trial_count": 3}
    katibx.tune("two-cpus", resources_per_trial={"cpu": 2}, **options)
    trials = store.trials(store.get_experiment("two-cpus").id)
    assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 3
    spans = sorted((float(t.metric("start")), float(t.metric("end"))) for t in trials)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end - 0.05, f"2-CPU trials overlapped on a 2-CPU cluster: {spans}"

    with pytest.raises(katibx.ValidationError, match="resources cpu: not a quantity: 'lots'"):
        katibx.tune("bad-quantity", resources_per_trial={"cpu": "lots"}, **options)
    with pytest.raises(katibx.ValidationError, match="resources_per_trial: must be a dict, got int"):
        katibx.tune("not-a-dict", resources_per_trial=2, **options)
    assert {r.name for r in store.list_experiments()} == {"two-cpus"}


def test_trials_on_a_node_without_the_controllers_filesystem_keep_their_logs(tmp_path, write_experiment):
    """A cluster whose node keeps trial folders elsewhere ($KATIBX_WORKER_DIR, as a machine without the
    controller's disk): trials run in the node's folder and their output comes back for ``katibx logs``."""
    node_dir = tmp_path / "node"
    head, address = start_head(tmp_path / "head.log", env={"KATIBX_WORKER_DIR": str(node_dir)})
    try:
        doc = experiment_doc(
            algorithm={"algorithmName": "grid"}, maxTrialCount=2, parallelTrialCount=2,
            parameters=[{"name": "a", "parameterType": "categorical", "feasibleSpace": {"list": ["1", "2"]}}])
        doc["spec"]["trialTemplate"]["trialParameters"] = [{"name": "a", "reference": "a"}]
        set_command(doc, ["python3", "objective.py", "${trialParameters.a}"])
        path = write_experiment(doc, script="import os, sys\nprint('ran in', os.environ['KATIBX_TRIAL_DIR'])\n"
                                            "print('result=' + sys.argv[1])\n")
        db = tmp_path / "db" / "katibx.db"
        run = katibx_cli("run", str(path), "--backend", "ray", "--ray-address", address, "-q", cwd=tmp_path, store=db)
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        stop_head(head)
    store = Store(db)
    try:
        record = store.get_experiment("exp")
        for trial in store.trials(record.id):
            assert trial.state is TrialState.SUCCEEDED and trial.metric("result") == trial.assignments["a"]
            remote = node_dir / record.namespace / record.name / trial.name
            output = (remote / "stdout.log").read_text()
            assert output == f"ran in {remote}\nresult={trial.assignments['a']}\n", "it ran in the node's folder"
            assert not (store.trial_dir(record, trial.name) / "ray-worker.json").exists()
            logs = katibx_cli("logs", "exp", trial.name, cwd=tmp_path, store=db)
            assert logs.returncode == 0 and logs.stdout == output, logs.stderr
    finally:
        store.close()


# stopping -----------------------------------------------------------------------------------------------------------


def test_medianstop_stops_running_trials_on_ray_workers(ray_address, tmp_path, store, write_experiment):
    doc = medianstop_doc()
    write_experiment(doc, script=SERIES_SCRIPT)
    record = run_experiment(experiment_from_dict(doc), store=store, workdir=tmp_path, backend=RayBackend())
    trials = {t.assignments["a"]: t for t in store.trials(record.id)}
    assert [trials[a].state for a in (1, 3, 9, 0, 8)] == [
        TrialState.SUCCEEDED, TrialState.SUCCEEDED, TrialState.EARLY_STOPPED, TrialState.SUCCEEDED,
        TrialState.EARLY_STOPPED]
    assert 2 <= len(store.observation_logs(trials[9].id)) < 10, "stopped while running, after start_step reports"
    assert trials[9].reason == "TrialEarlyStopped"


def dying_worker_objective(params: dict[str, Any]) -> dict[str, float]:
    """``die``: kills the Ray worker process running this trial, then hangs (the orphan must be stopped)."""
    if params["mode"] == "die":
        with open(os.path.join(os.environ["KATIBX_TRIAL_DIR"], "pids.json"), "w") as f:
            json.dump({"trial": os.getpid(), "worker": os.getppid()}, f)
        time.sleep(0.5)  # the worker has recorded where the trial runs
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(60)
    return {"result": 1.0}


def test_a_dead_worker_process_fails_its_trial_and_the_experiment_goes_on(ray_address, tmp_path):
    store = Store(tmp_path / "katibx.db")
    try:
        katibx.tune(
            name="dying", objective=dying_worker_objective, backend="ray", store=store,
            parameters={"mode": katibx.search.categorical(["die", "ok", "fine"])},
            objective_metric_name="result", algorithm_name="grid", parallel_trial_count=1,
        )
        record = store.get_experiment("dying")
        trials = {t.assignments["mode"]: t for t in store.trials(record.id)}
        assert trials["die"].state is TrialState.FAILED
        assert trials["die"].reason == "TrialFailed. Job reason: WorkerDied"
        assert "Ray worker running the trial died" in trials["die"].message
        assert trials["ok"].state is TrialState.SUCCEEDED and trials["fine"].state is TrialState.SUCCEEDED
        pids = json.loads((store.trial_dir(record, trials["die"].name) / "pids.json").read_text())
        assert process_gone(pids["worker"], 10) and process_gone(pids["trial"], 10), "the orphaned trial process was stopped"
    finally:
        store.close()


# controller crash ---------------------------------------------------------------------------------------------------

SLOW_SCRIPT = """
import os, sys, time
with open(os.path.join(os.environ["KATIBX_TRIAL_DIR"], "pid"), "w") as f:
    f.write(str(os.getpid()))
time.sleep(0.6)
print("result=" + sys.argv[1])
"""


def test_resume_after_the_controller_is_killed_completes_with_exact_counts(ray_address, tmp_path, write_experiment):
    doc = experiment_doc(maxTrialCount=6, parallelTrialCount=2)
    set_command(doc, ["python3", "objective.py", "${trialParameters.a}", "${trialParameters.b}"])
    path = write_experiment(doc, script=SLOW_SCRIPT)
    db = tmp_path / "db" / "katibx.db"
    env = {**os.environ, "KATIBX_STORE": str(db)}
    controller = subprocess.Popen([sys.executable, "-m", "katibx.cli", "run", str(path), "--backend", "ray", "-q"],
                                  cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    orphans: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not orphans:  # kill it while two trials run and two have completed
            assert time.monotonic() < deadline and controller.poll() is None
            time.sleep(0.2)
            if not db.exists():
                continue
            store = Store(db)
            try:
                trials = store.trials(store.get_experiment("exp").id)
                record = store.get_experiment("exp")
                running = [t for t in trials if t.state is TrialState.RUNNING]
                pid_files = [store.trial_dir(record, t.name) / "pid" for t in running]
                if sum(t.state is TrialState.SUCCEEDED for t in trials) >= 2 and len(running) == 2 and all(
                        p.exists() for p in pid_files):
                    controller.kill()
                    orphans = [int(p.read_text()) for p in pid_files]
            except StoreError:
                pass
            finally:
                store.close()
    finally:
        controller.kill()
        controller.wait()
    result = katibx_cli("resume", "exp", "--backend", "ray", "--ray-address", ray_address, "-q", cwd=tmp_path, store=db)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(process_gone(pid, 1) for pid in orphans), "trials left running by the killed controller were stopped"
    store = Store(db)
    try:
        trials = store.trials(store.get_experiment("exp").id)
        assert len(trials) == 6 and [t.state for t in trials] == [TrialState.SUCCEEDED] * 6
    finally:
        store.close()
    assert "6 total, 6 succeeded" in result.stdout


# losing the cluster -------------------------------------------------------------------------------------------------

HANGING_SCRIPT = """
import os, time
with open(os.path.join(os.environ["KATIBX_TRIAL_DIR"], "pid"), "w") as f:
    f.write(str(os.getpid()))
time.sleep(120)
"""


def test_a_cluster_that_goes_away_stops_the_controller_with_one_line_and_the_store_intact(tmp_path, write_experiment):
    """A second head, killed with SIGKILL while two trials run: exit 2, a one-line error naming the address, the
    trials still recorded as running (so `katibx resume` re-runs them), and no trial process left behind."""
    head, address = start_head(tmp_path / "head.log")
    try:
        doc = experiment_doc(maxTrialCount=4, parallelTrialCount=2)
        set_command(doc, ["python3", "objective.py", "${trialParameters.a}", "${trialParameters.b}"])
        path = write_experiment(doc, script=HANGING_SCRIPT)
        db = tmp_path / "db" / "katibx.db"
        env = {**os.environ, "KATIBX_STORE": str(db), "RAY_ADDRESS": address}
        controller = subprocess.Popen([sys.executable, "-m", "katibx.cli", "run", str(path), "--backend", "ray", "-q"],
                                      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("db/**/pid"))) < 2:
            assert time.monotonic() < deadline and controller.poll() is None, controller.communicate()
            time.sleep(0.2)
        pids = [int(f.read_text()) for f in tmp_path.glob("db/**/pid")]
        stop_head(head, signal.SIGKILL)
        out, err = controller.communicate(timeout=90)
    finally:
        stop_head(head, signal.SIGKILL)
    assert controller.returncode == 2, out + err
    assert err.startswith(f"error: lost the Ray cluster at {address}") and err.count("\n") == 1, err
    assert "katibx resume NAME --backend ray" in err and "Traceback" not in err
    store = Store(db)
    try:
        trials = store.trials(store.get_experiment("exp").id)
        assert [t.state for t in trials] == [TrialState.RUNNING] * 2
    finally:
        store.close()
    assert all(process_gone(pid, 10) for pid in pids), "the trials' processes were stopped"


def test_should_prune_ends_trials_on_ray_workers_by_themselves(ray_address, tmp_path):
    from tests.test_pruning import objective as pruned_objective

    result = katibx.tune("pruning-ray", pruned_objective, {"x": katibx.search.int(0, 2)}, objective_metric_name="loss",
                         objective_type="minimize", algorithm_name="grid", max_trial_count=3, parallel_trial_count=1,
                         early_stopping_algorithm_name="medianstop",
                         early_stopping_settings={"min_trials_required": 1, "start_step": 2},
                         store=tmp_path / "katibx.db", backend="ray", progress=False)
    states = {t.params["x"]: t.state for t in result.trials}
    assert states == {0: TrialState.SUCCEEDED, 1: TrialState.EARLY_STOPPED, 2: TrialState.EARLY_STOPPED}
    for trial in result.trials[1:]:
        assert "pruned at step" in katibx.KatibxClient(tmp_path / "katibx.db").get_trial_logs("pruning-ray", trial.name)
