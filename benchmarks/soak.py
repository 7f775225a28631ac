"""Soak: kill -9 the controller at random moments, resume, repeat; then check that nothing was lost or doubled.

Each iteration runs one experiment (an algorithm and a kind of trial, in turn) in a fresh store and kills its
controller ``kills`` times, each time on a store event picked at random (1 to 5 trial events, created, started or
finished, past where it stood), never after a sleep; after each kill it resumes. At the end it checks: exactly
``maxTrialCount`` trials, all Succeeded, no two with one name, index or assignment (duplicates), and no process of
the experiment still running 10 s after the last controller exited (orphans). A kill that came after the
experiment had already completed is not counted.

Run: ``python -m benchmarks.soak [--iterations 50] [--out FILE]``; prints one JSON line per iteration, then the
totals. ``tests/test_controller.py`` runs a few iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from benchmarks.common import REPO

ALGORITHMS = ("random", "tpe", "grid", "sobol")
KINDS = ("command", "function", "ray")  # ray: command trials on the ray backend (a local Ray cluster)
MAX_TRIALS = 8
PARALLEL = 3

COMMAND_TRIAL = """
import sys, time
x, y = float(sys.argv[1]), float(sys.argv[2])
time.sleep(0.05 + 0.2 * (x % 0.37))
print(f"loss={(x - 0.3) ** 2 + (y - 0.6) ** 2}")
"""

FUNCTION_MODULE = """
import time

def objective(params):
    time.sleep(0.05 + 0.2 * (params["x"] % 0.37))
    return {"loss": (params["x"] - 0.3) ** 2 + (params["y"] - 0.6) ** 2}
"""

FUNCTION_RUN = """
import sys
sys.path.insert(0, ".")
import katibx
from objective_module import objective
step = 0.125 if sys.argv[3] == "grid" else None
katibx.tune(sys.argv[1], objective, {"x": katibx.search.double(0, 1, step=step), "y": katibx.search.double(0, 1, step=step)},
            store=sys.argv[2], objective_metric_name="loss", algorithm_name=sys.argv[3],
            max_trial_count=%d, parallel_trial_count=%d)
