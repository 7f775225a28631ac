"""Per-trial cost of katibx itself, measured side by side with what a user would compare it against.

The objective is trivial, so only the framework is timed: the wall time of a whole N-trial experiment
from an empty store (store and study creation included), divided by N. The arms run in a fresh
interpreter (the Ray arms in another one), because function trial workers are forked from the measuring
process, which must hold what a user's process holds, not the benchmark's other imports or a Ray runtime.
Rows, each a ratio katibx / other measured in the same repetition (arms interleaved, so a change of load hits every arm alike), reported as
the median over the repetitions:

- function trials vs optuna in-process, in-memory storage (random and TPE);
- function trials vs optuna with its durable storages (SQLite ``RDBStorage``, ``JournalFileBackend``):
  katibx commits every trial to SQLite, so these are the like-for-like rows;
- command trials vs the bare interpreter start-up (``python -S -c``), a floor no framework beats;
- parallelTrialCount 2 vs 1 on trials that sleep 20 ms (speed-up and parallel efficiency of the controller:
  sleeping trials need no second core, so the row measures how well the controller keeps two trials going);
- the local backend's portable POSIX path (macOS; ``KATIBX_PORTABLE=1``) vs its Linux path: function trials with
  workers reused and with a fresh worker each, command trials;
- katibx on Ray vs Ray Tune, same trial count and CPUs (only once a ``ray`` worker backend is installed).

Run alone: ``python -m benchmarks.overhead [--quick] [--trials N] [--repeats R]``; prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import katibx
from benchmarks.common import REPO, cpu_count, limit_threads, load_average, log, median
from benchmarks.quality import TPE_AS_OPTUNA_ARM
from katibx.capabilities import PORTABLE_ENV
from katibx.loader import experiment_from_dict
from katibx.runner import run_experiment
from katibx.store import Store

METRIC = "result"


@dataclass(frozen=True)
class Sizes:
    """Trial counts per kind of row, and repetitions."""

    inprocess: int = 1000  # function trials vs optuna in-memory (random and TPE)
    durable: int = 100  # function trials vs optuna SQLite / journal (optuna on SQLite: ~45 ms a trial)
    parallel: int = 100  # sleeping function trials at parallelTrialCount 2 and 1
    command: int = 30  # command trials vs bare interpreter
    ray: int = 10  # Ray Tune's trials in the Ray row (0: skip the row); about 1 s per trivial trial here
    ray_katibx: int = 100  # katibx's in the Ray row: its actor pool starts once per experiment, not once per trial
    cli: int = 10  # starts of each CLI command vs the interpreter's own start
    repeats: int = 3


FULL = Sizes()
QUICK = Sizes(inprocess=10, durable=5, parallel=4, command=2, ray=0, cli=1, repeats=3)
PARALLEL_TRIAL_SECONDS = 0.02


# --- katibx ------------------------------------------------------------------------------------------------
def _command_experiment(name: str, trials: int) -> dict:
    return {
        "apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment", "metadata": {"name": name},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": METRIC},
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": 1, "maxTrialCount": trials,
            "parameters": [{"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}}],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": "x", "reference": "x"}],
                "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {"containers": [{
                    "name": "main", "image": "python",
                    "command": ["python3", "-S", "-c", "import sys; print('result=' + sys.argv[1])", "${trialParameters.x}"],
                }]}}}},
            },
        },
    }


def bare_interpreter(runs: int) -> float:
    """Seconds per ``python -S -c ...`` run, sequentially: the floor for any command trial."""
    start = time.perf_counter()
    for i in range(runs):
        subprocess.run([sys.executable, "-S", "-c", "import sys; print('result=' + sys.argv[1])", str(i / runs)],
                       stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) / runs


# The console script's own start (what `katibx ...` runs), and the commands the CLI rows time: `--help`, and the
# reading verbs over a store of one 5-trial experiment.
CLI_SCRIPT = "import sys; from katibx.cli import main; sys.exit(main())"
CLI_COMMANDS = {"help": ["--help"], "list": ["list"], "get": ["get", "experiment", "cli-start", "-o", "json"],
                "trials": ["get", "trials", "cli-start"]}


def _started(argv: list[str], runs: int, workdir: Path, **env: str) -> float:
    """Seconds per run of ``argv`` after one untimed run, with compiled modules cached as an installed package has
    them (in ``workdir``, whatever PYTHONDONTWRITEBYTECODE says: a user's install was compiled when installed)."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environment.update(PYTHONPYCACHEPREFIX=str(workdir / "pycache"), **env)
    subprocess.run(argv, env=environment, stdout=subprocess.DEVNULL, check=True)
    start = time.perf_counter()
    for _ in range(runs):
        subprocess.run(argv, env=environment, stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) / runs


def interpreter_start(runs: int, workdir: Path) -> float:
    """Seconds per ``python -c pass`` (with ``site``, as a console script starts): the floor of any CLI command."""
    return _started([sys.executable, "-c", "pass"], runs, workdir)


def katibx_cli(command: str, runs: int, workdir: Path) -> float:
    """Seconds per ``katibx COMMAND`` (the console script's code, output discarded) over a store of one small
    experiment."""
    store = workdir / "cli-start.db"
    if not store.exists():
        katibx.tune("cli-start", trivial, _space(), objective_metric_name=METRIC, objective_type="minimize",
                    max_trial_count=5, store=str(store), progress=False)
    return _started([sys.executable, "-c", CLI_SCRIPT, *CLI_COMMANDS[command]], runs, workdir, KATIBX_STORE=str(store))


def katibx_command(trials: int, workdir: Path) -> float:
    """Seconds per trivial command trial through the katibx controller (parallelTrialCount 1)."""
    start = time.perf_counter()
    store = Store(workdir / f"cmd-{time.monotonic_ns()}.db")
    try:
        run_experiment(experiment_from_dict(_command_experiment("overhead-cmd", trials)), store=store, workdir=workdir)
    finally:
        store.close()
    return (time.perf_counter() - start) / trials


def trivial(params: dict) -> dict:
    """The objective of every function-trial row: a 2-D quadratic (a double and an int), nothing else."""
    return {METRIC: params["x"] ** 2 + params["k"]}


def sleepy(params: dict) -> dict:
    """The objective of the parallel rows: a fixed 20 ms of waiting, then the trivial value."""
    time.sleep(PARALLEL_TRIAL_SECONDS)
    return trivial(params)


def _space() -> dict:
    return {"x": katibx.search.double(-100, 100), "k": katibx.search.int(-100, 100)}


def katibx_function(trials: int, workdir: Path, algorithm: str = "random", parallel: int = 1,
                    backend: str = "local", objective: Callable[[dict], dict] = trivial,
                    reuse_processes: bool = True, isolation: str = "process",
                    settings: dict[str, str] | None = None) -> float:
    """Seconds per function trial (run by the backend's worker processes, or with ``isolation="none"`` on threads
    of this process; every result committed to SQLite)."""
    start = time.perf_counter()
    store = Store(workdir / f"fn-{time.monotonic_ns()}.db")
    try:
        experiment = katibx.tune(name="overhead-fn", objective=objective, parameters=_space(), objective_metric_name=METRIC,
                                 objective_type="minimize", algorithm_name=algorithm,
                                 algorithm_settings={"random_state": 0, **(settings or {})}, max_trial_count=trials,
                                 parallel_trial_count=parallel, store=store, backend=backend,
                                 reuse_processes=reuse_processes, isolation=isolation)
    finally:
        store.close()
    succeeded = experiment["status"].get("trialsSucceeded")
    if succeeded != trials:
        raise RuntimeError(f"katibx {algorithm}: {succeeded} of {trials} trials succeeded")
    return (time.perf_counter() - start) / trials


# --- optuna ------------------------------------------------------------------------------------------------
def optuna_study(trials: int, sampler: str = "random", storage: str = "memory", workdir: Path | None = None) -> float:
    """Seconds per trial of optuna ``study.optimize`` in-process (storage and study creation included)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    if storage == "memory":
        store: Any = None
    elif storage == "sqlite":
        assert workdir is not None
        store = optuna.storages.RDBStorage(f"sqlite:///{workdir / f'optuna-{time.monotonic_ns()}.db'}")
    elif storage == "journal":
        from optuna.storages.journal import JournalFileBackend

        assert workdir is not None
        store = optuna.storages.JournalStorage(JournalFileBackend(str(workdir / f"optuna-{time.monotonic_ns()}.log")))
    else:
        raise ValueError(storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if sampler == "random":
            smp: Any = optuna.samplers.RandomSampler(seed=0)
        else:  # the settings of katibx's tpe (and of the quality benchmark's optuna-tpe arm)
            from benchmarks.quality import N_EI_CANDIDATES, N_INITIAL_POINTS, tpe_gamma

            smp = optuna.samplers.TPESampler(multivariate=False, constant_liar=True, n_startup_trials=N_INITIAL_POINTS,
                                             n_ei_candidates=N_EI_CANDIDATES, prior_weight=1.0, gamma=tpe_gamma, seed=0)
        study = optuna.create_study(direction="minimize", sampler=smp, storage=store)
        study.optimize(lambda t: t.suggest_float("x", -100, 100) ** 2 + t.suggest_int("k", -100, 100), n_trials=trials)
    return (time.perf_counter() - start) / trials


# --- Ray ---------------------------------------------------------------------------------------------------
def ray_status() -> str:
    """"ok", or why the Ray row cannot run."""
    from katibx import plugins

    if "ray" not in plugins.backend_names():
        return "not available: katibx has no Ray worker backend yet (no 'ray' plugin in katibx.workers)"
    try:
        missing = importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.tune") is None
    except ImportError:
        missing = True
    return "not installed: ray[tune] (pip install 'ray[tune]')" if missing else "ok"


def ray_start(cpus: int) -> None:
    """A fresh local Ray cluster with ``cpus`` CPUs (never one that happens to run on this machine already)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)


