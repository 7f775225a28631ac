"""DARTS on digits: search time per epoch and per step on CPU, supernet accuracy, and test accuracy of the found
genotype retrained from scratch against the all-skip-connection genotype trained the same way.

    python -m benchmarks.nas                    # -> benchmarks/results/nas/digits.json and digits.md
    python -m benchmarks.nas --quick --out /tmp/nas   # a smoke-sized run

Not part of ``python -m benchmarks``. The search uses examples/nas/darts-digits.yaml's settings and space
(through the darts plugin, as a trial would get them); ``--seeds`` picks the search seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, environment, load_average, log

EXAMPLE = REPO / "examples" / "nas" / "darts-digits.yaml"
OUT = REPO / "benchmarks" / "results" / "nas"
EVAL: dict[str, Any] = {"num_layers": 5, "init_channels": 8, "epochs": 30, "batch_size": 64, "lr": 0.05}
SECOND_ORDER_STEPS = 6


def example_search() -> tuple[dict[str, str], list[str], int]:
    """The digits example's settings, primitives and layer count, as the darts plugin hands them to the trial."""
    from katibx.algorithms.darts import Darts
    from katibx.loader import load_experiment
    from katibx.search_space import SearchSpace

    experiment = load_experiment(EXAMPLE)
    [suggestion] = Darts(experiment, SearchSpace.from_experiment(experiment)).suggest([], 1)
    assignments = {k: json.loads(str(v).replace("'", '"')) for k, v in suggestion.assignments.items()}
    return assignments["algorithm-settings"], assignments["search-space"], int(assignments["num-layers"])


def _threads() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def run_search(seed: int, epochs: int | None, order: str | None, max_steps: int | None = None) -> dict[str, Any]:
    """One search with the example's settings (seed, and optionally epochs/order, replaced)."""
    _threads()
    import torch

    from katibx.nas.data import load_digits
    from katibx.nas.settings import parse_settings
    from katibx.nas.trainer import search

    raw, primitives, layers = example_search()
    raw = {**raw, "random_state": str(seed)}
    if epochs is not None:
        raw["num_epochs"] = str(epochs)
    if order is not None:
        raw["order"] = order
    settings, errors = parse_settings(raw)
    assert settings is not None, errors
    started = time.perf_counter()
    result = search(load_digits(), primitives, layers, settings, torch.device("cpu"), max_steps_per_epoch=max_steps)
    return {
        "seed": seed, "order": settings.order, "epochs_run": len(result.history), "wall_seconds": time.perf_counter() - started,
        "seconds_per_epoch": result.seconds_per_epoch, "seconds_per_step": result.seconds_per_step,
        "steps_per_epoch": result.history[0]["steps"], "best_epoch": result.best_epoch,
        "best_supernet_val_accuracy": result.best_val_accuracy, "final_supernet_val_accuracy": result.history[-1]["val_accuracy"],
        "stopped_early": result.stopped_early, "genotype": str(result.genotype),
        "skip_connections": result.genotype.count("skip_connection"),
        "val_accuracy_per_epoch": [round(h["val_accuracy"], 4) for h in result.history],
    }


