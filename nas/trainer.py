"""The DARTS search loop: alternate alpha steps on the validation split and weight steps on the training split."""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import torch
from torch import nn

from katibx.nas.architect import Architect
from katibx.nas.data import Dataset, batches
from katibx.nas.genotype import Genotype
from katibx.nas.model_search import SearchNetwork
from katibx.nas.search_space import SKIP
from katibx.nas.settings import DartsSettings

log = logging.getLogger(__name__)
EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class SearchResult:
    """What a search found: the best epoch's genotype and the per-epoch history."""

    genotype: Genotype
    best_epoch: int
    best_val_accuracy: float
    seed: int
    history: list[dict[str, Any]] = field(default_factory=list)
    alphas: dict[str, list[list[float]]] = field(default_factory=dict)
    stopped_early: bool = False
    capped: bool = False  # no epoch respected max_skip_connections: the genotype was capped instead

    @property
    def seconds_per_epoch(self) -> float:
        return sum(h["seconds"] for h in self.history) / max(len(self.history), 1)

    @property
    def seconds_per_step(self) -> float:
        """Training-loop time (alpha step + weight step) per step, without the end-of-epoch validation."""
        return sum(h["train_seconds"] for h in self.history) / max(sum(h["steps"] for h in self.history), 1)


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` if given, else the first GPU when there is one, else the CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 mixed precision on a GPU; nothing on the CPU (where it does not pay off for these small ops)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


M = TypeVar("M", bound=nn.Module)


def prepare(model: M, device: torch.device) -> M:
    """Move the model to ``device``, channels-last on a GPU."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels on ``device`` (images channels-last on a GPU)."""
    x = x.to(device, non_blocking=True)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` on (x, y), in batches, in eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    size = len(y) if batch_size is None else max(batch_size, 256)
    for start in range(0, len(y), size):
        with autocast(device):
            logits = model(x[start:start + size])
        correct += int((logits.argmax(1) == y[start:start + size]).sum())
    model.train(was_training)
    return correct / max(len(y), 1)


