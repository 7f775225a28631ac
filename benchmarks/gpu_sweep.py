"""The sweep rows of ``python -m benchmarks.gpu``: an HPO sweep of a small CNN through ``katibx.tune`` on the
node's GPUs, as the local backend schedules them, with nvidia-smi sampling the devices' utilisation meanwhile.

Two arms of the same trials: **scheduled** (each trial asks for one GPU, ``parallel_trial_count`` = the GPUs: one
trial per device) and **shared** (trials ask for none and all see every device, twice as many at a time: what
small trials gain by sharing a device, and what they lose; on several GPUs each trial picks one by its process
id). Run in a process that has imported torch (the forked trial workers inherit it: what is timed is the trials'
work and their CUDA start, not an import) but not initialised CUDA, which a forked process could not use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import katibx
from katibx.trial import TrialState

UTILISATION_PERIOD = 0.5  # seconds between nvidia-smi samples


def small_cnn(params: dict[str, Any]) -> dict[str, float]:
    """One trial: a two-convolution CNN trained with SGD on CIFAR-shaped data whose labels a fixed random linear
    map of the images decides (learnable, no download); the held-out accuracy."""
    import torch
    from torch import nn

    # One device of those the trial sees: its own in the scheduled arm; in the shared arm, where every trial sees
    # every device, spread by process id (as users do by hand without a scheduler)
    device = torch.device(f"cuda:{os.getpid() % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    batch, steps, channels = int(params["batch_size"]), int(params["steps"]), int(params["channels"])
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch * 8, 3, 32, 32, generator=generator)
    y = (x.flatten(1) @ torch.randn(3 * 32 * 32, 10, generator=generator)).argmax(1)
    x, y = x.to(device), y.to(device)
    train, test = slice(0, batch * 6), slice(batch * 6, None)
    torch.manual_seed(int(params.get("seed", 0)))
    model = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(2 * channels * 64, 10)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(params["lr"]), momentum=float(params["momentum"]))
    xt, yt = x[train], y[train]
    for step in range(steps):
        i = (step % 6) * batch
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(xt[i:i + batch]), yt[i:i + batch]).backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = float((model(x[test]).argmax(1) == y[test]).float().mean())
    return {"accuracy": accuracy}


class UtilisationSampler:
    """nvidia-smi's utilisation and memory of each device every :data:`UTILISATION_PERIOD` seconds, in a thread;
    nothing where there is no nvidia-smi."""

    def __init__(self) -> None:
        self.samples: list[tuple[str, float, float]] = []  # (device index, utilisation %, memory MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.tool = shutil.which("nvidia-smi")

    def __enter__(self) -> UtilisationSampler:
        if self.tool:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(UTILISATION_PERIOD):
            try:
                out = subprocess.run([str(self.tool), "--query-gpu=index,utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
            except (OSError, subprocess.SubprocessError):
                continue
            for line in out.stdout.splitlines():
                parts = [p.strip() for p in line.split(",")]
                try:
                    self.samples.append((parts[0], float(parts[1]), float(parts[2])))
                except (IndexError, ValueError):
                    continue

    def summary(self) -> dict[str, Any] | None:
        """Mean utilisation of each device and over all, peak memory; None without samples."""
        if not self.samples:
            return None
        devices = sorted({d for d, _, _ in self.samples})
        per_device = {d: sum(u for e, u, _ in self.samples if e == d) / sum(1 for e, _, _ in self.samples if e == d)
                      for d in devices}
        return {"mean_utilisation_percent": sum(per_device.values()) / len(per_device),
                "per_device_percent": per_device, "peak_memory_mib": max(m for _, _, m in self.samples),
                "samples": len(self.samples) // len(devices)}


def sweep(arm: str, gpus: int, trials: int, steps: int, batch: int) -> dict[str, Any]:
    """One arm (``scheduled`` or ``shared``) of ``trials`` trials in a fresh store: trials per hour, utilisation."""
    scheduled = arm == "scheduled"
    parallel = min(trials, gpus if scheduled else 2 * gpus)
    with tempfile.TemporaryDirectory() as folder, UtilisationSampler() as sampler:
        started = time.monotonic()
        result = katibx.tune(
            f"gpu-sweep-{arm}", small_cnn,
            {"lr": katibx.search.double(0.003, 0.3, distribution="logUniform"), "momentum": katibx.search.double(0.0, 0.95),
             "channels": katibx.search.categorical([16, 32, 64]), "steps": steps, "batch_size": batch},
            store=str(Path(folder) / "katibx.db"), objective_metric_name="accuracy", max_trial_count=trials,
            parallel_trial_count=parallel, resources_per_trial={"gpu": 1} if scheduled else None,
            algorithm_name="random", algorithm_settings={"random_state": 0}, progress=False)
        seconds = time.monotonic() - started
    succeeded = sum(1 for t in result.trials if t.state == TrialState.SUCCEEDED)
    return {"arm": arm, "parallel_trial_count": parallel, "gpus_per_trial": 1 if scheduled else 0, "trials": trials,
            "succeeded": succeeded, "steps_per_trial": steps, "batch_size": batch, "seconds": seconds,
            "trials_per_hour": succeeded / seconds * 3600, "best_accuracy": result.best_value,
            "utilisation": sampler.summary()}
