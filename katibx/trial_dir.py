"""The trial folder layout and the environment a trial gets: the one module that knows both.

Every trial has a folder beside the store (``trials/<namespace>/<experiment>/<trial>``) holding its output, the
metrics it pushes, its checkpoint and the files its collector reads; the variables below tell the trial where.
Kept free of heavy imports: ``katibx.report_metrics`` inside a trial imports it.
"""

from __future__ import annotations

import os
from pathlib import Path

TRIALS_FOLDER = "trials"  # beside the store's database file
STDOUT_LOG = "stdout.log"  # the trial's stdout and stderr (``katibx logs``)
PUSH_FILE = "metrics.jsonl"  # ``katibx.report_metrics`` appends here on local and Ray workers
PUSHED_FILE = "pushed.jsonl"  # records the Kubernetes push endpoint accepted, kept across a resume
CHECKPOINT_DIR = "checkpoint"  # the trial's own state; a child trial starts from a copy of its parent's
DATASETS_FILE = "datasets.json"  # the datasets a trial used ([{"name", "digest", "source"}]): its MLflow inputs
FILES_DIR = "files"  # File / TensorFlowEvent paths named in the command are moved here
STOP_FILE = ".katibx-stop"  # there once early stopping has asked the trial to stop (katibx.should_prune)
PRUNABLE_FILE = ".katibx-prunable"  # there once the trial has called katibx.should_prune: it can stop by itself
RAY_WORKER_FILE = "ray-worker.json"  # where on a Ray node the trial's process runs, to stop it after a crash

# The environment of every trial.
TRIAL_NAME_ENV = "KATIB_TRIAL_NAME"  # Katib's own name for it
EXPERIMENT_ENV = "KATIBX_EXPERIMENT"
TRIAL_DIR_ENV = "KATIBX_TRIAL_DIR"
METRICS_FILE_ENV = "KATIBX_METRICS_FILE"
CHECKPOINT_ENV = "KATIBX_CHECKPOINT_DIR"
PUSH_URL_ENV = "KATIBX_PUSH_URL"  # instead of the metrics file, in a Kubernetes pod
PUSH_TOKEN_ENV = "KATIBX_PUSH_TOKEN"


def experiment_dir(root: Path, namespace: str, experiment: str) -> Path:
    """The folder holding every trial folder of an experiment (``root`` is the store's folder)."""
    return root / TRIALS_FOLDER / namespace / experiment


def trial_dir(root: Path, namespace: str, experiment: str, trial: str) -> Path:
    return experiment_dir(root, namespace, experiment) / trial


def trial_environment(folder: Path, experiment: str, trial: str) -> dict[str, str]:
    """The variables a trial running on this machine's filesystem gets (on top of the controller's own)."""
    return {
        "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1"),  # metrics lines arrive as they are printed
        TRIAL_NAME_ENV: trial,
        EXPERIMENT_ENV: experiment,
        TRIAL_DIR_ENV: str(folder),
        METRICS_FILE_ENV: str(folder / PUSH_FILE),
        CHECKPOINT_ENV: str(folder / CHECKPOINT_DIR),
    }
