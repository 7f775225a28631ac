"""Growth: suggestion latency against the size of the history (controller memory: :mod:`benchmarks.scale`).

Suggestion latency: katibx's algorithm plugin is instantiated the way the controller does it
(``katibx.preparation.create_algorithm``) and given a synthetic history of n finished trials (random points
of Branin-2D with their values, as ``TrialRecord`` objects); one controller step is then timed: one more
finished trial in, ``suggest(history, 1)`` out. Next to it, the library's own step at the same history
size and settings: optuna ``study.ask()`` + ``tell()`` on a study holding n trials, scikit-optimize
``Optimizer.ask()`` + ``tell()`` after n points. Median of a few steps per size.

Run alone: ``python -m benchmarks.growth [--quick]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable, Sequence

from benchmarks.common import limit_threads, log, median
from benchmarks.problems import METRIC, PROBLEMS
from benchmarks.quality import TPE_AS_OPTUNA_ARM

TPE_SIZES = (100, 500, 1000, 2000)
BO_SIZES = (10, 50, 100, 150)
TPE_STEPS = 5
BO_STEPS = 3
QUICK_TPE_SIZES = (20, 50)
QUICK_BO_SIZES = (10,)
QUICK_STEPS = 2
LATENCY_REPEATS = 3  # the two arms measured in turn, this many times (one after the other drifts by 10 %)
PROBLEM = "branin-2d"


# --- synthetic histories -----------------------------------------------------------------------------------
def synthetic_history(n: int, seed: int = 0) -> list[Any]:
    """n finished trials at random points of Branin-2D, in creation order."""
    import numpy as np

    problem = PROBLEMS[PROBLEM]
    rng = np.random.default_rng(seed)
    return [_trial(i, {p.name: float(rng.uniform(p.low, p.high)) for p in problem.params}) for i in range(n)]


def _trial(index: int, assignments: dict[str, Any]) -> Any:
    from katibx.trial import MetricSummary, TrialRecord, TrialState

    value = repr(PROBLEMS[PROBLEM].value(assignments))
    return TrialRecord(name=f"growth-{index}", index=index, assignments=assignments, state=TrialState.SUCCEEDED,
                       observation={METRIC: MetricSummary(METRIC, value, value, value)},
                       creation_time=float(index), start_time=float(index), completion_time=index + 0.5)


def _experiment(algorithm: str, settings: dict[str, Any]) -> Any:
    import katibx

    # ``function_experiment`` builds the Experiment that ``katibx.tune`` runs; found through tune's own module,
    # wherever that lives.
    function_experiment = getattr(sys.modules[katibx.tune.__module__], "function_experiment")
    return function_experiment("growth", PROBLEMS[PROBLEM].objective, PROBLEMS[PROBLEM].katibx_parameters(),
                               algorithm_name=algorithm, algorithm_settings=settings, objective_metric_name=METRIC,
                               objective_type="minimize", max_trial_count=100000)


# --- katibx plugin steps ------------------------------------------------------------------------------------
def katibx_steps(algorithm: str, settings: dict[str, Any], n: int, steps: int,
                 preload: Callable[[Any, list[Any]], bool] | None = None) -> list[float]:
    """Seconds of each of ``steps`` controller steps (one finished trial in, suggest(history, 1) out) after n trials."""
    from katibx.preparation import create_algorithm

    algo = create_algorithm(_experiment(algorithm, settings))
    history = synthetic_history(n)
    if preload is None or not preload(algo, history):
        algo.suggest([], 1)  # an empty history: nothing to replay, so the n trials below join as given
    suggestion = algo.suggest(history, 1)[0]
    out = []
    for _ in range(steps):
        history.append(_trial(len(history), dict(suggestion.assignments)))
        start = time.perf_counter()
        suggestion = algo.suggest(history, 1)[0]
        out.append(time.perf_counter() - start)
    return out


def _preload_bayesian(algo: Any, history: list[Any]) -> bool:
    """Tell the plugin's optimizer the whole history in one fit (one GP fit instead of n, as skopt's batch tell).

    Uses the plugin's private state; returns False (and the caller falls back to the public path, one fit per
    trial) when the plugin no longer has it.
    """
    opt, told, encode, objective = (getattr(algo, a, None) for a in ("_opt", "_told", "_encode", "_objective"))
    if opt is None or not isinstance(told, set) or encode is None or objective is None:
        return False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.tell([encode(t) for t in history], [objective(t) for t in history])
    told.update(t.index for t in history)
    return True


# --- library steps -----------------------------------------------------------------------------------------
def optuna_tpe_steps(n: int, steps: int) -> list[float]:
    """Seconds of ``steps`` optuna ask()+tell() with the settings of katibx's tpe, on a study of n trials."""
    import warnings

    import optuna

    from benchmarks.quality import N_EI_CANDIDATES, N_INITIAL_POINTS, tpe_gamma

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    problem = PROBLEMS[PROBLEM]
    distributions = problem.optuna_distributions()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = optuna.samplers.TPESampler(multivariate=False, constant_liar=True, n_startup_trials=N_INITIAL_POINTS,
                                             n_ei_candidates=N_EI_CANDIDATES, prior_weight=1.0, gamma=tpe_gamma, seed=0)
        study = optuna.create_study(direction="minimize", sampler=sampler)
        study.add_trials([optuna.trial.create_trial(params=t.assignments, distributions=distributions,
                                                    value=float(t.observation[METRIC].latest))
                          for t in synthetic_history(n)])
        out = []
        for _ in range(steps):
            start = time.perf_counter()
            trial = study.ask(distributions)
            study.tell(trial, problem.value(trial.params))
            out.append(time.perf_counter() - start)
    return out


