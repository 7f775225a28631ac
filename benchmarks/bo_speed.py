"""Speed and quality of katibx's ``bayesianoptimization`` (base_estimator GP) against scikit-optimize's GP.

Each arm minimises every problem of ``benchmarks.problems`` for ``trials`` sequential trials with ``seeds``
seeds from ``--first-seed`` (0). The katibx arm drives the algorithm plugin the way the controller does
(``create_algorithm``, then one finished trial in, ``suggest(history, 1)`` out), without the store and worker
processes, so both arms time the optimiser alone; the skopt arm is
``Optimizer(base_estimator="GP", n_initial_points=10, ...)`` ask/tell.
Two acquisition settings: Katib's default (gp_hedge, auto = lbfgs) and EI with sampling.

Reported per problem and setting: median final log10 simple regret of each arm, Mann-Whitney U (two-sided and
one-sided "katibx worse"), median seconds per run and the ratio katibx / skopt of those medians.

Run: ``python -m benchmarks.bo_speed [--quick] [--workers 2]``; writes ``benchmarks/results/bo_speed.json``
and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, limit_threads, median, run_logged, write_results
from benchmarks.problems import METRIC, PROBLEMS, Problem
from benchmarks.quality import ALPHA, _mann_whitney, best_so_far, skopt_values

TRIALS = 100
SEEDS = 10
QUICK_TRIALS = 14  # the GP (after 10 initial points) picks 4 of them
QUICK_SEEDS = 2
QUICK_PROBLEMS = ("branin-mixed",)
N_INITIAL_POINTS = 10
SETTINGS = {"default": ("gp_hedge", "auto"), "ei-sampling": ("EI", "sampling")}
ARMS = ("katibx", "skopt")
OUT = REPO / "benchmarks" / "results" / "bo_speed.json"


def _experiment(problem: Problem, settings: dict[str, Any]) -> Any:
    """The Experiment ``katibx.tune`` would run for this problem with these ``bayesianoptimization`` settings."""
    import katibx

    function_experiment = sys.modules[katibx.tune.__module__].function_experiment
    return function_experiment(f"bo-{problem.name}", problem.objective, problem.katibx_parameters(),
                               algorithm_name="bayesianoptimization", algorithm_settings=settings,
                               objective_metric_name=METRIC, objective_type="minimize", max_trial_count=100000)


def drive_plugin(problem: Problem, settings: dict[str, Any], trials: int) -> list[float]:
    """Objective values of a sequential run of the ``bayesianoptimization`` plugin with ``settings``, driven as the
    controller drives it (one finished trial in, one suggestion out), without the store."""
    from katibx.preparation import create_algorithm
    from katibx.trial import MetricSummary, TrialRecord, TrialState

    algo = create_algorithm(_experiment(problem, settings))
    history: list[TrialRecord] = []
    values = []
    for index in range(trials):
        assignments = dict(algo.suggest(history, 1)[0].assignments)
        value = problem.value(assignments)
        text = repr(value)
        observation = {METRIC: MetricSummary(METRIC, text, text, text)}
        history.append(TrialRecord(name=f"t{index}", index=index, assignments=assignments,
                                   state=TrialState.SUCCEEDED, observation=observation,
                                   creation_time=float(index), start_time=float(index), completion_time=index + 0.5))
        values.append(value)
    return values


def run_katibx(problem: Problem, acq_func: str, acq_optimizer: str, seed: int, trials: int) -> list[float]:
    """Objective values of the plugin with ``base_estimator: GP`` and this acquisition."""
    return drive_plugin(problem, {"base_estimator": "GP", "n_initial_points": N_INITIAL_POINTS, "acq_func": acq_func,
                                  "acq_optimizer": acq_optimizer, "random_state": seed}, trials)


def run_skopt(problem: Problem, acq_func: str, acq_optimizer: str, seed: int, trials: int) -> list[float]:
    """Objective values of scikit-optimize's GP Optimizer, ask/tell one point at a time."""
    return skopt_values(problem, {"base_estimator": "GP", "n_initial_points": N_INITIAL_POINTS, "acq_func": acq_func,
                                  "acq_optimizer": acq_optimizer, "random_state": seed}, trials)


def run_one(arm: str, setting: str, problem_name: str, seed: int, trials: int) -> dict[str, Any]:
    """One run: final log10 regret and wall seconds (imports done before the clock starts, for both arms)."""
    import skopt  # noqa: F401

    from katibx.algorithms import bayesian_optimization  # noqa: F401

    problem = PROBLEMS[problem_name]
    runner = run_katibx if arm == "katibx" else run_skopt
    start = time.perf_counter()
    values = runner(problem, *SETTINGS[setting], seed, trials)
    seconds = time.perf_counter() - start
    best = best_so_far(values)[-1]
    return {"arm": arm, "setting": setting, "problem": problem_name, "seed": seed, "seconds": seconds,
            "log10_regret": problem.log10_regret(best) if best is not None else None}


def jobs(settings: Sequence[str], problems: Sequence[str], seeds: Sequence[int], trials: int,
         arms: Sequence[str] = ARMS) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
    """Every (setting, problem, seed, arm), the skopt arm (the slow one) of each pair first."""
    return [(run_one, (arm, setting, problem, seed, trials))
            for setting in settings for problem in problems for seed in seeds
            for arm in sorted(arms, reverse=True)]


def _mismatch(earlier: dict[str, Any], settings: Sequence[str], trials: int) -> str | None:
    """Why an earlier result file's runs do not fit this plan (trials, initial points, acquisition), or None."""
    plan = {"trials": trials, "n_initial_points": N_INITIAL_POINTS,
            "acquisition": {k: list(SETTINGS[k]) for k in settings}}
    theirs = {**earlier["settings"], "acquisition": {k: earlier["settings"].get("acquisition", {}).get(k)
                                                     for k in settings}}
    bad = [f"{key} {theirs.get(key)!r}, not {value!r}" for key, value in plan.items() if theirs.get(key) != value]
    return "; ".join(bad) or None


