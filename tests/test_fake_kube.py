"""The test-support fake Kubernetes API server, driven through the unmodified official `kubernetes` client."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from support.fake_kube import FakeCluster
from support.fake_kube.fixtures import fake_cluster  # noqa: F401 - the fixture

NS = "default"


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; fail the test with a message otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s")


def job_manifest(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    """A batch/v1 Job running one container."""
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": {"app": "t"}},
            "spec": {"backoffLimit": 0, **spec, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "python:3.11", "command": command}]}}}}


def condition_types(job: client.V1Job) -> list[str]:
    return [c.type for c in ((job.status and job.status.conditions) or []) if c.status == "True"]


def raw_request(cluster: FakeCluster, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    """A request the typed client would refuse to send (it rejects unknown fields itself)."""
    response = urllib3.request(method, cluster.url + path, body=json.dumps(body).encode(),
                               headers={"Authorization": f"Bearer {cluster.token}"})
    return response.status, json.loads(response.data)


def finished_job(batch: client.BatchV1Api, name: str, timeout: float = 10.0) -> client.V1Job:
    """The Job once it has a Complete or Failed condition."""
    def done() -> client.V1Job | None:
        job = batch.read_namespaced_job(name, NS)
        return job if {"Complete", "Failed"} & set(condition_types(job)) else None
    return wait_for(done, timeout)


@pytest.fixture
def apis(fake_cluster: FakeCluster) -> tuple[client.BatchV1Api, client.CoreV1Api]:  # noqa: F811
    api_client = fake_cluster.api_client()
    return client.BatchV1Api(api_client), client.CoreV1Api(api_client)


def configmap(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}},
            "data": {"k": "v"}}


# ----------------------------------------------------------------- REST basics
def test_job_create_get_list_delete_and_errors(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    batch, _ = apis
    created = batch.create_namespaced_job(NS, job_manifest("crud", ["sleep", "30"]))
    assert created.metadata.uid and int(created.metadata.resource_version) > 0
    assert created.metadata.generation == 1 and created.metadata.creation_timestamp is not None
    assert created.spec.backoff_limit == 0 and created.spec.completions == 1
    assert created.spec.template.metadata.labels["batch.kubernetes.io/job-name"] == "crud"
    assert batch.read_namespaced_job("crud", NS).metadata.uid == created.metadata.uid

    generated = batch.create_namespaced_job(NS, {**job_manifest("", ["true"]),
                                                 "metadata": {"generateName": "gen-"}})
    assert generated.metadata.name.startswith("gen-") and len(generated.metadata.name) == len("gen-") + 5

    with pytest.raises(ApiException) as duplicate:
        batch.create_namespaced_job(NS, job_manifest("crud", ["true"]))
    body = json.loads(duplicate.value.body)
    assert duplicate.value.status == 409 and body["reason"] == "AlreadyExists" and body["kind"] == "Status"

    listed = batch.list_namespaced_job(NS)
    assert sorted(j.metadata.name for j in listed.items) == sorted(["crud", generated.metadata.name])
    assert int(listed.metadata.resource_version) >= int(generated.metadata.resource_version)

    batch.delete_namespaced_job("crud", NS, propagation_policy="Background")
    with pytest.raises(ApiException) as missing:
        batch.read_namespaced_job("crud", NS)
    body = json.loads(missing.value.body)
    assert missing.value.status == 404
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": 'jobs.batch "crud" not found', "reason": "NotFound",
                    "details": {"name": "crud", "group": "batch", "kind": "jobs"}, "code": 404}
    with pytest.raises(ApiException) as no_namespace:
        batch.create_namespaced_job("nowhere", job_manifest("x", ["true"]))
    assert no_namespace.value.status == 404


def test_label_and_field_selectors(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    _, core = apis
    core.create_namespaced_config_map(NS, configmap("a", {"tier": "web", "env": "prod"}))
    core.create_namespaced_config_map(NS, configmap("b", {"tier": "db", "env": "dev"}))
    core.create_namespaced_config_map(NS, configmap("c", {"tier": "web"}))

    def names(**kwargs: Any) -> list[str]:
        return sorted(cm.metadata.name for cm in core.list_namespaced_config_map(NS, **kwargs).items)

    assert names(label_selector="tier=web") == ["a", "c"]
    assert names(label_selector="tier==db") == ["b"]
    assert names(label_selector="tier!=web") == ["b"]
    assert names(label_selector="env in (prod, dev)") == ["a", "b"]
    assert names(label_selector="env notin (prod)") == ["b", "c"]
    assert names(label_selector="env") == ["a", "b"]
    assert names(label_selector="!env") == ["c"]
    assert names(label_selector="tier=web,env") == ["a"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b") == ["a", "c"]
    with pytest.raises(ApiException) as bad:
        names(label_selector="tier in web")
    assert bad.value.status == 400


def test_patch_update_conflict_and_status_subresource(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    batch, core = apis
    cm = core.create_namespaced_config_map(NS, configmap("p"))
    patched = core.patch_namespaced_config_map("p", NS, {"metadata": {"labels": {"x": "1"}}, "data": {"k": None}})
    assert patched.metadata.labels == {"x": "1"} and not patched.data
    assert int(patched.metadata.resource_version) > int(cm.metadata.resource_version)
    cm.data = {"k": "stale"}
    with pytest.raises(ApiException) as stale:
        core.replace_namespaced_config_map("p", NS, cm)
    assert stale.value.status == 409 and json.loads(stale.value.body)["reason"] == "Conflict"

    custom = client.CustomObjectsApi(fake_cluster.api_client())
    trial = {"apiVersion": "kubeflow.org/v1beta1", "kind": "Trial", "metadata": {"name": "t"}, "spec": {"a": 1},
             "status": {"ignored": True}}
    created = custom.create_namespaced_custom_object("kubeflow.org", "v1beta1", NS, "trials", trial)
    assert "status" not in created and created["metadata"]["generation"] == 1
    custom.patch_namespaced_custom_object_status("kubeflow.org", "v1beta1", NS, "trials", "t",
                                                 {"status": {"phase": "x"}})
    main = custom.patch_namespaced_custom_object("kubeflow.org", "v1beta1", NS, "trials", "t",
                                                 {"status": {"phase": "y"}, "metadata": {"labels": {"l": "1"}}})
    assert main["status"] == {"phase": "x"} and main["metadata"]["generation"] == 1
    bumped = custom.patch_namespaced_custom_object("kubeflow.org", "v1beta1", NS, "trials", "t",
                                                   [{"op": "replace", "path": "/spec/a", "value": 2}])
    assert bumped["spec"] == {"a": 2} and bumped["metadata"]["generation"] == 2

    job = batch.create_namespaced_job(NS, job_manifest("s", ["sleep", "30"], suspend=True))
    refused = job_manifest("s", ["sleep", "30"])
    refused["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    with pytest.raises(ApiException) as invalid:
        batch.patch_namespaced_job("s", NS, {"spec": refused["spec"]})
    assert invalid.value.status == 422
    assert batch.read_namespaced_job("s", NS).metadata.resource_version >= job.metadata.resource_version


def test_kubeconfig_and_token_auth(fake_cluster: FakeCluster) -> None:  # noqa: F811
    config.load_kube_config(config_file=str(fake_cluster.kubeconfig), context="fake")
    try:
        version = client.VersionApi().get_code()
        assert version.major == "1"
        assert [ns.metadata.name for ns in client.CoreV1Api().list_namespace().items] == [
            "default", "kube-public", "kube-system"]
    finally:
        client.Configuration.set_default(client.Configuration())
    anonymous = client.CoreV1Api(client.ApiClient(client.Configuration(host=fake_cluster.url)))
    with pytest.raises(ApiException) as denied:
        anonymous.list_namespaced_pod(NS)
    assert denied.value.status == 401


# ---------------------------------------------------------------------- admission
def test_strict_admission_refuses_invalid_jobs(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    batch, core = apis
    unknown = job_manifest("bad", ["true"])
    unknown["spec"]["backoffLimt"] = 2
    status, body = raw_request(fake_cluster, "POST", "/apis/batch/v1/namespaces/default/jobs", unknown)
    assert status == 422 and body["reason"] == "Invalid"
    assert [c["field"] for c in body["details"]["causes"]] == ["spec.backoffLimt"]
    assert 'Job.batch "bad" is invalid' in body["message"]

    nameless = job_manifest("bad", ["true"])
    del nameless["spec"]["template"]["spec"]["containers"][0]["name"]
    status, body = raw_request(fake_cluster, "POST", "/apis/batch/v1/namespaces/default/jobs", nameless)
    causes = body["details"]["causes"]
    assert status == 422
    assert {"reason": "FieldValueRequired", "message": "Required value",
            "field": "spec.template.spec.containers[0].name"} in causes

    always = job_manifest("Bad_Name", ["true"])
    always["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(ApiException) as refused:
        batch.create_namespaced_job(NS, always)
    fields = {c["field"] for c in json.loads(refused.value.body)["details"]["causes"]}
    assert fields == {"metadata.name", "spec.template.spec.restartPolicy"}

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "x", "command": ["true"], "ports": "80"}]}}
    status, body = raw_request(fake_cluster, "POST", "/api/v1/namespaces/default/pods", pod)
    assert status == 422 and body["details"]["causes"][0]["field"] == "spec.containers[0].ports"
    assert not fake_cluster.objects("batch/v1", "Job") and not fake_cluster.objects("v1", "Pod")


# ------------------------------------------------------------- Job controller
def test_job_succeeds_and_fails_with_conditions(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    batch, core = apis
    batch.create_namespaced_job(NS, job_manifest("ok", ["python3", "-c", "print('done')"]))
    batch.create_namespaced_job(NS, job_manifest("ko", ["python3", "-c", "raise SystemExit(1)"]))
    batch.create_namespaced_job(NS, job_manifest("retry", ["python3", "-c", "raise SystemExit(3)"], backoffLimit=1))
    ok = finished_job(batch, "ok")
    assert condition_types(ok) == ["SuccessCriteriaMet", "Complete"]
    assert ok.status.succeeded == 1 and not ok.status.active and ok.status.completion_time is not None
    ko = finished_job(batch, "ko")
    assert condition_types(ko) == ["FailureTarget", "Failed"] and ko.status.failed == 1
    assert ko.status.conditions[-1].reason == "BackoffLimitExceeded" and ko.status.completion_time is None
    retry = finished_job(batch, "retry")
    assert retry.status.failed == 2 and condition_types(retry)[-1] == "Failed"

    pods = core.list_namespaced_pod(NS, label_selector="job-name=ko").items
    assert len(pods) == 1 and pods[0].metadata.name.startswith("ko-") and len(pods[0].metadata.name) == 8
    pod = pods[0]
    assert pod.status.phase == "Failed" and pod.metadata.owner_references[0].uid == ko.metadata.uid
    assert pod.metadata.labels["controller-uid"] == ko.metadata.uid
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 1 and terminated.reason == "Error"
    assert len(core.list_namespaced_pod(NS, label_selector="job-name=retry").items) == 2
    good = core.list_namespaced_pod(NS, label_selector="batch.kubernetes.io/job-name=ok").items[0]
    assert good.status.container_statuses[0].state.terminated.reason == "Completed"


def test_active_deadline_kills_the_pod(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    batch, core = apis
    batch.create_namespaced_job(NS, job_manifest("slow", ["sleep", "60"], activeDeadlineSeconds=1))
    wait_for(lambda: fake_cluster.pod_processes())
    process = fake_cluster.pod_processes()[0]
    job = finished_job(batch, "slow", timeout=6)
    assert condition_types(job) == ["FailureTarget", "Failed"]
    assert job.status.conditions[-1].reason == "DeadlineExceeded"
    wait_for(lambda: process.poll() is not None, timeout=5)
    assert not core.list_namespaced_pod(NS, label_selector="job-name=slow").items


def test_pod_logs_with_container_tail_and_follow(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    _, core = apis
    script = "import time\nfor i in range(3):\n    print(f'line {i}', flush=True)\n    time.sleep(0.2)\n"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "logger"},
           "spec": {"restartPolicy": "Never", "containers": [
               {"name": "main", "image": "x", "command": ["python3", "-c", script]},
               {"name": "side", "image": "x", "command": ["sh", "-c", "echo side $(POD) $MSG >&2"],
                "env": [{"name": "MSG", "value": "hi"},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}
    core.create_namespaced_pod(NS, pod)
    wait_for(lambda: core.read_namespaced_pod("logger", NS).status.phase == "Running")
    with pytest.raises(ApiException) as ambiguous:
        core.read_namespaced_pod_log("logger", NS)
    assert ambiguous.value.status == 400 and "choose one of: [main side]" in json.loads(ambiguous.value.body)["message"]
    lines = list(watch.Watch().stream(core.read_namespaced_pod_log, "logger", NS, container="main"))
    assert lines == ["line 0", "line 1", "line 2"]
    assert core.read_namespaced_pod_log("logger", NS, container="main", tail_lines=1) == "line 2\n"
    assert core.read_namespaced_pod_log("logger", NS, container="side") == "side logger hi\n"
    wait_for(lambda: core.read_namespaced_pod("logger", NS).status.phase == "Succeeded")


def recorder(cluster: FakeCluster) -> Callable[[], list[tuple[str, str, str, Any]]]:
    """Record the cluster's events from now on; the returned function drains them as (type, kind, name, object)."""
    events = cluster.store.listen()
    seen: list[tuple[str, str, str, Any]] = []

    def drain() -> list[tuple[str, str, str, Any]]:
        while not events.empty():
            event = events.get()
            if event is not None and hasattr(event, "obj"):
                seen.append((event.type, event.rtype.kind, event.obj["metadata"]["name"], event.obj))
        return seen
    return drain


