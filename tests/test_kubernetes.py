"""The kubernetes backend end to end: the real client against the fake API server, real pod processes, real SQLite."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from support.fake_kube import FakeCluster
from support.fake_kube.fixtures import fake_cluster  # noqa: F401 - pytest fixture

from katibx.loader import experiment_from_dict
from katibx.runner import resume_experiment, run_experiment
from katibx.store import ExperimentNotFound, Store
from katibx.trial import TrialState
from katibx.validation import ValidationError
from katibx.workers.kubernetes import KubernetesBackend, KubernetesClusterError

JOBS = "/apis/batch/v1/namespaces/default/jobs"
# The trial's program, by ${trialParameters.mode}.
PROGRAM = """
import sys, time
mode = sys.argv[1]
if mode == "ok":
    print("epoch 1 loss=0.5"); print("loss=0.25")
elif mode == "fail":
    print("loss=0.1"); sys.exit(3)
elif mode == "push":
    import katibx
    katibx.report_metrics({"loss": 0.125})
    katibx.report_metrics({"loss": 0.0625})
elif mode == "pushwait":
    import katibx
    katibx.report_metrics({"loss": 0.125})
    time.sleep(3)
    katibx.report_metrics({"loss": 0.0625})
elif mode.startswith("slow"):
    time.sleep(2); print("loss=0.75")
elif mode == "flaky":  # fails its first run, then succeeds when its container is restarted
    import pathlib
    runs = pathlib.Path("runs"); n = int(runs.read_text()) if runs.exists() else 0; runs.write_text(str(n + 1))
    print("epoch 1 loss=0.5", flush=True); print(f"loss={9 if n == 0 else 0.25}", flush=True); sys.exit(n == 0)
elif mode == "stubborn":  # as "bad", deaf to SIGTERM
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for i in range(300):
        print(f"loss={5 + i}", flush=True); time.sleep(0.2)
elif mode == "bad":
    for i in range(300):
        print(f"loss={5 + i}", flush=True); time.sleep(0.2)
"""


def experiment(modes: list[str], parallel: int, *, name: str = "k8s", extra: dict[str, Any] | None = None,
               template: dict[str, Any] | None = None) -> Any:
    """An experiment whose trials run PROGRAM with each of ``modes`` (grid order) as a batch/v1 Job."""
    trial_template: dict[str, Any] = {
        "primaryContainerName": "training-container",
        "trialParameters": [{"name": "mode", "reference": "mode"}],
        "trialSpec": {
            "apiVersion": "batch/v1", "kind": "Job",
            "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{
                "name": "training-container", "image": "python:3.11",
                "command": ["python", "-c", PROGRAM, "${trialParameters.mode}"]}]}}},
        },
        **(template or {}),
    }
    doc = {
        "apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment", "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "objective": {"type": "minimize", "objectiveMetricName": "loss"},
            "algorithm": {"algorithmName": "grid"},
            "parallelTrialCount": parallel, "maxTrialCount": len(modes), "maxFailedTrialCount": len(modes),
            "parameters": [{"name": "mode", "parameterType": "categorical", "feasibleSpace": {"list": modes}}],
            "trialTemplate": trial_template,
            **(extra or {}),
        },
    }
    return experiment_from_dict(doc)


def job_template(*, image: str = "python:3.11", restart: str = "Never", backoff: int = 0,
                 **pod_spec: Any) -> dict[str, Any]:
    """A trialTemplate override: PROGRAM in a batch/v1 Job with these settings."""
    return {"trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"backoffLimit": backoff, "template": {
        "spec": {"restartPolicy": restart, **pod_spec, "containers": [{
            "name": "training-container", "image": image,
            "command": ["python", "-c", PROGRAM, "${trialParameters.mode}"]}]}}}}}


def backend(cluster: FakeCluster, **options: Any) -> KubernetesBackend:
    return KubernetesBackend(kubeconfig=str(cluster.kubeconfig), **options)


def unreachable_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig whose server refuses connections (port 9)."""
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:9\n"
                      "users:\n- name: u\n  user: {}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\n"
                      "current-context: c\n")
    return config


def job_creations(cluster: FakeCluster) -> list[Any]:
    return [c for c in cluster.calls if c.method == "POST" and c.path == JOBS]


def by_mode(store: Store, record: Any) -> dict[str, Any]:
    return {t.assignments["mode"]: t for t in store.trials(record.id)}


