"""A sweep as a step of a Kubeflow pipeline: prepare data -> tune (katibx) -> train the best configuration ->
evaluate, with artifacts passed between the steps (``pip install 'katibx[pipelines]'``).

    python examples/pipelines/digits_pipeline.py run        # locally, through kfp.local (no Docker, no cluster)
    python examples/pipelines/digits_pipeline.py compile    # the pipeline IR for KFP: digits_pipeline.yaml

A second local run reuses the sweep stored by the first (same experiment name and spec) instead of running it
again. On a cluster every step runs in katibx.pipelines.STEP_IMAGE (set KATIBX_STEP_IMAGE before compiling to an
image that has katibx installed).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import yaml
from kfp import compiler, dsl, local

from katibx.pipelines import STEP_IMAGE, tune

HERE = Path(__file__).resolve().parent
# The sweep as one line of JSON (YAML too): KFP writes a parameter's default into a comment of the compiled file,
# where a multi-line default would break the YAML.
EXPERIMENT = json.dumps(yaml.safe_load((HERE / "digits-svc.yaml").read_text()))


@dsl.component(base_image=STEP_IMAGE, install_kfp_package=False)
def prepare_data(data: dsl.Output[dsl.Dataset]) -> None:
    """scikit-learn's 8x8 digits (shipped with it, no download), scaled to [0, 1], split 80/20 with a fixed seed."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.2, random_state=0, stratify=y)
    with open(data.path, "wb") as f:
        np.savez(f, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


@dsl.component(base_image=STEP_IMAGE, install_kfp_package=False)
def train_best(data: dsl.Input[dsl.Dataset], best_parameters: dict, model: dsl.Output[dsl.Model]) -> str:
    """Train the best configuration on the whole training split; returns the arguments it trained with."""
    import pickle

    import numpy as np
    from sklearn.svm import SVC

    from katibx.pipeline_step import best_arguments

    arrays = np.load(data.path)
    fitted = SVC(C=float(best_parameters["C"]), gamma=float(best_parameters["gamma"]))
    fitted.fit(arrays["x_train"], arrays["y_train"])
    with open(model.path, "wb") as f:
        pickle.dump(fitted, f)
    model.metadata.update(best_parameters)
    return " ".join(best_arguments(best_parameters))


@dsl.component(base_image=STEP_IMAGE, install_kfp_package=False)
def evaluate(data: dsl.Input[dsl.Dataset], model: dsl.Input[dsl.Model], metrics: dsl.Output[dsl.Metrics],
             report: dsl.Output[dsl.Artifact]) -> float:
    """Test accuracy of the trained model on the held-out split, and a report (JSON) with its confusion matrix."""
    import json
    import pickle

    import numpy as np
    from sklearn.metrics import confusion_matrix

    arrays = np.load(data.path)
    with open(model.path, "rb") as f:
        fitted = pickle.load(f)
    predicted = fitted.predict(arrays["x_test"])
    accuracy = float(np.mean(predicted == arrays["y_test"]))
    metrics.log_metric("test_accuracy", accuracy)
    with open(report.path, "w") as f:
        json.dump({"test_accuracy": accuracy, "parameters": model.metadata,
                   "confusion_matrix": confusion_matrix(arrays["y_test"], predicted).tolist()}, f, indent=2)
    return accuracy


@dsl.pipeline(name="katibx-digits", description="prepare -> tune (katibx) -> train best -> evaluate")
def digits_pipeline(experiment: str = EXPERIMENT, backend: str = "local", store: str = "") -> float:
    data = prepare_data()
    sweep = tune(experiment=experiment, data=data.outputs["data"], backend=backend, store=store,
                 pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
    trained = train_best(data=data.outputs["data"], best_parameters=sweep.outputs["best_parameters"])
    return evaluate(data=data.outputs["data"], model=trained.outputs["model"]).outputs["Output"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the pipeline locally through kfp.local")
    run.add_argument("--pipeline-root", default="./kfp-local", help="where kfp.local keeps the steps' outputs")
    run.add_argument("--store", default="", help="the katibx store of the tune step (default .katibx/katibx.db)")
    build = commands.add_parser("compile", help="compile the pipeline to KFP's IR YAML")
    build.add_argument("-o", "--output", default=str(HERE / "digits_pipeline.yaml"))
    args = parser.parse_args(argv)
    if args.command == "compile":
        compiler.Compiler().compile(digits_pipeline, args.output)
        print(f"wrote {args.output}")
        return 0
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=args.pipeline_root)
    started = time.monotonic()
    accuracy = digits_pipeline(store=args.store).output
    print(f"test accuracy of the best configuration: {accuracy:.4f} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
