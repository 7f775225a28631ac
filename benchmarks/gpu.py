"""``python -m benchmarks.gpu``: what a GPU node gives katibx's users, in one command (under 10 minutes on one
modern GPU at the default sizes): DARTS and ENAS step times on CIFAR-10-sized data, and an HPO sweep of a small CNN
with its trials sharing the node's GPUs as the local backend schedules them (trials per hour, GPU utilisation).

    python -m benchmarks.gpu                                # CIFAR-shaped random data (timing only)
    python -m benchmarks.gpu --data-dir DIR                 # CIFAR-10's python batches (cifar-10-batches-py)
    python -m benchmarks.gpu --only sweep --sweep-trials 32
    python -m benchmarks.gpu --quick --out /tmp/gpu         # tiny sizes on the CPU (the test suite runs it)

Each section runs in a fresh interpreter (the sweep's trial workers are forked, and CUDA cannot be used in a
process forked after it was initialised; each section also starts with the device's memory empty), one at a time
(side by side with --quick). The DARTS epochs are timed over their first 100 steps and extrapolated
(``--search-steps 0 --eval-steps 0``: whole epochs).
Writes ``<device>-x<GPUs>[-quick][-<sections>].json`` and ``.md`` to ``--out`` (default ``benchmarks/results/gpu/``)
after each section.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, environment

SECTIONS = ("darts", "enas", "sweep")
# (full, quick) sizes; quick is for the CPU: every code path at a size that takes seconds.
SIZES = {
    "data": ((50_000, 10_000), (64, 32)),
    "darts": ({"layers": 8, "channels": 16, "batch": 64, "eval_layers": 20, "eval_channels": 36, "eval_batch": 96},
              {"layers": 2, "channels": 4, "batch": 8, "eval_layers": 2, "eval_channels": 4, "eval_batch": 8,
               "search_steps": 2, "eval_steps": 2}),
    "enas": ({"controller_steps": 50, "child_steps": 50, "batch": 128},
             {"controller_steps": 2, "child_steps": 2, "batch": 8}),
    "sweep": ({"trials": 16, "steps": 1500, "batch": 256}, {"trials": 4, "steps": 2, "batch": 8}),
}


def _section(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one section in this process (the child side of :func:`main`)."""
    quick = int(args.quick)
    if name == "sweep":
        import torch  # noqa: F401 - imported (not initialised) before the trial workers are forked: they share it

        from benchmarks.gpu_sweep import sweep
        from katibx.gpus import discover_gpus

        sizes = {**SIZES["sweep"][quick], **({"trials": args.sweep_trials} if args.sweep_trials else {})}
        gpus = len(discover_gpus())
        if not gpus:
            raise SystemExit("the sweep needs GPUs: none found (set KATIBX_GPUS=0,1,... to name or simulate them)")
        return {"gpus": gpus, "arms": [sweep(arm, gpus, sizes["trials"], sizes["steps"], sizes["batch"])
                                       for arm in ("scheduled", "shared")]}
    import torch

    from benchmarks.gpu_nas import synthetic, time_enas, time_eval, time_search
    from katibx.nas.data import DataError, load_cifar10
    from katibx.nas.trainer import pick_device

    try:
        data = load_cifar10(args.data_dir) if args.data_dir else synthetic(*SIZES["data"][quick])
    except DataError as exc:
        raise SystemExit(str(exc)) from None
    device = pick_device("cpu" if args.quick else None)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if name == "enas":
        sizes = SIZES["enas"][quick]
        return time_enas(data, device, sizes["controller_steps"], sizes["child_steps"], sizes["batch"])
    sizes = SIZES["darts"][quick]
    steps = sizes.get("search_steps", args.search_steps or None)
    return {"data": data.name,
            "search": [time_search(data, order, steps, device, sizes["layers"], sizes["channels"], sizes["batch"])
                       for order in ("first", "second")],
            "evaluation": time_eval(data, sizes.get("eval_steps", args.eval_steps or None), device, sizes["eval_layers"],
                                    sizes["eval_channels"], sizes["eval_batch"])}


def _device() -> dict[str, Any]:
    """The GPUs nvidia-smi lists (name, memory, driver), or the CPU when it lists none or fails."""
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        listed = None
    rows = [] if listed is None or listed.returncode != 0 else \
        [parts for parts in ([p.strip() for p in line.split(",")] for line in listed.stdout.splitlines()) if len(parts) == 3]
    if not rows:
        return {"name": "cpu", "gpus": 0}
    return {"name": rows[0][0], "gpus": len(rows), "memory": rows[0][1], "driver": rows[0][2]}