def ray_stop() -> None:
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()


def _ray_trainable(config: dict) -> dict:
    return {METRIC: config["x"] ** 2 + config["k"]}


def ray_tune(trials: int, cpus: int) -> float:
    """Seconds per trivial trial of Ray Tune (BasicVariantGenerator), ``max_concurrent_trials`` = CPUs.

    The cluster is started before the clock (once per run, like a user's ``ray.init``)."""
    from ray import tune

    ray_start(cpus)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        quiet = io.StringIO()  # Tune prints a configuration box and a summary even with verbose=0
        tuner = tune.Tuner(
            _ray_trainable,
            param_space={"x": tune.uniform(-100, 100), "k": tune.randint(-100, 101)},
            tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=cpus, metric=METRIC, mode="min"),
            run_config=tune.RunConfig(storage_path=tmp, name="overhead", verbose=0),
        )
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            results = tuner.fit()
        seconds = time.perf_counter() - start
    if results.num_errors or len(results) != trials:
        raise RuntimeError(f"ray tune: {len(results)} results, {results.num_errors} errors")
    return seconds / trials


def katibx_ray(trials: int, workdir: Path, cpus: int) -> float:
    """Seconds per trivial function trial of katibx on its Ray backend, parallelTrialCount = CPUs, same cluster."""
    ray_start(cpus)
    return katibx_function(trials, workdir, "random", parallel=cpus, backend="ray")