def _cycle(x: torch.Tensor, y: torch.Tensor, batch_size: int | None, gen: torch.Generator,
           augment: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless validation batches: one persistent iterator, reshuffled on every pass (not a new one per step)."""
    while True:
        yield from batches(x, y, batch_size, gen, augment=augment)


def search(dataset: Dataset, primitives: list[str], num_layers: int, settings: DartsSettings,
           device: torch.device | None = None, on_epoch: EpochCallback | None = None,
           max_steps_per_epoch: int | None = None) -> SearchResult:
    """Run a DARTS search and return the genotype of the epoch with the best supernet validation accuracy.

    ``on_epoch`` receives each epoch's record (validation accuracy, genotype, timing) as it ends, so a trial
    can stream it to the controller. ``max_steps_per_epoch`` shortens epochs (benchmarks, GPU timing).
    """
    device = device or pick_device()
    seed = settings.random_state if settings.random_state is not None else secrets.randbelow(2**31)
    torch.manual_seed(seed)
    model = SearchNetwork(primitives, num_layers, settings.init_channels, dataset.num_classes,
                          settings.num_nodes, settings.stem_multiplier, dataset.in_channels)
    model = prepare(model, device)
    (xt, yt), (xv, yv) = dataset.split(settings.train_portion, seed)
    xt, yt = to_device(xt, yt, device)
    xv, yv = to_device(xv, yv, device)
    weights = model.weights()
    w_optimizer = torch.optim.SGD(weights, lr=settings.w_lr, momentum=settings.w_momentum,
                                  weight_decay=settings.w_weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_optimizer, settings.num_epochs, eta_min=settings.w_lr_min)
    architect = Architect(model, settings.alpha_lr, settings.alpha_weight_decay, settings.order,
                          settings.w_momentum, settings.w_weight_decay)
    gen = torch.Generator().manual_seed(seed + 1)
    val_batches = _cycle(xv, yv, settings.batch_size, gen, dataset.augment)
    log.info("darts search: seed %d, %d layers, %d nodes, ops %s, %s order, %d train / %d val images on %s",
             seed, num_layers, settings.num_nodes, model.primitives, settings.order, len(yt), len(yv), device)
    history: list[dict[str, Any]] = []
    best: tuple[float, int, Genotype] | None = None
    stopped_early = False
    for epoch in range(settings.num_epochs):
        started = time.perf_counter()
        lr = float(scheduler.get_last_lr()[0])
        train_alpha = epoch >= settings.warmup_epochs and settings.alpha_lr > 0
        model.train()
        loss_sum = torch.zeros((), device=device)  # kept on the device: no host sync per step
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = steps = 0
        for x, y in batches(xt, yt, settings.batch_size, gen, augment=dataset.augment):
            if max_steps_per_epoch is not None and steps >= max_steps_per_epoch:
                break
            if train_alpha:
                x_val, y_val = next(val_batches)
                architect.step(x, y, x_val, y_val, xi=lr, w_optimizer=w_optimizer)
            with autocast(device):
                logits = model(x)
                loss = nn.functional.cross_entropy(logits, y)
            w_optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=weights)  # alphas get no gradient from the training loss
            if settings.w_grad_clip > 0:
                nn.utils.clip_grad_norm_(weights, settings.w_grad_clip)
            w_optimizer.step()
            steps += 1
            loss_sum += loss.detach().float() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if steps % settings.print_step == 0:
                log.info("epoch %d step %d: train loss %.4f, train accuracy %.4f", epoch + 1, steps,
                         float(loss_sum) / seen, int(correct) / seen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - started
        scheduler.step()
        val_accuracy = accuracy(model, xv, yv, settings.batch_size, device)
        genotype = model.genotype()
        skips = genotype.count(SKIP)
        record = {
            "epoch": epoch + 1, "train_loss": float(loss_sum) / max(seen, 1), "train_accuracy": int(correct) / max(seen, 1),
            "val_accuracy": val_accuracy, "genotype": str(genotype), "skip_connections": skips,
            "alphas_trained": train_alpha, "seconds": time.perf_counter() - started, "train_seconds": train_seconds,
            "steps": steps, "lr": lr,
        }
        history.append(record)
        log.info("epoch %d/%d: val accuracy %.4f, train loss %.4f, %d skip connections, %.1fs, genotype %s",
                 epoch + 1, settings.num_epochs, val_accuracy, record["train_loss"], skips, record["seconds"], genotype)
        if on_epoch is not None:
            on_epoch(record)
        eligible = train_alpha or settings.alpha_lr == 0
        over_limit = settings.max_skip_connections is not None and skips > settings.max_skip_connections
        if eligible and over_limit:
            log.info("epoch %d: the normal cell has %d skip connections (> max_skip_connections %d): stopping the "
                     "search (DARTS+ early stop)", epoch + 1, skips, settings.max_skip_connections)
            stopped_early = True
            break
        if eligible and (best is None or val_accuracy > best[0]):
            best = (val_accuracy, epoch + 1, genotype)
    capped = False
    if best is None:  # every eligible epoch broke the skip limit (or none was eligible): cap the last alphas
        capped = settings.max_skip_connections is not None and stopped_early
        best = (history[-1]["val_accuracy"], history[-1]["epoch"], model.genotype(max_skip=settings.max_skip_connections))
    alphas = {"normal": torch.softmax(model.alpha_normal.detach().float(), -1).cpu().tolist()}
    if model.reductions:
        alphas["reduce"] = torch.softmax(model.alpha_reduce.detach().float(), -1).cpu().tolist()
    if not math.isfinite(history[-1]["train_loss"]):
        log.warning("the training loss is not finite: lower w_lr or alpha_lr")
    return SearchResult(best[2], best[1], best[0], seed, history, alphas, stopped_early, capped)
