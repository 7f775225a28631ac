"""``python -m benchmarks.scale [--trials 100000]``: a long run of a trivial function (random, parallelTrialCount 8)
and the reads of its store afterwards.

Reports the run's wall time, the controller's resident memory as the finished trials pile up (sampled every 0.5 s
beside the trial count the store has), and how long reads take on the result: the CLI's ``get experiment``, ``list``,
``describe experiment``, a page of ``get trials`` (the first 100, and the last 100 through ``--offset``) and every
trial (``get trials -o json``), and the dashboard's first look at the store (optuna-dashboard's study list, the
experiment's trials). Results: ``benchmarks/results/scale.json``.
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
from pathlib import Path
from typing import Any

import psutil

import katibx
from benchmarks.common import REPO, write_results
from benchmarks.overhead import METRIC, _space, trivial

MARKS = (10_000, 50_000, 100_000)


def _sample(db: Path, stop: threading.Event, samples: list[tuple[float, int, float]]) -> None:
    """(seconds, finished trials, RSS MB) every 0.5 s, from a read-only connection of the store."""
    me, started = psutil.Process(), time.monotonic()
    while not stop.wait(0.5):
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                done = conn.execute("SELECT COUNT(*) FROM trials WHERE state NOT IN ('Created', 'Running')").fetchone()[0]
        except sqlite3.Error:
            continue
        samples.append((round(time.monotonic() - started, 1), int(done), round(me.memory_info().rss / 2**20, 1)))


def _read_ms(args: list[str], db: Path, runs: int = 3) -> float:
    """Median milliseconds of ``katibx ARGS`` (output discarded) on the store."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "katibx.cli", *args], env={**os.environ, "KATIBX_STORE": str(db)},
                       stdout=subprocess.DEVNULL, check=True, timeout=600)
        times.append(time.perf_counter() - started)
    return round(1000 * sorted(times)[len(times) // 2], 1)


def _dashboard_ms(db: Path) -> dict[str, float]:
    """Milliseconds of the dashboard's first look: its storage maps the store's experiments as studies, then
    optuna-dashboard lists the studies and reads the experiment's trials."""
    from katibx.dashboard import StoreStudies
    from katibx.store import Store

    with Store(db, read_only=True) as store:
        started = time.perf_counter()
        studies = StoreStudies(store)
        summaries = studies.get_all_studies()
        listed = time.perf_counter()
        study = next(s for s in summaries if s.study_name == "scale")
        count = len(studies.get_all_trials(study._study_id, deepcopy=False))
        done = time.perf_counter()
    assert count, "the dashboard saw no trial"
    return {"dashboard: studies listed (maps the store)": round(1000 * (listed - started), 1),
            "dashboard: the experiment's trials": round(1000 * (done - listed), 1)}


def run(trials: int, parallel: int) -> dict[str, Any]:
    samples: list[tuple[float, int, float]] = []
    with tempfile.TemporaryDirectory(prefix="katibx-scale-", ignore_cleanup_errors=True) as folder:
        db = Path(folder) / "katibx.db"
        stop = threading.Event()
        katibx.tune("scale-warm-up", trivial, _space(), objective_metric_name=METRIC, max_trial_count=5,
                    algorithm_name="random",
                    store=str(db), progress=False)
        sampler = threading.Thread(target=_sample, args=(db, stop, samples), daemon=True)
        sampler.start()
        started = time.perf_counter()
        result = katibx.tune("scale", trivial, _space(), objective_metric_name=METRIC, objective_type="minimize",
                             algorithm_name="random",
                             max_trial_count=trials, parallel_trial_count=parallel, store=str(db), progress=False)
        wall = time.perf_counter() - started
        stop.set()
        sampler.join()
        last_page = str(max(0, trials - 100))
        reads = {"get experiment": _read_ms(["get", "experiment", "scale", "-o", "json"], db),
                 "list": _read_ms(["list"], db),
                 "describe experiment": _read_ms(["describe", "experiment", "scale"], db),
                 "get trials -o json --limit 100": _read_ms(["get", "trials", "scale", "-o", "json", "--limit", "100"],
                                                            db),
                 "get trials -o json --limit 100 --offset (last page)": _read_ms(
                     ["get", "trials", "scale", "-o", "json", "--limit", "100", "--offset", last_page], db),
                 "get trials -o json (every trial)": _read_ms(["get", "trials", "scale", "-o", "json"], db, runs=1),
                 **_dashboard_ms(db)}
    # (the warm-up's 5 trials are counted too; the last mark is the last sample while trials still ran: then tune
    # builds its result, which holds every trial, as Optuna's study does)
    running = [(done, rss) for _, done, rss in samples if done < trials + 5]
    at = {mark: next((rss for done, rss in running if done >= mark + 5), running[-1][1] if running else None)
          for mark in MARKS if mark <= trials}
    return {"trials": trials, "parallel": parallel, "succeeded": result["status"].get("trialsSucceeded"),
            "wall_seconds": round(wall, 1), "ms_per_trial": round(1000 * wall / trials, 3),
            "rss_mb_at_finished_trials": at, "rss_mb_first_sample": samples[0][2] if samples else None,
            "rss_mb_with_tunes_result": samples[-1][2] if samples else None,
            "read_ms": reads, "samples": samples[:: max(1, len(samples) // 200)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scale.json")
    args = parser.parse_args()
    result = run(args.trials, args.parallel)
    write_results(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
