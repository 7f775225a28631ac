"""``python -m benchmarks.mlflow_overhead``: what live MLflow logging (``tune(mlflow=...)``) costs a sweep.

The same sweep of ``--trials`` trivial function trials (3 reports each, 1 at a time) runs without logging and with
logging into a local SQLite tracking store, in turn, ``--repeat`` times; each arm's seconds per trial are reported
with their ratio (logging on / off), medians of the repetitions. Writes ``benchmarks/results/mlflow_overhead.json``.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import katibx
from benchmarks.common import alone_arguments, write_results


def _objective(p: dict[str, Any]) -> float:
    for step in range(3):
        katibx.report_metrics({"loss": p["x"] ** 2 + 1 / (step + 1)})
    return p["x"] ** 2


def sweep(folder: Path, name: str, trials: int, mlflow: str | None) -> tuple[float, float]:
    """Seconds per trial of one sweep: until its last trial ended (the trials' own pace), and until tune returned
    (which waits for the last MLflow round)."""
    ended: list[float] = []
    started = time.perf_counter()
    katibx.tune(name, _objective, {"x": katibx.search.double(-1, 1)}, objective_metric_name="loss",
                algorithm_name="random",
                objective_type="minimize", max_trial_count=trials, parallel_trial_count=1,
                store=folder / "katibx.db", mlflow=mlflow, progress=False,
                callbacks=[lambda _result, _trial: ended.append(time.perf_counter())])
    returned = time.perf_counter()
    return (max(ended) - started) / trials, (returned - started) / trials


def main() -> None:
    args = alone_arguments(__doc__ or "", "mlflow_overhead", trials=60, repeat=3)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    off: list[tuple[float, float]] = []
    on: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        os.chdir(root)  # MLflow keeps a SQLite store's artifacts in ./mlruns of the working directory
        sweep(root, "warm-up", 4, uri)  # imports mlflow and makes its tables once, as any process pays once
        for i in range(args.repeat):  # the two arms in turn, so a busy moment of the machine hits both
            off.append(sweep(root, f"off-{i}", args.trials, None))
            on.append(sweep(root, f"on-{i}", args.trials, uri))
    result: dict[str, Any] = {"trials": args.trials, "repeat": args.repeat}
    for which, index in (("trials_ended", 0), ("tune_returned", 1)):
        result[which] = {"off_s_per_trial": statistics.median(r[index] for r in off),
                         "on_s_per_trial": statistics.median(r[index] for r in on),
                         "ratio_on_off": statistics.median(a[index] / b[index] for a, b in zip(on, off))}
    result["runs"] = {"off": off, "on": on}
    write_results(args.out, result)
    for which in ("trials_ended", "tune_returned"):
        row = result[which]
        print(f"{which}: {row['on_s_per_trial'] * 1000:.1f} ms per trial with MLflow logging, "
              f"{row['off_s_per_trial'] * 1000:.1f} ms without, ratio {row['ratio_on_off']:.2f}")
    print(f"(medians of {args.repeat}, {args.trials} trials of 3 reports, SQLite tracking store); {args.out}")


if __name__ == "__main__":
    main()
