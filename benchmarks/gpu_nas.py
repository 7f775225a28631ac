"""The NAS rows of ``python -m benchmarks.gpu``: a CIFAR-10 DARTS search epoch (first and second order) and an
evaluation epoch, and an ENAS controller step and child training step.

DARTS search as the paper's and Katib's: 8 cells, 16 channels, 4 nodes, all 8 operations, batch 64, the training
set split 25k/25k; the evaluation network the paper's (20 cells, 36 channels, batch 96, the 50k training images)
for the DARTS_V2 genotype; bf16 autocast and channels-last on CUDA. ENAS as Katib's ``enas-gpu.yaml``: its 8 layers
and operations; the controller (on the CPU, where the algorithm runs) sampling and training on a round of
``parallelTrialCount`` rewards; a child network of a sampled architecture training on batches of 128.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from benchmarks.common import REPO
from katibx.nas.data import Dataset
from katibx.nas.evaluate import evaluate
from katibx.nas.genotype import Genotype
from katibx.nas.settings import parse_settings
from katibx.nas.trainer import search

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


ENAS_GPU = REPO / "tests" / "data" / "katib-examples" / "nas" / "enas-gpu.yaml"  # Katib's own, unchanged


def time_enas(data: Dataset, device: torch.device, controller_steps: int, child_steps: int, batch: int,
              architectures: int = 3) -> dict[str, Any]:
    """Katib's enas-gpu.yaml: the controller's sampling and REINFORCE steps on one round of rewards (CPU, as the
    algorithm runs them), and the child training step (the trial's: Adam, fp32) of ``architectures`` sampled ones."""
    import yaml

    from katibx.loader import experiment_from_dict
    from katibx.nas.enas_child import ChildNetwork
    from katibx.nas.enas_controller import Controller, ControllerSettings, Trainer
    from katibx.nas.enas_space import enas_space

    experiment = experiment_from_dict(yaml.safe_load(ENAS_GPU.read_text()))
    space, errors = enas_space(experiment.spec.nas_config)
    assert space is not None, errors
    settings = ControllerSettings(train_steps=controller_steps)
    generator = torch.Generator().manual_seed(0)
    controller = Controller(space.num_layers, len(space.operations), settings).initialise(generator)
    round_size = experiment.spec.parallel_trial_count or 1
    started = time.perf_counter()
    with torch.no_grad():
        sampled = [controller(generator=generator)[0] for _ in range(max(round_size, architectures))]
    sample_seconds = (time.perf_counter() - started) / len(sampled)
    trainer = Trainer(controller)
    rewards = torch.rand(round_size, generator=generator).tolist()
    started = time.perf_counter()
    trainer.train_round(list(zip(sampled[:round_size], rewards)))
    step_seconds = (time.perf_counter() - started) / controller_steps
    x = data.x_train[: batch * 4].to(device)
    y = data.y_train[: batch * 4].to(device)
    children = []
    for architecture in sampled[:architectures]:
        torch.manual_seed(0)
        model = ChildNetwork(architecture, space.nn_config(architecture)).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(i: int) -> None:
            xb, yb = x[(i % 4) * batch:(i % 4 + 1) * batch], y[(i % 4) * batch:(i % 4 + 1) * batch]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()

        for i in range(2):  # warm-up: cuDNN picks its kernels
            step(i)
        _synchronize(device)
        started = time.perf_counter()
        for i in range(child_steps):
            step(i)
        _synchronize(device)
        per_step = (time.perf_counter() - started) / child_steps
        children.append({"architecture": architecture, "parameters": sum(p.numel() for p in model.parameters()),
                         "seconds_per_step": per_step,
                         "estimated_seconds_per_full_epoch": per_step * -(-len(data.y_train) // batch)})
    return {"layers": space.num_layers, "operations": len(space.operations), "round_size": round_size,
            "controller_sample_seconds": sample_seconds, "controller_step_seconds": step_seconds,
            "controller_round_seconds": step_seconds * ControllerSettings().train_steps,
            "child_batch_size": batch, "child_steps": child_steps, "children": children,
            "child_seconds_per_step_median": statistics.median(c["seconds_per_step"] for c in children)}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
