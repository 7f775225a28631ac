"""Per-trial cost of the local backend's portable POSIX path (macOS; ``KATIBX_PORTABLE=1``) next to the Linux path.

The portable path waits for each trial's process in a thread (instead of a pidfd), and a function worker is not a
child subreaper, so a reused worker's trial end scans for processes the trial left (by its token). Each arm runs
the same trivial experiment in a fresh interpreter with the switch off or on; the two paths alternate within each
repetition (the order flips every time, so a change of load hits both alike); the report gives each path's median
seconds per trial and the ratio portable / Linux.

Run: ``python -m benchmarks.portable_path [--trials N] [--repeats R] [--out FILE]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, cpu_count, load_average, log, median

ARMS = {
    "function": "function trials, workers reused (the default of katibx.tune)",
    "function-fresh": "function trials, a fresh worker per trial (reuse_processes=False)",
    "command": "command trials (a Python process per trial)",
}


def _arm(name: str, trials: int, workdir: Path) -> float:
    """Seconds per trial of one arm, in this interpreter (its environment chooses the path)."""
    from benchmarks.overhead import katibx_command, katibx_function

    if name == "command":
        return katibx_command(trials, workdir)
    return katibx_function(trials, workdir, reuse_processes=name != "function-fresh")


def measure(name: str, portable: bool, trials: int) -> float:
    """One arm in a fresh interpreter, with the portable switch off or on."""
    env = {**os.environ, "KATIBX_PORTABLE": "1" if portable else "0"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.portable_path", "--arm", name, "--trials", str(trials)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"arm {name} (portable={portable}) failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def run(trials: int, repeats: int) -> dict[str, Any]:
    samples: dict[tuple[str, bool], list[float]] = {(arm, p): [] for arm in ARMS for p in (False, True)}
    for repeat in range(repeats):
        for arm in ARMS:
            order = (False, True) if repeat % 2 == 0 else (True, False)
            for portable in order:
                seconds = measure(arm, portable, trials // 3 if arm == "command" else trials)
                samples[(arm, portable)].append(seconds)
                log(f"repeat {repeat + 1}/{repeats} {arm} {'portable' if portable else 'linux'}: "
                    f"{seconds * 1000:.2f} ms/trial")
    rows = []
    for arm, description in ARMS.items():
        linux, portable = median(samples[(arm, False)]), median(samples[(arm, True)])
        rows.append({"arm": arm, "description": description,
                     "linux_ms_per_trial": round(linux * 1000, 3), "portable_ms_per_trial": round(portable * 1000, 3),
                     "portable_over_linux": round(portable / linux, 3),
                     "samples_ms": {"linux": [round(s * 1000, 3) for s in samples[(arm, False)]],
                                    "portable": [round(s * 1000, 3) for s in samples[(arm, True)]]}})
    return {"benchmark": "portable_path", "trials": trials, "repeats": repeats, "cpus": cpu_count(),
            "load_average": load_average(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", choices=sorted(ARMS), help=argparse.SUPPRESS)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.arm:  # a child: one measurement
        with tempfile.TemporaryDirectory() as tmp:
            print(_arm(args.arm, args.trials, Path(tmp)))
        return
    report = run(args.trials, args.repeats)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
