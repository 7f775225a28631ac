"""Per-trial cost of katibx itself, measured side by side with the lower bounds a user would compare against.

- command trials vs the bare interpreter start-up (``python -c``), which no framework can beat;
- function trials vs optuna in-process with its random sampler (no durability, no process isolation).

Run: ``python -m benchmarks.overhead [--trials N] [--repeats R]``; prints medians and ratios as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import katibx
from katibx.loader import experiment_from_dict
from katibx.runner import run_experiment
from katibx.store import Store


def _command_experiment(name: str, trials: int) -> dict:
    return {
        "apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment", "metadata": {"name": name},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "result"},
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": 1, "maxTrialCount": trials,
            "parameters": [{"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}}],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": "x", "reference": "x"}],
                "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {"containers": [{
                    "name": "main", "image": "python",
                    "command": ["python3", "-S", "-c", "import sys; print('result=' + sys.argv[1])", "${trialParameters.x}"],
                }]}}}},
            },
        },
    }


def bare_interpreter(runs: int) -> float:
    """Seconds per ``python -S -c ...`` run, sequentially: the floor for any command trial."""
    start = time.perf_counter()
    for i in range(runs):
        subprocess.run([sys.executable, "-S", "-c", "import sys; print('result=' + sys.argv[1])", str(i / runs)],
                       stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) / runs


def katibx_command(trials: int, workdir: Path) -> float:
    """Seconds per trivial command trial through the katibx controller (parallelTrialCount 1)."""
    store = Store(workdir / f"cmd-{time.monotonic_ns()}.db")
    start = time.perf_counter()
    run_experiment(experiment_from_dict(_command_experiment("overhead-cmd", trials)), store=store, workdir=workdir)
    return (time.perf_counter() - start) / trials


def _trivial(params: dict) -> dict:
    return {"result": params["x"]}


def katibx_function(trials: int, workdir: Path) -> float:
    """Seconds per trivial function trial (each runs in its own forked process, results committed to SQLite)."""
    store = Store(workdir / f"fn-{time.monotonic_ns()}.db")
    start = time.perf_counter()
    katibx.tune(name="overhead-fn", objective=_trivial, parameters={"x": katibx.search.double(0, 1)},
                objective_metric_name="result", max_trial_count=trials, parallel_trial_count=1, store=store)
    return (time.perf_counter() - start) / trials


def optuna_random(trials: int) -> float:
    """Seconds per trial of optuna in-process with RandomSampler and in-memory storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    start = time.perf_counter()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=trials)
    return (time.perf_counter() - start) / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    rows: dict[str, list[float]] = {k: [] for k in ("bare_interpreter", "katibx_command", "optuna_random", "katibx_function")}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # interleaved, so load changes hit every arm alike
            rows["bare_interpreter"].append(bare_interpreter(args.trials))
            rows["katibx_command"].append(katibx_command(args.trials, Path(tmp)))
            rows["optuna_random"].append(optuna_random(args.trials))
            rows["katibx_function"].append(katibx_function(args.trials, Path(tmp)))
    med = {k: statistics.median(v) for k, v in rows.items()}
    report = {
        "trials": args.trials, "repeats": args.repeats, "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
        "seconds_per_trial_median": med,
        "ratio_command_vs_bare_interpreter": med["katibx_command"] / med["bare_interpreter"],
        "ratio_function_vs_optuna_random": med["katibx_function"] / med["optuna_random"],
        "katibx_overhead_per_command_trial_ms": 1000 * (med["katibx_command"] - med["bare_interpreter"]),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
