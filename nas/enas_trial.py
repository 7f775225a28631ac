"""Katib's ENAS trial (its ``RunTrial.py --architecture=... --nn_config=... --num_epochs=N``) in PyTorch: builds the
child network of the architecture (:mod:`katibx.nas.enas_child`), trains it from scratch (Adam, as Katib's) and
reports ``Validation-Accuracy`` after each epoch; writes ``architecture.json`` (the layers decoded) and its picture,
``architecture.png``, into the trial's folder. ``--dataset digits`` (scikit-learn's 8x8 digits: no download;
``inputSizes: [8, 8, 1]``) or cifar10."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from katibx.nas.settings import DATASETS
from katibx.trial_dir import DATASETS_FILE, TRIAL_DIR_ENV

log = logging.getLogger(__name__)
METRIC = "Validation-Accuracy"


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[list[int]], dict[str, Any]]:
    """The command line, checked; ValueError naming the flag."""
    from katibx.nas.enas_space import read_assignment
    from katibx.nas.run_trial import _json_arg

    p = argparse.ArgumentParser(prog="RunTrial.py", description="an ENAS child network as a Katib trial")
    p.add_argument("--architecture", required=True, help="JSON rows [op id, skip bits...] (Katib's architecture)")
    p.add_argument("--nn_config", required=True, help="JSON of layers, sizes and operations (Katib's nn_config)")
    p.add_argument("--num_epochs", type=int, default=10)
    p.add_argument("--dataset", choices=DATASETS, default="cifar10", help="cifar10 (as Katib) or digits (no download)")
    p.add_argument("--data-dir", default="./data", help="folder with CIFAR-10's python batches")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: a GPU when there is one)")
    p.add_argument("--num_gpus", type=int, default=None, help="Katib's flag: accepted; the GPUs are the trial's "
                                                               "CUDA_VISIBLE_DEVICES")
    args = p.parse_args(argv)
    architecture = _json_arg(args.architecture, "--architecture")
    nn_config = _json_arg(args.nn_config, "--nn_config")
    if not isinstance(nn_config, dict) or not {"num_layers", "input_sizes", "output_sizes", "embedding"} <= set(nn_config) \
            or not isinstance(nn_config["embedding"], dict) or not isinstance(nn_config["input_sizes"], list) \
            or not all(isinstance(v, int) for v in nn_config["input_sizes"]) \
            or not isinstance(nn_config["output_sizes"], list) or not nn_config["output_sizes"]:
        raise ValueError("--nn_config: needs num_layers, input_sizes and output_sizes (lists of whole numbers) and an "
                         "embedding of op ids (Katib's nn_config)")
    try:
        layers = int(nn_config["num_layers"])
    except (TypeError, ValueError):
        raise ValueError(f"--nn_config: num_layers must be a whole number, got {nn_config['num_layers']!r}") from None
    if not isinstance(architecture, list) or len(architecture) != layers or any(
            not isinstance(row, list) or len(row) != i + 1 or str(row[0]) not in nn_config["embedding"]
            or any(bit not in (0, 1) for bit in row[1:]) for i, row in enumerate(architecture)):
        raise ValueError(f"--architecture: expected {layers} rows [op id of --nn_config, then i skip bits of 0 or "
                         f"1], got {read_assignment(json.dumps(architecture))}")
    if args.num_epochs < 1 or args.batch_size < 1 or args.learning_rate <= 0:
        raise ValueError("--num_epochs, --batch_size and --learning_rate must be positive")
    return args, architecture, nn_config


def main(argv: list[str] | None = None) -> int:
    """Train the child network the command line describes; exit 0 on success, 2 on bad input."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        args, architecture, nn_config = parse_args(argv)
        from katibx.nas.data import DataError, load_dataset

        try:
            dataset = load_dataset(args.dataset, args.data_dir)
        except DataError as exc:
            raise ValueError(str(exc)) from None
        height, width, channels = (list(nn_config["input_sizes"]) + [1, 1, 1])[:3]
        shape = tuple(int(v) for v in dataset.x_train.shape[1:])
        if shape != (int(channels), int(height), int(width)):
            raise ValueError(f"--nn_config: input_sizes {nn_config['input_sizes']} do not fit {args.dataset} "
                             f"({shape[1]}x{shape[2]}x{shape[0]}: inputSizes [{shape[1]}, {shape[2]}, {shape[0]}])")
        if int(nn_config["output_sizes"][-1]) != dataset.num_classes:
            raise ValueError(f"--nn_config: output_sizes {nn_config['output_sizes']} do not fit {args.dataset} "
                             f"({dataset.num_classes} classes)")
        import torch

        from katibx.nas.enas_child import ChildNetwork

        torch.manual_seed(args.seed)  # the child's initial weights
        try:
            model = ChildNetwork(architecture, nn_config)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"--nn_config: an operation of the architecture cannot be built: {exc}") from None
    except ValueError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    import torch

    from katibx.nas.data import batches
    from katibx.nas.run_trial import publish
    from katibx.nas.trainer import pick_device

    out = Path(os.environ.get(TRIAL_DIR_ENV) or "enas-output")
    out.mkdir(parents=True, exist_ok=True)
    (out / DATASETS_FILE).write_text(json.dumps([dataset.lineage()]) + "\n")
    device = pick_device(args.device)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    x_train, y_train = dataset.x_train.to(device), dataset.y_train.to(device)
    x_test, y_test = dataset.x_test.to(device), dataset.y_test.to(device)
    generator = torch.Generator().manual_seed(args.seed)
    best, started = 0.0, time.monotonic()
    for _ in range(args.num_epochs):
        model.train()
        for xb, yb in batches(x_train, y_train, args.batch_size, generator):
            if len(yb) < 2:
                continue  # batch normalisation needs two samples (a last batch of one)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
        best = max(best, accuracy)
        publish({METRIC: round(accuracy, 6)})
    layers = [{"layer": i, "operation": nn_config["embedding"][str(row[0])],
               "skips_from": ["input" if j == 0 else f"layer {j - 1}" for j, bit in enumerate(row[1:]) if bit]}
              for i, row in enumerate(architecture)]
    (out / "architecture.json").write_text(json.dumps({
        "architecture": architecture, "layers": layers, "dataset": args.dataset, "epochs": args.num_epochs,
        "best_validation_accuracy": best, "seconds": round(time.monotonic() - started, 3),
        "parameters": sum(p.numel() for p in model.parameters())}, indent=2) + "\n")
    from katibx.nas.enas_picture import plot_architecture

    plot_architecture(layers, out / "architecture.png", f"{args.dataset}: best validation accuracy {best:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
