"""Train the discrete network a genotype describes from scratch and report its test accuracy.

Command line: ``python -m katibx.nas.evaluate --genotype "Genotype(...)" --dataset digits`` (or ``--genotype-file``
pointing at the genotype.json a search saved).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from katibx.nas.data import DATASETS, DataError, Dataset, batches, load_dataset
from katibx.nas.genotype import Genotype
from katibx.nas.model_eval import EvalNetwork
from katibx.nas.trainer import accuracy, autocast, pick_device, prepare, to_device

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Test accuracy of the retrained network, its size and the per-epoch history."""

    test_accuracy: float
    train_accuracy: float
    parameters: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / max(len(self.history), 1)


def evaluate(genotype: Genotype, dataset: Dataset, num_layers: int = 5, init_channels: int = 16, epochs: int = 30,
             batch_size: int = 64, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 3e-4,
             grad_clip: float = 5.0, stem_multiplier: int = 3, seed: int = 0, device: torch.device | None = None,
             on_epoch: Callable[[dict[str, Any]], None] | None = None, max_steps_per_epoch: int | None = None) -> EvalResult:
    """Train ``EvalNetwork(genotype)`` on the whole training set (SGD, cosine schedule) and test it once at the end."""
    device = device or pick_device()
    torch.manual_seed(seed)
    model = prepare(EvalNetwork(genotype, num_layers, init_channels, dataset.num_classes, stem_multiplier,
                                dataset.in_channels), device)
    x, y = to_device(dataset.x_train, dataset.y_train, device)
    x_test, y_test = to_device(dataset.x_test, dataset.y_test, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    gen = torch.Generator().manual_seed(seed + 1)
    history = []
    started = time.perf_counter()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        correct = torch.zeros((), dtype=torch.int64, device=device)  # on the device: no host sync per step
        seen = steps = 0
        for xb, yb in batches(x, y, batch_size, gen, augment=dataset.augment):
            if max_steps_per_epoch is not None and steps >= max_steps_per_epoch:
                break
            with autocast(device):
                logits = model(xb)
                loss = nn.functional.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            correct += (logits.argmax(1) == yb).sum()
            seen += len(yb)
            steps += 1
        scheduler.step()
        record = {"epoch": epoch + 1, "train_accuracy": int(correct) / max(seen, 1), "loss": float(loss.detach()),
                  "seconds": time.perf_counter() - t0, "steps": steps}
        history.append(record)
        log.info("evaluation epoch %d/%d: train accuracy %.4f, loss %.4f", epoch + 1, epochs, record["train_accuracy"], record["loss"])
        if on_epoch is not None:
            on_epoch(record)
    test = accuracy(model, x_test, y_test, batch_size, device)
    params = sum(p.numel() for p in model.parameters())
    return EvalResult(test, history[-1]["train_accuracy"] if history else 0.0, params, time.perf_counter() - started, history)


def all_skip_genotype(num_nodes: int = 4) -> Genotype:
    """The collapsed cell DARTS drifts to: every normal edge a skip connection, reductions by max pooling."""
    concat = list(range(2, 2 + num_nodes))
    return Genotype([[("skip_connection", 0), ("skip_connection", 1)] for _ in range(num_nodes)], concat,
                    [[("max_pooling_3x3", 0), ("max_pooling_3x3", 1)] for _ in range(num_nodes)], concat)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m katibx.nas.evaluate", description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--genotype", help="Katib's Genotype(...) string or JSON")
    source.add_argument("--genotype-file", type=Path, help="a genotype.json saved by a search")
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--data-dir", default="./data", help="folder holding CIFAR-10's python batches")
    p.add_argument("--num-layers", type=int, default=5)
    p.add_argument("--init-channels", type=int, default=16)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: a GPU when there is one)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: prints ``Test-Accuracy=<value>`` (and reports it inside a katibx trial)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        for name in ("num_layers", "init_channels", "epochs", "batch_size"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}: must be >= 1 (got {getattr(args, name)})")
        if args.genotype_file is not None:
            try:
                text = args.genotype_file.read_text()
            except OSError as exc:
                raise ValueError(f"--genotype-file: {exc}") from None
            data = json.loads(text)
            genotype = Genotype.from_dict(data) if isinstance(data, dict) else Genotype.parse(str(data))
        else:
            genotype = Genotype.parse(args.genotype)
        dataset = load_dataset(args.dataset, args.data_dir)
        result = evaluate(genotype, dataset, args.num_layers, args.init_channels, args.epochs, args.batch_size,
                          args.lr, seed=args.seed, device=pick_device(args.device))
    except (ValueError, DataError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from katibx.nas.run_trial import publish

    publish({"Test-Accuracy": result.test_accuracy})
    print(f"parameters {result.parameters}, {result.seconds:.1f}s ({result.seconds_per_epoch:.2f}s/epoch)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
