"""Quality at a fixed budget: katibx's algorithms against the libraries they wrap, called directly.

Every arm minimises every problem of ``benchmarks.problems`` for ``trials`` trials with seeds 0..seeds-1.
A katibx arm runs through the real ``katibx.tune`` (function trials, a fresh SQLite store in a temporary
directory, parallelTrialCount 1); a direct arm calls optuna in-process with the same settings. Reported: median
log10 simple regret per problem and arm, average rank of the arms, and a Mann-Whitney U test of each katibx arm
against the direct call of the library it wraps. ``bayesianoptimization`` against scikit-optimize's GP at the same
settings is :mod:`benchmarks.bo_speed` (10 seeds, 100 trials: longer than the full run's budget allows here); the
black-box suite compares it with scikit-optimize's and optuna's GP defaults in the full run.

Run alone: ``python -m benchmarks.quality [--quick]`` (prints the summary as JSON).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from benchmarks.common import limit_threads, log, median, run_pool
from benchmarks.problems import METRIC, PROBLEMS, Problem

TRIALS = 50
SEEDS = 5
QUICK_TRIALS = 12
QUICK_SEEDS = 2
QUICK_PROBLEMS = ("branin-mixed",)
ALPHA = 0.05  # significance level of the Mann-Whitney tests
N_INITIAL_POINTS = 10  # random points before a model takes over (TPE and GP alike)
N_EI_CANDIDATES = 24
GAMMA = 0.25  # Katib's tpe default: the good fraction of the history


# katibx tpe's settings that make it the optuna arm's TPE (independent estimators, Katib's 0.25 as optuna's gamma):
# the timing rows compare the same algorithm (the quality arm adds the rest of the arm's settings).
TPE_AS_OPTUNA_ARM = {"gamma": str(GAMMA), "multivariate": "false"}


def tpe_gamma(n: int) -> int:
    """Katib's ``gamma`` 0.25 as optuna's gamma callable: min(ceil(0.25 n), 25) good trials."""
    return min(math.ceil(GAMMA * n), 25)


@dataclass(frozen=True)
class Arm:
    """An optimiser under test. ``settings`` are shown in the report ("seed" stands for the run's seed)."""

    name: str
    library: str  # katibx or optuna
    algorithm: str  # katibx's algorithmName, or the library's class
    settings: Mapping[str, Any] = field(default_factory=dict)
    reference: str | None = None  # for a katibx arm: the direct arm it must match

    @property
    def is_katibx(self) -> bool:
        return self.library == "katibx"


ARMS: dict[str, Arm] = {a.name: a for a in (
    Arm("katibx-random", "katibx", "random", {"random_state": "seed"}, reference="optuna-random"),
    Arm("katibx-tpe", "katibx", "tpe", {"random_state": "seed", **TPE_AS_OPTUNA_ARM, "prior_weight": 1.0,
                                        "n_EI_candidates": N_EI_CANDIDATES}, reference="optuna-tpe"),
    Arm("katibx-multivariate-tpe", "katibx", "multivariate-tpe",
        {"random_state": "seed", "n_startup_trials": N_INITIAL_POINTS, "n_ei_candidates": N_EI_CANDIDATES},
        reference="optuna-multivariate-tpe"),
    Arm("katibx-cmaes", "katibx", "cmaes", {"random_state": "seed", "restart_strategy": "none"},
        reference="optuna-cmaes"),
    Arm("optuna-random", "optuna", "RandomSampler", {"seed": "seed"}),
    Arm("optuna-tpe", "optuna", "TPESampler",
        {"multivariate": False, "n_startup_trials": N_INITIAL_POINTS, "n_ei_candidates": N_EI_CANDIDATES,
         "prior_weight": 1.0, "gamma": "min(ceil(0.25 n), 25)", "seed": "seed"}),
    Arm("optuna-multivariate-tpe", "optuna", "TPESampler",
        {"multivariate": True, "n_startup_trials": N_INITIAL_POINTS, "n_ei_candidates": N_EI_CANDIDATES,
         "seed": "seed"}),
    Arm("optuna-cmaes", "optuna", "CmaEsSampler",
        {"sigma0": "1/6 of each range (default)", "x0": "centre (default)", "restart_strategy": None, "seed": "seed"}),
)}


def arm_status(arm: Arm) -> str:
    """"ok", or why the arm cannot run here ("not installed: ...")."""
    if arm.is_katibx:
        from katibx import plugins

        if arm.algorithm not in plugins.algorithm_names():
            return f"not installed: katibx algorithm {arm.algorithm!r} is not registered"
        return "ok"
    modules = ["optuna"]
    if arm.algorithm == "CmaEsSampler":
        modules.append("cmaes")
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(missing)}" if missing else "ok"