def test_deleting_a_job_kills_its_pods(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    batch, core = apis
    batch.create_namespaced_job(NS, job_manifest("bg", ["sleep", "60"]))
    wait_for(lambda: len(fake_cluster.pod_processes()) == 1)
    process = fake_cluster.pod_processes()[0]
    events = recorder(fake_cluster)
    batch.delete_namespaced_job("bg", NS, propagation_policy="Background")
    wait_for(lambda: not core.list_namespaced_pod(NS, label_selector="job-name=bg").items)
    assert process.poll() is not None
    # the Job went at once; its pod later (garbage collector), gracefully: Terminating, stopped, then removed
    order = [(kind, type_, bool(obj["metadata"].get("deletionTimestamp"))) for type_, kind, _, obj in events()]
    job_gone = order.index(("Job", "DELETED", False))
    terminating = next(i for i, (kind, _, deleting) in enumerate(order) if kind == "Pod" and deleting)
    assert job_gone < terminating and order[terminating] == ("Pod", "MODIFIED", True)
    assert [entry for entry in order if entry[0] == "Pod"][-1] == ("Pod", "DELETED", True)

    batch.create_namespaced_job(NS, job_manifest("fg", ["sleep", "60"]))
    wait_for(lambda: len(fake_cluster.pod_processes()) == 1)
    process = fake_cluster.pod_processes()[0]
    batch.delete_namespaced_job("fg", NS, body=client.V1DeleteOptions(propagation_policy="Foreground"))
    assert batch.read_namespaced_job("fg", NS).metadata.finalizers == ["foregroundDeletion"]
    wait_for(lambda: not fake_cluster.objects("batch/v1", "Job"))
    assert process.poll() is not None and not fake_cluster.objects("v1", "Pod")  # the Job waited for its pod

    batch.create_namespaced_job(NS, job_manifest("orphan", ["sleep", "60"]))
    wait_for(lambda: len(fake_cluster.pod_processes()) == 1)
    _, _, headers = batch.delete_namespaced_job_with_http_info("orphan", NS)
    assert "child pods are preserved" in headers["Warning"]
    wait_for(lambda: not fake_cluster.objects("batch/v1", "Job"))
    pods = fake_cluster.objects("v1", "Pod")
    assert len(pods) == 1 and "ownerReferences" not in pods[0]["metadata"]
    assert fake_cluster.pod_processes()[0].poll() is None


SIGTERM_IGNORED = ["python3", "-c", "import pathlib, signal, time\n"
                   "signal.signal(signal.SIGTERM, lambda *_: pathlib.Path('term').write_text('got'))\n"
                   "print('ready', flush=True)\ntime.sleep(60)"]


def log_of(core: client.CoreV1Api, pod: str, **options: Any) -> str:
    """The pod's log, or "" while its container has not started (the server answers 400 then)."""
    try:
        return str(core.read_namespaced_pod_log(pod, NS, **options))
    except ApiException as error:
        if error.status != 400:
            raise
        return ""


def test_pod_deletion_is_graceful(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    _, core = apis
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "slow"}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "python:3.11", "command": SIGTERM_IGNORED}]}}
    core.create_namespaced_pod(NS, pod)
    wait_for(lambda: log_of(core, "slow") == "ready\n")
    process = fake_cluster.pod_processes()[0]
    events = recorder(fake_cluster)
    answer = core.delete_namespaced_pod("slow", NS)
    assert answer.metadata.deletion_timestamp is not None and answer.metadata.deletion_grace_period_seconds == 1
    assert core.read_namespaced_pod("slow", NS).metadata.deletion_timestamp is not None  # Terminating, still there
    wait_for(lambda: (fake_cluster.directory / "pods" / NS / "slow" / "term").exists())  # SIGTERM, ignored
    wait_for(lambda: process.poll() is not None)
    assert process.returncode == -9  # killed once the grace period was over
    wait_for(lambda: not fake_cluster.objects("v1", "Pod"))
    final = [obj for type_, kind, _, obj in events() if kind == "Pod"]
    assert final[-2]["status"]["phase"] == "Failed" and final[-1]["metadata"]["deletionGracePeriodSeconds"] == 0

    core.create_namespaced_pod(NS, {**pod, "metadata": {"name": "forced"}})
    wait_for(lambda: fake_cluster.pod_processes())
    core.delete_namespaced_pod("forced", NS, grace_period_seconds=0)
    assert not fake_cluster.objects("v1", "Pod")  # grace 0 and no finalizer: gone at once


