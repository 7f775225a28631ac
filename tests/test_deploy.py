"""The deployer (``katibx build --deploy``) against the fake cluster, its containers run on this host: the job's own
end, a name used again, a job deleted under it. (tests/test_image_build.py runs it on pushed images.)"""

from __future__ import annotations

import threading

import pytest
from kubernetes import client
from support.fake_kube.cluster import FakeCluster
from support.fake_kube.fixtures import fake_cluster  # noqa: F401 - the fixture

from katibx.packaging.deploy import Deployer, DeployError, manifest

IMAGE = "registry.example/katibx/app@sha256:" + "0" * 64  # pulled in name only: the command runs on this host


def _job(name: str, code: str) -> dict:
    return manifest("job", IMAGE, name=name, namespace="default", command=["python3", "-c", code], args=["x"])


def test_a_job_that_fails_before_its_container_runs_ends_the_deployment(fake_cluster: FakeCluster) -> None:  # noqa: F811
    body = _job("init-fails", "print('never')")
    body["spec"]["template"]["spec"]["initContainers"] = [
        {"name": "init", "image": IMAGE, "command": ["python3", "-c", "raise SystemExit(1)"]}]
    lines: list[str] = []
    ended = Deployer(str(fake_cluster.kubeconfig), start_timeout=60).run(body, lines.append)
    assert not ended.succeeded and ended.reason.startswith("BackoffLimitExceeded") and not ended.deleted
    assert lines == [] and fake_cluster.objects("batch/v1", "Job")  # kept for kubectl describe


def test_a_name_used_again_follows_its_own_pod(fake_cluster: FakeCluster) -> None:  # noqa: F811
    deployer = Deployer(str(fake_cluster.kubeconfig))
    first: list[str] = []
    assert deployer.run(_job("again", "print('first run')"), first.append).deleted
    second: list[str] = []
    ended = deployer.run(_job("again", "print('second run')"), second.append)  # the first's pod may linger
    assert (first, second, ended.succeeded) == (["first run"], ["second run"], True)


def test_a_job_deleted_while_it_runs_is_one_error(fake_cluster: FakeCluster) -> None:  # noqa: F811
    code = "import signal\nprint('ready', flush=True)\nsignal.pause()"  # runs until the deletion kills it
    batch = client.BatchV1Api(fake_cluster.api_client())
    deleted = threading.Event()

    def on_log(line: str) -> None:
        if line == "ready" and not deleted.is_set():
            batch.delete_namespaced_job("doomed", "default", propagation_policy="Foreground")
            deleted.set()

    with pytest.raises(DeployError, match="doomed"):
        Deployer(str(fake_cluster.kubeconfig)).run(_job("doomed", code), on_log)
    assert deleted.is_set()
