"""``python -m benchmarks.enas``: the digits ENAS example (examples/nas/enas-digits.yaml) end to end.

Runs ``katibx run`` on it in a fresh store and reports the wall time, the best trial's Validation-Accuracy (the
held-out digits, as Katib's trial validates on CIFAR-10's test set), the architecture found and every trial's
accuracy in order (whether the controller's later picks do better). Writes ``benchmarks/results/nas/enas-digits.json``
and the best architecture's picture, ``enas-digits.png``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, write_results
from katibx.store import Store

EXAMPLE = REPO / "examples" / "nas"


def main() -> None:
    out = REPO / "benchmarks" / "results" / "nas" / "enas-digits.json"
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for name in ("enas-digits.yaml", "RunTrial.py"):
            shutil.copy(EXAMPLE / name, root)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "katibx.cli", "run", "enas-digits.yaml", "-q", "--store", "k.db"],
                       cwd=root, check=True, capture_output=True, timeout=3600)
        seconds = time.monotonic() - started
        with Store(root / "k.db") as store:
            record = store.get_experiment("enas-digits")
            trials = store.trials(record.id)
            accuracies = [float(t.metric("Validation-Accuracy", "max") or "nan") for t in trials]
            best = max(range(len(trials)), key=lambda i: accuracies[i])
            best_dir = store.trial_dir(record, trials[best].name)
            found = json.loads((best_dir / "architecture.json").read_text())
            shutil.copy(best_dir / "architecture.png", out.with_suffix(".png"))
    write_results(out, {"experiment": "examples/nas/enas-digits.yaml", "trials": len(trials),
                        "wall_seconds": round(seconds, 1), "best_validation_accuracy": accuracies[best],
                        "best_trial_index": best, "accuracies_in_order": accuracies, "architecture": found,
                        "note": "each trial trains its child from scratch (8 epochs, Adam 1e-3); 2 in parallel"})
    print(f"{len(trials)} trials in {seconds:.0f} s; best Validation-Accuracy {accuracies[best]:.4f} (trial "
          f"{best}); {out}")


if __name__ == "__main__":
    main()
