"""A broad black-box suite: every katibx search algorithm with its defaults against the peers' defaults.

A user takes the defaults, so this compares defaults, not like settings (``benchmarks.quality`` does that). Problems
are COCO's ``bbob`` functions (from ``coco-experiment``: no download), which come in five groups of known structure:
f1-f5 separable, f6-f9 low or moderate conditioning, f10-f14 high conditioning, f15-f19 multimodal with an adequate
global structure, f20-f24 multimodal with a weak one. Each function is a problem in 2, 5 and 10 dimensions (instances
1, 2 and 3), and, in 4 dimensions, a mixed problem (the first half of the dimensions integers) and a categorical one
(a categorical among three instances of the function, the second and third shifted up by 1 and 2). Regret is
measured against the function's optimum (for the mixed problems that of the continuous function: a floor the integer
points may not reach, the same for every arm); one run per problem.

Arms: katibx's ``random``, ``tpe``, ``multivariate-tpe``, ``cmaes``, ``sobol``, ``bayesianoptimization`` (and ``auto``
where installed) with no settings; optuna's samplers and scikit-optimize's ``gp_minimize`` with theirs. Each katibx
algorithm is paired with the peer default of its family; the GP arms run on the 2-dimensional bbob problems only
(their time). katibx's arms get no settings at all (not even ``random_state``: ``sobol`` would then scramble its
sequence), the peers a seed. Reported per pair: wins, losses and ties over the problems, the median difference of log10 regret
and a Wilcoxon signed-rank test; the average rank of every arm over the problems it ran; median seconds per run.

Run alone: ``python -m benchmarks.blackbox [--quick] [--workers N] [--trials N] [--arms ...] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from benchmarks.common import REPO, limit_threads, median, run_logged, write_results
from benchmarks.problems import METRIC, Param, Problem, categorical, double, integer
from benchmarks.quality import optuna_values

TRIALS = 50
FUNCTIONS = range(1, 25)
DIMENSIONS = {2: 1, 5: 2, 10: 3}  # dimension -> instance
MIXED_DIMENSIONS = 4
REGRET_FLOOR = 1e-8  # COCO's final target precision
ALPHA = 0.05
QUICK_PROBLEMS = ("bbob-f01-d2-i1", "bbob-f15-d2-i1", "mixed-f08-d4-i1", "categorical-f03-d4")
QUICK_TRIALS = 12
CATEGORY_SHIFTS = {"a": 0.0, "b": 1.0, "c": 2.0}  # category -> (instance 1, 2, 3 of the function, shifted up by)
BOUND = 5.0  # bbob's search domain is [-5, 5] in every dimension
GROUPS = {"separable": range(1, 6), "moderate conditioning": range(6, 10), "high conditioning": range(10, 15),
          "multimodal, adequate structure": range(15, 20), "multimodal, weak structure": range(20, 25)}


@dataclass(frozen=True)
class Arm:
    """An optimiser with its defaults; ``family``: the katibx algorithm and its peer share one."""

    name: str
    library: str  # katibx, optuna or scikit-optimize
    algorithm: str  # katibx's algorithmName, or the peer's class or function
    family: str
    gp: bool = False  # a GP model: run on the GP problems only


ARMS: dict[str, Arm] = {a.name: a for a in (
    Arm("katibx-random", "katibx", "random", "random"),
    Arm("katibx-tpe", "katibx", "tpe", "tpe"),
    Arm("katibx-multivariate-tpe", "katibx", "multivariate-tpe", "multivariate-tpe"),
    Arm("katibx-cmaes", "katibx", "cmaes", "cmaes"),
    Arm("katibx-sobol", "katibx", "sobol", "sobol"),
    Arm("katibx-bayesianoptimization", "katibx", "bayesianoptimization", "gp", gp=True),
    Arm("katibx-auto", "katibx", "auto", "auto"),
    Arm("optuna-random", "optuna", "RandomSampler", "random"),
    Arm("optuna-tpe", "optuna", "TPESampler", "tpe"),
    Arm("optuna-multivariate-tpe", "optuna", "TPESampler(multivariate=True)", "multivariate-tpe"),
    Arm("optuna-cmaes", "optuna", "CmaEsSampler", "cmaes"),
    Arm("optuna-qmc", "optuna", "QMCSampler", "sobol"),
    Arm("optuna-gp", "optuna", "GPSampler", "gp", gp=True),
    Arm("skopt-gp", "scikit-optimize", "gp_minimize", "gp", gp=True),
)}


# --- problems ----------------------------------------------------------------------------------------------
_NAME = re.compile(r"(bbob|mixed)-f(\d+)-d(\d+)-i(\d+)|categorical-f(\d+)-d(\d+)")


def _bbob(function: int, dimension: int, instance: int) -> Any:
    import cocoex

    return cocoex.BareProblem("bbob", function, dimension, instance)


def problem(name: str) -> Problem:
    """The problem called ``name`` (``bbob-f15-d5-i2``, ``mixed-f08-d4-i1``, ``categorical-f03-d4``)."""
    import numpy as np

    match = _NAME.fullmatch(name)
    if match is None:
        raise KeyError(name)
    if match.group(1):
        kind, function, dims, instance = match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4))
        fn = _bbob(function, dims, instance)
        ints = dims // 2 if kind == "mixed" else 0
        params: tuple[Param, ...] = tuple(integer(f"x{i}", -int(BOUND), int(BOUND)) if i < ints
                                          else double(f"x{i}", -BOUND, BOUND) for i in range(dims))

        def value(p: Mapping[str, Any]) -> float:
            return float(fn(np.array([float(p[f"x{i}"]) for i in range(dims)])))

        optimum = float(fn.best_value())
    else:
        function, dims = int(match.group(5)), int(match.group(6))
        fns = {c: _bbob(function, dims, i + 1) for i, c in enumerate(CATEGORY_SHIFTS)}
        bests = {c: float(f.best_value()) for c, f in fns.items()}
        params = (categorical("c", list(CATEGORY_SHIFTS)), *(double(f"x{i}", -BOUND, BOUND) for i in range(dims)))

        def value(p: Mapping[str, Any]) -> float:
            c = p["c"]
            x = np.array([float(p[f"x{i}"]) for i in range(dims)])
            return float(fns[c](x)) - bests[c] + CATEGORY_SHIFTS[c]

        optimum = 0.0

    def objective(p: Mapping[str, Any]) -> dict[str, float]:
        return {METRIC: value(p)}

    return Problem(name, params, optimum, value, objective)


def problem_names(quick: bool = False) -> list[str]:
    if quick:
        return list(QUICK_PROBLEMS)
    names = [f"bbob-f{f:02d}-d{d}-i{i}" for d, i in DIMENSIONS.items() for f in FUNCTIONS]
    names += [f"mixed-f{f:02d}-d{MIXED_DIMENSIONS}-i1" for f in FUNCTIONS]
    names += [f"categorical-f{f:02d}-d{MIXED_DIMENSIONS}" for f in FUNCTIONS]
    return names


def runs_on(arm: Arm, name: str, quick: bool = False) -> bool:
    """The GP arms run on the 2-dimensional bbob problems (on every problem of a quick run)."""
    return not arm.gp or quick or name.startswith("bbob-") and name.endswith("-d2-i1")


def log10_regret(p: Problem, value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(math.log10(max(value - p.optimum, REGRET_FLOOR)), 4)


# --- one run -----------------------------------------------------------------------------------------------
def run_arm(arm_name: str, problem_name: str, seed: int, trials: int) -> dict[str, Any]:
    """The best log10 regret of one run and its seconds (or the error that stopped it)."""
    arm, p = ARMS[arm_name], problem(problem_name)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peers' experimental and small-history warnings
            runner = {"katibx": _katibx, "optuna": _optuna, "scikit-optimize": _skopt}[arm.library]
            values = runner(arm, p, seed, trials)
    except Exception as exc:  # noqa: BLE001 - reported with the run it belongs to
        return {"arm": arm_name, "problem": problem_name, "error": f"{type(exc).__name__}: {exc}"}
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return {"arm": arm_name, "problem": problem_name, "trials": len(values),
            "log10_regret": log10_regret(p, min(finite)) if finite else None,
            "seconds": round(time.perf_counter() - start, 3)}


def _katibx(arm: Arm, p: Problem, seed: int, trials: int) -> list[float | None]:
    import katibx

    with tempfile.TemporaryDirectory(prefix="katibx-blackbox-") as tmp:
        result = katibx.tune(p.name, p.objective, p.katibx_parameters(), objective_metric_name=METRIC,
                             objective_type="minimize", algorithm_name=arm.algorithm, max_trial_count=trials,
                             parallel_trial_count=1, store=Path(tmp) / "katibx.db", progress=False, isolation="none")
        return [t.value for t in result.trials]


def _optuna_sampler(arm: Arm, seed: int) -> Any:
    import optuna

    samplers: dict[str, Callable[[], Any]] = {
        "optuna-random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "optuna-tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "optuna-multivariate-tpe": lambda: optuna.samplers.TPESampler(multivariate=True, seed=seed),
        "optuna-cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "optuna-qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
        "optuna-gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    return samplers[arm.name]()


def _optuna(arm: Arm, p: Problem, seed: int, trials: int) -> list[float | None]:
    return optuna_values(p, lambda: _optuna_sampler(arm, seed), trials)


def _skopt(arm: Arm, p: Problem, seed: int, trials: int) -> list[float | None]:
    from skopt import gp_minimize

    result = gp_minimize(lambda x: p.value(p.from_vector(x)), p.skopt_dimensions(), n_calls=trials,
                         random_state=seed)
    return [float(v) for v in result.func_vals]


# --- the suite ---------------------------------------------------------------------------------------------
def jobs(names: Sequence[str], arms: Sequence[str], trials: int, quick: bool = False
         ) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
    """One job per (arm, problem), the GP arms first (the pool hands jobs out in order: the longest first)."""
    ordered = sorted(arms, key=lambda a: not ARMS[a].gp)
    return [(run_arm, (arm, name, seed, trials))
            for arm in ordered for seed, name in enumerate(names) if runs_on(ARMS[arm], name, quick)]


def _wilcoxon(diffs: Sequence[float]) -> float | None:
    """Two-sided p of a Wilcoxon signed-rank test on paired differences (ties count half each way)."""
    from scipy.stats import wilcoxon

    if len(diffs) < 5:
        return None
    if all(d == 0 for d in diffs):
        return 1.0
    return round(float(wilcoxon(diffs, zero_method="zsplit").pvalue), 5)


def summarize(names: Sequence[str], arms: Sequence[str], results: Sequence[Mapping[str, Any]], trials: int,
              quick: bool = False) -> dict[str, Any]:
    """Regret per problem and arm; per family, katibx's default against the peer's; average ranks; seconds."""
    from scipy.stats import rankdata

    regret: dict[str, dict[str, float]] = {}
    seconds: dict[str, list[float]] = {}
    errors = [r for r in results if "error" in r]
    for r in results:
        if "error" not in r and r["log10_regret"] is not None:
            regret.setdefault(r["problem"], {})[r["arm"]] = r["log10_regret"]
            seconds.setdefault(r["arm"], []).append(r["seconds"])

    pairs = []
    for arm in arms:
        mine = ARMS[arm]
        if mine.library != "katibx":
            continue
        for peer in arms:
            if ARMS[peer].library == "katibx" or ARMS[peer].family != mine.family:
                continue
            both = [n for n in names if arm in regret.get(n, {}) and peer in regret.get(n, {})]
            diffs = [regret[n][arm] - regret[n][peer] for n in both]
            pairs.append({
                "katibx": arm, "peer": peer, "problems": len(both),
                "better": sum(d < 0 for d in diffs), "worse": sum(d > 0 for d in diffs), "ties": sum(d == 0 for d in diffs),
                "median_difference": round(median(diffs), 4) if diffs else None, "p": _wilcoxon(diffs),
                "worse_by_group": {g: sum(regret[n][arm] > regret[n][peer] for n in both if _function(n) in fs)
                                   for g, fs in GROUPS.items()},
            })
    for pair in pairs:
        p, d = pair["p"], pair["median_difference"] or 0.0
        pair["verdict"] = ("too few problems" if p is None else "no significant difference" if p >= ALPHA
                           else "katibx better" if d < 0 or d == 0 and pair["better"] > pair["worse"]
                           else "katibx worse")

    def scored(group: Sequence[str], over: Sequence[str]) -> list[str]:
        return [n for n in over if all(a in regret.get(n, {}) for a in group)]

    def average_ranks(group: Sequence[str], over: Sequence[str]) -> dict[str, float]:
        ranks: dict[str, list[float]] = {a: [] for a in group}
        for n in scored(group, over):
            for a, r in zip(group, rankdata([regret[n][a] for a in group])):
                ranks[a].append(float(r))
        return dict(sorted(((a, round(sum(v) / len(v), 3)) for a, v in ranks.items() if v), key=lambda kv: kv[1]))

    def ties(group: Sequence[str], over: Sequence[str]) -> dict[str, Any]:
        """Which arms the average ranks cannot tell from the first: Nemenyi's critical difference, and auto against
        the first arm problem by problem (Wilcoxon)."""
        ranks, both = average_ranks(group, over), scored(group, over)
        if len(ranks) < 2 or not both:
            return {}
        cd = critical_difference(len(ranks), len(both))
        first = next(iter(ranks))
        out: dict[str, Any] = {"problems": len(both), "arms": len(ranks), "critical_difference": round(cd, 3),
                               "first": first, "tied_with_first": [a for a, r in ranks.items() if r - ranks[first] <= cd]}
        auto = next((a for a in group if ARMS[a].algorithm == "auto" and ARMS[a].library == "katibx"), None)
        if auto and auto != first:
            out["auto_against_first_p"] = _wilcoxon([regret[n][auto] - regret[n][first] for n in both])
        return out

    cheap = [a for a in arms if not ARMS[a].gp]
    gp_problems = [n for n in names if all(runs_on(ARMS[a], n, quick) for a in arms)]
    rankings = {"all problems, arms without a GP": (cheap, names), "GP problems, every arm": (list(arms), gp_problems)}
    return {
        "settings": {"trials": trials, "problems": len(names), "gp_problems": len(gp_problems),
                     "alpha": ALPHA, "regret_floor": REGRET_FLOOR, "seed": "the problem's index",
                     "metric": "log10 simple regret of the best value found (lower is better)"},
        "pairs": pairs,
        "average_rank": {title: average_ranks(*ranking) for title, ranking in rankings.items()},
        "rank_ties": {title: ties(*ranking) for title, ranking in rankings.items()},
        "median_seconds_per_run": {a: round(median(s), 3) for a, s in seconds.items()},
        "log10_regret": regret,
        "errors": errors,
    }


def critical_difference(arms: int, problems: int) -> float:
    """Nemenyi's critical difference of average ranks at ``ALPHA`` (Demsar 2006, JMLR 7): two arms whose average
    ranks over ``problems`` differ by less are not told apart."""
    from scipy.stats import studentized_range

    q = float(studentized_range.ppf(1 - ALPHA, arms, math.inf)) / math.sqrt(2)
    return q * math.sqrt(arms * (arms + 1) / (6 * problems))


def _function(name: str) -> int:
    return int(re.search(r"-f(\d+)-", name).group(1))  # type: ignore[union-attr]


def available(arms: Sequence[str]) -> list[str]:
    """The arms whose algorithm is installed (katibx's ``auto`` only once it exists)."""
    from katibx import plugins

    installed = set(plugins.algorithm_names())
    return [a for a in arms if ARMS[a].library != "katibx" or ARMS[a].algorithm in installed]


@dataclass(frozen=True)
class Suite:
    """The problems, arms and budgets of one run of the suite."""

    names: tuple[str, ...]
    arms: tuple[str, ...]
    trials: int
    quick: bool = False

    @classmethod
    def of(cls, quick: bool = False, trials: int | None = None, arms: Sequence[str] | None = None,
           problems: Sequence[str] | None = None) -> Suite:
        return cls(tuple(problems or problem_names(quick)), tuple(available(arms or list(ARMS))),
                   trials or (QUICK_TRIALS if quick else TRIALS), quick)

    def jobs(self) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
        return jobs(self.names, self.arms, self.trials, self.quick)

    def summarize(self, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return summarize(self.names, self.arms, results, self.trials, self.quick)


def run(suite: Suite, workers: int = 2) -> dict[str, Any]:
    return suite.summarize(run_logged("blackbox", suite.jobs(), workers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int)
    parser.add_argument("--arms", nargs="*")
    parser.add_argument("--problems", nargs="*")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "blackbox.json")
    args = parser.parse_args()
    limit_threads()
    summary = run(Suite.of(args.quick, args.trials, args.arms, args.problems), args.workers)
    write_results(args.out, summary)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("log10_regret",)}, indent=2))


if __name__ == "__main__":
    main()