""" % (MAX_TRIALS, PARALLEL)


@dataclass
class Iteration:
    """What one iteration did and found."""

    algorithm: str
    kind: str
    kills: int = 0
    trials: int = 0
    exact: bool = False
    duplicates: int = 0
    orphans: int = 0
    left_running: int = 0  # processes of the experiment found alive right after the kills (resume stops them)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def _experiment(name: str, algorithm: str) -> dict[str, Any]:
    space = {"min": "0", "max": "1", **({"step": "0.125"} if algorithm == "grid" else {})}  # a repeat is a duplicate
    params = [{"name": n, "parameterType": "double", "feasibleSpace": space} for n in ("x", "y")]
    return {
        "apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment", "metadata": {"name": name},
        "spec": {
            "objective": {"type": "minimize", "objectiveMetricName": "loss"},
            "algorithm": {"algorithmName": algorithm}, "parameters": params,
            "maxTrialCount": MAX_TRIALS, "parallelTrialCount": PARALLEL, "maxFailedTrialCount": 0,
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": "x", "reference": "x"}, {"name": "y", "reference": "y"}],
                "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
                    "restartPolicy": "Never", "containers": [{
                        "name": "main", "image": "python",
                        "command": ["python3", "trial.py", "${trialParameters.x}", "${trialParameters.y}"]}]}}}},
            },
        },
    }


def _events(store_path: Path, name: str) -> int:
    """How far the stored experiment has come: trials created + started + finished (0 before it is stored)."""
    from katibx.store import Store, StoreError

    if not store_path.exists():
        return 0
    try:
        with Store(store_path) as store:
            found = [r for r in store.list_experiments() if r.name == name]
            if not found:
                return 0
            trials = store.trials(found[0].id)
    except StoreError:
        return 0
    return sum(1 + (t.start_time is not None) + t.state.is_terminal for t in trials)


def _completed(store_path: Path, name: str) -> bool:
    from katibx.status import is_completed
    from katibx.store import Store

    with Store(store_path) as store:
        return is_completed(store.get_experiment(name).conditions)


def _orphans(name: str, folder: Path) -> list[int]:
    """Live processes of the experiment: with its name in their environment (command trials) or running in its
    folder (trials and function-trial workers, which are forked and keep the controller's environment)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("KATIBX_EXPERIMENT") == name or Path(proc.cwd()) == folder:
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def run_iteration(folder: Path, algorithm: str, kind: str, kills: int, rng: random.Random,
                  timeout: float = 120.0) -> Iteration:
    """One experiment killed ``kills`` times on random store events, resumed each time, then checked."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"soak-{algorithm}-{kind}"
    store_path = folder / "katibx.db"
    env = {**os.environ, "KATIBX_STORE": str(store_path), "PYTHONPATH": str(REPO)}
    if kind in ("command", "ray"):
        (folder / "trial.py").write_text(COMMAND_TRIAL)
        (folder / "experiment.yaml").write_text(yaml.safe_dump(_experiment(name, algorithm)))
        backend = "ray" if kind == "ray" else "local"
        first = [sys.executable, "-m", "katibx.cli", "run", "experiment.yaml", "-q", "--backend", backend]
    else:
        (folder / "objective_module.py").write_text(FUNCTION_MODULE)
        (folder / "run.py").write_text(FUNCTION_RUN)
        first = [sys.executable, "run.py", name, str(store_path), algorithm]
    resume = [sys.executable, "-m", "katibx.cli", "resume", name, "-q"]
    result = Iteration(algorithm, kind)
    started = time.monotonic()
    command = first
    total_events = 3 * MAX_TRIALS
    for _ in range(kills):
        # a few events past where it stands: every kill lands while the experiment still has work left
        target = min(total_events - 2, _events(store_path, name) + rng.randint(1, 5))
        controller = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while controller.poll() is None and _events(store_path, name) < target and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the store file: the kill waits for a store state, not for a time
        if controller.poll() is None:
            controller.send_signal(signal.SIGKILL)
            controller.wait()
            result.kills += 1
            result.left_running += len(_orphans(name, folder))
        else:
            controller.wait()
        if _events(store_path, name) > 0:
            command = resume
        if _events(store_path, name) and _completed(store_path, name):
            break
    final = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    if final.returncode != 0:
        result.problems.append(f"last run exited {final.returncode}: {final.stderr.strip()[-300:]}")
    from katibx.store import Store, StoreError
    from katibx.trial import TrialState

    try:
        with Store(store_path) as store:
            trials = store.trials(store.get_experiment(name).id)
    except StoreError as exc:
        result.problems.append(str(exc))
        return result
    result.trials = len(trials)
    result.exact = len(trials) == MAX_TRIALS and all(t.state is TrialState.SUCCEEDED for t in trials)
    if not result.exact:
        result.problems.append(f"states: {[t.state.value for t in trials]}")
    keys = [tuple(sorted(t.assignments.items())) for t in trials]
    result.duplicates = ((len(trials) - len({t.name for t in trials})) + (len(trials) - len({t.index for t in trials}))
                         + (len(keys) - len(set(keys))))
    # processes still alive 10 s after the last controller exited (Ray's own take a moment to shut down)
    deadline = time.monotonic() + 10
    while _orphans(name, folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    result.orphans = len(_orphans(name, folder))
    result.seconds = round(time.monotonic() - started, 2)
    return result


def soak(iterations: int, seed: int = 0, kills: int = 3) -> dict[str, Any]:
    rng = random.Random(seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(iterations):
            algorithm, kind = ALGORITHMS[i % len(ALGORITHMS)], KINDS[(i // len(ALGORITHMS)) % len(KINDS)]
            row = run_iteration(Path(tmp) / str(i), algorithm, kind, kills, rng)
            rows.append(row)
            print(json.dumps(asdict(row)), flush=True)
    return {
        "iterations": len(rows), "kills": sum(r.kills for r in rows),
        "exact_count_failures": sum(not r.exact for r in rows), "duplicates": sum(r.duplicates for r in rows),
        "orphans": sum(r.orphans for r in rows), "left_running_after_kills": sum(r.left_running for r in rows),
        "seconds": round(sum(r.seconds for r in rows), 1), "seed": seed, "kills_per_iteration": kills,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--kills", type=int, default=3, help="kill -9 attempts per iteration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the totals here (JSON)")
    args = parser.parse_args()
    totals = soak(args.iterations, args.seed, args.kills)
    print(json.dumps(totals))
    if args.out is not None:
        args.out.write_text(json.dumps(totals, indent=2) + "\n")


if __name__ == "__main__":
    main()