def test_job_pods_are_tracked_with_a_finalizer_and_failure_waits_for_them(fake_cluster: FakeCluster,  # noqa: F811
                                                                          apis: Any) -> None:
    batch, core = apis
    manifest = job_manifest("late", SIGTERM_IGNORED, activeDeadlineSeconds=2)
    manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
    batch.create_namespaced_job(NS, manifest)
    wait_for(lambda: fake_cluster.pod_processes())
    pod = core.list_namespaced_pod(NS, label_selector="job-name=late").items[0]
    assert pod.metadata.finalizers == ["batch.kubernetes.io/job-tracking"]
    events = recorder(fake_cluster)
    job = finished_job(batch, "late")
    assert condition_types(job) == ["FailureTarget", "Failed"] and job.status.failed == 1
    history = events()
    target = next(i for i, (_, kind, _, obj) in enumerate(history) if kind == "Job" and "FailureTarget" in
                  [c["type"] for c in obj.get("status", {}).get("conditions", [])])
    failed = next(i for i, (_, kind, _, obj) in enumerate(history) if kind == "Job" and "Failed" in
                  [c["type"] for c in obj.get("status", {}).get("conditions", [])])
    pod_terminal = next(i for i, (_, kind, _, obj) in enumerate(history) if kind == "Pod" and
                        obj.get("status", {}).get("phase") == "Failed")
    assert target < pod_terminal < failed  # Failed only once the pod had stopped (after its grace period)
    wait_for(lambda: not fake_cluster.objects("v1", "Pod"))  # counted, finalizer removed, deleted by its kubelet


