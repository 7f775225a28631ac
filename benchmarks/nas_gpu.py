"""CIFAR-10 DARTS timing on a GPU: one search epoch (first and second order) and one evaluation epoch.

    python -m benchmarks.nas_gpu --data-dir /data/cifar-10-batches-py          # real CIFAR-10 (python batches)
    python -m benchmarks.nas_gpu --synthetic                                   # CIFAR-shaped random tensors
    python -m benchmarks.nas_gpu --synthetic --search-steps 50 --eval-steps 100   # time N steps, extrapolate

The search is the paper's / Katib's: 8 cells, 16 channels, 4 nodes, all 8 operations, batch 64, the training
set split 25k/25k. The evaluation network is the paper's: 20 cells, 36 channels, batch 96, on the 50k training
images, for the DARTS_V2 genotype (Liu et al.). bf16 autocast and channels-last on CUDA. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

from katibx.nas.data import DataError, Dataset, load_cifar10
from katibx.nas.evaluate import evaluate
from katibx.nas.genotype import Genotype
from katibx.nas.settings import parse_settings
from katibx.nas.trainer import pick_device, search

OPS = ["max_pooling_3x3", "avg_pooling_3x3", "skip_connection", "separable_convolution_3x3", "separable_convolution_5x5",
       "dilated_convolution_3x3", "dilated_convolution_5x5"]
# DARTS_V2 from the paper's code, in Katib's operation names.
DARTS_V2 = Genotype(
    [[("separable_convolution_3x3", 0), ("separable_convolution_3x3", 1)], [("separable_convolution_3x3", 0), ("separable_convolution_3x3", 1)],
     [("separable_convolution_3x3", 1), ("skip_connection", 0)], [("skip_connection", 0), ("dilated_convolution_3x3", 2)]], [2, 3, 4, 5],
    [[("max_pooling_3x3", 0), ("max_pooling_3x3", 1)], [("skip_connection", 2), ("max_pooling_3x3", 1)],
     [("max_pooling_3x3", 0), ("skip_connection", 2)], [("skip_connection", 2), ("max_pooling_3x3", 1)]], [2, 3, 4, 5])


def synthetic(n_train: int = 50_000, n_test: int = 10_000) -> Dataset:
    """CIFAR-10-shaped random data (timing only: no accuracy meaning)."""
    g = torch.Generator().manual_seed(0)
    return Dataset("synthetic-cifar10", torch.randn(n_train, 3, 32, 32, generator=g), torch.randint(0, 10, (n_train,), generator=g),
                   torch.randn(n_test, 3, 32, 32, generator=g), torch.randint(0, 10, (n_test,), generator=g), 10, augment=True,
                   source="torch.randn (seed 0)")


def time_search(data: Dataset, order: str, steps: int | None, device: torch.device, layers: int, channels: int,
                batch: int) -> dict[str, Any]:
    settings, errors = parse_settings({"num_epochs": "1", "order": order, "batch_size": str(batch), "init_channels": str(channels),
                                       "random_state": "0", "print_step": "50"})
    assert settings is not None, errors
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    result = search(data, OPS, layers, settings, device, max_steps_per_epoch=steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - started
    steps_run = result.history[0]["steps"]
    full_steps = -(-int(round(settings.train_portion * len(data.y_train))) // batch)
    per_step = result.seconds_per_step
    return {"order": order, "steps": steps_run, "steps_per_full_epoch": full_steps, "seconds": wall,
            "seconds_per_step": per_step, "estimated_seconds_per_full_epoch": per_step * full_steps,
            "validation_seconds": result.history[0]["seconds"] - result.history[0]["train_seconds"],
            "supernet_val_accuracy": result.best_val_accuracy,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def time_eval(data: Dataset, steps: int | None, device: torch.device, layers: int, channels: int, batch: int) -> dict[str, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result = evaluate(DARTS_V2, data, layers, channels, epochs=1, batch_size=batch, lr=0.025, device=device,
                      max_steps_per_epoch=steps)
    steps_run = result.history[0]["steps"]
    full_steps = -(-len(data.y_train) // batch)
    per_step = result.history[0]["seconds"] / max(steps_run, 1)
    return {"steps": steps_run, "steps_per_full_epoch": full_steps, "seconds_per_step": per_step,
            "estimated_seconds_per_full_epoch": per_step * full_steps, "parameters": result.parameters}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nas_gpu", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="CIFAR-10 python batches (cifar-10-batches-py)")
    p.add_argument("--synthetic", action="store_true", help="random CIFAR-shaped tensors instead of CIFAR-10")
    p.add_argument("--device", default=None)
    p.add_argument("--search-steps", type=int, default=None, help="steps per search timing (default: a whole epoch)")
    p.add_argument("--eval-steps", type=int, default=None, help="steps of the evaluation timing (default: a whole epoch)")
    p.add_argument("--orders", nargs="+", default=["first", "second"], choices=["first", "second"])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-layers", type=int, default=20)
    p.add_argument("--eval-channels", type=int, default=36)
    p.add_argument("--eval-batch-size", type=int, default=96)
    args = p.parse_args(argv)
    if not args.synthetic and not args.data_dir:
        print("error: give --data-dir (CIFAR-10 python batches) or --synthetic", file=sys.stderr)
        return 2
    try:
        data = synthetic() if args.synthetic else load_cifar10(args.data_dir)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                           "torch": torch.__version__, "data": data.name, "search": [], "evaluation": None}
    for order in args.orders:
        out["search"].append(time_search(data, order, args.search_steps, device, args.layers, args.channels, args.batch_size))
        print(json.dumps(out["search"][-1]), file=sys.stderr, flush=True)
    out["evaluation"] = time_eval(data, args.eval_steps, device, args.eval_layers, args.eval_channels, args.eval_batch_size)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
