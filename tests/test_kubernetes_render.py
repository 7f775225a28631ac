"""Worker manifests without a cluster: every Katib example renders to objects that pass strict schema validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from katibx.cli import main
from katibx.defaults import apply_defaults
from katibx.loader import load_documents, load_experiments
from katibx.preparation import planned_trials, prepare
from katibx.spec import Experiment
from katibx.validation import ValidationError
from katibx.workers._manifests import EXPERIMENT_LABEL, TRIAL_LABEL, build_worker, pod_selector
from katibx.workers.kubernetes import KubernetesBackend


def render(experiment: Any, count: int, namespace: str | None = None) -> list[dict[str, Any]]:
    """What ``katibx render`` prints for the experiment's first ``count`` trials."""
    return KubernetesBackend().render(experiment, planned_trials(prepare(experiment), count), namespace)

EXAMPLES = Path(__file__).resolve().parent / "data" / "katib-examples"
WITH_TRIAL_SPEC = sorted(
    str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.yaml")
    if any(isinstance(d, dict) and ((d.get("spec") or {}).get("trialTemplate") or {}).get("trialSpec")
           for d in load_documents(p))
)
K8S_VERSION = "1.33"


def _workers(path: Path) -> list[dict]:
    """Two trials' worker objects; examples katibx refuses (an algorithm it lacks, say) are rendered unvalidated."""
    try:
        return [w for exp in load_experiments(path) for w in render(exp, 2)]
    except ValidationError:
        workers = []
        for doc in load_documents(path):
            exp = apply_defaults(Experiment.model_validate(doc))
            refs = {tp.reference: "1" for tp in exp.spec.trial_template.trial_parameters or []}
            workers.append(build_worker(exp, f"{exp.name}-00000000", refs, namespace=exp.namespace))
        return workers


def test_examples_found() -> None:
    assert len(WITH_TRIAL_SPEC) >= 25
    assert "trial-template/trial-configmap-source.yaml" not in WITH_TRIAL_SPEC


@pytest.mark.parametrize("example", WITH_TRIAL_SPEC)
def test_rendered_examples_pass_strict_validation(example: str) -> None:
    workers = _workers(EXAMPLES / example)
    assert workers
    for worker in workers:
        name = worker["metadata"]["name"]
        assert worker["metadata"]["labels"][TRIAL_LABEL] == name
        assert EXPERIMENT_LABEL in worker["metadata"]["labels"]
        assert "${trialParameters." not in yaml.safe_dump(worker)
        try:
            kubernetes_validate.validate(worker, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert worker["kind"] != "Job"  # custom resources: no schema ships with kubernetes-validate


def test_strict_validation_can_fail() -> None:
    worker = _workers(EXAMPLES / "hp-tuning" / "random.yaml")[0]
    worker["spec"]["backoffLimt"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSION, strict=True)


def test_job_manifest_details() -> None:
    exp = load_experiments(EXAMPLES / "trial-template" / "trial-metadata-substitution.yaml")[0]
    worker = render(exp, 1, namespace="ns1")[0]
    name = worker["metadata"]["name"]
    assert worker["metadata"]["namespace"] == "ns1"
    pod = worker["spec"]["template"]
    assert pod["metadata"]["labels"] == {EXPERIMENT_LABEL: exp.name, TRIAL_LABEL: name}
    container = pod["spec"]["containers"][0]
    assert {"name": "KATIB_TRIAL_NAME", "value": name} in container["env"]
    assert pod_selector(worker, name) == f"{TRIAL_LABEL}={name}"
    text = yaml.safe_dump(worker)
    assert name in text and "ns1" in text  # ${trialSpec.Name} / ${trialSpec.Namespace} substituted
    assert list(worker)[:3] == ["apiVersion", "kind", "metadata"]


def test_owner_reference_and_push_env() -> None:
    exp = load_experiments(EXAMPLES / "hp-tuning" / "random.yaml")[0]
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "random-katibx", "uid": "u-1"}
    worker = build_worker(exp, "t1", {"lr": 0.1, "momentum": 0.5}, namespace="default", owner=owner,
                          env={"KATIBX_PUSH_URL": "http://127.0.0.1:1/"})
    assert worker["metadata"]["ownerReferences"] == [owner]
    env = worker["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "KATIBX_PUSH_URL", "value": "http://127.0.0.1:1/"} in env
    kubernetes_validate.validate(worker, K8S_VERSION, strict=True)


def test_training_operator_pods_are_labelled() -> None:
    exp = load_experiments(EXAMPLES / "kubeflow-training-operator" / "pytorchjob-mnist.yaml")[0]
    worker = render(exp, 1)[0]
    for replica in worker["spec"]["pytorchReplicaSpecs"].values():
        assert replica["template"]["metadata"]["labels"][TRIAL_LABEL] == worker["metadata"]["name"]


def test_cli_render(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["render", str(EXAMPLES / "hp-tuning" / "random.yaml"), "-c", "3"])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.output))
    assert len(docs) == 3 and len({d["metadata"]["name"] for d in docs}) == 3
    assert result.output.count("\n---\n") == 2


def test_cli_render_refuses_configmap_template() -> None:
    result = CliRunner().invoke(main, ["render", str(EXAMPLES / "trial-template" / "trial-configmap-source.yaml")])
    assert result.exit_code == 2
    assert "spec.trialTemplate.configMap: render needs an inline trialSpec" in result.output


def test_cli_render_on_a_backend_without_objects_says_so() -> None:
    result = CliRunner().invoke(main, ["render", str(EXAMPLES / "hp-tuning" / "random.yaml"), "--backend", "local"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--backend: the local backend runs trials as processes and creates no objects to render" in \
        " ".join(result.output.split())


def test_cli_render_names_a_bad_setting_once(tmp_path: Path) -> None:
    doc = yaml.safe_load((EXAMPLES / "hp-tuning" / "random.yaml").read_text())
    doc["spec"]["algorithm"]["algorithmSettings"] = [{"name": "random_state", "value": "soon"}]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(main, ["render", str(path)])
    assert result.exit_code == 2
    assert f"error: {path}: spec.algorithm.algorithmSettings[random_state]: must be an integer (got 'soon')" in \
        " ".join(result.output.split())


def test_cli_render_shows_the_file_metrics_wrapper() -> None:
    example = EXAMPLES / "metrics-collector" / "file-metrics-collector.yaml"
    original = load_experiments(example)[0].spec.trial_template.trial_spec["spec"]["template"]["spec"]["containers"][0]
    result = CliRunner().invoke(main, ["render", str(example)])
    assert result.exit_code == 0, result.output
    (worker,) = yaml.safe_load_all(result.output)
    container = worker["spec"]["template"]["spec"]["containers"][0]
    script = container["command"][2]
    assert container["command"][:2] == ["sh", "-c"] and len(container["command"]) == 4
    assert "cat -- /katib/mnist.log" in script and 'exit "$rc"' in script and "$(" not in script
    argv = [*original["command"], *(original.get("args") or [])]
    assert [a for a, o in zip(container["args"], argv) if "${" not in o] == [o for o in argv if "${" not in o]
    assert len(container["args"]) == len(original["command"]) + len(original.get("args") or [])