def _seeded(settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    return {k: seed if v == "seed" else v for k, v in settings.items()}


# --- running one (arm, problem, seed) ----------------------------------------------------------------------
def run_arm(arm_name: str, problem_name: str, seed: int, trials: int) -> dict[str, Any]:
    """Objective values in trial order (None for a trial without a value) and the run's wall time."""
    arm, problem = ARMS[arm_name], PROBLEMS[problem_name]
    start = time.perf_counter()
    try:
        if arm.is_katibx:
            values = _run_katibx(arm, problem, seed, trials)
        else:
            values = _run_optuna(arm, problem, seed, trials)
    except Exception as exc:  # noqa: BLE001 - reported with the run it belongs to
        return {"arm": arm_name, "problem": problem_name, "seed": seed, "error": f"{type(exc).__name__}: {exc}"}
    return {"arm": arm_name, "problem": problem_name, "seed": seed, "values": values,
            "seconds": time.perf_counter() - start}


def _run_katibx(arm: Arm, problem: Problem, seed: int, trials: int) -> list[float | None]:
    import katibx
    from katibx.store import Store

    name = f"quality-{problem.name}-s{seed}"
    with tempfile.TemporaryDirectory(prefix="katibx-bench-") as tmp:
        store = Store(Path(tmp) / "katibx.db")
        try:
            experiment = katibx.tune(
                name=name, objective=problem.objective, parameters=problem.katibx_parameters(),
                objective_metric_name=METRIC, objective_type="minimize", algorithm_name=arm.algorithm,
                algorithm_settings=_seeded(arm.settings, seed), max_trial_count=trials, parallel_trial_count=1,
                store=store,
            )
            conditions = {c["type"]: c for c in experiment["status"].get("conditions", [])}
            if conditions.get("Succeeded", {}).get("status") != "True":
                failed = conditions.get("Failed", {})
                raise RuntimeError(f"experiment did not succeed: {failed.get('reason')}: {failed.get('message')}")
            out: list[float | None] = []
            for trial in katibx.KatibxClient(store).list_trials(name):
                metrics = {m["name"]: m for m in trial["status"]["observation"]["metrics"]}
                raw = metrics.get(METRIC, {}).get("latest")
                try:
                    out.append(float(raw))
                except (TypeError, ValueError):
                    out.append(None)
            return out
        finally:
            store.close()


def _optuna_sampler(arm: Arm, seed: int) -> Any:
    import optuna

    if arm.name == "optuna-random":
        return optuna.samplers.RandomSampler(seed=seed)
    if arm.name == "optuna-tpe":
        return optuna.samplers.TPESampler(multivariate=False, constant_liar=True, n_startup_trials=N_INITIAL_POINTS,
                                          n_ei_candidates=N_EI_CANDIDATES, prior_weight=1.0, gamma=tpe_gamma, seed=seed)
    if arm.name == "optuna-multivariate-tpe":
        return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, n_startup_trials=N_INITIAL_POINTS,
                                          n_ei_candidates=N_EI_CANDIDATES, seed=seed)
    if arm.name == "optuna-cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise KeyError(arm.name)


def _run_optuna(arm: Arm, problem: Problem, seed: int, trials: int) -> list[float | None]:
    return optuna_values(problem, lambda: _optuna_sampler(arm, seed), trials)


