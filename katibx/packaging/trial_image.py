"""Trial code onto the trial container's image, for sweeps on a cluster (``katibx run --build``,
``katibx.tune(build=)``): the experiment's folder (or a function objective) is appended to the image its trial
container names, pushed, and every container on that image is pinned to the pushed digest, so each trial runs
exactly the code of the run that started it (a resume included: the stored experiment names the digest)."""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Collection

from katibx.packaging.build import BuildError, BuiltImage, build_image
from katibx.packaging.registry import ImageRef, RegistryError, environment_credentials
from katibx.packaging.sources import DEFAULT_WORKDIR, ENTRY, PARAMETERS_ENV
from katibx.spec import Experiment
from katibx.template import pod_specs, primary_container

FUNCTION_CONTAINER = "training-container"  # the container of a function objective's Job (Katib's default name)


def trial_image_base(experiment: Experiment) -> tuple[str, str]:
    """(base image, working folder) of the experiment's trial container; BuildError naming the field when the
    experiment has no inline trial container with an image to build on."""
    template = experiment.spec.trial_template
    spec = template.trial_spec if template is not None else None
    if not isinstance(spec, dict):
        raise BuildError("--build: spec.trialTemplate.trialSpec: the trial's spec must be in the experiment (not in "
                         "a ConfigMap) to run the built image")
    name = template.primary_container_name if template is not None else None
    container = primary_container(spec, name)
    image = container.get("image") if container is not None else None
    if not isinstance(image, str) or not image or "${" in image:
        raise BuildError(f"--build: spec.trialTemplate.trialSpec: the primary container ({name}) needs an image "
                         "to build on (a registry reference, no placeholders)")
    try:
        ImageRef.parse(image)
    except ValueError as exc:
        raise BuildError(f"--build: spec.trialTemplate.trialSpec: the primary container's image: {exc}") from None
    workdir = container.get("workingDir") if container is not None else None
    return image, workdir if isinstance(workdir, str) and workdir.startswith("/") else DEFAULT_WORKDIR


def push_target(repository: str, experiment_name: str) -> str:
    """``--build REGISTRY/REPOSITORY[:TAG]`` as the reference to push: without a tag, the experiment's name."""
    try:
        target = ImageRef.parse(repository)
    except ValueError as exc:
        raise BuildError(f"--build: {exc}") from None
    if target.digest:
        raise BuildError(f"--build: {repository!r}: name a repository (and a tag) to push to, not a digest")
    return str(target if target.tag else ImageRef(target.registry, target.repository, experiment_name))


def pin_image(experiment: Experiment, base: str, pinned: str) -> Experiment:
    """A copy of the experiment whose containers on ``base`` (every replica's, init containers too; a TrainJob's
    trainer) run ``pinned`` instead."""
    changed = experiment.model_copy(deep=True)
    changed._source_dir = experiment.source_dir
    assert changed.spec.trial_template is not None and changed.spec.trial_template.trial_spec is not None
    spec: dict[str, Any] = changed.spec.trial_template.trial_spec
    containers = [c for _, pod in pod_specs(spec) for c in (pod.get("initContainers") or []) +
                  (pod.get("containers") or []) if isinstance(c, dict)]
    trainer = (spec.get("spec") or {}).get("trainer") if spec.get("kind") == "TrainJob" else None
    for container in containers + ([trainer] if isinstance(trainer, dict) else []):
        if container.get("image") == base:
            container["image"] = pinned
    return changed


def function_job(image: str, types: dict[str, Any], fixed: dict[str, Any], *, env: list[dict[str, str]] | None = None,
                 resources: dict[str, Any] | None = None, deadline: float | None = None) -> dict[str, Any]:
    """The trial spec of a function objective run in a container (``katibx.tune(image=, build=)``): a Job whose
    container runs the entry script :func:`build_trial_image` packages with the function, with one
    ``--name=value`` argument per parameter of ``types`` (name -> "int", "double", "number", "text" or
    {text: value}: how the entry script gives the objective each value its type back) and the fixed values as JSON
    in ``$KATIBX_PARAMETERS``."""
    given = {"name": PARAMETERS_ENV,  # "$$": Kubernetes would expand $(NAME) in it
             "value": json.dumps({"types": types, "fixed": fixed}, sort_keys=True).replace("$", "$$")}
    container: dict[str, Any] = {
        "name": FUNCTION_CONTAINER, "image": image, "env": [given, *(env or [])],
        "command": ["python3", str(PurePosixPath(DEFAULT_WORKDIR) / ENTRY),
                    *(f"--{name}=${{trialParameters.{name}}}" for name in types)]}
    if resources:  # tune's resources_per_trial: {"cpu": 2, "memory": "1Gi", "gpu": 1}
        container["resources"] = {"limits": {"nvidia.com/gpu" if key == "gpu" else key: str(value)
                                             for key, value in resources.items()}}
    spec: dict[str, Any] = {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}
    if deadline is not None:  # a whole number of seconds: the API server refuses a fraction
        spec["activeDeadlineSeconds"] = math.ceil(deadline)
    return {"apiVersion": "batch/v1", "kind": "Job", "spec": spec}


def build_trial_image(experiment: Experiment, repository: str, *, source: str | Path | Callable[..., Any] | None = None,
                      exclude: Collection[Path] = (), insecure: bool = False,
                      credentials: tuple[str, str] | None = None) -> tuple[Experiment, BuiltImage]:
    """Append ``source`` (default: the folder of the experiment's file) to the trial container's image, push it to
    ``repository`` (tag: the experiment's name unless given) and return the experiment pinned to the pushed digest,
    with what was built. The code goes to the container's ``workingDir`` (default ``/app``, then the image's
    working folder); a ``requirements.txt`` of the folder becomes a layer of pure-Python packages. Credentials
    for the push: ``credentials``, else the environment's, else ``~/.docker/config.json``.
    Raises BuildError or RegistryError (one line)."""
    base, workdir = trial_image_base(experiment)
    if source is None:
        source = experiment.source_dir
        if source is None:
            raise BuildError("--build: the experiment has no folder to package (it was not read from a file)")
    target = push_target(repository, experiment.name)
    metric = experiment.spec.objective.objective_metric_name if experiment.spec.objective else None
    credentials = credentials or environment_credentials()
    try:
        built = build_image(source, base, push=target, workdir=workdir, insecure=insecure, credentials=credentials,
                            exclude=exclude, metric=metric or "objective")
    except (BuildError, RegistryError) as exc:
        raise type(exc)(f"--build: {exc}") from None
    assert built.pushed is not None
    return pin_image(experiment, base, built.pushed), built


__all__ = ["FUNCTION_CONTAINER", "build_trial_image", "function_job", "pin_image", "push_target",
           "trial_image_base"]
