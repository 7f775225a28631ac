"""``python -m benchmarks``: quality, black-box suite, overhead and growth benchmarks; JSON, Markdown report and plots.

    python -m benchmarks                      # full run (< 10 min on an idle 2-core machine) -> benchmarks/results/
    python -m benchmarks --quick --out DIR    # CI-sized (< 60 s); without --out it writes to a new temp dir
    python -m benchmarks --only overhead      # some sections only (quality, blackbox, overhead, growth)

Order: the untimed work (quality runs and the black-box suite's runs, on a pool of ``--workers`` processes) starts
first, one job at a time, while the timed sections that need a single core measure beside it (suggestion
latency, the local overhead rows); then the pool gets every core, and the scale section's long run (100,000
trials, in the growth section) goes on beside it; once the pool is done, the reads of that run's store and then
the rows that need every core (katibx on Ray vs Ray Tune) are measured alone. Every timing row is a ratio of arms
measured in turn within one repetition; the busy pool process costs katibx's function-trial arms about 20 % and optuna's
in-process arms nothing (benchmarks/README.md), so those ratios are upper bounds for katibx. A run is marked
loaded when the 1-minute load average exceeds the CPU count at its start, or when other processes used more
than half a CPU on average while it ran (/proc/stat less the run's own CPU time).
"""

from __future__ import annotations

import os

# One BLAS / OpenMP thread per process, before anything imports numpy (children inherit it).
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks import blackbox, growth, overhead, quality, report, scale  # noqa: E402
from benchmarks.common import REPO, busy_cpu_seconds, cpu_count, environment, limit_threads, load_average, log  # noqa: E402

SECTIONS = ("quality", "blackbox", "overhead", "growth")
# A run is marked loaded when other processes used more than this many CPUs on average while it ran.
OTHER_LOAD_LIMIT = 0.5
DEFAULT_OUT = REPO / "benchmarks" / "results"