def optuna_values(problem: Problem, sampler: Callable[[], Any], trials: int) -> list[float | None]:
    """Objective values of an optuna study with the sampler ``sampler()`` makes, asked and told one trial at a time."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental / deprecated-argument warnings
        study = optuna.create_study(direction="minimize", sampler=sampler())
        distributions = problem.optuna_distributions()
        out: list[float | None] = []
        for _ in range(trials):
            trial = study.ask(distributions)
            value = problem.value(trial.params)
            study.tell(trial, value)
            out.append(value)
    return out


def skopt_values(problem: Problem, settings: Mapping[str, Any], trials: int) -> list[float]:
    """Objective values of a scikit-optimize Optimizer with ``settings``, asked and told one point at a time."""
    import warnings

    from skopt import Optimizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-history fit warnings, as the katibx arm silences them
        opt = Optimizer(problem.skopt_dimensions(), **settings)
        out: list[float] = []
        for _ in range(trials):
            x = opt.ask()
            value = problem.value(problem.from_vector(x))
            opt.tell(x, value)
            out.append(value)
    return out


# --- planning and summarising ------------------------------------------------------------------------------
@dataclass
class Plan:
    problems: list[str]
    arms: list[str]  # runnable arms
    statuses: dict[str, str]  # every arm -> ok / not installed
    seeds: int
    trials: int

    def jobs(self) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
        """One job per (arm, problem, seed), the larger problems first (the pool hands jobs out in order)."""
        dims = {p: PROBLEMS[p].dims for p in self.problems}
        out = []
        for arm in self.arms:
            for problem in sorted(self.problems, key=lambda p: -dims[p]):
                for seed in range(self.seeds):
                    out.append((run_arm, (arm, problem, seed, self.trials)))
        return out


def plan(quick: bool = False, problems: Sequence[str] | None = None, arms: Sequence[str] | None = None,
         seeds: int | None = None, trials: int | None = None) -> Plan:
    statuses = {name: arm_status(ARMS[name]) for name in (arms or ARMS)}
    return Plan(
        problems=list(problems or (QUICK_PROBLEMS if quick else PROBLEMS)),
        arms=[a for a, s in statuses.items() if s == "ok"],
        statuses=statuses,
        seeds=seeds or (QUICK_SEEDS if quick else SEEDS),
        trials=trials or (QUICK_TRIALS if quick else TRIALS),
    )


def best_so_far(values: Sequence[float | None]) -> list[float | None]:
    out: list[float | None] = []
    best: float | None = None
    for v in values:
        if v is not None and math.isfinite(v) and (best is None or v < best):
            best = v
        out.append(best)
    return out


def _rank(values: Sequence[float]) -> list[float]:
    from scipy.stats import rankdata

    return [float(r) for r in rankdata(values)]


def _mann_whitney(a: Sequence[float], b: Sequence[float]) -> dict[str, float | None]:
    """Two-sided p and the one-sided p of "a has larger regret than b" (a worse), on log10 regrets."""
    from scipy.stats import mannwhitneyu

    if len(a) < 2 or len(b) < 2:
        return {"u": None, "p_two_sided": None, "p_worse": None, "p_better": None}
    if len(set(a) | set(b)) == 1:  # every run hit the same regret (the floor): no difference
        return {"u": len(a) * len(b) / 2, "p_two_sided": 1.0, "p_worse": 1.0, "p_better": 1.0}
    two = mannwhitneyu(a, b, alternative="two-sided")
    return {"u": float(two.statistic), "p_two_sided": float(two.pvalue),
            "p_worse": float(mannwhitneyu(a, b, alternative="greater").pvalue),
            "p_better": float(mannwhitneyu(a, b, alternative="less").pvalue)}


def summarize(p: Plan, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The quality section of the results: per-run curves, median log10 regret, ranks, Mann-Whitney tests."""
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    errors = []
    for r in results:
        if "error" in r:
            errors.append(r)
            continue
        spec = PROBLEMS[r["problem"]]
        cell = runs.setdefault(r["problem"], {}).setdefault(r["arm"], {"seeds": [], "log10_regret": [], "curves": [],
                                                                      "seconds": [], "missing_values": []})
        best = best_so_far(r["values"])
        curve = [None if b is None else round(spec.log10_regret(b), 4) for b in best]
        cell["seeds"].append(r["seed"])
        cell["curves"].append(curve)
        cell["log10_regret"].append(curve[-1] if curve else None)
        cell["seconds"].append(round(r["seconds"], 3))
        cell["missing_values"].append(sum(v is None for v in r["values"]))
    for cells in runs.values():  # seed order, whatever order the pool finished in
        for cell in cells.values():
            order = sorted(range(len(cell["seeds"])), key=lambda i: cell["seeds"][i])
            for key in ("seeds", "log10_regret", "curves", "seconds", "missing_values"):
                cell[key] = [cell[key][i] for i in order]

    medians: dict[str, dict[str, float | None]] = {}
    for problem in p.problems:
        medians[problem] = {}
        for arm in p.arms:
            finals = [v for v in runs.get(problem, {}).get(arm, {}).get("log10_regret", []) if v is not None]
            medians[problem][arm] = round(median(finals), 4) if len(finals) == p.seeds else None

    ranks: dict[str, dict[str, float]] = {}
    for problem in p.problems:
        scored = [(a, v) for a, v in medians[problem].items() if v is not None]
        ranks[problem] = dict(zip([a for a, _ in scored], _rank([v for _, v in scored])))
    complete = [a for a in p.arms if all(a in ranks[pr] for pr in p.problems)]
    average_rank = {a: round(sum(ranks[pr][a] for pr in p.problems) / len(p.problems), 3) for a in complete}

    tests: list[dict[str, Any]] = []
    for arm in p.arms:
        ref = ARMS[arm].reference
        if ref is None:
            continue
        for problem in p.problems:
            if ref not in p.arms:
                tests.append({"problem": problem, "katibx": arm, "direct": ref, "verdict": f"{ref} {p.statuses[ref]}"})
                continue
            a = [v for v in runs.get(problem, {}).get(arm, {}).get("log10_regret", []) if v is not None]
            b = [v for v in runs.get(problem, {}).get(ref, {}).get("log10_regret", []) if v is not None]
            mw = _mann_whitney(a, b)
            if mw["p_worse"] is None:
                verdict = "too few runs"
            elif mw["p_worse"] < ALPHA:
                verdict = "katibx worse"
            elif mw["p_better"] is not None and mw["p_better"] < ALPHA:
                verdict = "katibx better"
            else:
                verdict = "no significant difference"
            tests.append({"problem": problem, "katibx": arm, "direct": ref,
                          "median_katibx": medians[problem].get(arm), "median_direct": medians[problem].get(ref),
                          **{k: (None if v is None else round(v, 5)) for k, v in mw.items()}, "verdict": verdict})

    seconds = {a: round(median([s for pr in p.problems for s in runs.get(pr, {}).get(a, {}).get("seconds", [])] or [0]), 3)
               for a in p.arms}
    return {
        "settings": {"trials": p.trials, "seeds": list(range(p.seeds)), "problems": p.problems, "alpha": ALPHA,
                     "parallel_trial_count": 1, "metric": "log10 simple regret of the best value after all trials "
                     "(regret clipped at 1e-12); lower is better"},
        "problems": {name: {"dims": PROBLEMS[name].dims, "optimum": PROBLEMS[name].optimum,
                            "parameters": [f"{q.name}:{q.kind}" for q in PROBLEMS[name].params]} for name in p.problems},
        "arms": {name: {"library": ARMS[name].library, "algorithm": ARMS[name].algorithm,
                        "settings": dict(ARMS[name].settings), "reference": ARMS[name].reference,
                        "status": p.statuses[name]} for name in p.statuses},
        "median_log10_regret": medians,
        "average_rank": dict(sorted(average_rank.items(), key=lambda kv: kv[1])),
        "mann_whitney": tests,
        "median_seconds_per_run": seconds,
        "runs": runs,
        "errors": errors,
    }


