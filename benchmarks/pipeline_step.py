"""``.venv-pipelines/bin/python -m benchmarks.pipeline_step``: what a sweep costs as a Kubeflow pipeline step.

Needs kfp (the pipelines environment: tests/make_pipelines_env.sh). ``--repeat`` times, in turn and each with a new
store: the example pipeline (examples/pipelines: prepare -> tune -> train best -> evaluate) through ``kfp.local``;
a pipeline of the tune step alone; and ``katibx run`` of the same experiment on the same data. Reports seconds
(medians) and the tune step's overhead over ``katibx run``. Writes ``benchmarks/results/pipeline_step.json``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.common import REPO, alone_arguments, write_results

EXAMPLE = REPO / "examples" / "pipelines"

TUNE_ONLY = """
import sys
from kfp import dsl, local
from katibx.pipelines import tune

@dsl.pipeline(name="tune-only")
def tune_only(experiment: str, store: str, data: str) -> dict:
    imported = dsl.importer(artifact_uri=data, artifact_class=dsl.Dataset)
    return tune(experiment=experiment, data=imported.output, store=store).outputs["best_parameters"]

local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[3])
tune_only(experiment=open(sys.argv[1]).read(), store=sys.argv[2], data=sys.argv[4])
"""


def _timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True, timeout=900)
    return time.monotonic() - started


def _data(path: Path) -> None:
    """The example's prepared data (as its prepare step writes it)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.2, random_state=0, stratify=y)
    with path.open("wb") as f:
        np.savez(f, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def main() -> None:
    args = alone_arguments(__doc__ or "", "pipeline_step", trials=4, repeat=3)
    runs: dict[str, list[float]] = {"pipeline_s": [], "tune_step_s": [], "katibx_run_s": []}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        data = root / "digits.npz"
        _data(data)
        doc = yaml.safe_load((EXAMPLE / "digits-svc.yaml").read_text())
        doc["spec"]["maxTrialCount"] = args.trials
        experiment = root / "experiment.yaml"
        experiment.write_text(yaml.safe_dump(doc))
        (root / "tune_only.py").write_text(TUNE_ONLY)
        env = {**os.environ, "KATIBX_DATA": str(data)}
        for i in range(args.repeat):
            runs["pipeline_s"].append(_timed([sys.executable, str(EXAMPLE / "digits_pipeline.py"), "run",
                                              "--pipeline-root", str(root / f"p{i}"), "--store",
                                              str(root / f"p{i}.db")], root))
            runs["tune_step_s"].append(_timed([sys.executable, "tune_only.py", str(experiment),
                                               str(root / f"t{i}.db"), str(root / f"t{i}"), str(data)], root))
            runs["katibx_run_s"].append(_timed([sys.executable, "-m", "katibx.cli", "run", str(experiment), "-q",
                                                "--store", str(root / f"r{i}.db")], root, env))
    median = {key: statistics.median(values) for key, values in runs.items()}
    median["tune_step_overhead_s"] = median["tune_step_s"] - median["katibx_run_s"]
    write_results(args.out, {"trials": args.trials, "median": median, "runs": runs,
                             "note": "each arm a fresh Python process; the tune step's includes kfp.local's own"})
    print(f"example pipeline {median['pipeline_s']:.1f} s; the tune step alone {median['tune_step_s']:.1f} s against "
          f"katibx run {median['katibx_run_s']:.1f} s (+{median['tune_step_overhead_s']:.1f} s), {args.trials} "
          f"trials, medians of {args.repeat}; {args.out}")


if __name__ == "__main__":
    main()
