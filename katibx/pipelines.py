"""katibx as a step of a Kubeflow pipeline (``pip install 'katibx[pipelines]'``): the ``tune`` component.

``tune`` is a KFP lightweight Python component: give it an Experiment YAML (and optionally a data artifact, whose
path the trials find in ``$KATIBX_DATA``); it runs the sweep inside the step on the backend it is told (local
processes in the step's container, a Ray address, or the Kubernetes backend in-cluster) and outputs the best
parameters and metrics (JSON parameters) and the experiment as Katib's JSON (an artifact). A failing sweep fails
the step with the experiment's reason in its log; an invalid spec fails it before any trial runs, exit code 2.

The step's image must have ``katibx[pipelines]`` installed (katibx and kfp, whose executor runs the step):
:data:`STEP_IMAGE`, or ``tune_component(image)`` for another one.
:func:`write_component` writes the component as a YAML spec that KFP users load without importing katibx.
"""

import os  # (no "from __future__ import annotations": KFP reads the component's annotations as types)
from pathlib import Path
from typing import Any, NamedTuple

from kfp import compiler, dsl

# The image the step runs in on a cluster: one with katibx[pipelines] installed (and what the trials need).
STEP_IMAGE = os.environ.get("KATIBX_STEP_IMAGE", "python:3.11")


def katibx_tune(
    experiment_record: dsl.Output[dsl.Artifact],
    experiment: str = "",
    experiment_file: dsl.Input[dsl.Artifact] = None,
    data: dsl.Input[dsl.Dataset] = None,
    backend: str = "local",
    backend_options: dict = {},  # noqa: B006 - a component's default, never mutated
    store: str = "",
    mlflow: str = "",
    pipeline_run: str = "",
) -> NamedTuple("Outputs", [("best_parameters", dict), ("best_metrics", dict)]):  # noqa: UP014 - KFP reads it so
    """Run the Katib Experiment (YAML: ``experiment``, or the file ``experiment_file``) with katibx and output its
    best parameters and metrics and the experiment.

    ``store``: the katibx store (default ``.katibx/katibx.db`` in the step's working folder); a stored experiment
    of the same name and spec is reused (resumed if it did not complete). ``mlflow``: a tracking URI to log into
    (its runs are tagged with ``pipeline_run``)."""
    import json
    import sys
    from collections import namedtuple

    from katibx.pipeline_step import StepFailed, run_tune_step

    if experiment_file is not None:
        with open(experiment_file.path) as given:
            experiment = given.read()
    try:
        result = run_tune_step(experiment, data_path=data.path if data is not None else None, backend=backend,
                               backend_options=backend_options, store=store or None, mlflow=mlflow or None,
                               pipeline_run=pipeline_run or None)
    except StepFailed as failed:
        for line in failed.lines:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(failed.exit_code) from None
    print(f"best parameters: {json.dumps(result.best_parameters)}; best metrics: {json.dumps(result.best_metrics)}"
          + (" (the stored experiment, reused)" if result.reused else ""))
    with open(experiment_record.path, "w") as record:
        json.dump(result.experiment, record, indent=2)
    outputs = namedtuple("Outputs", ["best_parameters", "best_metrics"])
    return outputs(result.best_parameters, result.best_metrics)


def tune_component(image: str = STEP_IMAGE) -> Any:
    """The tune component for steps running in ``image`` (which must have katibx[pipelines] installed)."""
    return dsl.component(katibx_tune, base_image=image, install_kfp_package=False)


tune = tune_component()


def experiment_of(name: str, objective: Any, parameters: Any, **tune_arguments: Any) -> str:
    """The ``experiment`` input of the tune step made of :func:`katibx.tune`'s arguments (an objective importable in
    the step's image, as ``module:function``; the search space; the other options), as YAML."""
    import yaml

    from katibx.tuning import function_experiment

    return yaml.safe_dump(function_experiment(name, objective, parameters, **tune_arguments).to_dict(),
                          sort_keys=False)


def write_component(path: "str | os.PathLike[str]", image: str = STEP_IMAGE) -> Path:
    """Write the tune component as a KFP component spec (``kfp.components.load_component_from_file`` loads it)."""
    compiler.Compiler().compile(tune_component(image), str(path))
    return Path(path)