def test_experiment_on_the_fake_cluster(fake_cluster: FakeCluster, tmp_path: Path) -> None:  # noqa: F811
    store = Store(tmp_path / "db.sqlite")
    record = run_experiment(experiment(["ok", "fail", "push", "nometric"], 4), store=store,
                            backend=backend(fake_cluster), workdir=tmp_path)
    trials = by_mode(store, record)
    assert trials["ok"].state is TrialState.SUCCEEDED
    assert trials["ok"].observation["loss"].latest == "0.25" and trials["ok"].observation["loss"].max == "0.5"
    assert trials["push"].state is TrialState.SUCCEEDED
    assert trials["push"].observation["loss"].min == "0.0625"
    assert trials["fail"].state is TrialState.FAILED
    assert "BackoffLimitExceeded" in trials["fail"].reason
    assert trials["nometric"].state is TrialState.METRICS_UNAVAILABLE
    assert len(job_creations(fake_cluster)) == 4
    # Jobs are labelled, reference the owner ConfigMap, and are deleted once finished (retain is false).
    assert fake_cluster.objects("batch/v1", "Job") == []
    owners = fake_cluster.objects("v1", "ConfigMap")
    assert [o["metadata"]["name"] for o in owners if o["metadata"]["name"] == "k8s-katibx"]
    log_text = (store.trial_dir(record, trials["ok"].name) / "stdout.log").read_text()
    assert "epoch 1 loss=0.5" in log_text
    # the watch is used, not polling: a handful of list calls for the whole experiment
    lists = [c for c in fake_cluster.calls if c.method == "GET" and c.path == JOBS and c.query.get("watch") != "true"]
    assert len(lists) <= 3


def test_retain_keeps_jobs_with_labels_and_owner(fake_cluster: FakeCluster, tmp_path: Path) -> None:  # noqa: F811
    store = Store(tmp_path / "db.sqlite")
    record = run_experiment(experiment(["ok"], 1, template={"retain": True}), store=store,
                            backend=backend(fake_cluster), workdir=tmp_path)
    (trial,) = store.trials(record.id)
    assert trial.state is TrialState.SUCCEEDED
    (job,) = fake_cluster.objects("batch/v1", "Job")
    assert job["metadata"]["name"] == trial.name
    assert job["metadata"]["labels"]["katib.kubeflow.org/trial"] == trial.name
    assert job["metadata"]["labels"]["katib.kubeflow.org/experiment"] == "k8s"
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner["kind"] == "ConfigMap" and owner["name"] == "k8s-katibx"
    pods = fake_cluster.objects("v1", "Pod")
    assert pods and all(p["metadata"]["labels"]["katib.kubeflow.org/trial"] == trial.name for p in pods)


@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_early_stopping_deletes_the_job(fake_cluster: FakeCluster, tmp_path: Path, policy: str) -> None:  # noqa: F811
    store = Store(tmp_path / "db.sqlite")
    exp = experiment(["ok", "stubborn"], 1, template=job_template(terminationGracePeriodSeconds=1), extra={
        "earlyStopping": {"algorithmName": "medianstop", "algorithmSettings": [
            {"name": "min_trials_required", "value": "1"}, {"name": "start_step", "value": "2"}]}})
    record = run_experiment(exp, store=store, backend=backend(fake_cluster, propagation_policy=policy),
                            workdir=tmp_path)
    trials = by_mode(store, record)
    assert trials["stubborn"].state is TrialState.EARLY_STOPPED
    # stopped from streamed log lines, long before its 300 lines were printed; its pod ignored SIGTERM, was killed
    # after its grace period (with Foreground the Job waited for it), and the trial ended once
    assert "loss=304" not in (store.trial_dir(record, trials["stubborn"].name) / "stdout.log").read_text()
    deletes = [c for c in fake_cluster.calls if c.method == "DELETE" and c.path == f"{JOBS}/{trials['stubborn'].name}"]
    assert deletes
    assert fake_cluster.objects("batch/v1", "Job") == []


def test_watch_expiry_and_api_errors_are_survived(fake_cluster: FakeCluster, tmp_path: Path,  # noqa: F811
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="katibx.workers._kube_api")
    store = Store(tmp_path / "db.sqlite")
    fake_cluster.fail("POST", f"^{JOBS}$", 500, times=1)
    fake_cluster.fail("POST", f"^{JOBS}$", 429, times=1)
    expired: list[bool] = []

    def listener(record: Any, book: Any) -> None:
        if not expired and book.counts().running:
            expired.append(True)
            fake_cluster.expire_watches()

    record = run_experiment(experiment(["slow", "ok", "push"], 3), store=store, backend=backend(fake_cluster),
                            workdir=tmp_path, listener=listener)
    assert expired
    assert [t.state for t in store.trials(record.id)] == [TrialState.SUCCEEDED] * 3
    statuses = [c.status for c in job_creations(fake_cluster)]
    assert statuses.count(500) == 1 and statuses.count(429) == 1 and statuses.count(201) == 3
    relists = [c for c in fake_cluster.calls if c.method == "GET" and c.path == JOBS and c.query.get("watch") != "true"]
    assert len(relists) >= 2  # a fresh list after the 410
    # the server's ERROR event with a 410 Status was read as such (not as a broken stream retried after a backoff)
    messages = [r.getMessage() for r in caplog.records]
    assert any("resourceVersion expired (" in m for m in messages), messages
    assert not any("retrying in" in m and "HTTP" not in m for m in messages), messages


