"""``python -m benchmarks.trial_profile``: where the time of a trivial function trial goes (the overhead rows'
``function-random`` arm), to choose what to make cheaper by measurement.

Runs ``--trials`` trials of the overhead rows' objective (random, parallelTrialCount 1, workers reused) three
times and reports per trial: wall time, the controller's CPU time, the worker processes' CPU time (reaped children's
resource usage) and, from one more run under cProfile, the controller's time by part (SQLite, the trial folder, paths,
the worker pipe, metrics collection, template rendering, the suggestion, status and conditions, ...). cProfile
weighs Python code more than system calls: read the parts as shares, the wall and CPU times as the cost.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import pstats
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import limit_threads, median
from benchmarks.overhead import katibx_function

# (part, what a profiled function's file or name contains), first match wins
PARTS = [
    ("SQLite (commits, reads)", ("sqlite3.Connection", "katibx/store.py", "sqlite3")),
    ("trial folder (mkdir, open, unlink)", ("posix.mkdir", "io.open", "posix.unlink", "posix.stat", "shutil.py",
                                            "posix.lstat", "posix.rmdir")),
    ("paths (pathlib)", ("pathlib.py", "katibx/trial_dir.py")),
    ("worker pipe (pickle, send, poll)", ("multiprocessing/", "posix.write", "posix.read", "_pickle", "selectors.py",
                                          "select.poll", "workers/_function_worker.py", "workers/_process_exit.py")),
    ("metrics collection (read, parse)", ("metrics_collector.py", "metric_parsers.py", "observation_sampling.py",
                                          "json/decoder.py", "metrics.py")),
    ("trial template (render, substitute)", ("katibx/template.py",)),
    ("suggestion (algorithm, sampling)", ("algorithms/", "search_space.py", "search_algorithm.py", "random.py",
                                          "numpy/", "_ufunc_config")),
    ("status and conditions (timestamps, JSON)", ("katibx/status.py", "strftime", "json/encoder.py", "datetime",
                                                  "trial_book.py", "katibx/objective.py", "katibx/trial.py")),
    ("environment (os.environ)", ("<frozen os>", "posix.putenv", "posix.unsetenv")),
    ("local backend (start, poll)", ("workers/local.py", "katibx/processes.py", "psutil")),
    ("controller loop", ("katibx/controller.py", "katibx/trial_lifecycle.py", "katibx/runner.py", "katibx/lease.py")),
]


def _children_cpu() -> float:
    """CPU seconds of this process's children that have exited and been reaped (the trial workers, once the
    experiment has ended: the backend joins them)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(trials: int, runs: int = 3) -> dict[str, Any]:
    limit_threads()
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="katibx-profile-") as folder:
        katibx_function(5, Path(folder))
        for run in range(runs):
            children, cpu, started = _children_cpu(), time.process_time(), time.perf_counter()
            katibx_function(trials, Path(folder))
            rows.append({"wall": (time.perf_counter() - started) / trials,
                         "controller_cpu": (time.process_time() - cpu) / trials,
                         "workers_cpu": (_children_cpu() - children) / trials})
        profile = cProfile.Profile()
        profile.enable()
        katibx_function(trials, Path(folder))
        profile.disable()
    parts: collections.Counter[str] = collections.Counter()
    for (file, _line, function), (_cc, _nc, own, _cum, _callers) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        where = f"{file}:{function}"
        part = next((p for p, marks in PARTS if any(m in where for m in marks)), "other")
        parts[part] += own
    total = sum(parts.values())
    return {"trials": trials, "runs": runs,
            "ms_per_trial": {k: round(1000 * median(r[k] for r in rows), 3) for k in rows[0]},
            "controller_parts_share": {p: round(v / total, 3) for p, v in parts.most_common()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    args = parser.parse_args()
    result = measure(args.trials)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