def test_garbage_collection_is_asynchronous_and_reaches_late_dependents(fake_cluster: FakeCluster,  # noqa: F811
                                                                        apis: Any) -> None:
    _, core = apis
    owner = core.create_namespaced_config_map(NS, configmap("owner"))
    other = core.create_namespaced_config_map(NS, configmap("other"))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    other_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": other.metadata.uid}
    core.create_namespaced_config_map(NS, {**configmap("child"), "metadata": {"name": "child",
                                                                             "ownerReferences": [ref]}})
    core.create_namespaced_config_map(NS, {**configmap("shared"), "metadata": {"name": "shared",
                                                                              "ownerReferences": [ref, other_ref]}})
    core.delete_namespaced_config_map("owner", NS)
    assert core.read_namespaced_config_map("child", NS)  # the collector acts later, not within the delete
    wait_for(lambda: not [c for c in fake_cluster.objects("v1", "ConfigMap") if c["metadata"]["name"] == "child"])
    shared = core.read_namespaced_config_map("shared", NS)
    assert [r.name for r in shared.metadata.owner_references] == ["other"]  # the missing owner's reference dropped
    # an object created with a reference to an owner that is already gone is collected too
    core.create_namespaced_config_map(NS, {**configmap("late"), "metadata": {"name": "late",
                                                                            "ownerReferences": [ref]}})
    wait_for(lambda: not [c for c in fake_cluster.objects("v1", "ConfigMap") if c["metadata"]["name"] == "late"])


