"""katibx: Kubeflow Katib experiments anywhere, from the same v1beta1 YAML or a few lines of Python."""

from katibx import search
from katibx.client import KatibxClient
from katibx.loader import load_experiment
from katibx.report import report_metrics
from katibx.runner import resume_experiment, run_experiment
from katibx.spec import Experiment
from katibx.store import Store, StoreError
from katibx.tune import tune
from katibx.validation import ValidationError

KatibClient = KatibxClient  # Katib's name, for code ported from kubeflow.katib

__all__ = [
    "Experiment", "KatibClient", "KatibxClient", "Store", "StoreError", "ValidationError", "load_experiment",
    "report_metrics", "resume_experiment", "run_experiment", "search", "tune",
]