# --- the rows ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    name: str
    katibx: str  # arm key in the samples
    other: str
    description: str
    trials: int


def rows(sizes: Sizes) -> list[Row]:
    return [
        Row("function-random-vs-optuna-inmemory", "katibx_function_random", "optuna_random_memory",
            "katibx function trials, random / optuna RandomSampler, in-memory storage", sizes.inprocess),
        Row("function-threads-vs-optuna-inmemory", "katibx_function_random_threads", "optuna_random_memory",
            "katibx function trials on threads of its process (isolation none), random / optuna RandomSampler, "
            "in-memory storage", sizes.inprocess),
        Row("function-tpe-vs-optuna-inmemory", "katibx_function_tpe", "optuna_tpe_memory",
            "katibx function trials, tpe / optuna TPESampler (same settings), in-memory storage", sizes.inprocess),
        Row("function-random-vs-optuna-sqlite", "katibx_function_random_durable", "optuna_random_sqlite",
            "katibx function trials (SQLite store) / optuna RandomSampler with RDBStorage on SQLite", sizes.durable),
        Row("function-random-vs-optuna-journal", "katibx_function_random_durable", "optuna_random_journal",
            "katibx function trials (SQLite store) / optuna RandomSampler with JournalFileBackend", sizes.durable),
        Row("function-threads-vs-optuna-journal", "katibx_function_random_threads_durable", "optuna_random_journal",
            "katibx function trials on threads (isolation none; SQLite store) / optuna RandomSampler with "
            "JournalFileBackend", sizes.durable),
        Row("command-vs-bare-interpreter", "katibx_command", "bare_interpreter",
            "katibx command trials / `python -S -c` started sequentially (the floor)", sizes.command),
        Row("parallel-2-vs-1", "katibx_sleepy_parallel2", "katibx_sleepy_parallel1",
            f"katibx function trials that sleep {PARALLEL_TRIAL_SECONDS * 1000:.0f} ms, parallelTrialCount 2 / 1 "
            "(seconds per trial; 0.5 is perfect scaling)", sizes.parallel),
        Row("function-portable-vs-linux", "katibx_function_random_portable", "katibx_function_random",
            "katibx function trials (random, workers reused) on the portable POSIX path (macOS; KATIBX_PORTABLE=1: "
            "a waiter thread per process, no subreaper, so each trial end scans for leftovers) / the Linux path",
            sizes.inprocess),
        Row("function-fresh-portable-vs-linux", "katibx_function_fresh_portable", "katibx_function_fresh",
            "katibx function trials with a fresh worker each (reuse_processes=False), portable path / Linux path",
            sizes.durable),
        Row("command-portable-vs-linux", "katibx_command_portable", "katibx_command",
            "katibx command trials, portable path / Linux path", sizes.command),
        *[Row(f"cli-{name}-vs-interpreter", f"katibx_cli_{name}", "interpreter_start",
              f"`katibx {' '.join(CLI_COMMANDS[name])}` / `python -c pass` (ms per start; goal: 120 ms here)", sizes.cli)
          for name in CLI_COMMANDS],
        Row("ray-vs-ray-tune", "katibx_ray", "ray_tune",
            f"katibx on its Ray backend ({sizes.ray_katibx} trials: its actors start once per experiment) / Ray Tune "
            f"({sizes.ray} trials: an actor per trial, about 1 s each), same CPUs", sizes.ray),
    ]


