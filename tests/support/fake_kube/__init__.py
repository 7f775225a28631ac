"""A fake Kubernetes API server for tests: the official `kubernetes` client talks to it over HTTP on 127.0.0.1.

It stores objects like the real server (uids, resourceVersions, generateName, label/field selectors, watches with
a watch cache's history, bookmarks and 410 Expired, finalizers, graceful pod deletion), collects garbage
asynchronously, validates built-in kinds strictly with kubernetes-validate's schemas, and runs Jobs (and Kubeflow
training jobs) through a fake controller and a kubelet that executes pod commands as local processes (image pull
failures, restarts with back-off, a log per container run). Test support only: nothing in katibx imports it.
"""

from .cluster import FakeCluster
from .server import Call

__all__ = ["FakeCluster", "Call"]
