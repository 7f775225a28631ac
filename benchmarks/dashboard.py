"""``python -m benchmarks.dashboard``: how fast ``katibx dashboard`` answers and how much memory it holds.

A store with one experiment of ``--trials`` function trials (5 reports each), and a small other one, is made in a temporary folder; then,
``--repeat`` times, the dashboard is started and timed until it has answered the study's trials over its JSON API,
and its resident memory is read. Then, in this process, the cost of bringing the dashboard's studies up to date: a
first full read of the store against a read after a change to another, small experiment (as a running
controller's commits are while the big one is looked at). Writes ``benchmarks/results/dashboard.json`` (medians
and every run).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

import katibx
from benchmarks.common import alone_arguments, write_results
from katibx.dashboard import StoreStudies
from katibx.store import Store


def _objective(p: dict[str, Any]) -> float:
    for step in range(5):
        katibx.report_metrics({"loss": p["x"] ** 2 + 1 / (step + 1)})
    return p["x"] ** 2


def measure(store: Path) -> dict[str, float]:
    """One start of the dashboard: seconds until it answered the study with its trials, and its memory then."""
    started = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "katibx.cli", "dashboard", "--port", "0", "--store", str(store)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        base = server.stdout.readline().split()[2].removesuffix("/dashboard")  # type: ignore[union-attr]
        bound = time.monotonic() - started
        with urllib.request.urlopen(f"{base}/api/studies/1", timeout=60) as response:  # the store's first experiment
            trials = len(json.loads(response.read())["trials"])
        answered = time.monotonic() - started
        rss = psutil.Process(server.pid).memory_info().rss / 2**20
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"bound_s": bound, "answered_s": answered, "rss_mib": rss, "trials": trials}


def refresh_costs(store: Path, repeat: int) -> dict[str, list[float]]:
    """Seconds to read the store into studies and the big experiment's trials from nothing, and again after another
    experiment has changed."""
    full, unchanged = [], []

    def look(studies: StoreStudies) -> None:  # as the big experiment's page asks
        studies.get_all_studies()
        studies.get_all_trials(studies.get_study_id_from_name("bench"), deepcopy=False)

    with Store(store) as writer, Store(store, read_only=True) as reader:
        other = writer.get_experiment("other")
        for _ in range(repeat):
            studies = StoreStudies(reader, refresh_seconds=0)
            started = time.perf_counter()
            look(studies)
            full.append(time.perf_counter() - started)
            other.experiment.spec.max_trial_count = (other.experiment.spec.max_trial_count or 0) + 1
            writer.save_experiment(other)  # a commit that changes "other" only
            started = time.perf_counter()
            look(studies)
            unchanged.append(time.perf_counter() - started)
    return {"full_read_s": full, "after_other_changed_s": unchanged}


def main() -> None:
    args = alone_arguments(__doc__ or "", "dashboard", trials=200, repeat=5)
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "katibx.db"
        katibx.tune("bench", _objective, {"x": katibx.search.double(-1, 1)}, objective_metric_name="loss",
                algorithm_name="random",
                    objective_type="minimize", max_trial_count=args.trials, parallel_trial_count=2, store=store,
                    progress=False)
        katibx.tune("other", _objective, {"x": katibx.search.double(-1, 1)}, objective_metric_name="loss",
                algorithm_name="random",
                    max_trial_count=2, parallel_trial_count=1, store=store, progress=False)
        runs = [measure(store) for _ in range(args.repeat)]
        refresh = refresh_costs(store, args.repeat)
    summary = {key: statistics.median(run[key] for run in runs) for key in ("bound_s", "answered_s", "rss_mib")}
    summary.update({key: statistics.median(values) for key, values in refresh.items()})
    write_results(args.out, {"trials": args.trials, "reports_per_trial": 5, "median": summary, "runs": runs,
                             "refresh": refresh})
    print(f"dashboard over {args.trials} trials: bound in {summary['bound_s']:.2f} s, answered in "
          f"{summary['answered_s']:.2f} s, {summary['rss_mib']:.0f} MiB; studies read in "
          f"{summary['full_read_s'] * 1000:.0f} ms, again after another experiment changed in "
          f"{summary['after_other_changed_s'] * 1000:.1f} ms (medians of {args.repeat}); {args.out}")


if __name__ == "__main__":
    main()
