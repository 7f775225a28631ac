"""Controller memory under a trial that prints a lot: peak RSS of the controller process (``run_experiment`` in a
fresh interpreter; the trial is a command, so its own memory is not counted) when its one trial prints
``filler`` MB of lines without metrics plus ``metrics`` MB of ``loss=<n>`` lines, next to a trial that prints one
line. Also the number of observations the store kept and the trial's exact summary.

Run alone: ``python -m benchmarks.output_memory [--quick]``; prints JSON (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import REPO

SIZES_MB = ((180, 20), (0, 20), (200, 0))  # (filler, metrics): the hostile cases
QUICK_SIZES_MB = ((20, 5),)
REPEATS = 3

TRIAL = """
import sys
filler_mb, metrics_mb = float(sys.argv[1]), float(sys.argv[2])
out = sys.stdout
line = "x" * 99 + "\\n"
for _ in range(int(filler_mb * (1 << 20) / len(line))):
    out.write(line)
written, i = 0, 0
while written < metrics_mb * (1 << 20):
    text = f"loss={i}\\n"
    out.write(text)
    written += len(text)
    i += 1
out.write("loss=-1\\n")
"""

CONTROLLER = """
import json, resource, sys, time
from katibx.loader import load_experiment
from katibx.runner import run_experiment
from katibx.store import Store
store = Store(sys.argv[2])
started = time.perf_counter()
record = run_experiment(load_experiment(sys.argv[1]), store=store)
seconds = time.perf_counter() - started
(trial,) = store.trials(record.id)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_rss_mb": peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), "seconds": seconds,
                  "state": trial.state.value, "observations": len(store.observation_logs(trial.id)),
                  "summary": trial.observation["loss"].to_dict() if "loss" in trial.observation else None}))
"""


def experiment(filler_mb: float, metrics_mb: float) -> dict[str, Any]:
    command = ["python3", "trial.py", str(filler_mb), str(metrics_mb)]
    return {
        "apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment", "metadata": {"name": "loud"},
        "spec": {
            "objective": {"type": "minimize", "objectiveMetricName": "loss"},
            "algorithm": {"algorithmName": "random"}, "maxTrialCount": 1, "parallelTrialCount": 1,
            "parameters": [{"name": "a", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "2"}}],
            "trialTemplate": {
                "primaryContainerName": "main", "trialParameters": [{"name": "a", "reference": "a"}],
                "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "python", "command": command,
                                    "env": [{"name": "A", "value": "${trialParameters.a}"}]}]}}}},
            },
        },
    }


def controller_run(filler_mb: float, metrics_mb: float, folder: Path) -> dict[str, Any]:
    """One controller run in a fresh interpreter: its peak RSS (MB), seconds, the trial's state and summary."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trial.py").write_text(TRIAL)
    (folder / "experiment.yaml").write_text(yaml.safe_dump(experiment(filler_mb, metrics_mb)))
    done = subprocess.run([sys.executable, "-c", CONTROLLER, str(folder / "experiment.yaml"), str(folder / "s.db")],
                          cwd=folder, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(sizes: tuple[tuple[float, float], ...], repeats: int) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for filler, metrics in sizes:
            runs = []
            for r in range(repeats):  # baseline and loud run side by side in each repetition
                base = controller_run(0, 0, Path(tmp) / f"base-{filler}-{metrics}-{r}")
                loud = controller_run(filler, metrics, Path(tmp) / f"loud-{filler}-{metrics}-{r}")
                runs.append((base, loud))
            deltas = sorted(loud["peak_rss_mb"] - base["peak_rss_mb"] for base, loud in runs)
            base, loud = runs[-1]
            rows.append({"filler_mb": filler, "metrics_mb": metrics, "baseline_peak_rss_mb": base["peak_rss_mb"],
                         "peak_rss_mb": loud["peak_rss_mb"], "median_delta_mb": deltas[len(deltas) // 2],
                         "seconds": loud["seconds"], "observations_stored": loud["observations"],
                         "summary": loud["summary"], "state": loud["state"]})
    return {"rows": rows, "repeats": repeats, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    result = measure(QUICK_SIZES_MB if args.quick else SIZES_MB, 1 if args.quick else REPEATS)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