# ------------------------------------------------------------------------ watch
def test_watch_sees_a_job_run_to_completion(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    batch, _ = apis
    start_rv = batch.list_namespaced_job(NS).metadata.resource_version
    batch.create_namespaced_job(NS, job_manifest("w", ["python3", "-c", "pass"]))
    events: list[tuple[str, list[str]]] = []
    stream = watch.Watch()
    for event in stream.stream(batch.list_namespaced_job, NS, label_selector="app=t", resource_version=start_rv,
                               timeout_seconds=10):
        events.append((event["type"], condition_types(event["object"])))
        if event["type"] == "MODIFIED" and "Complete" in events[-1][1]:
            batch.delete_namespaced_job("w", NS, propagation_policy="Background")
        if event["type"] == "DELETED":
            stream.stop()
    assert events[0] == ("ADDED", [])
    assert ("MODIFIED", ["SuccessCriteriaMet"]) in events
    assert events[-2] == ("MODIFIED", ["SuccessCriteriaMet", "Complete"]) and events[-1][0] == "DELETED"


def test_watch_resumes_from_a_resource_version_and_times_out(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    _, core = apis
    first = core.create_namespaced_config_map(NS, configmap("one"))
    core.create_namespaced_config_map(NS, configmap("two"))
    core.patch_namespaced_config_map("one", NS, {"data": {"k": "w"}})
    started = time.monotonic()
    seen = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        core.list_namespaced_config_map, NS, resource_version=first.metadata.resource_version, timeout_seconds=1)]
    assert seen == [("ADDED", "two"), ("MODIFIED", "one")]
    assert 0.9 <= time.monotonic() - started < 3
    everything = [e["object"].metadata.name for e in watch.Watch().stream(
        core.list_namespaced_config_map, NS, timeout_seconds=1)]
    assert everything == ["one", "two"]
    bookmarks = [e for e in watch.Watch().stream(core.list_namespaced_config_map, NS, allow_watch_bookmarks=True,
                                                  resource_version=first.metadata.resource_version,
                                                  timeout_seconds=3, deserialize=False)]
    assert bookmarks[-1]["type"] == "BOOKMARK"  # about 2 s before the timeout, though bookmarks come every minute


