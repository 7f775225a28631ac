"""Shared helpers: one BLAS thread per process, the machine and version record, the worker pool, timing."""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# Distributions whose versions every result records (the peers first).
PEERS = ("optuna", "scikit-optimize", "scikit-learn", "cmaes", "ray")
OTHERS = ("katibx", "numpy", "scipy", "psutil", "matplotlib")


def limit_threads() -> None:
    """One BLAS/OpenMP thread per process (the protocol's hygiene rule): set before numpy loads, enforce after."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass


def worker_init() -> None:
    """Pool worker start-up: thread limits and no INFO logs from the controller."""
    limit_threads()
    logging.disable(logging.INFO)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def pinned_versions() -> dict[str, str]:
    """Distribution -> requirement of the ``benchmarks`` extra (pyproject.toml of this checkout, else metadata)."""
    requirements: list[str] = []
    pyproject = REPO / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        with pyproject.open("rb") as fh:
            requirements = tomllib.load(fh).get("project", {}).get("optional-dependencies", {}).get("benchmarks", [])
    else:  # pragma: no cover - installed without the source tree
        requirements = [r.split(";")[0] for r in metadata.requires("katibx") or [] if 'extra == "benchmarks"' in r]
    out = {}
    for req in requirements:
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)", req)
        if match:
            out[match.group(1).lower()] = match.group(3).strip() or "*"
    return out


def busy_cpu_seconds() -> float | None:
    """CPU time all processes of the machine have used since boot (/proc/stat; time stolen by a hypervisor not
    included), or None where there is no /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def environment() -> dict[str, Any]:
    """Versions, machine and git state, recorded with every result."""
    pins = pinned_versions()
    versions = {}
    for dist in PEERS + OTHERS:
        installed = version(dist)
        pin = pins.get(dist)
        row: dict[str, Any] = {"installed": installed}
        if pin:
            row["pinned"] = pin
            exact = pin[2:] if pin.startswith("==") else None
            row["matches_pin"] = installed is not None and (exact is None or installed == exact)
        versions[dist] = row
    git: dict[str, Any] = {}
    try:
        git["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                       timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=10)
        git["dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": cpu_count(),
        "threads_per_process": {n: os.environ.get(n) for n in THREAD_VARIABLES},
        "versions": versions,
        "git": git,
    }


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_logged(label: str, jobs: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], workers: int) -> list[Any]:
    """Every job's result (in arrival order) from :func:`run_pool`, logging each failed run and the progress at
    every tenth of the jobs."""
    results: list[Any] = []
    start = time.perf_counter()

    def collect(_i: int, result: Any) -> None:
        results.append(result)
        if "error" in result:
            where = " on ".join(str(result[k]) for k in ("arm", "problem") if k in result)
            log(f"  {label}: {where + ' ' if where else ''}failed: {result['error']}")
        if len(results) % max(1, len(jobs) // 10) == 0 or len(results) == len(jobs):
            log(f"  {label}: {len(results)}/{len(jobs)} runs, {time.perf_counter() - start:.0f} s")

    run_pool(jobs, workers, collect)
    return results


def run_pool(jobs: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], workers: int,
             on_result: Callable[[int, Any], None], slots: threading.Semaphore | None = None) -> None:
    """Run ``fn(*args)`` for every job on ``workers`` fresh (spawned) processes, in the given order.

    Jobs are handed out in order, so list the longest first. ``slots`` (default: one per worker) bounds how
    many run at once: the caller releases more while the pool runs (after its timed work, say).
    ``on_result(index, result)`` gets each result as it arrives; an exception in a job becomes ``{"error": "..."}``.
    """
    if workers <= 1:
        worker_init()
        for i, (fn, args) in enumerate(jobs):
            try:
                result = fn(*args)
            except Exception as exc:  # noqa: BLE001 - one broken arm must not stop the benchmark
                result = {"error": f"{type(exc).__name__}: {exc}"}
            on_result(i, result)
        return
    slots = slots or threading.Semaphore(workers)
    lock = threading.Lock()

    def done(i: int, future: Future) -> None:
        slots.release()
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001
            result = {"error": f"{type(exc).__name__}: {exc}"}
        with lock:
            on_result(i, result)

    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=worker_init) as pool:
        for i, (fn, args) in enumerate(jobs):
            slots.acquire()
            pool.submit(fn, *args).add_done_callback(functools.partial(done, i))


def alone_arguments(doc: str, name: str, trials: int, repeat: int) -> Any:
    """The command line of a benchmark that runs alone: ``--trials``, ``--repeat`` and ``--out`` (default
    ``benchmarks/results/<name>.json``)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--trials", type=int, default=trials)
    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / f"{name}.json")
    return parser.parse_args()


def write_results(path: Path, result: dict[str, Any]) -> None:
    """A benchmark's results as JSON, with the machine they were measured on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, "environment": environment()}, indent=2) + "\n")