def test_a_busy_cluster_expiring_watch_history_loses_no_trial(tmp_path: Path) -> None:
    with FakeCluster(tmp_path, history_seconds=0.3) as cluster:
        core = kubernetes.client.CoreV1Api(cluster.api_client())
        core.create_namespaced_config_map("default", {"metadata": {"name": "churn"}, "data": {"n": "0"}})
        stop = threading.Event()

        def churn() -> None:  # someone else's objects keep changing: the watch history moves on without us
            n = 0
            while not stop.wait(0.02):
                n += 1
                core.patch_namespaced_config_map("churn", "default", {"data": {"n": str(n)}})
        churner = threading.Thread(target=churn, daemon=True)
        churner.start()
        try:
            store = Store(tmp_path / "db.sqlite")
            record = run_experiment(experiment(["slow1", "slow2", "slow3", "slow4"], 2), store=store,
                                    backend=backend(cluster, watch_timeout=1), workdir=tmp_path)
        finally:
            stop.set()
            churner.join()
        assert cluster.store.expired_watches > 0  # the backend's watches did come back too late
        trials = store.trials(record.id)
        assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 4
        assert all(t.observation["loss"].latest == "0.75" for t in trials)
        assert len(job_creations(cluster)) == 4  # each trial created once


def wait_for(condition: Any, seconds: float = 10.0) -> bool:
    """Whether ``condition()`` became true within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def start_controller(cluster: FakeCluster, exp: Any, tmp_path: Path, db: Path) -> subprocess.Popen[bytes]:
    """`katibx run` of ``exp`` on the fake cluster in its own process group (to be killed)."""
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump(exp.model_dump(by_alias=True, exclude_none=True)))
    return subprocess.Popen(
        [sys.executable, "-m", "katibx.cli", "run", str(exp_file), "--backend", "kubernetes", "--kubeconfig",
         str(cluster.kubeconfig), "--store", str(db), "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def handles_committed(db: Path, count: int) -> bool:
    """Whether ``count`` trials of experiment k8s have their backend handle in the store at ``db``."""
    if not db.exists():
        return False
    probe = Store(db)
    try:
        trials = probe.trials(probe.get_experiment("k8s").id)
        return sum(probe.trial_handle(t) is not None for t in trials) == count
    except ExperimentNotFound:
        return False
    finally:
        probe.close()


def test_resume_after_a_controller_kill_reattaches(fake_cluster: FakeCluster, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "db.sqlite"
    controller = start_controller(fake_cluster, experiment(["slow1", "slow2"], 2), tmp_path, db)
    assert wait_for(lambda: len(fake_cluster.objects("batch/v1", "Job")) == 2, 30)
    assert wait_for(lambda: handles_committed(db, 2), 30)  # the kill comes after both handles are stored
    os.killpg(controller.pid, signal.SIGKILL)
    controller.wait()
    assert len(fake_cluster.objects("batch/v1", "Job")) == 2
    store = Store(db)
    before = store.trials(store.get_experiment("k8s").id)
    assert [t.state for t in before] == [TrialState.RUNNING] * 2
    # Plain `katibx resume`: the store knows the backend and its kubeconfig (no local re-run of the trials).
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    resumed = subprocess.run([sys.executable, "-m", "katibx.cli", "resume", "k8s", "--store", str(db), "-q"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    trials = store.trials(store.get_experiment("k8s").id)
    assert [t.state for t in trials] == [TrialState.SUCCEEDED] * 2
    assert all(t.observation["loss"].latest == "0.75" for t in trials)
    assert len(job_creations(fake_cluster)) == 2  # re-attached: no Job created twice
    assert [store.trial_handle(t)["backend"] for t in trials] == ["kubernetes"] * 2  # not re-run by another backend


def test_resume_on_another_backend_is_refused(fake_cluster: FakeCluster, tmp_path: Path) -> None:  # noqa: F811
    store = Store(tmp_path / "db.sqlite")
    run_experiment(experiment(["ok"], 1), store=store, backend=backend(fake_cluster))
    record = store.get_experiment("k8s")
    context = yaml.safe_load(fake_cluster.kubeconfig.read_text())["current-context"]
    assert (record.backend, record.backend_options) == (
        "kubernetes", {"kubeconfig": str(fake_cluster.kubeconfig), "context": context})
    with pytest.raises(ValidationError, match="ran on the kubernetes backend, not local; resume it with --backend "
                                              "kubernetes"):
        resume_experiment("k8s", store=store, backend="local", max_trial_count=2)


def test_unreachable_cluster_is_one_clear_error(tmp_path: Path) -> None:
    config = unreachable_kubeconfig(tmp_path)
    store = Store(tmp_path / "db.sqlite")
    with pytest.raises(KubernetesClusterError, match="cannot reach the Kubernetes API server at http://127.0.0.1:9"):
        run_experiment(experiment(["ok"], 1), store=store, backend=KubernetesBackend(kubeconfig=str(config),
                                                                                    retry_seconds=0.5))
    (trial,) = store.trials(store.get_experiment("k8s").id)
    assert trial.state is TrialState.CREATED  # kept for `katibx resume`


def test_pytorchjob_through_custom_objects(fake_cluster: FakeCluster, tmp_path: Path) -> None:  # noqa: F811
    replica = {"replicas": 1, "restartPolicy": "OnFailure", "template": {"spec": {"containers": [{
        "name": "pytorch", "image": "python:3.11", "command": ["python", "-c", PROGRAM, "${trialParameters.mode}"]}]}}}
    template = {"primaryContainerName": "pytorch", "trialSpec": {
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "spec": {"pytorchReplicaSpecs": {"Master": replica, "Worker": replica}}}}
    store = Store(tmp_path / "db.sqlite")
    record = run_experiment(experiment(["ok", "fail"], 2, template=template), store=store,
                            backend=backend(fake_cluster), workdir=tmp_path)
    trials = by_mode(store, record)
    assert trials["ok"].state is TrialState.SUCCEEDED and trials["ok"].observation["loss"].latest == "0.25"
    assert trials["fail"].state is TrialState.FAILED
    created = [c for c in fake_cluster.calls if c.method == "POST" and c.path.endswith("/pytorchjobs")]
    assert len(created) == 2 and created[0].path == "/apis/kubeflow.org/v1/namespaces/default/pytorchjobs"


def test_unknown_kind_fails_the_trial_with_the_reason(fake_cluster: FakeCluster, tmp_path: Path) -> None:  # noqa: F811
    template = {"successCondition": "status.done", "failureCondition": "status.failed", "trialSpec": {
        "apiVersion": "example.com/v1", "kind": "Widget", "spec": {"mode": "${trialParameters.mode}"}}}
    store = Store(tmp_path / "db.sqlite")
    record = run_experiment(experiment(["ok"], 1, template=template), store=store, backend=backend(fake_cluster),
                            workdir=tmp_path)
    (trial,) = store.trials(record.id)
    assert trial.state is TrialState.FAILED
    assert "the cluster does not serve example.com/v1" in trial.message and "Widget CRD" in trial.message


@pytest.mark.parametrize("retain", [False, True], ids=["deleted", "retained"])
def test_a_pod_that_cannot_start_fails_its_trial(fake_cluster: FakeCluster, tmp_path: Path,  # noqa: F811
                                                 retain: bool) -> None:
    fake_cluster.missing_images.add("registry.example/absent:1")
    images = ["python:3.11", "registry.example/absent:1", "Bad Image"]
    template = {"trialParameters": [{"name": "mode", "reference": "mode"}, {"name": "image", "reference": "image"}],
                **job_template(image="${trialParameters.image}"), "retain": retain}
    extra = {"maxTrialCount": 3, "maxFailedTrialCount": 3, "parameters": [
        {"name": "mode", "parameterType": "categorical", "feasibleSpace": {"list": ["ok"]}},
        {"name": "image", "parameterType": "categorical", "feasibleSpace": {"list": images}}]}
    store = Store(tmp_path / "db.sqlite")
    record = run_experiment(experiment(["ok"], 3, template=template, extra=extra), store=store,
                            backend=backend(fake_cluster, container_start_timeout=1), workdir=tmp_path)
    trials = {t.assignments["image"]: t for t in store.trials(record.id)}
    assert trials["python:3.11"].state is TrialState.SUCCEEDED
    absent, bad = trials["registry.example/absent:1"], trials["Bad Image"]
    assert absent.state is TrialState.FAILED and absent.reason.endswith(("ImagePullBackOff", "ErrImagePull"))
    assert "(image registry.example/absent:1)" in absent.message and "waited 1 s" in absent.message
    assert bad.state is TrialState.FAILED and bad.reason.endswith("InvalidImageName")  # at once, no wait
    kept = [job["metadata"]["name"] for job in fake_cluster.objects("batch/v1", "Job")]
    assert kept == ([trials["python:3.11"].name] if retain else [])  # a stuck trial's Job is deleted, even retained


@pytest.mark.parametrize("streams", [64, 0], ids=["followed", "read-at-end"])
def test_a_restarted_container_is_read_run_by_run(fake_cluster: FakeCluster, tmp_path: Path,  # noqa: F811
                                                  streams: int) -> None:
    store = Store(tmp_path / "db.sqlite")
    record = run_experiment(experiment(["flaky"], 1, template=job_template(restart="OnFailure", backoff=3)), store=store,
                            backend=backend(fake_cluster, max_log_streams=streams), workdir=tmp_path)
    (trial,) = store.trials(record.id)
    assert trial.state is TrialState.SUCCEEDED
    assert trial.observation["loss"].latest == "0.25"  # the run that succeeded, not the one that failed
    log_text = (store.trial_dir(record, trial.name) / "stdout.log").read_text()
    assert log_text.count("epoch 1 loss=0.5") == (2 if streams else 1)  # each run once (unfollowed: the last)


@pytest.mark.parametrize("change, message", [
    ({"metricsCollectorSpec": {"collector": {"kind": "TensorFlowEvent"}}},
     "spec.metricsCollectorSpec.collector.kind: the kubernetes backend collects StdOut, File, Push metrics, not "
     "TensorFlowEvent: event files stay inside the pod"),
    ({"metricsCollectorSpec": {"collector": {"kind": "PrometheusMetric"}}},
     "not PrometheusMetric: scraping the pod needs Katib's sidecar"),
    ({"metricsCollectorSpec": {"collector": {"kind": "File"}},
      "trialTemplate": {"primaryContainerName": "main", "trialParameters": [{"name": "mode", "reference": "mode"}],
                        "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
                            "containers": [{"name": "main", "image": "x", "args": ["${trialParameters.mode}"]}]}}}}}},
     "spec.metricsCollectorSpec.collector.kind: File metrics are printed by wrapping the primary container's command"),
    ({"trialTemplate": {"successCondition": "status.@reverse", "failureCondition": "status.failed",
                        "primaryContainerName": "main", "trialParameters": [{"name": "mode", "reference": "mode"}],
                        "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"x": "${trialParameters.mode}"}}}},
     "spec.trialTemplate.successCondition: modifier '@reverse' is not supported"),
    ({"trialTemplate": {"primaryContainerName": "nope", "trialParameters": [{"name": "mode", "reference": "mode"}],
                        "trialSpec": {"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"x": "${trialParameters.mode}"}}}},
     "spec.trialTemplate: successCondition and failureCondition must be specified"),
])
def test_bad_input_is_one_line_naming_the_field(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    from click.testing import CliRunner

    from katibx.cli import main

    doc = experiment(["ok"], 1).model_dump(by_alias=True, exclude_none=True)
    doc["spec"].update(change)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(main, ["validate", "--backend", "kubernetes", str(path)])
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ")
    result = CliRunner().invoke(main, ["run", "--backend", "kubernetes", "--kubeconfig", str(tmp_path / "none"),
                                       "--store", str(tmp_path / "db"), str(path)])
    assert result.exit_code == 2 and message in result.output.replace("\n", " ")


def test_logs_from_the_trial_and_its_pods(fake_cluster: FakeCluster, tmp_path: Path) -> None:  # noqa: F811
    from click.testing import CliRunner

    from katibx.cli import main

    db = tmp_path / "db.sqlite"
    store = Store(db)
    record = run_experiment(experiment(["ok"], 1, template={"retain": True}), store=store,
                            backend=backend(fake_cluster), workdir=tmp_path)
    (trial,) = store.trials(record.id)
    result = CliRunner().invoke(main, ["logs", "k8s", trial.name, "--store", str(db)])
    assert result.exit_code == 0 and "epoch 1 loss=0.5\nloss=0.25\n" in result.output
    # a trial whose output was not collected yet (still running) is read from its pods
    (store.trial_dir(record, trial.name) / "stdout.log").unlink()
    result = CliRunner().invoke(main, ["logs", "k8s", trial.name, "--store", str(db),
                                       "--kubeconfig", str(fake_cluster.kubeconfig)])
    assert result.exit_code == 0 and "loss=0.25" in result.output
    result = CliRunner().invoke(main, ["logs", "k8s", trial.name, "-f", "--tail", "1", "--store", str(db),
                                       "--kubeconfig", str(fake_cluster.kubeconfig)])  # the trial has ended: no wait
    assert result.exit_code == 0 and result.output == "loss=0.25\n", result.output


def test_push_endpoint_checks_trial_and_token(fake_cluster: FakeCluster, tmp_path: Path) -> None:  # noqa: F811
    import http.client
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    from katibx.report import PUSH_TOKEN_ENV, PUSH_TRIAL_HEADER, PUSH_URL_ENV

    kube = backend(fake_cluster)
    store = Store(tmp_path / "db.sqlite")
    record = store.create_experiment(experiment(["slow"], 1), [], str(tmp_path))
    from katibx.backend import TrialJob
    from katibx.trial import TrialRecord

    trial = TrialRecord(name="k8s-push", index=0, assignments={"mode": "slow"})
    job = TrialJob(experiment=record.experiment, trial=trial, workdir=tmp_path, trial_dir=tmp_path / "t")
    kube.start(job)
    try:
        (worker,) = fake_cluster.objects("batch/v1", "Job")
        env = {e["name"]: e["value"] for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}

        def post(trial: str, token: str, metrics: Any) -> int:
            data = json.dumps(metrics).encode()
            headers = {PUSH_TRIAL_HEADER: trial, "Authorization": f"Bearer {token}"}
            request = urllib.request.Request(env[PUSH_URL_ENV], data=data, method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        def post_unread(trial: str, token: str, length: int) -> int:
            """The status answering a POST that announces a ``length``-byte body and never sends it."""
            url = urllib.parse.urlsplit(env[PUSH_URL_ENV])
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
            connection.putrequest("POST", url.path)
            for key, value in {PUSH_TRIAL_HEADER: trial, "Authorization": f"Bearer {token}",
                               "Content-Length": str(length)}.items():
                connection.putheader(key, value)
            connection.endheaders()  # headers only: a server that reads the body first waits for it (5 s timeout)
            try:
                return connection.getresponse().status
            finally:
                connection.close()

        token = env[PUSH_TOKEN_ENV]
        # refused from the headers alone, without reading the body: a wrong token, an unknown trial, a huge body
        assert post_unread("k8s-push", "wrong", 10 << 30) == 403
        assert post_unread("other", token, 10 << 30) == 404
        assert post_unread("k8s-push", token, 10 << 30) == 413
        assert post("k8s-push", "wrong", {"loss": 1}) == 403
        assert post("k8s-push", token, "x") == 400
        assert post("k8s-push", token, {"loss": 1, "timestamp": 5.0}) == 200
        events = kube.poll(5)
        assert [(e.trial_name, [m.value for m in e.logs]) for e in events][0] == ("k8s-push", ["1"])
    finally:
        kube.close()
    assert fake_cluster.objects("batch/v1", "Job") == []  # close() deleted the running trial


def test_active_deadline_fails_the_trial(fake_cluster: FakeCluster, tmp_path: Path) -> None:  # noqa: F811
    exp = experiment(["bad"], 1)
    # Job.status.startTime has second precision, so a deadline of N seconds can end the pod after N-1 seconds:
    # 3 leaves the trial at least 2 s to start and print, even on a loaded machine.
    exp.spec.trial_template.trial_spec["spec"]["activeDeadlineSeconds"] = 3
    store = Store(tmp_path / "db.sqlite")
    record = run_experiment(exp, store=store, backend=backend(fake_cluster), workdir=tmp_path)
    (trial,) = store.trials(record.id)
    assert trial.state is TrialState.FAILED and "DeadlineExceeded" in trial.reason
    assert trial.observation["loss"].min == "5"  # metrics streamed before the deadline are kept


def test_configmap_template_read_from_the_cluster(fake_cluster: FakeCluster, tmp_path: Path) -> None:  # noqa: F811
    import kubernetes

    job = experiment(["ok"], 1).spec.trial_template.trial_spec
    core = kubernetes.client.CoreV1Api(fake_cluster.api_client())
    core.create_namespaced_config_map("default", {"metadata": {"name": "trial-templates"},
                                                  "data": {"job.yaml": yaml.safe_dump(job)}})
    template = {"trialSpec": None, "configMap": {"configMapName": "trial-templates", "configMapNamespace": "default",
                                                 "templatePath": "job.yaml"},
                "successCondition": 'status.conditions.#(type=="Complete")#|#(status=="True")#',
                "failureCondition": 'status.conditions.#(type=="Failed")#|#(status=="True")#'}
    doc = experiment(["ok"], 1).model_dump(by_alias=True, exclude_none=True)
    doc["spec"]["trialTemplate"].pop("trialSpec")
    doc["spec"]["trialTemplate"].update({k: v for k, v in template.items() if v is not None})
    store = Store(tmp_path / "db.sqlite")
    record = run_experiment(experiment_from_dict(doc), store=store, backend=backend(fake_cluster), workdir=tmp_path)
    (trial,) = store.trials(record.id)
    assert trial.state is TrialState.SUCCEEDED and trial.observation["loss"].latest == "0.25"


def test_delete_cleans_the_cluster(fake_cluster: FakeCluster, tmp_path: Path) -> None:  # noqa: F811
    from click.testing import CliRunner

    from katibx.cli import main

    db = tmp_path / "db.sqlite"
    store = Store(db)
    record = run_experiment(experiment(["ok", "slow"], 2, template={"retain": True}), store=store,
                            backend=backend(fake_cluster), workdir=tmp_path)
    assert [t.state for t in store.trials(record.id)] == [TrialState.SUCCEEDED] * 2
    assert len(fake_cluster.objects("batch/v1", "Job")) == 2 and fake_cluster.objects("v1", "Pod")
    unrelated = [o["metadata"]["name"] for o in fake_cluster.objects("v1", "ConfigMap")
                 if o["metadata"]["name"] != "k8s-katibx"]
    result = CliRunner().invoke(main, ["delete", "k8s", "--store", str(db), "--kubeconfig", str(fake_cluster.kubeconfig)])
    assert result.exit_code == 0, result.output
    assert "experiment k8s deleted; its Kubernetes objects in namespace default are being garbage-collected" in (
        result.output.replace("\n", " "))
    deletes = [c for c in fake_cluster.calls if c.method == "DELETE" and c.path.endswith("/configmaps/k8s-katibx")]
    assert [c.query.get("propagationPolicy") for c in deletes] == ["Background"]
    assert wait_for(lambda: not fake_cluster.objects("batch/v1", "Job") and not fake_cluster.objects("v1", "Pod"))
    assert [o["metadata"]["name"] for o in fake_cluster.objects("v1", "ConfigMap")] == unrelated
    assert Store(db).list_experiments() == []


def test_delete_with_the_cluster_unreachable_keeps_the_experiment(tmp_path: Path, monkeypatch: Any) -> None:
    from click.testing import CliRunner

    import katibx.workers.kubernetes
    from katibx.cli import main

    db = tmp_path / "db.sqlite"
    store = Store(db)
    record = store.create_experiment(experiment(["ok"], 1), [], str(tmp_path), backend="kubernetes")
    from katibx.trial import TrialRecord

    trial = TrialRecord(name="k8s-0", index=0, assignments={"mode": "ok"})
    store.add_trials(record.id, [trial])
    store.save_trial(trial, {"backend": "kubernetes", "namespace": "default", "apiVersion": "batch/v1", "kind": "Job",
                             "name": "k8s-0", "uid": "u"})
    config = unreachable_kubeconfig(tmp_path)
    monkeypatch.setattr(katibx.workers.kubernetes, "DELETE_RETRY_SECONDS", 0.3)
    result = CliRunner().invoke(main, ["delete", "k8s", "--store", str(db), "--kubeconfig", str(config)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    text = lines[0]
    assert "error: cannot reach the Kubernetes API server at http://127.0.0.1:9" in text
    assert "experiment k8s is kept" in text and "Traceback" not in text
    assert [r.name for r in Store(db).list_experiments()] == ["k8s"]
    result = CliRunner().invoke(main, ["delete", "k8s", "--store", str(db), "--kubeconfig", str(config), "--force"])
    assert result.exit_code == 0 and "what its trials created on the kubernetes backend is left" in result.output.replace("\n", " ")
    assert Store(db).list_experiments() == []


def test_pushed_metrics_survive_a_resume(fake_cluster: FakeCluster, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "db.sqlite"
    controller = start_controller(fake_cluster, experiment(["pushwait"], 1), tmp_path, db)
    # the controller accepted the push (and kept it) while the pod goes on running
    assert wait_for(lambda: any(p.stat().st_size for p in tmp_path.rglob("pushed.jsonl")), 30)
    assert wait_for(lambda: handles_committed(db, 1), 30)
    os.killpg(controller.pid, signal.SIGKILL)
    controller.wait()
    assert len(fake_cluster.objects("batch/v1", "Job")) == 1
    store = Store(db)
    record = resume_experiment("k8s", store=store, backend=backend(fake_cluster))
    (trial,) = store.trials(record.id)
    assert trial.state is TrialState.SUCCEEDED, trial.message
    # the early value was kept across the crash, and the pod pushed its later one to the re-opened endpoint
    assert [(log.name, log.value) for log in store.observation_logs(trial.id)] == [
        ("loss", "0.125"), ("loss", "0.0625")]
    assert len(job_creations(fake_cluster)) == 1


# A trial that writes its metrics to a file (argv: path, format, mode, an argument to pass through untouched).
FILE_PROGRAM = """
import json, sys
path, fmt, mode, text = sys.argv[1:5]
if text != "it's a $HOME `id`; x":
    sys.exit(5)