def test_expired_watches_give_410(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    _, core = apis
    old_rv = core.create_namespaced_config_map(NS, configmap("x")).metadata.resource_version
    ended = threading.Event()

    def watch_until_closed() -> None:
        for _ in watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=old_rv,
                                      timeout_seconds=30):
            pass
        ended.set()

    watcher = threading.Thread(target=watch_until_closed)
    watcher.start()
    wait_for(lambda: any(fake_cluster.store._watchers.values()))  # the watch is open on the server
    fake_cluster.expire_watches()
    assert ended.wait(5), "expire_watches did not end the open watch"
    watcher.join()
    with pytest.raises(ApiException) as gone:
        list(watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=old_rv, timeout_seconds=2))
    assert gone.value.status == 410
    raw = core.list_namespaced_config_map(NS, watch=True, resource_version=old_rv, _preload_content=False)
    event = json.loads(raw.data.decode().splitlines()[0])
    assert event["type"] == "ERROR" and event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
    with pytest.raises(ApiException) as gone_list:
        core.list_namespaced_config_map(NS, resource_version=old_rv, resource_version_match="Exact")
    assert gone_list.value.status == 410
    fresh = core.list_namespaced_config_map(NS).metadata.resource_version
    assert list(watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=fresh,
                                     timeout_seconds=1)) == []


def test_watch_history_is_a_window_on_a_busy_cluster(tmp_path: Path) -> None:
    with FakeCluster(tmp_path, history_seconds=0.5) as cluster:
        core = client.CoreV1Api(cluster.api_client())
        old_rv = core.create_namespaced_config_map(NS, configmap("first")).metadata.resource_version
        assert list(watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=old_rv,
                                         timeout_seconds=1)) == []  # quiet: the history still reaches back

        def expired() -> bool:  # the cluster stays busy until the first event has left the window
            core.patch_namespaced_config_map("first", NS, {"data": {"k": str(time.monotonic())}})
            try:
                core.list_namespaced_config_map(NS, resource_version=old_rv, resource_version_match="Exact")
            except ApiException as error:
                return error.status == 410
            return False
        wait_for(expired, interval=0.1)
        with pytest.raises(ApiException) as gone:
            list(watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=old_rv,
                                      timeout_seconds=1))
        assert gone.value.status == 410