def markdown(result: dict[str, Any]) -> str:
    """The results as the Markdown table committed beside the JSON."""
    device, sections = result["device"], result["sections"]
    lines = [f"# GPU benchmark: {device['name']} x{device['gpus']}", "",
             f"`python -m benchmarks.gpu{' --quick' if result['quick'] else ''}`, torch {result['torch']}, "
             f"commit {(result['environment']['git'].get('commit') or '?')[:10]}, {result['wall_seconds']:.0f} s in all.", "",
             "| row | measured |", "|---|---|"]
    darts = sections.get("darts")
    if darts:
        for row in darts["search"]:
            lines.append(f"| DARTS search, {row['order']} order ({darts['data']}) | {row['seconds_per_step'] * 1000:.1f} ms/step, "
                         f"{row['estimated_seconds_per_full_epoch']:.0f} s per epoch of {row['steps_per_full_epoch']} steps"
                         + (f" (from {row['steps']})" if row["steps"] < row["steps_per_full_epoch"] else "")
                         + (f", peak {row['peak_memory_gib']:.1f} GiB |" if row.get("peak_memory_gib") else " |"))
        ev = darts["evaluation"]
        lines.append(f"| DARTS evaluation network (DARTS_V2, {ev['parameters'] / 1e6:.2f} M parameters) | "
                     f"{ev['seconds_per_step'] * 1000:.1f} ms/step, {ev['estimated_seconds_per_full_epoch']:.0f} s per epoch of "
                     f"{ev['steps_per_full_epoch']} steps" + (f" (from {ev['steps']})" if ev["steps"] < ev["steps_per_full_epoch"]
                                                             else "") + " |")
    enas = sections.get("enas")
    if enas:
        lines.append(f"| ENAS controller ({enas['layers']} layers, {enas['operations']} operations; CPU) | sample "
                     f"{enas['controller_sample_seconds'] * 1000:.1f} ms, REINFORCE step {enas['controller_step_seconds'] * 1000:.1f} ms "
                     f"on a round of {enas['round_size']}, {enas['controller_round_seconds']:.2f} s per round |")
        lines.append(f"| ENAS child training step (batch {enas['child_batch_size']}, median of {len(enas['children'])} "
                     f"architectures) | {enas['child_seconds_per_step_median'] * 1000:.1f} ms/step |")
    sweep = sections.get("sweep")
    if sweep:
        for arm in sweep["arms"]:
            use = arm["utilisation"]
            lines.append(f"| HPO sweep, {arm['arm']} ({arm['parallel_trial_count']} parallel, {arm['gpus_per_trial']} "
                         f"GPU per trial, {arm['steps_per_trial']} steps of batch {arm['batch_size']}) | "
                         f"{arm['trials_per_hour']:.0f} trials/hour ({arm['succeeded']}/{arm['trials']} in {arm['seconds']:.0f} s)"
                         + (f", GPU utilisation {use['mean_utilisation_percent']:.0f} %, peak {use['peak_memory_mib']:.0f} MiB |"
                            if use else " |"))
    for name, error in result.get("errors", {}).items():
        lines.append(f"| {name} | failed: {error} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--quick", action="store_true", help="tiny sizes on the CPU (sweep GPUs simulated: KATIBX_GPUS)")
    p.add_argument("--data-dir", help="CIFAR-10's python batches (default: CIFAR-shaped random tensors)")
    p.add_argument("--search-steps", type=int, default=100,
                   help="DARTS search steps timed, then extrapolated to the epoch (0: the whole epoch; default 100)")
    p.add_argument("--eval-steps", type=int, default=100,
                   help="DARTS evaluation steps timed, then extrapolated to the epoch (0: the whole epoch; default 100)")
    p.add_argument("--sweep-trials", type=int, default=None, help="trials per sweep arm (default 16)")
    p.add_argument("--section-timeout", type=float, default=900, help="seconds a section may take (default 900)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu")
    p.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)  # the child process's one section
    args = p.parse_args(argv)
    if args.section:
        print(json.dumps(_section(args.section, args)))
        return 0
    import torch

    started = time.monotonic()
    env = dict(os.environ)
    if args.quick:
        env.setdefault("KATIBX_GPUS", "0,1")  # the sweep's scheduling on a machine without GPUs
    device = _device()
    # One file per device, GPU count and kind of run: a quick run or a run of some sections never replaces a full one.
    stem = "-".join([re.sub(r"[^a-z0-9]+", "-", device["name"].lower()).strip("-"), f"x{device['gpus']}",
                     *(["quick"] if args.quick else []), *(args.only if set(args.only) != set(SECTIONS) else [])])
    result: dict[str, Any] = {"device": device, "quick": args.quick, "torch": torch.__version__, "sections": {},
                              "environment": environment()}
    errors: dict[str, str] = {}
    common = [*(["--quick"] if args.quick else []),
              *(["--data-dir", str(Path(args.data_dir).resolve())] if args.data_dir else []),
              *[f"--{name.replace('_', '-')}={value}" for name, value in
                (("search_steps", args.search_steps), ("eval_steps", args.eval_steps), ("sweep_trials", args.sweep_trials))
                if value is not None]]
    def run_section(name: str) -> tuple[str, str | None, dict[str, Any] | None]:
        try:
            ran = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--section", name, *common], cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=args.section_timeout)
        except subprocess.TimeoutExpired:
            return name, f"did not finish in {args.section_timeout:.0f} s (--section-timeout)", None
        if ran.returncode != 0:
            return name, (ran.stderr.strip().splitlines() or [f"exit {ran.returncode}"])[-1], None
        return name, None, json.loads(ran.stdout.strip().splitlines()[-1])

    # One section at a time on a GPU node (they would share the devices); side by side with --quick, whose sizes
    # mean nothing but that every path runs.
    with ThreadPoolExecutor(max_workers=len(args.only) if args.quick else 1) as pool:
        for name, error, section in pool.map(run_section, args.only):
            if error is None:
                result["sections"][name] = section
            else:
                errors[name] = error
            print(f"{name}: {error or 'done'} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
            result.update(wall_seconds=time.monotonic() - started, **({"errors": errors} if errors else {}))
            _write(args.out, stem, result)  # after each section: a run cut short keeps what it measured
    print(markdown(result))
    return 1 if errors else 0


def _write(out: Path, stem: str, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))


if __name__ == "__main__":
    sys.exit(main())