RAY_ARMS = ("ray_tune", "katibx_ray")


def _arms(sizes: Sizes, workdir: Path, with_ray: bool) -> dict[str, Callable[[], float]]:
    arms: dict[str, Callable[[], float]] = {
        "bare_interpreter": lambda: bare_interpreter(sizes.command),
        "katibx_command": lambda: katibx_command(sizes.command, workdir),
        "optuna_random_memory": lambda: optuna_study(sizes.inprocess, "random"),
        "katibx_function_random": lambda: katibx_function(sizes.inprocess, workdir, "random"),
        "katibx_function_random_threads": lambda: katibx_function(sizes.inprocess, workdir, "random",
                                                                  isolation="none"),
        "katibx_function_random_threads_durable": lambda: katibx_function(sizes.durable, workdir, "random",
                                                                          isolation="none"),
        "optuna_tpe_memory": lambda: optuna_study(sizes.inprocess, "tpe"),
        "katibx_function_tpe": lambda: katibx_function(sizes.inprocess, workdir, "tpe", settings=TPE_AS_OPTUNA_ARM),
        "optuna_random_sqlite": lambda: optuna_study(sizes.durable, "random", "sqlite", workdir),
        "optuna_random_journal": lambda: optuna_study(sizes.durable, "random", "journal", workdir),
        "katibx_function_random_durable": lambda: katibx_function(sizes.durable, workdir, "random"),
        "katibx_function_random_portable": portable(lambda: katibx_function(sizes.inprocess, workdir, "random")),
        "katibx_function_fresh": lambda: katibx_function(sizes.durable, workdir, reuse_processes=False),
        "katibx_function_fresh_portable": portable(
            lambda: katibx_function(sizes.durable, workdir, reuse_processes=False)),
        "katibx_command_portable": portable(lambda: katibx_command(sizes.command, workdir)),
        "katibx_sleepy_parallel1": lambda: katibx_function(sizes.parallel, workdir, objective=sleepy),
        "katibx_sleepy_parallel2": lambda: katibx_function(sizes.parallel, workdir, parallel=2, objective=sleepy),
        "interpreter_start": lambda: interpreter_start(sizes.cli, workdir),
        **{f"katibx_cli_{name}": (lambda name=name: katibx_cli(name, sizes.cli, workdir)) for name in CLI_COMMANDS},
    }
    if with_ray:
        cpus = cpu_count()
        arms["ray_tune"] = lambda: ray_tune(sizes.ray, cpus)
        arms["katibx_ray"] = lambda: katibx_ray(sizes.ray_katibx, workdir, cpus)
    return arms


