"""Katib's DARTS trial: ``run_trial.py --algorithm-settings=... --search-space=... --num-layers=...``.

Runs the whole search, streams the supernet's validation accuracy each epoch, prints and reports
``Best-Genotype=Genotype(...)``, and saves genotype.json, genotype.png and search.json in the output folder
(``--output-dir``, default the trial's own folder inside katibx, else ./darts-output).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from katibx.nas.search_space import parse_primitive
from katibx.nas.settings import DATASETS, DartsSettings, parse_settings
from katibx.report import report_metrics
from katibx.trial_dir import DATASETS_FILE, METRICS_FILE_ENV, TRIAL_DIR_ENV, TRIAL_NAME_ENV

log = logging.getLogger(__name__)
GENOTYPE_METRIC = "Best-Genotype"


def publish(metrics: Mapping[str, Any], printed: tuple[str, ...] = ()) -> None:
    """Report metrics: pushed inside a katibx trial (shown in plain words), else printed as ``name=value`` lines.

    Names in ``printed`` are always printed as ``name=value`` too (Katib's StdOut contract for Best-Genotype).
    """
    inside = bool(os.environ.get(TRIAL_NAME_ENV) and os.environ.get(METRICS_FILE_ENV))
    if inside:
        report_metrics(metrics)
    for name, value in metrics.items():
        print(f"{name}={value}" if not inside or name in printed else f"{name}: {value}", flush=True)


def _json_arg(raw: str, flag: str) -> Any:
    """Katib's JSON with single quotes, possibly wrapped in the literal quotes its template puts around it."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    try:
        return json.loads(text.replace("'", '"'))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag}: not valid JSON ({exc.msg} at character {exc.pos}): {raw[:80]!r}") from None


def parse_trial_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, DartsSettings, list[str], int]:
    """The command line, checked: settings, primitives and layer count; ValueError naming the flag."""
    p = argparse.ArgumentParser(prog="run_trial.py", description="DARTS search as a Katib trial")
    p.add_argument("--algorithm-settings", default="{}", help="JSON of darts settings (Katib's algorithm-settings)")
    p.add_argument("--search-space", required=True, help="JSON list of primitives (Katib's search-space)")
    p.add_argument("--num-layers", required=True, help="number of cells (Katib's num-layers)")
    p.add_argument("--dataset", choices=DATASETS, default="cifar10", help="cifar10 (as Katib) or digits (no download)")
    p.add_argument("--data-dir", default="./data", help="folder with CIFAR-10's python batches")
    p.add_argument("--output-dir", default=None, help="where genotype.json, genotype.png and search.json go")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: a GPU when there is one)")
    args = p.parse_args(argv)
    raw_settings = _json_arg(args.algorithm_settings, "--algorithm-settings")
    if not isinstance(raw_settings, dict):
        raise ValueError("--algorithm-settings: must be a JSON object of setting name -> value")
    settings, errors = parse_settings({str(k): v for k, v in raw_settings.items()})
    if errors:
        raise ValueError("\n".join(errors))
    assert settings is not None
    primitives = _json_arg(args.search_space, "--search-space")
    if not isinstance(primitives, list) or not primitives:
        raise ValueError("--search-space: must be a non-empty JSON list of operation names")
    for name in primitives:
        try:
            parse_primitive(str(name))
        except ValueError as exc:
            raise ValueError(f"--search-space: {exc}") from None
    try:
        num_layers = int(str(args.num_layers).strip("\"'"))
    except ValueError:
        raise ValueError(f"--num-layers: must be an integer (got {args.num_layers!r})") from None
    if num_layers < 1:
        raise ValueError(f"--num-layers: must be >= 1 (got {num_layers})")
    return args, settings, [str(n) for n in primitives], num_layers


def main(argv: list[str] | None = None) -> int:
    """Run the search described by the command line; exit 0 on success, 2 on bad input."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        args, settings, primitives, num_layers = parse_trial_args(argv)
        from katibx.nas.data import DataError, load_dataset

        try:
            dataset = load_dataset(args.dataset, args.data_dir)
        except DataError as exc:
            raise ValueError(str(exc)) from None
    except ValueError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    from katibx.nas.genotype import plot_genotype
    from katibx.nas.trainer import pick_device, search

    out = Path(args.output_dir or os.environ.get(TRIAL_DIR_ENV) or "darts-output")
    out.mkdir(parents=True, exist_ok=True)

    def on_epoch(record: dict[str, Any]) -> None:
        publish({"Validation-Accuracy": round(record["val_accuracy"], 6), "Train-Loss": round(record["train_loss"], 6)})

    (out / DATASETS_FILE).write_text(json.dumps([dataset.lineage()]) + "\n")  # the MLflow input of the trial's run
    result = search(dataset, primitives, num_layers, settings, pick_device(args.device), on_epoch=on_epoch)
    result.genotype.save_json(out / "genotype.json")
    picture = plot_genotype(result.genotype, out / "genotype.png")
    (out / "search.json").write_text(json.dumps({
        "settings": json.loads(settings.to_json()), "search_space": primitives, "num_layers": num_layers,
        "dataset": args.dataset, "seed": result.seed, "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy, "stopped_early": result.stopped_early, "capped": result.capped,
        "genotype": str(result.genotype), "seconds_per_epoch": result.seconds_per_epoch,
        "seconds_per_step": result.seconds_per_step, "history": result.history, "alphas": result.alphas,
    }, indent=2) + "\n")
    log.info("best epoch %d (supernet validation accuracy %.4f); saved %s%s", result.best_epoch,
             result.best_val_accuracy, out / "genotype.json", f" and {picture}" if picture else "")
    publish({"Best-Validation-Accuracy": round(result.best_val_accuracy, 6)})
    publish({GENOTYPE_METRIC: str(result.genotype)}, printed=(GENOTYPE_METRIC,))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