print("loss=9")  # stdout is not the collector here
with open(path, "w") as f:
    if fmt == "JSON":
        f.write(json.dumps({"loss": "0.5"}) + "\\n" + json.dumps({"loss": 0.25}))
    else:
        f.write("epoch 1 loss=0.5\\nloss=0.25")
sys.exit(3 if mode == "fail" else 0)
"""


@pytest.mark.parametrize("file_format", ["TEXT", "JSON"])
def test_file_metrics_from_the_wrapped_command(fake_cluster: FakeCluster, tmp_path: Path,  # noqa: F811
                                               file_format: str) -> None:
    path = tmp_path / f"metrics {file_format}.log"
    template = {"retain": True, "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {
        "backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "training-container", "image": "python:3.11",
            "command": [sys.executable, "-c", FILE_PROGRAM, str(path), file_format],
            "args": ["${trialParameters.mode}", "it's a $HOME `id`; x"]}]}}}}}
    collector = {"metricsCollectorSpec": {"collector": {"kind": "File"}, "source": {
        "fileSystemPath": {"kind": "File", "path": str(path), "format": file_format}}}}
    store = Store(tmp_path / "db.sqlite")
    record = run_experiment(experiment(["ok", "fail"], 1, template=template, extra=collector), store=store,
                            backend=backend(fake_cluster), workdir=tmp_path)
    trials = by_mode(store, record)
    assert trials["ok"].state is TrialState.SUCCEEDED, trials["ok"].message
    assert trials["ok"].observation["loss"].latest == "0.25" and trials["ok"].observation["loss"].max == "0.5"
    assert trials["fail"].state is TrialState.FAILED and "BackoffLimitExceeded" in trials["fail"].reason
    assert trials["fail"].observation["loss"].latest == "0.25"  # the file is printed whatever the exit code
    job = next(j for j in fake_cluster.objects("batch/v1", "Job") if j["metadata"]["name"] == trials["ok"].name)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["sh", "-c"]
    assert container["args"] == [sys.executable, "-c", FILE_PROGRAM, str(path), file_format, "ok",
                                 "it's a $HOME `id`; x"]
    assert "loss=9" in (store.trial_dir(record, trials["ok"].name) / "stdout.log").read_text()


def test_early_stopping_sees_trials_without_a_log_stream(fake_cluster: FakeCluster, tmp_path: Path) -> None:  # noqa: F811
    store = Store(tmp_path / "db.sqlite")
    exp = experiment(["ok", "bad"], 1, extra={"earlyStopping": {"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "1"}, {"name": "start_step", "value": "2"}]}})
    record = run_experiment(exp, store=store, backend=backend(fake_cluster, max_log_streams=0, log_poll_seconds=0.5),
                            workdir=tmp_path)
    trials = by_mode(store, record)
    assert trials["bad"].state is TrialState.EARLY_STOPPED
    # from periodic reads, long before its 300 lines were printed
    assert "loss=304" not in (store.trial_dir(record, trials["bad"].name) / "stdout.log").read_text()
    follows = [c for c in fake_cluster.calls if c.path.endswith("/log") and c.query.get("follow") == "true"]
    assert follows == []
    assert trials["ok"].observation["loss"].latest == "0.25"  # nothing read twice or lost between polls and the end
    logs = [(log.name, log.value) for log in store.observation_logs(trials["ok"].id)]
    assert logs == [("loss", "0.5"), ("loss", "0.25")]
    bad = [int(log.value) for log in store.observation_logs(trials["bad"].id)]
    assert len(bad) >= 2 and bad == list(range(5, 5 + len(bad)))  # in order, none twice, none skipped
    reads = [c for c in fake_cluster.calls if c.path.endswith("/log") and trials["bad"].name in c.path]
    assert reads  # read while it ran (a deleted trial gets no final read)


def test_a_new_kubeconfig_on_resume_does_not_keep_the_old_context() -> None:
    stored = {"kubeconfig": "/a/config", "context": "cluster-a", "namespace": "ns"}
    assert KubernetesBackend.merge_settings(stored, {"kubeconfig": "/b/config"}) == {
        "kubeconfig": "/b/config", "namespace": "ns"}
    assert KubernetesBackend.merge_settings(stored, {"kubeconfig": "/b/config", "context": "c"})["context"] == "c"
    assert KubernetesBackend.merge_settings(stored, {"push_url": "http://x"})["context"] == "cluster-a"


def test_settings_pin_the_cluster(fake_cluster: FakeCluster, tmp_path: Path, monkeypatch: Any) -> None:  # noqa: F811
    """A relative kubeconfig is stored absolute, with the context that was current, for a resume from elsewhere."""
    monkeypatch.chdir(fake_cluster.kubeconfig.parent)
    kept = KubernetesBackend(kubeconfig=fake_cluster.kubeconfig.name).settings()
    assert kept["kubeconfig"] == str(fake_cluster.kubeconfig)
    assert kept["context"] == yaml.safe_load(fake_cluster.kubeconfig.read_text())["current-context"]