def skopt_gp_steps(n: int, steps: int) -> list[float]:
    """Seconds of ``steps`` skopt ask()+tell() (GP, EI, 10 initial points) after n points told at once."""
    import warnings

    from skopt import Optimizer

    problem = PROBLEMS[PROBLEM]
    history = synthetic_history(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = Optimizer(problem.skopt_dimensions(), base_estimator="GP", n_initial_points=10, acq_func="EI",
                        acq_optimizer="auto", random_state=0)
        opt.tell([[t.assignments[p.name] for p in problem.params] for t in history],
                 [float(t.observation[METRIC].latest) for t in history])
        out = []
        for _ in range(steps):
            start = time.perf_counter()
            x = opt.ask()
            opt.tell(x, problem.value(problem.from_vector(x)))
            out.append(time.perf_counter() - start)
    return out


def suggest_latency(tpe_sizes: Sequence[int], bo_sizes: Sequence[int], tpe_steps: int, bo_steps: int) -> dict[str, Any]:
    from katibx import plugins

    installed = plugins.algorithm_names()
    out: dict[str, Any] = {}
    specs: list[tuple[Any, ...]] = [
        ("tpe", {"random_state": 0, **TPE_AS_OPTUNA_ARM}, tpe_sizes, tpe_steps, None, optuna_tpe_steps,
         "optuna TPESampler ask+tell"),
        ("bayesianoptimization", {"base_estimator": "GP", "n_initial_points": 10, "acq_func": "EI",
                                  "acq_optimizer": "auto", "random_state": 0},
         bo_sizes, bo_steps, _preload_bayesian, skopt_gp_steps, "scikit-optimize Optimizer(GP, EI) ask+tell"),
    ]
    for algorithm, settings, sizes, steps, preload, library, library_name in specs:
        entry: dict[str, Any] = {"library": library_name, "settings": settings, "steps_per_size": steps,
                                 "repeats": LATENCY_REPEATS, "rows": []}
        out[algorithm] = entry
        if algorithm not in installed:
            entry["status"] = f"not installed: katibx algorithm {algorithm!r} is not registered"
            continue
        entry["status"] = "ok"
        for n in sizes:
            row: dict[str, Any] = {"n": n}
            try:
                # arms in turn, LATENCY_REPEATS times: the ratio of each turn's medians, then the median ratio
                pairs = [(median(katibx_steps(algorithm, settings, n, steps, preload)), median(library(n, steps)))
                         for _ in range(LATENCY_REPEATS)]
                row.update({"katibx_ms": round(1000 * median(k for k, _ in pairs), 3),
                            "library_ms": round(1000 * median(lib for _, lib in pairs), 3),
                            "ratio": round(median(k / lib for k, lib in pairs), 3)})
            except Exception as exc:  # noqa: BLE001 - report and go on
                row["error"] = f"{type(exc).__name__}: {exc}"
            entry["rows"].append(row)
            log(f"  growth: {algorithm} n={n}: {row}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    limit_threads()
    q = args.quick
    result = {
        "suggest_latency": suggest_latency(QUICK_TPE_SIZES if q else TPE_SIZES, QUICK_BO_SIZES if q else BO_SIZES,
                                           QUICK_STEPS if q else TPE_STEPS, QUICK_STEPS if q else BO_STEPS),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
