"""The kubernetes backend's objects in the cluster: each trial's worker object and each experiment's owner ConfigMap.

A ``batch/v1`` Job goes through BatchV1Api, any other kind through CustomObjectsApi. The owner ConfigMap
(``<experiment>-katibx``) holds the experiment's push token; every worker object references it, so deleting it
deletes them all.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from katibx.backend import TrialStartError
from katibx.spec import Experiment
from katibx.workers._kube_api import KubeApi, KubernetesClusterError, api_message, json_body
from katibx.workers._manifests import EXPERIMENT_LABEL, TRIAL_LABEL, Resource, owner_config_map, owner_name
from katibx.workers._tracked import TrackedTrial

TOKEN_KEY = "pushToken"  # in the owner ConfigMap's data


@dataclass(frozen=True)
class WorkerRef:
    """A worker object that no trial tracks (one named by a stored handle)."""

    name: str
    namespace: str
    resource: Resource


class ClusterObjects:
    """Creates, reads and deletes worker objects and owner ConfigMaps; owner ConfigMaps are read once each."""

    def __init__(self, kube: KubeApi, propagation_policy: str) -> None:
        self._kube = kube
        self._propagation_policy = propagation_policy
        self._owners: dict[tuple[str, str], dict[str, Any]] = {}  # (namespace, experiment) -> owner ConfigMap

    def create(self, trial: TrackedTrial, worker: dict[str, Any]) -> dict[str, Any]:
        """Create the trial's worker object (or take the one an earlier attempt made); TrialStartError when refused."""
        from kubernetes.client.exceptions import ApiException

        batch, _core, custom = self._kube.apis()
        r = trial.resource
        what = f"create {r.kind} {trial.namespace}/{trial.name}"
        try:
            if r.is_job:
                return json_body(self._kube.call(what, batch.create_namespaced_job, trial.namespace, worker,
                                                 _preload_content=False))
            return json_body(self._kube.call(what, custom.create_namespaced_custom_object, r.group, r.version,
                                             trial.namespace, r.plural, worker, _preload_content=False))
        except ApiException as exc:
            if exc.status == 409:  # created by an earlier attempt whose answer was lost, or someone else's
                existing = self.get(trial)
                labels = ((existing or {}).get("metadata") or {}).get("labels") or {}
                ours = labels.get(TRIAL_LABEL) == trial.name and labels.get(EXPERIMENT_LABEL) == trial.experiment
                if existing and ours:
                    return existing
            raise TrialStartError(f"the API server refused {r.kind} {trial.namespace}/{trial.name}: "
                                  f"{api_message(exc)}") from None

    def get(self, obj: TrackedTrial | WorkerRef) -> dict[str, Any] | None:
        """The worker object, or None when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        batch, _core, custom = self._kube.apis()
        r = obj.resource
        try:
            if r.is_job:
                return json_body(self._kube.call("get", batch.read_namespaced_job, obj.name, obj.namespace,
                                                 _preload_content=False))
            return json_body(self._kube.call("get", custom.get_namespaced_custom_object, r.group, r.version,
                                             obj.namespace, r.plural, obj.name, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, obj: TrackedTrial | WorkerRef) -> None:
        """Delete the worker object (its pods follow, by ``propagation_policy``); a missing object is fine."""
        from kubernetes.client.exceptions import ApiException

        batch, _core, custom = self._kube.apis()
        r = obj.resource
        try:
            if r.is_job:
                self._kube.call("delete", batch.delete_namespaced_job, obj.name, obj.namespace,
                                propagation_policy=self._propagation_policy, _preload_content=False)
            else:
                self._kube.call("delete", custom.delete_namespaced_custom_object, r.group, r.version, obj.namespace,
                                r.plural, obj.name, propagation_policy=self._propagation_policy,
                                _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def owner(self, experiment: Experiment, namespace: str) -> dict[str, Any]:
        """The experiment's owner ConfigMap (created on first use), holding the push token."""
        from kubernetes.client.exceptions import ApiException

        key = (namespace, experiment.name)
        if key in self._owners:
            return self._owners[key]
        _batch, core, _custom = self._kube.apis()
        name = owner_name(experiment.name)
        try:
            owner = json_body(self._kube.call("get owner", core.read_namespaced_config_map, name, namespace,
                                              _preload_content=False))
        except ApiException as exc:
            if exc.status != 404:
                raise KubernetesClusterError(f"cannot read ConfigMap {namespace}/{name}: {api_message(exc)}") from None
            body = owner_config_map(experiment, namespace)
            body["data"][TOKEN_KEY] = secrets.token_urlsafe(24)
            try:
                owner = json_body(self._kube.call("create owner", core.create_namespaced_config_map, namespace, body,
                                                  _preload_content=False))
            except ApiException as exc2:
                if exc2.status != 409:
                    raise KubernetesClusterError(f"cannot create ConfigMap {namespace}/{name}: "
                                                 f"{api_message(exc2)}") from None
                owner = json_body(self._kube.call("get owner", core.read_namespaced_config_map, name, namespace,
                                                  _preload_content=False))
        owner.setdefault("data", {}).setdefault(TOKEN_KEY, "")
        self._owners[key] = owner
        return owner

    def token(self, namespace: str, experiment: str) -> str:
        """The experiment's push token, from its owner ConfigMap as read by :meth:`owner` ("" before that)."""
        owner = self._owners.get((namespace, experiment)) or {}
        return str((owner.get("data") or {}).get(TOKEN_KEY, ""))

    def delete_owners(self, experiment: str, namespaces: list[str]) -> list[str]:
        """Delete the experiment's owner ConfigMap in each namespace, with Background propagation, so the garbage
        collector deletes every trial object; the namespaces that had one. KubernetesClusterError when refused."""
        from kubernetes.client.exceptions import ApiException

        _batch, core, _custom = self._kube.apis()
        name, deleted = owner_name(experiment), []
        for namespace in namespaces:
            try:
                self._kube.call(f"delete ConfigMap {namespace}/{name}", core.delete_namespaced_config_map, name,
                                namespace, propagation_policy="Background", _preload_content=False)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise KubernetesClusterError(f"cannot delete ConfigMap {namespace}/{name}: "
                                             f"{api_message(exc)}") from None
            deleted.append(namespace)
        return deleted
