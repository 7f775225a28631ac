"""``python -m benchmarks.dashboard``: how fast ``katibx dashboard`` answers and how much memory it holds.

A store with one experiment of ``--trials`` function trials (5 reports each) is made in a temporary folder; then,
``--repeat`` times, the dashboard is started and timed until it has answered the study's trials over its JSON API,
and its resident memory is read. Writes ``benchmarks/results/dashboard.json`` (medians and every run).
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


def main() -> None:
    args = alone_arguments(__doc__ or "", "dashboard", trials=200, repeat=5)
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "katibx.db"
        katibx.tune("bench", _objective, {"x": katibx.search.double(-1, 1)}, objective_metric_name="loss",
                    objective_type="minimize", max_trial_count=args.trials, parallel_trial_count=2, store=store,
                    progress=False)
        runs = [measure(store) for _ in range(args.repeat)]
    summary = {key: statistics.median(run[key] for run in runs) for key in ("bound_s", "answered_s", "rss_mib")}
    write_results(args.out, {"trials": args.trials, "reports_per_trial": 5, "median": summary, "runs": runs})
    print(f"dashboard over {args.trials} trials: bound in {summary['bound_s']:.2f} s, answered in "
          f"{summary['answered_s']:.2f} s, {summary['rss_mib']:.0f} MiB (medians of {args.repeat}); {args.out}")


if __name__ == "__main__":
    main()
