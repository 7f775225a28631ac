"""Scale: a long run of a trivial function (random, parallelTrialCount 8) and the reads of its store afterwards.

Reports the run's wall time, the controller's resident memory as the finished trials pile up (sampled every
0.5 s, a short run more often, beside the trial count the store has), the memory once ``katibx.tune`` holds its
result, and how long reads take on the result: the CLI's ``get experiment``, ``list``, ``describe experiment``, a
page of ``get trials`` (the first 100, and the last 100 through ``--offset``) and every trial (``get trials -o
json``), and the dashboard's first look at the store (optuna-dashboard's study list), then the experiment's trials.

A section of ``python -m benchmarks`` (100,000 trials on threads, see ``FULL_RUN_ISOLATION``; the run beside the
untimed pool, the reads alone). Alone: ``python -m benchmarks.scale [--trials 100000] [--parallel 8]
[--isolation process|none]``, results in ``benchmarks/results/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import REPO, write_results

TRIALS, QUICK_TRIALS = 100_000, 300
PARALLEL, QUICK_PARALLEL = 8, 2
NAME = "scale"
# Where the trials run: "process" (the default: worker processes the controller forks) or "none" (threads of the
# controller's process, katibx's opt-in for cheap objectives). The full benchmark run takes "none": its
# 100,000 trials then cost about 45 CPU-seconds instead of 160, which keeps the run within 10 minutes, and the
# controller's memory then counts the trials' too.
ISOLATIONS = ("process", "none")
FULL_RUN_ISOLATION = "none"


def marks(trials: int) -> tuple[int, ...]:
    """The finished-trial counts the controller's memory is reported at: 10,000, 50,000 and 100,000 of a full run."""
    return tuple(trials * share // 10 for share in (1, 5, 10))


def _sample(db: Path, stop: threading.Event, samples: list[tuple[float, int, float]], every: float) -> None:
    """(seconds, finished trials, RSS MB) every ``every`` seconds, from a read-only connection of the store."""
    me, started = psutil.Process(), time.monotonic()
    while not stop.wait(every):
        try:
            # (closed at once: a connection left open holds its page cache, which this process's RSS would count)
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
                done = conn.execute("SELECT COUNT(*) FROM trials WHERE state NOT IN ('Created', 'Running')"
                                    ).fetchone()[0]
        except sqlite3.Error:
            continue
        samples.append((round(time.monotonic() - started, 1), int(done), round(me.memory_info().rss / 2**20, 1)))


def run_trials(trials: int, parallel: int, db: Path, isolation: str = "process") -> dict[str, Any]:
    """The run, in this process (the controller; trials run in the worker processes it forks, or on its threads with
    ``isolation`` "none")."""
    import katibx
    from benchmarks.overhead import METRIC, _space, trivial

    samples: list[tuple[float, int, float]] = []
    stop = threading.Event()
    katibx.tune("scale-warm-up", trivial, _space(), objective_metric_name=METRIC, max_trial_count=5,
                algorithm_name="random", store=str(db), progress=False)
    every = 0.5 if trials >= 10_000 else 0.01  # (a short run ends within a few tenths of a second)
    sampler = threading.Thread(target=_sample, args=(db, stop, samples, every), daemon=True)
    sampler.start()
    started = time.perf_counter()
    result = katibx.tune(NAME, trivial, _space(), objective_metric_name=METRIC, objective_type="minimize",
                         algorithm_name="random", max_trial_count=trials, parallel_trial_count=parallel,
                         store=str(db), progress=False, **({"isolation": "none"} if isolation == "none" else {}))
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    with_result = round(psutil.Process().memory_info().rss / 2**20, 1)  # (tune has returned: its result is held)
    # (the warm-up's 5 trials are counted too; the last mark is the last sample while trials still ran: then tune
    # builds its result, which holds every trial, as Optuna's study does)
    running = [(done, rss) for _, done, rss in samples if done < trials + 5]
    at = {str(mark): next((rss for done, rss in running if done >= mark + 5), running[-1][1] if running else None)
          for mark in marks(trials)}
    return {"trials": trials, "parallel": parallel, "isolation": isolation,
            "succeeded": result["status"].get("trialsSucceeded"),
            "wall_seconds": round(wall, 1), "ms_per_trial": round(1000 * wall / trials, 3),
            "rss_mb_at_finished_trials": at, "rss_mb_first_sample": samples[0][2] if samples else None,
            "rss_mb_with_tunes_result": with_result,
            "samples": samples[:: max(1, len(samples) // 200)]}


def run_trials_apart(trials: int, parallel: int, db: Path, isolation: str, timeout: float = 1800) -> dict[str, Any]:
    """:func:`run_trials` in an interpreter of its own (its memory is the controller's alone); its JSON or an error."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--trials", str(trials), "--parallel",
                           str(parallel), "--isolation", isolation, "--run-only", str(db)], cwd=REPO,
                          capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
    if proc.returncode != 0:
        return {"trials": trials, "parallel": parallel, "isolation": isolation,
                "error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _read_ms(args: list[str], db: Path, runs: int = 3) -> float:
    """Median milliseconds of ``katibx ARGS`` (the console script's code, as the overhead section's CLI rows run
    it; output discarded) on the store."""
    from benchmarks.overhead import CLI_SCRIPT

    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", CLI_SCRIPT, *args], env={**os.environ, "KATIBX_STORE": str(db)},
                       stdout=subprocess.DEVNULL, check=True, timeout=600)
        times.append(time.perf_counter() - started)
    return round(1000 * sorted(times)[len(times) // 2], 1)


def _dashboard_ms(db: Path) -> dict[str, float]:
    """Milliseconds of the dashboard's first look (its storage lists the store's experiments as studies, as
    optuna-dashboard's first page asks), then of the experiment's trials (its page)."""
    from katibx.dashboard import StoreStudies
    from katibx.store import Store

    with Store(db, read_only=True) as store:
        started = time.perf_counter()
        studies = StoreStudies(store)
        summaries = studies.get_all_studies()
        listed = time.perf_counter()
        study = next(s for s in summaries if s.study_name == NAME)
        count = len(studies.get_all_trials(study._study_id, deepcopy=False))
        done = time.perf_counter()
    assert count, "the dashboard saw no trial"
    return {"dashboard: studies listed": round(1000 * (listed - started), 1),
            "dashboard: the experiment's trials": round(1000 * (done - listed), 1)}


def read_ms(db: Path, trials: int) -> dict[str, float]:
    """How long each read of the finished run's store takes, in milliseconds (a fresh ``katibx`` process each,
    its start included)."""
    last_page = str(max(0, trials - 100))
    return {"get experiment": _read_ms(["get", "experiment", NAME, "-o", "json"], db),
            "list": _read_ms(["list"], db),
            "describe experiment": _read_ms(["describe", "experiment", NAME], db),
            "get trials -o json --limit 100": _read_ms(["get", "trials", NAME, "-o", "json", "--limit", "100"], db),
            "get trials -o json --limit 100 --offset (last page)": _read_ms(
                ["get", "trials", NAME, "-o", "json", "--limit", "100", "--offset", last_page], db),
            "get trials -o json (every trial)": _read_ms(["get", "trials", NAME, "-o", "json"], db, runs=1),
            **_dashboard_ms(db)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--parallel", type=int, default=PARALLEL)
    parser.add_argument("--isolation", choices=ISOLATIONS, default="process",
                        help="where trials run: worker processes (default) or threads of the controller (none)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scale.json")
    parser.add_argument("--run-only", type=Path, metavar="DB", help=argparse.SUPPRESS)  # the run, on this store
    args = parser.parse_args()
    if args.run_only:
        print(json.dumps(run_trials(args.trials, args.parallel, args.run_only, args.isolation)))
        return
    with tempfile.TemporaryDirectory(prefix="katibx-scale-", ignore_cleanup_errors=True) as folder:
        db = Path(folder) / "katibx.db"
        result = run_trials(args.trials, args.parallel, db, args.isolation)
        result["read_ms"] = read_ms(db, args.trials)
    write_results(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