def test_missing_and_malformed_images(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    _, core = apis
    fake_cluster.missing_images.add("registry.example/absent:1")

    def pod(name: str, image: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": image, "command": ["python3", "-c", "print('ran')"]}]}}

    def waiting(name: str) -> str:
        statuses = core.read_namespaced_pod(name, NS).status.container_statuses or []
        return statuses[0].state.waiting.reason if statuses and statuses[0].state.waiting else ""

    events = recorder(fake_cluster)
    core.create_namespaced_pod(NS, pod("absent", "registry.example/absent:1"))
    core.create_namespaced_pod(NS, pod("malformed", "Registry.Example/UPPER CASE"))
    wait_for(lambda: waiting("absent") == "ImagePullBackOff")
    assert waiting("malformed") == "InvalidImageName" and not fake_cluster.pod_processes()
    reasons = [obj["status"]["containerStatuses"][0]["state"].get("waiting", {}).get("reason")
               for _, kind, name, obj in events() if name == "absent" and obj["status"].get("containerStatuses")]
    assert reasons[:2] == ["ErrImagePull", "ImagePullBackOff"]
    assert core.read_namespaced_pod("absent", NS).status.phase == "Pending"
    with pytest.raises(ApiException) as not_started:
        core.read_namespaced_pod_log("absent", NS)
    assert "is waiting to start: ImagePullBackOff" in json.loads(not_started.value.body)["message"]
    fake_cluster.missing_images.discard("registry.example/absent:1")  # pushed at last: the next retry pulls it
    wait_for(lambda: core.read_namespaced_pod("absent", NS).status.phase == "Succeeded")
    assert core.read_namespaced_pod_log("absent", NS) == "ran\n"
    core.delete_namespaced_pod("malformed", NS)  # a pod that never ran goes at once
    wait_for(lambda: [p["metadata"]["name"] for p in fake_cluster.objects("v1", "Pod")] == ["absent"])


def test_restarted_containers_back_off_and_keep_one_log_per_run(fake_cluster: FakeCluster,  # noqa: F811
                                                                apis: Any) -> None:
    _, core = apis
    program = ("import pathlib, sys, time\np = pathlib.Path('runs'); n = int(p.read_text()) if p.exists() else 0\n"
               "p.write_text(str(n + 1)); print(f'run {n}', flush=True)\n"
               "while n == 0 and not pathlib.Path('go').exists(): time.sleep(0.01)\n"
               "sys.exit(0 if n == 2 else 1)")
    core.create_namespaced_pod(NS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "flaky"}, "spec": {
        "restartPolicy": "OnFailure", "containers": [{"name": "main", "image": "python:3.11",
                                                      "command": ["python3", "-c", program]}]}})
    events = recorder(fake_cluster)
    wait_for(lambda: log_of(core, "flaky"))
    first = core.read_namespaced_pod_log("flaky", NS, follow=True, _preload_content=False)
    (fake_cluster.directory / "pods" / NS / "flaky" / "go").touch()
    assert first.data == b"run 0\n"  # a followed log ends with its run, though the container restarts
    wait_for(lambda: core.read_namespaced_pod("flaky", NS).status.phase == "Succeeded")
    status = core.read_namespaced_pod("flaky", NS).status.container_statuses[0]
    assert status.restart_count == 2 and status.last_state.terminated.exit_code == 1
    assert core.read_namespaced_pod_log("flaky", NS) == "run 2\n"
    assert core.read_namespaced_pod_log("flaky", NS, previous=True) == "run 1\n"
    states = [obj["status"]["containerStatuses"][0]["state"] for _, kind, name, obj in events()
              if name == "flaky" and obj.get("status", {}).get("containerStatuses")]
    backoffs = [s["waiting"]["message"] for s in states if s.get("waiting", {}).get("reason") == "CrashLoopBackOff"]
    assert [m.split()[1] for m in backoffs] == ["0.5s", "1s"]  # doubling
    assert all(obj["status"]["phase"] in ("Running", "Succeeded") for _, _, name, obj in events() if name == "flaky")