def run_eval(label: str, genotype: str, seed: int, epochs: int, channels: int = EVAL["init_channels"]) -> dict[str, Any]:
    """Retrain a genotype from scratch on the 1,500 training digits; test on the 297 held out."""
    _threads()
    import torch

    from katibx.nas.data import load_digits
    from katibx.nas.evaluate import evaluate
    from katibx.nas.genotype import Genotype

    config = {**EVAL, "epochs": epochs, "init_channels": channels}
    result = evaluate(Genotype.parse(genotype), load_digits(), config["num_layers"], config["init_channels"],
                      config["epochs"], config["batch_size"], config["lr"], seed=seed, device=torch.device("cpu"))
    return {"label": label, "genotype": genotype, "seed": seed, "test_accuracy": result.test_accuracy, "parameters": result.parameters,
            "seconds": result.seconds, "seconds_per_epoch": result.seconds_per_epoch}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nas", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=2, help="processes for the evaluations (one torch thread each)")
    p.add_argument("--eval-channels", type=int, default=EVAL["init_channels"], help="initial channels of the retrained net")
    p.add_argument("--quick", action="store_true", help="2 search epochs, 2 evaluation epochs, one seed")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    from katibx.nas.evaluate import all_skip_genotype

    search_epochs = 2 if args.quick else None
    eval_epochs = 2 if args.quick else EVAL["epochs"]
    seeds = args.seeds[:1] if args.quick else args.seeds
    eval_seeds = args.eval_seeds[:1] if args.quick else args.eval_seeds
    load_start = load_average()
    started = time.perf_counter()
    ctx = get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as timed:  # searches one at a time: their timings are the result
        searches = list(timed.map(run_search, seeds, [search_epochs] * len(seeds), [None] * len(seeds)))
        log(f"searches done: {[s['genotype'] for s in searches]}")
        second_order = timed.submit(run_search, seeds[0], 1, "second", SECOND_ORDER_STEPS).result()
    skip = str(all_skip_genotype())
    jobs = [(f"found (search seed {s['seed']})", s["genotype"], e) for s in searches for e in eval_seeds]
    jobs += [("all-skip", skip, e) for e in eval_seeds]
    with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:  # evaluations: accuracy only, in parallel
        evals = list(pool.map(run_eval, *zip(*jobs), [eval_epochs] * len(jobs), [args.eval_channels] * len(jobs)))
    found = [e for e in evals if e["label"] != "all-skip"]
    baseline = [e for e in evals if e["label"] == "all-skip"]
    summary = {
        "search_seconds_per_epoch_first_order": statistics.mean(s["seconds_per_epoch"] for s in searches),
        "search_seconds_per_step_first_order": statistics.mean(s["seconds_per_step"] for s in searches),
        "search_seconds_per_step_second_order": second_order["seconds_per_step"],
        "search_wall_seconds": statistics.mean(s["wall_seconds"] for s in searches),
        "found_test_accuracy_mean": statistics.mean(e["test_accuracy"] for e in found),
        "found_test_accuracy_min": min(e["test_accuracy"] for e in found),
        "all_skip_test_accuracy_max": max(e["test_accuracy"] for e in baseline),
        "all_skip_test_accuracy_mean": statistics.mean(e["test_accuracy"] for e in baseline),
        "found_beats_all_skip_every_time": min(e["test_accuracy"] for e in found) > max(e["test_accuracy"] for e in baseline),
    }
    result = {"benchmark": "nas-digits", "quick": args.quick, "workers": args.workers, "evaluation": {**EVAL, "epochs": eval_epochs, "init_channels": args.eval_channels},
              "summary": summary, "searches": searches, "second_order_timing": second_order, "evaluations": evals,
              "load_average": {"start": load_start, "end": load_average()}, "wall_seconds": time.perf_counter() - started,
              "environment": {**environment(), "torch": _torch_version(), "torch_threads_per_process": 1}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "digits.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "digits.md").write_text(report(result))
    print(report(result))
    return 0


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def report(r: dict[str, Any]) -> str:
    """A short Markdown report of one run."""
    s = r["summary"]
    cpus = r["environment"]["cpus"]
    loaded = max(r["load_average"]["start"][0], r["load_average"]["end"][0]) > cpus
    lines = [
        "# DARTS on scikit-learn digits (CPU)", "",
        f"{'**Loaded machine** (load average above the CPU count): timings are upper bounds. ' if loaded else ''}"
        f"{cpus} CPUs; searches one at a time, evaluations on {r['workers']} processes; one torch thread each; torch {r['environment']['torch']}, "
        f"load average {r['load_average']['start']} -> {r['load_average']['end']}, commit "
        f"{(r['environment']['git'].get('commit') or '?')[:10]}.", "",
        "| measure | value |", "|---|---|",
        f"| search, first order: seconds per epoch | {s['search_seconds_per_epoch_first_order']:.1f} |",
        f"| search, first order: seconds per step (alpha step + weight step, batch 64) | {s['search_seconds_per_step_first_order']:.2f} |",
        f"| search, second order: seconds per step | {s['search_seconds_per_step_second_order']:.2f} |",
        f"| search wall time (whole search incl. validation) | {s['search_wall_seconds']:.0f} s |",
        f"| found genotype retrained: test accuracy, mean (min) | {s['found_test_accuracy_mean']:.4f} ({s['found_test_accuracy_min']:.4f}) |",
        f"| all-skip genotype retrained the same way: test accuracy, mean (max) | {s['all_skip_test_accuracy_mean']:.4f} "
        f"({s['all_skip_test_accuracy_max']:.4f}) |",
        f"| found beats all-skip in every evaluation | {s['found_beats_all_skip_every_time']} |", "",
        "| search seed | epochs | best epoch | supernet val accuracy (best) | skip connections | genotype |", "|---|---|---|---|---|---|",
    ]
    for x in r["searches"]:
        lines.append(f"| {x['seed']} | {x['epochs_run']} | {x['best_epoch']} | {x['best_supernet_val_accuracy']:.4f} | "
                     f"{x['skip_connections']} | `{x['genotype']}` |")
    e = r["evaluation"]
    lines += ["", f"Evaluation: {e['num_layers']} cells, {e['init_channels']} initial channels, {e['epochs']} epochs, batch "
              f"{e['batch_size']}, SGD lr {e['lr']} cosine, trained on the 1,500 training digits, tested on the 297 held out "
              "(one test image = 0.34 %).", "", "| genotype | eval seed | test accuracy | parameters | seconds |", "|---|---|---|---|---|"]
    for x in r["evaluations"]:
        lines.append(f"| {x['label']} | {x['seed']} | {x['test_accuracy']:.4f} | {x['parameters']} | {x['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