def cpu_seconds() -> float:
    """CPU time of this process and of every descendant it has reaped (pool workers, trials, subprocesses)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(quick: bool, sections: list[str], out: Path, workers: int) -> dict[str, Any]:
    limit_threads()
    logging.disable(logging.INFO)
    cpus = cpu_count()
    started = time.time()
    load_start = load_average()
    busy_start, own_start = busy_cpu_seconds(), cpu_seconds()
    phase_seconds: dict[str, float] = {}
    results: dict[str, Any] = {}
    log(f"benchmarks: {'quick' if quick else 'full'} run of {', '.join(sections)} on {cpus} CPUs, "
        f"load average {load_start}, writing to {out}")
    sizes = overhead.QUICK if quick else overhead.FULL

    # 1. the untimed work (quality runs, the black-box suite) on a pool of processes, started first ...
    quality_box: list[dict[str, Any]] = []
    one_core_timed = workers > 1 and ("growth" in sections or "overhead" in sections)
    slots = threading.Semaphore(1 if one_core_timed else workers)
    pool = None
    suite = blackbox.Suite.of(quick) if "blackbox" in sections else None
    if "quality" in sections or suite is not None:
        plan = quality.plan(quick) if "quality" in sections else quality.Plan([], [], {}, 0, 0)
        suite_jobs = suite.jobs() if suite is not None else []
        suite_results: list[dict[str, Any]] = []

        def work() -> None:
            start = time.perf_counter()
            quality_box.append(quality.run(plan, workers, suite_jobs, lambda _, r: suite_results.append(r), slots))
            if suite is not None:
                results["blackbox"] = suite.summarize(suite_results)
            phase_seconds["pool: quality+blackbox"] = time.perf_counter() - start

        pool = threading.Thread(target=work, name="benchmark-pool")
        if one_core_timed:
            pool.start()
        else:
            pool.run()

    # 2. ... while the timed sections that need one core measure on the other: suggestion latency, and the
    # overhead rows whose arms run one process at a time (a controller and its trial worker take turns)
    t = time.perf_counter()
    if "growth" in sections:
        latency = growth.suggest_latency(
            growth.QUICK_TPE_SIZES if quick else growth.TPE_SIZES, growth.QUICK_BO_SIZES if quick else growth.BO_SIZES,
            growth.QUICK_STEPS if quick else growth.TPE_STEPS, growth.QUICK_STEPS if quick else growth.BO_STEPS)
        phase_seconds["growth-latency"] = time.perf_counter() - t
    measured: list[dict[str, Any]] = []
    if "overhead" in sections:
        t = time.perf_counter()
        measured += overhead.measure_groups(sizes, ["local"])
        phase_seconds["overhead (one core)"] = time.perf_counter() - t
    for _ in range(workers - 1):  # the timed work is done: the pool gets every core
        slots.release()
    # ... and beside the pool, the long run of the scale section (in a process of its own: its memory is measured)
    with tempfile.TemporaryDirectory(prefix="katibx-scale-", ignore_cleanup_errors=True) as folder:
        if "growth" in sections:
            t = time.perf_counter()
            db = Path(folder) / "katibx.db"
            large = scale.run_trials_apart(scale.QUICK_TRIALS if quick else scale.TRIALS,
                                           scale.QUICK_PARALLEL if quick else scale.PARALLEL, db,
                                           scale.FULL_RUN_ISOLATION)
            phase_seconds["scale run (beside the pool)"] = time.perf_counter() - t
        if pool is not None and one_core_timed:
            pool.join()
        if "growth" in sections and "error" not in large:  # the reads of its result, alone
            t = time.perf_counter()
            try:
                large["read_ms"] = scale.read_ms(db, large["trials"])
            except (subprocess.SubprocessError, OSError, AssertionError) as exc:  # the rest of the run still counts
                large["error"] = f"a read of its store failed: {exc}"
            phase_seconds["scale reads"] = time.perf_counter() - t
    if quality_box and "quality" in sections:
        results["quality"] = quality_box[0]
    if "growth" in sections:
        results["growth"] = {"suggest_latency": latency, "scale": large}

    # 3. the timed rows that need every core, alone: katibx on Ray vs Ray Tune
    if "overhead" in sections:
        t = time.perf_counter()
        measured += overhead.measure_groups(sizes, ["ray"])
        phase_seconds["overhead (every core)"] = time.perf_counter() - t
        results["overhead"] = overhead.summarize(sizes, measured)

    load_end = load_average()
    busy_end, wall = busy_cpu_seconds(), time.time() - started
    # What other processes used meanwhile: the machine's CPU time less this run's own (its reaped processes'
    # included). The load average at the end cannot tell: this run keeps every core busy itself.
    other_cpus = (None if busy_start is None or busy_end is None
                  else max(0.0, (busy_end - busy_start) - (cpu_seconds() - own_start)) / wall)
    meta = {
        "quick": quick, "sections": sections, "workers": workers,
        "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - started, 1),
        # Wall time of each phase; the pool's overlaps the one-core timed phases (see the module docstring).
        "phase_seconds": {k: round(v, 1) for k, v in phase_seconds.items()},
        "cpu_seconds": round(cpu_seconds(), 1),
        "load_average_start": load_start, "load_average_end": load_end,
        "other_processes_cpus": None if other_cpus is None else round(other_cpus, 2),
        "loaded": load_start[0] > cpus or (other_cpus is not None and other_cpus > OTHER_LOAD_LIMIT),
        "environment": environment(),
    }
    return {"meta": meta, **results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI-sized run (under 60 s)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--out", type=Path, help=f"output folder (default {DEFAULT_OUT.relative_to(REPO)}; "
                                                 "with --quick a new temporary folder)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the untimed runs (default 2)")
    args = parser.parse_args(argv)
    out = args.out or (Path(tempfile.mkdtemp(prefix="katibx-benchmarks-")) if args.quick else DEFAULT_OUT)
    sections = [s for s in SECTIONS if s in (args.only or SECTIONS)]
    results = run(args.quick, sections, out, args.workers)
    written = report.write(results, out)
    print(written["text"])
    print(f"\nwrote {written['json']}, {written['report']}" + "".join(f", {p}" for p in written["plots"]))
    if results["meta"]["loaded"]:
        print("note: the machine was loaded (load average above the CPU count at the start, or other processes "
              "busy during the run); timings are upper bounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