# ------------------------------------------------------------------- failures
def test_injected_failures(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    batch, core = apis
    fake_cluster.fail("POST", r"/jobs$", 500)
    with pytest.raises(ApiException) as failed:
        batch.create_namespaced_job(NS, job_manifest("f", ["true"]))
    assert failed.value.status == 500 and json.loads(failed.value.body)["reason"] == "InternalError"
    assert not fake_cluster.objects("batch/v1", "Job")
    batch.create_namespaced_job(NS, job_manifest("f", ["true"]))
    posts = [call for call in fake_cluster.calls if call.method == "POST" and call.path.endswith("/jobs")]
    assert [call.status for call in posts] == [500, 201]

    # urllib3 in the client retries 429/503 answers that carry Retry-After (3 retries), as with a real server
    fake_cluster.fail("GET", r"/configmaps", 429, times=2, retry_after=0)
    core.list_namespaced_config_map(NS)
    assert [c.status for c in fake_cluster.calls if c.path.endswith("/configmaps")] == [429, 429, 200]
    fake_cluster.fail("GET", r"/configmaps", 429, times=4, retry_after=0)
    with pytest.raises(ApiException) as throttled:
        core.list_namespaced_config_map(NS)
    assert throttled.value.status == 429 and throttled.value.headers["Retry-After"] == "0"

    fake_cluster.fail("POST", r"/configmaps$", 503, after=True)
    with pytest.raises(ApiException):
        core.create_namespaced_config_map(NS, configmap("lost-answer"))
    assert fake_cluster.objects("v1", "ConfigMap")[0]["metadata"]["name"] == "lost-answer"

    # a hung answer: urllib3 retries reads of GETs by itself, but not of POSTs
    fake_cluster.fail("GET", r"/pods$", 0, hang_seconds=5)
    core.list_namespaced_pod(NS, _request_timeout=0.3)
    assert [c.status for c in fake_cluster.calls if c.path.endswith("/pods")] == [0, 200]
    fake_cluster.fail("POST", r"/configmaps$", 0, hang_seconds=5)
    with pytest.raises((urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.MaxRetryError)):
        core.create_namespaced_config_map(NS, configmap("hung"), _request_timeout=0.3)


# -------------------------------------------------------------- custom resources
def test_pytorchjob_through_custom_objects_api(fake_cluster: FakeCluster) -> None:  # noqa: F811
    custom = client.CustomObjectsApi(fake_cluster.api_client())
    core = client.CoreV1Api(fake_cluster.api_client())
    group, version, plural = "kubeflow.org", "v1", "pytorchjobs"
    container = {"name": "pytorch", "image": "x", "command": ["python3", "-c", "import os; print(os.environ['RANK'])"]}
    body = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "pt"},
            "spec": {"pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": {"spec": {"containers": [
                    container]}}},
                "Worker": {"replicas": 2, "template": {"spec": {"containers": [container]}}}}}}
    rv = custom.list_namespaced_custom_object(group, version, NS, plural)["metadata"]["resourceVersion"]
    created = custom.create_namespaced_custom_object(group, version, NS, plural, body)
    assert created["metadata"]["uid"] and "status" not in created
    events = []
    for event in watch.Watch().stream(custom.list_namespaced_custom_object, group, version, NS, plural,
                                      resource_version=rv, timeout_seconds=10):
        conditions = [c["type"] for c in event["object"].get("status", {}).get("conditions", [])
                      if c["status"] == "True"]
        events.append((event["type"], conditions))
        if "Succeeded" in conditions:
            break
    assert events[0] == ("ADDED", []) and events[-1] == ("MODIFIED", ["Created", "Succeeded"])
    assert any("Running" in conditions for _, conditions in events)
    job = custom.get_namespaced_custom_object(group, version, NS, plural, "pt")
    assert job["status"]["replicaStatuses"]["Master"] == {"succeeded": 1}
    pods = core.list_namespaced_pod(NS, label_selector="training.kubeflow.org/job-role=master").items
    assert [p.metadata.name for p in pods] == ["pt-master-0"]
    assert core.read_namespaced_pod_log("pt-master-0", NS) == "0\n"
    custom.delete_namespaced_custom_object(group, version, NS, plural, "pt")
    assert not fake_cluster.objects("kubeflow.org/v1", "PyTorchJob")
    wait_for(lambda: not fake_cluster.objects("v1", "Pod"))  # collected later
    with pytest.raises(ApiException) as unknown:
        custom.list_namespaced_custom_object(group, version, NS, "pytorchjob")
    assert unknown.value.status == 404

    workflow = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "wf-"},
                "spec": {"entrypoint": "main"}}
    stored = custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "workflows", workflow)
    custom.patch_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "workflows", stored["metadata"]["name"],
                                          {"status": {"phase": "Succeeded"}})
    assert fake_cluster.objects("argoproj.io/v1alpha1", "Workflow")[0]["status"] == {"phase": "Succeeded"}


# -------------------------------------------------------------- throughput, cleanup
def test_many_short_jobs_complete(fake_cluster: FakeCluster, apis: Any) -> None:  # noqa: F811
    batch, _ = apis
    for index in range(30):
        batch.create_namespaced_job(NS, job_manifest(f"many-{index}", ["true"]))
    wait_for(lambda: all("Complete" in condition_types(j) for j in batch.list_namespaced_job(NS).items),
             timeout=20, interval=0.2)


def test_stopping_leaves_no_processes_or_threads(tmp_path: Path) -> None:
    before = {thread.ident for thread in threading.enumerate()}
    with FakeCluster(tmp_path) as cluster:
        batch = client.BatchV1Api(cluster.api_client())
        core = client.CoreV1Api(cluster.api_client())
        for name in ("a", "b"):
            batch.create_namespaced_job(NS, job_manifest(name, ["sh", "-c", "sleep 60 & sleep 60"]))
        wait_for(lambda: len(cluster.pod_processes()) == 2)
        processes = cluster.pod_processes()
        opened = threading.Thread(target=lambda: list(watch.Watch().stream(core.list_namespaced_pod, NS,
                                                                            timeout_seconds=60)))
        opened.start()
        time.sleep(0.2)
    assert all(process.poll() is not None for process in processes)
    opened.join(5)
    assert not opened.is_alive()
    leftover = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert leftover == []
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_namespaced_pod(NS, _request_timeout=1)
