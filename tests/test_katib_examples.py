"""Every Katib example either validates and passes the local backend's checks, or is refused with a precise reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from katibx.loader import experiment_from_dict, load_experiment
from katibx.plugins import algorithm_names, early_stopping_names
from katibx.preparation import check_experiment, create_backend
from katibx.validation import ValidationError

EXAMPLES = Path(__file__).resolve().parent / "data" / "katib-examples"  # Katib's examples, unchanged


def algorithm(name: str) -> tuple[str, ...]:
    """The refusal naming a search algorithm, until its plugin is installed (then none)."""
    return () if name in algorithm_names() else (f"spec.algorithm.algorithmName: unknown algorithm '{name}'",)


def early_stopping(name: str) -> tuple[str, ...]:
    """The refusal naming an early-stopping algorithm, until its plugin is installed (then none)."""
    return () if name in early_stopping_names() else (f"spec.earlyStopping.algorithmName: unknown early stopping algorithm '{name}'",)


def gpus(count: int) -> tuple[str, ...]:
    """The refusal of a template asking for more GPUs than this machine has (none where it has them)."""
    from katibx.gpus import discover_gpus

    return () if len(discover_gpus()) >= count else (f"a trial asks for {count} GPUs (nvidia.com/gpu)",)


CONFIGMAP = "spec.trialTemplate.configMap: the local backend cannot read ConfigMap kubeflow/trial-templates"
NO_COMMAND = "spec.trialTemplate.trialSpec: container 'xgboost' has no command"

# Example path -> substrings that the reasons for refusing it must contain (every reason matched); () = it validates.
VERDICTS: dict[str, tuple[str, ...]] = {
    "argo/argo-workflow.yaml": ("spec.trialTemplate.trialSpec.kind: the local backend cannot run Workflow (argoproj.io/v1alpha1) trials",),
    "early-stopping/median-stop-with-json-format.yaml": early_stopping("medianstop"),
    "early-stopping/median-stop.yaml": early_stopping("medianstop"),
    "fpga/xgboost-example.yaml": (),
    "hp-tuning/bayesian-optimization.yaml": algorithm("bayesianoptimization"),
    "hp-tuning/cma-es.yaml": algorithm("cmaes"),
    "hp-tuning/grid.yaml": (),
    "hp-tuning/hyperband.yaml": algorithm("hyperband"),  # its int resource has min == max: accepted
    "hp-tuning/hyperopt-distribution.yaml": (),
    "hp-tuning/multivariate-tpe.yaml": algorithm("multivariate-tpe"),
    "hp-tuning/optuna-distribution.yaml": algorithm("tpe"),
    "hp-tuning/random.yaml": (),
    # maxFailedTrialCount 3 > maxTrialCount 2: Katib's webhook refuses it too (its e2e run overrides the counts)
    "hp-tuning/simple-pbt.yaml": ("spec.maxFailedTrialCount: should be less than or equal to spec.maxTrialCount", *algorithm("pbt")),
    "hp-tuning/sobol.yaml": algorithm("sobol"),
    "hp-tuning/tpe.yaml": algorithm("tpe"),
    "kubeflow-trainer/trainjob-pytorch.yaml": (),
    "kubeflow-training-operator/mpijob-horovod.yaml": (),
    "kubeflow-training-operator/pytorchjob-mnist.yaml": (),
    "kubeflow-training-operator/tfjob-mnist-with-summaries.yaml": (),
    "kubeflow-training-operator/xgboostjob-lightgbm.yaml": (NO_COMMAND,),  # args only: the image's entrypoint runs
    "metrics-collector/custom-metrics-collector.yaml": (
        "spec.metricsCollectorSpec.collector.kind: the local backend collects StdOut, File, TensorFlowEvent, Push "
        "metrics, not Custom",),
    "metrics-collector/file-metrics-collector-with-json-format.yaml": (),
    "metrics-collector/file-metrics-collector.yaml": (),
    "metrics-collector/metrics-collection-strategy.yaml": algorithm("tpe"),
    "nas/darts-cpu.yaml": algorithm("darts"),
    "nas/darts-gpu.yaml": algorithm("darts") or gpus(1),
    "nas/enas-cpu.yaml": algorithm("enas"),
    "nas/enas-gpu.yaml": algorithm("enas") or gpus(1),
    "resume-experiment/from-volume-resume.yaml": (),
    "resume-experiment/long-running-resume.yaml": (),
    "tekton/pipeline-run.yaml": (  # this copy passes $(trialParameters.lr), never ${trialParameters.learningRate}
        "spec.trialTemplate.trialParameters[0]: parameter 'learningRate' is not used in spec.trialTemplate",),
    "trial-template/trial-configmap-source.yaml": algorithm("cmaes") or (CONFIGMAP,),
    "trial-template/trial-metadata-substitution.yaml": (),
}


def reasons(path: Path) -> list[str]:
    """Why katibx refuses to run the file locally: validation errors, else the local backend's problems."""
    try:
        experiment = load_experiment(path)
    except ValidationError as exc:
        return exc.errors
    return check_experiment(experiment, create_backend("local"))


def test_every_example_has_a_verdict() -> None:
    files = sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*") if p.is_file() and p.name not in ("LICENSE", "README.md"))
    assert files == sorted(VERDICTS)


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_example(name: str) -> None:
    got = reasons(EXAMPLES / name)
    expected = VERDICTS[name]
    assert all(any(e in line for line in got) for e in expected), got
    assert all(any(e in line for e in expected) for line in got), got


def test_configmap_example_names_the_configmap_once_its_algorithm_is_available() -> None:
    data = yaml.safe_load((EXAMPLES / "trial-template/trial-configmap-source.yaml").read_text())
    data["spec"]["algorithm"]["algorithmName"] = "random"
    got = check_experiment(experiment_from_dict(data), create_backend("local"))
    assert len(got) == 1 and got[0].startswith(CONFIGMAP) and "(key defaultTrialTemplate.yaml)" in got[0]