def run(p: Plan, workers: int = 2, extra_jobs: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]] = (),
        on_extra: Callable[[int, Any], None] | None = None, slots: threading.Semaphore | None = None) -> dict[str, Any]:
    """Run the plan on ``workers`` processes (at most ``slots`` jobs at once, see :func:`run_pool`); ``extra_jobs``
    (untimed work, e.g. the memory runs) share the pool and go first, their results passed to ``on_extra(i, result)``."""
    jobs = list(extra_jobs) + p.jobs()
    results: list[Any] = [None] * len(jobs)
    start = time.perf_counter()
    done = 0

    def collect(i: int, result: Any) -> None:
        nonlocal done
        done += 1
        if i < len(extra_jobs):
            if on_extra is not None:
                on_extra(i, result)
        else:
            results[i] = result
        if "error" in result:
            log(f"  quality job {i} failed: {result['error']}")
        if done % max(1, len(jobs) // 10) == 0 or done == len(jobs):
            log(f"  quality: {done}/{len(jobs)} jobs, {time.perf_counter() - start:.0f} s")

    run_pool(jobs, workers, collect, slots)
    return summarize(p, [r for r in results[len(extra_jobs):] if r is not None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--problems", nargs="*")
    parser.add_argument("--arms", nargs="*")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--trials", type=int)
    args = parser.parse_args()
    limit_threads()
    summary = run(plan(args.quick, args.problems, args.arms, args.seeds, args.trials), args.workers)
    summary.pop("runs")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
