"""The resource types the fake API server serves: group, version, plural, kind, scope, status subresource."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    """One REST resource (`jobs` in `batch/v1`). `schema` marks kinds validated by kubernetes-validate."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = True
    schema: bool = False
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        """`v1` for the core group, else `group/version`."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str, str]:
        """The store key of this type."""
        return (self.group, self.version, self.plural)

    @property
    def singular(self) -> str:
        """Lower-case kind, as discovery reports it."""
        return self.kind.lower()


BUILTIN: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, schema=True, short_names=("ns",)),
    ResourceType("", "v1", "pods", "Pod", schema=True, short_names=("po",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", status_subresource=False, schema=True, short_names=("cm",)),
    ResourceType("", "v1", "secrets", "Secret", status_subresource=False, schema=True),
    ResourceType("", "v1", "services", "Service", schema=True, short_names=("svc",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", status_subresource=False, schema=True),
    ResourceType("", "v1", "events", "Event", status_subresource=False, schema=True, short_names=("ev",)),
    ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", schema=True, short_names=("pvc",)),
    ResourceType("batch", "v1", "jobs", "Job", schema=True),
    ResourceType("batch", "v1", "cronjobs", "CronJob", schema=True, short_names=("cj",)),
)

CUSTOM: tuple[ResourceType, ...] = (
    ResourceType("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"),
    ResourceType("kubeflow.org", "v1", "tfjobs", "TFJob"),
    ResourceType("kubeflow.org", "v1", "xgboostjobs", "XGBoostJob"),
    ResourceType("kubeflow.org", "v1", "mpijobs", "MPIJob"),
    ResourceType("kubeflow.org", "v1", "paddlejobs", "PaddleJob"),
    ResourceType("kubeflow.org", "v1", "jaxjobs", "JAXJob"),
    ResourceType("kubeflow.org", "v2beta1", "mpijobs", "MPIJob"),
    ResourceType("kubeflow.org", "v1beta1", "experiments", "Experiment"),
    ResourceType("kubeflow.org", "v1beta1", "trials", "Trial"),
    ResourceType("kubeflow.org", "v1beta1", "suggestions", "Suggestion"),
    ResourceType("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"),
    ResourceType("trainer.kubeflow.org", "v1alpha1", "trainingruntimes", "TrainingRuntime"),
    ResourceType("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes", "ClusterTrainingRuntime",
                 namespaced=False),
    ResourceType("argoproj.io", "v1alpha1", "workflows", "Workflow", status_subresource=False, short_names=("wf",)),
    ResourceType("tekton.dev", "v1", "pipelineruns", "PipelineRun"),
)


class ResourceRegistry:
    """Looks resource types up by (group, version, plural) and by (apiVersion, kind)."""

    def __init__(self, types: tuple[ResourceType, ...] = BUILTIN + CUSTOM) -> None:
        self._by_key: dict[tuple[str, str, str], ResourceType] = {}
        self._by_kind: dict[tuple[str, str], ResourceType] = {}
        for rtype in types:
            self.add(rtype)

    def add(self, rtype: ResourceType) -> None:
        """Serve one more resource type (a custom resource definition)."""
        self._by_key[rtype.key] = rtype
        self._by_kind[(rtype.api_version, rtype.kind)] = rtype

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        """The type served at this path, if any."""
        return self._by_key.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        """The type of objects with this apiVersion and kind, if served."""
        return self._by_kind.get((api_version, kind))

    def all(self) -> list[ResourceType]:
        """Every served type."""
        return list(self._by_key.values())

    def group_versions(self) -> dict[str, list[str]]:
        """Non-core groups and their versions, for /apis discovery."""
        groups: dict[str, list[str]] = {}
        for rtype in self._by_key.values():
            if rtype.group and rtype.version not in groups.setdefault(rtype.group, []):
                groups[rtype.group].append(rtype.version)
        return groups