def portable(arm: Callable[[], float]) -> Callable[[], float]:
    """The arm run on the local backend's portable path (KATIBX_PORTABLE=1 while it runs: the backend and its
    workers read it when they start)."""
    def run() -> float:
        previous = os.environ.get(PORTABLE_ENV)
        os.environ[PORTABLE_ENV] = "1"
        try:
            return arm()
        finally:
            if previous is None:
                del os.environ[PORTABLE_ENV]
            else:
                os.environ[PORTABLE_ENV] = previous
    return run


def measure(sizes: Sizes, group: str) -> dict[str, Any]:
    """Samples of one group of arms ("local" or "ray"), every arm once per repetition (interleaved).

    Runs in a fresh interpreter (see :func:`measure_groups`): function trial workers are forked from this
    process, so it must hold what a user's process holds (katibx, optuna), not the benchmark's other imports.
    """
    logging.disable(logging.INFO)
    samples: dict[str, list[float]] = {}
    errors: dict[str, str] = {}
    load = [load_average()]
    with tempfile.TemporaryDirectory(prefix="katibx-overhead-") as tmp:
        workdir = Path(tmp)
        arms = {k: v for k, v in _arms(sizes, workdir, group == "ray").items() if (k in RAY_ARMS) == (group == "ray")}
        if group == "ray":  # cluster start, worker processes, imports
            warm_ups = [lambda: ray_tune(2, cpu_count()), lambda: katibx_ray(2, workdir, cpu_count())]
        else:  # imports, first fork, page cache
            warm_ups = [lambda: bare_interpreter(1), lambda: katibx_command(1, workdir),
                        lambda: katibx_function(2, workdir, "tpe"), lambda: optuna_study(2, "tpe"),
                        lambda: optuna_study(2, "random", "sqlite", workdir),
                        lambda: optuna_study(2, "random", "journal", workdir)]
        try:
            for warm_up in warm_ups:
                try:  # not recorded (a broken arm is reported by its measured run)
                    warm_up()
                except Exception:  # noqa: BLE001
                    pass
            for rep in range(sizes.repeats):
                for arm, measure_arm in arms.items():
                    if arm in errors:
                        continue
                    try:
                        samples.setdefault(arm, []).append(measure_arm())
                    except Exception as exc:  # noqa: BLE001 - one broken arm must not stop the others
                        errors[arm] = f"{type(exc).__name__}: {exc}"
                load.append(load_average())
                log(f"  overhead ({group}): repetition {rep + 1}/{sizes.repeats} done")
        finally:
            ray_stop()
    return {"samples": samples, "errors": errors, "load": load}