def reused(path: Path, arms: Sequence[str], settings: Sequence[str], problems: Sequence[str],
           seeds: Sequence[int], trials: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The runs of ``arms`` in an earlier result file that belong to this plan, each tagged with that file, and the
    file's provenance (environment, settings, wall seconds)."""
    earlier = json.loads(path.read_text())
    mismatch = _mismatch(earlier, settings, trials)
    if mismatch:
        raise SystemExit(f"{path}: its runs do not fit this plan: {mismatch}")
    runs = [{**r, "reused_from": str(path)} for r in earlier["runs"] if r["arm"] in arms and r["setting"] in settings
            and r["problem"] in problems and r["seed"] in seeds]
    provenance = {"file": str(path), **{k: earlier.get(k) for k in ("environment", "settings", "wall_seconds")}}
    return runs, provenance


def summarize(results: Sequence[dict[str, Any]], settings: Sequence[str],
              problems: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (setting, problem): medians, Mann-Whitney U and the time ratio."""
    rows = []
    for setting in settings:
        for problem in problems:
            cell = {arm: [r for r in results if (r.get("arm"), r.get("setting"), r.get("problem")) ==
                          (arm, setting, problem)] for arm in ARMS}
            regrets = {arm: [r["log10_regret"] for r in cell[arm] if r.get("log10_regret") is not None] for arm in ARMS}
            seconds = {arm: median(r["seconds"] for r in cell[arm]) if cell[arm] else None for arm in ARMS}
            mw = _mann_whitney(regrets["katibx"], regrets["skopt"])
            ratio = seconds["katibx"] / seconds["skopt"] if seconds["katibx"] and seconds["skopt"] else None
            sources = {arm: {r.get("reused_from") for r in cell[arm]} for arm in ARMS}
            rows.append({"setting": setting, "problem": problem,
                         **{f"median_log10_regret_{arm}": round(median(regrets[arm]), 4) if regrets[arm] else None
                            for arm in ARMS},
                         "p_two_sided": mw["p_two_sided"], "p_katibx_worse": mw["p_worse"],
                         "katibx_worse": mw["p_worse"] is not None and mw["p_worse"] < ALPHA,
                         **{f"median_seconds_{arm}": None if seconds[arm] is None else round(seconds[arm], 3)
                            for arm in ARMS},
                         "time_ratio": None if ratio is None else round(ratio, 3),
                         "time_ratio_across_sessions": ratio is not None and sources["katibx"] != sources["skopt"]})
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table."""
    lines = [("| setting | problem | log10 regret katibx | log10 regret skopt | p two-sided | p katibx worse "
              "| s/run katibx | s/run skopt | time ratio |"), "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['problem']} | {_fmt(r['median_log10_regret_katibx'])} "
                     f"| {_fmt(r['median_log10_regret_skopt'])} | {_fmt(r['p_two_sided'])} "
                     f"| {_fmt(r['p_katibx_worse'])} | {_fmt(r['median_seconds_katibx'], 2)} "
                     f"| {_fmt(r['median_seconds_skopt'], 2)} | {_fmt(r['time_ratio'])} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 problem, 2 seeds, 14 trials")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--settings", nargs="*", choices=list(SETTINGS), help="acquisition settings (default: all)")
    parser.add_argument("--problems", nargs="*", choices=list(PROBLEMS))
    parser.add_argument("--arms", nargs="*", choices=list(ARMS))
    parser.add_argument("--seeds", type=int, help="how many seeds (default 10)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first seed: a run on seeds nobody tuned against (e.g. 10) checks a change's regret")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--reuse", type=Path, help="an earlier result file: its runs of the arms not run now "
                        "(skopt's are deterministic per seed; its timings are only comparable on the same machine)")
    args = parser.parse_args(argv)
    if args.reuse and not args.arms:
        parser.error("--reuse needs --arms: the arms run now (the others come from the reused file)")
    limit_threads()
    settings = list(args.settings or SETTINGS)
    problems = list(args.problems or (QUICK_PROBLEMS if args.quick else PROBLEMS))
    seeds = list(range(args.first_seed, args.first_seed + (args.seeds or (QUICK_SEEDS if args.quick else SEEDS))))
    trials = args.trials or (QUICK_TRIALS if args.quick else TRIALS)
    todo = jobs(settings, problems, seeds, trials, args.arms or ARMS)
    start = time.perf_counter()
    results: list[dict[str, Any]] = run_logged("bo_speed", todo, args.workers)
    provenance = None
    if args.reuse:
        runs, provenance = reused(args.reuse, [a for a in ARMS if a not in args.arms], settings, problems, seeds,
                                  trials)
        results += runs
    rows = summarize(results, settings, problems)
    write_results(args.out, {"settings": {"trials": trials, "seeds": seeds, "problems": problems,
                                          "n_initial_points": N_INITIAL_POINTS, "alpha": ALPHA,
                                          "acquisition": {k: list(SETTINGS[k]) for k in settings},
                                          "workers": args.workers, "arms_run": sorted(args.arms or ARMS),
                                          "reused_runs_from": str(args.reuse) if args.reuse else None},
                             "reused_from": provenance,
                             "rows": rows, "runs": sorted(results, key=lambda r: str(sorted(r.items()))),
                             "wall_seconds": round(time.perf_counter() - start, 1)})
    print(markdown(rows))


if __name__ == "__main__":
    main()
