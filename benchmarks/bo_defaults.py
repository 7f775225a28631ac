"""Which acquisition ``bayesianoptimization`` should use when ``acq_func`` is not given, measured.

The black-box suite runs one seed per problem and its GP arms in 2 dimensions only (their time); this runs the
suite's bbob functions (``benchmarks.blackbox``: 24 functions in five groups of known structure) in 2, 5 and 10
dimensions with several seeds each, so that a default chosen in 2 dimensions is checked where auto also runs it.

Arms: katibx's ``bayesianoptimization`` with no ``acq_func`` (its default), with Katib's default ``gp_hedge`` and
with ``EI`` (all with ``acq_optimizer`` auto, 10 initial points, ``random_state`` the seed: the same initial points),
driven as the controller drives the plugin; optuna's ``GPSampler`` with its defaults and the seed. Reported per
dimension and over all: each katibx arm against optuna's GPSampler and against gp_hedge (better / worse / ties in
log10 regret, the median difference, a Wilcoxon signed-rank test), and median seconds per run.

Run: ``python -m benchmarks.bo_defaults [--quick] [--workers 2] [--dims 2 5 10] [--arms ...]``; writes
``benchmarks/results/bo_defaults.json``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.blackbox import DIMENSIONS, FUNCTIONS, TRIALS, _wilcoxon, log10_regret, problem
from benchmarks.bo_speed import drive_plugin
from benchmarks.common import REPO, limit_threads, median, run_logged, write_results
from benchmarks.quality import optuna_values

SEEDS = {2: (100, 101, 102), 5: (100, 101), 10: (100, 101)}  # more seeds where a run is cheap
QUICK_FUNCTIONS = (1, 15)
QUICK_TRIALS = 14
# arm -> bayesianoptimization settings (None: optuna's GPSampler)
ARMS: dict[str, dict[str, str] | None] = {"default": {}, "gp_hedge": {"acq_func": "gp_hedge"},
                                          "EI": {"acq_func": "EI"}, "optuna-gp": None}
REFERENCES = ("optuna-gp", "gp_hedge")
OUT = REPO / "benchmarks" / "results" / "bo_defaults.json"


def run_one(arm: str, name: str, seed: int, trials: int) -> dict[str, Any]:
    """The best log10 regret of one run and its seconds."""
    import optuna

    p = problem(name)
    settings = ARMS[arm]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if settings is None:
            values = optuna_values(p, lambda: optuna.samplers.GPSampler(seed=seed), trials)
        else:
            values = drive_plugin(p, {**settings, "random_state": seed}, trials)
    finite = [v for v in values if v is not None]
    return {"arm": arm, "problem": name, "dimensions": p.dims, "seed": seed,
            "log10_regret": log10_regret(p, min(finite)), "seconds": round(time.perf_counter() - start, 3)}


def jobs(dims: Sequence[int], arms: Sequence[str], trials: int, quick: bool = False
         ) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
    """Every (dimension, function, seed, arm), the largest dimension (the slowest runs) first."""
    functions = QUICK_FUNCTIONS if quick else FUNCTIONS
    return [(run_one, (arm, f"bbob-f{f:02d}-d{d}-i{DIMENSIONS[d]}", seed, trials))
            for d in sorted(dims, reverse=True) for f in functions for seed in SEEDS[d][:1 if quick else None]
            for arm in arms]


def summarize(results: Sequence[dict[str, Any]], dims: Sequence[int], arms: Sequence[str]) -> dict[str, Any]:
    """Per dimension and over all: each arm against each reference, and median seconds."""
    done = [r for r in results if "error" not in r]
    regret: dict[tuple[str, int, int], dict[str, float]] = {}  # (problem, dimensions, seed) -> arm -> regret
    for r in done:
        if r["log10_regret"] is not None:
            regret.setdefault((r["problem"], r["dimensions"], r["seed"]), {})[r["arm"]] = r["log10_regret"]
    comparisons = []
    for scope in [*dims, "all"]:
        runs = [k for k in regret if scope == "all" or k[1] == scope]
        for reference in (a for a in REFERENCES if a in arms):
            for arm in (a for a in arms if a != reference and a != "optuna-gp"):
                diffs = [regret[k][arm] - regret[k][reference] for k in runs
                         if arm in regret[k] and reference in regret[k]]
                comparisons.append({
                    "dimensions": scope, "arm": arm, "against": reference, "runs": len(diffs),
                    "better": sum(d < 0 for d in diffs), "worse": sum(d > 0 for d in diffs),
                    "ties": sum(d == 0 for d in diffs),
                    "median_difference": round(median(diffs), 4) if diffs else None, "p": _wilcoxon(diffs)})
    seconds = {f"{arm} d{d}": round(median(s), 3) for arm in arms for d in dims
               if (s := [r["seconds"] for r in done if r["arm"] == arm and r["dimensions"] == d])}
    return {"comparisons": comparisons, "median_seconds_per_run": seconds,
            "errors": [r for r in results if "error" in r]}


def markdown(summary: dict[str, Any]) -> str:
    lines = ["| dimensions | arm | against | better / worse / ties | median diff | p |", "|---|---|---|---|---|---|"]
    for c in summary["comparisons"]:
        difference = "-" if c["median_difference"] is None else f"{c['median_difference']:+.3f}"
        p = "too few runs" if c["p"] is None else c["p"]
        lines.append(f"| {c['dimensions']} | {c['arm']} | {c['against']} | {c['better']} / {c['worse']} / {c['ties']} "
                     f"| {difference} | {p} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 functions, 1 seed, 14 trials")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dims", nargs="*", type=int, choices=list(DIMENSIONS))
    parser.add_argument("--arms", nargs="*", choices=list(ARMS))
    parser.add_argument("--trials", type=int)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    limit_threads()
    dims, arms = list(args.dims or DIMENSIONS), list(args.arms or ARMS)
    trials = args.trials or (QUICK_TRIALS if args.quick else TRIALS)
    todo = jobs(dims, arms, trials, args.quick)
    start = time.perf_counter()
    results: list[dict[str, Any]] = run_logged("bo_defaults", todo, args.workers)
    summary = summarize(results, dims, arms)
    write_results(args.out, {"settings": {"trials": trials, "seeds": {d: SEEDS[d] for d in dims}, "arms": ARMS,
                                          "quick": args.quick},
                             **summary, "runs": results, "wall_seconds": round(time.perf_counter() - start, 1)})
    print(markdown(summary))
    print(json.dumps(summary["median_seconds_per_run"], indent=2))


if __name__ == "__main__":
    main()
