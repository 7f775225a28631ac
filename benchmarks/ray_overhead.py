"""Per-trial overhead of katibx on Ray (``--backend ray``) against Ray Tune, with trivial function trials.

Both run the same number of trials of an objective that does no work, on one local Ray cluster started once
(its start-up is not counted), with the same CPUs and the same parallelism, so every second is orchestration.
Needs ``pip install 'katibx[ray]' 'ray[tune]'``. Usage: ``python benchmarks/ray_overhead.py [--trials 50] [--cpus 2]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def objective(params: dict[str, Any]) -> dict[str, float]:
    """Katib's e2e objective 4a - b^2: no work, so the measured time is all overhead."""
    return {"result": 4 * params["a"] - params["b"] ** 2}


def run_katibx(trials: int, parallel: int) -> float:
    import katibx
    from katibx.store import Store

    with tempfile.TemporaryDirectory() as folder:
        store = Store(os.path.join(folder, "katibx.db"))
        start = time.perf_counter()
        katibx.tune(
            name="ray-overhead", objective=objective, backend="ray", store=store,
            parameters={"a": katibx.search.int(10, 20), "b": katibx.search.double(0.1, 0.2)},
            objective_metric_name="result", max_trial_count=trials, parallel_trial_count=parallel,
        )
        elapsed = time.perf_counter() - start
        record = store.get_experiment("ray-overhead")
        done = sum(t.state.value == "Succeeded" for t in store.trials(record.id))
        store.close()
    if done != trials:
        raise RuntimeError(f"katibx: only {done} of {trials} trials succeeded")
    return elapsed


def run_tune(trials: int, parallel: int) -> float:
    from ray import tune

    with tempfile.TemporaryDirectory() as folder:
        tuner = tune.Tuner(
            objective,
            param_space={"a": tune.randint(10, 21), "b": tune.uniform(0.1, 0.2)},
            tune_config=tune.TuneConfig(metric="result", mode="max", num_samples=trials, max_concurrent_trials=parallel),
            run_config=tune.RunConfig(storage_path=folder, name="ray-overhead", verbose=0),
        )
        start = time.perf_counter()
        results = tuner.fit()
        elapsed = time.perf_counter() - start
    if results.num_errors or len(results) != trials:
        raise RuntimeError(f"ray tune: {len(results)} results, {results.num_errors} errors")
    return elapsed


def measure(trials: int = 50, cpus: int = 2) -> dict[str, Any]:
    """Wall time per trial for katibx-on-Ray and Ray Tune on one fresh local cluster with ``cpus`` CPUs."""
    import ray

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False, namespace="katibx")
    try:
        katibx_s = run_katibx(trials, cpus)
        tune_s = run_tune(trials, cpus)
    finally:
        ray.shutdown()
    per_katibx, per_tune = katibx_s / trials, tune_s / trials
    return {"trials": trials, "cpus": cpus, "katibx_ray_s_per_trial": round(per_katibx, 4),
            "ray_tune_s_per_trial": round(per_tune, 4), "tune_over_katibx": round(per_tune / per_katibx, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    result = measure(args.trials, args.cpus)
    print(f"katibx --backend ray: {result['katibx_ray_s_per_trial'] * 1000:.0f} ms/trial")
    print(f"ray tune:             {result['ray_tune_s_per_trial'] * 1000:.0f} ms/trial")
    print(f"ratio (tune / katibx): {result['tune_over_katibx']}x  ({args.trials} trivial trials, {args.cpus} CPUs, "
          f"{args.cpus} at a time)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