def _measure_in_child(sizes: Sizes, group: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.overhead", "--group", group, "--sizes",
                           json.dumps(asdict(sizes))], cwd=REPO, stdout=subprocess.PIPE, text=True, timeout=3600)
    if proc.returncode != 0:
        return {"samples": {}, "errors": {group: f"measuring process exited with {proc.returncode}"}, "load": []}
    return json.loads(proc.stdout.strip().splitlines()[-1])


GROUPS = ("local", "ray")


def measure_groups(sizes: Sizes, groups: Sequence[str] = GROUPS) -> list[dict[str, Any]]:
    """Samples of the arms of ``groups``, each group in a fresh process. The local group's arms need one core
    (the controller and its trial worker take turns); the Ray group's need every core."""
    return [_measure_in_child(sizes, group) for group in groups if group != "ray" or ray_state(sizes) == "ok"]


def ray_state(sizes: Sizes) -> str:
    return ray_status() if sizes.ray else "skipped in --quick mode (starting Ray alone takes about 10 s)"


def run(sizes: Sizes = FULL) -> dict[str, Any]:
    """Measure every group of arms and build the rows."""
    return summarize(sizes, measure_groups(sizes))


def summarize(sizes: Sizes, measured: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The rows from measured groups: per-repetition ratios katibx / other and their medians."""
    from katibx import plugins

    ray = ray_state(sizes)
    samples = {k: v for m in measured for k, v in m["samples"].items()}
    errors = {k: v for m in measured for k, v in m["errors"].items()}
    load = [x for m in measured for x in m["load"]]
    out_rows = []
    for row in rows(sizes):
        entry: dict[str, Any] = {**asdict(row)}
        if row.name == "ray-vs-ray-tune" and ray != "ok":
            entry["status"] = ray
            out_rows.append(entry)
            continue
        missing = [a for a in (row.katibx, row.other) if a not in samples or a in errors]
        if missing:
            entry["status"] = "error: " + "; ".join(f"{a}: {errors.get(a, 'no samples')}" for a in missing)
            out_rows.append(entry)
            continue
        a, b = samples[row.katibx], samples[row.other]
        ratios = [x / y for x, y in zip(a, b)]
        entry.update({
            "status": "ok",
            "katibx_ms_per_trial": round(1000 * median(a), 4),
            "other_ms_per_trial": round(1000 * median(b), 4),
            "ratio": round(median(ratios), 4),
            "ratios": [round(r, 4) for r in ratios],
        })
        if row.name == "command-vs-bare-interpreter":
            entry["katibx_overhead_ms_per_trial"] = round(1000 * median(x - y for x, y in zip(a, b)), 3)
        if row.name == "parallel-2-vs-1":
            speedup = 1 / entry["ratio"]
            entry["speedup"] = round(speedup, 3)
            entry["parallel_efficiency"] = round(speedup / 2, 3)
        out_rows.append(entry)
    return {
        "settings": {**asdict(sizes), "objective": "x**2 + k, x double [-100, 100], k int [-100, 100]",
                     "measure": "wall time of an N-trial experiment from an empty store / N",
                     "algorithms_installed": sorted(plugins.algorithm_names()),
                     "backends_installed": sorted(plugins.backend_names())},
        "samples_seconds_per_trial": {k: [round(v, 6) for v in vs] for k, vs in samples.items()},
        "rows": out_rows,
        "errors": errors,
        "load_average_per_repetition": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", choices=("local", "ray"), help=argparse.SUPPRESS)  # run one group, print samples
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="CI-sized trial counts")
    parser.add_argument("--trials", type=int, help="trials of the in-process rows (default 1000)")
    parser.add_argument("--repeats", type=int, help="repetitions (default 3)")
    args = parser.parse_args()
    limit_threads()
    if args.group:
        print(json.dumps(measure(Sizes(**json.loads(args.sizes)), args.group)))
        return
    sizes = QUICK if args.quick else FULL
    if args.trials:
        sizes = Sizes(**{**asdict(sizes), "inprocess": args.trials})
    if args.repeats:
        sizes = Sizes(**{**asdict(sizes), "repeats": args.repeats})
    result = run(sizes)
    result["cpus"], result["loadavg"] = os.cpu_count(), load_average()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
