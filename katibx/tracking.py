"""Whether and where a run is tracked in MLflow: the one place that reads the setting (``--mlflow``, ``mlflow=``)
and the experiment's annotation. Free of heavy imports: validation asks it before anything runs."""

from __future__ import annotations

import importlib.util

from katibx.spec import Experiment
from katibx.validation import ValidationError

# An experiment annotation that turns logging on without a flag: "true" (MLflow's default tracking URI, or
# MLFLOW_TRACKING_URI) or a tracking URI; "false" turns it off.
ANNOTATION = "katibx.io/mlflow"
# The Kubeflow pipeline run whose step ran the experiment (set by the tune step): a lineage tag of its MLflow runs.
PIPELINE_RUN_ANNOTATION = "katibx.io/pipeline-run"


def mlflow_target(setting: bool | str | None, experiment: Experiment | None = None, *,
                  name: str = "mlflow") -> str | None:
    """Where an experiment is logged: ``setting`` (True or "": MLflow's default; a tracking URI; False: nowhere),
    else the ``experiment``'s :data:`ANNOTATION`; None for no logging. ValidationError naming the setting (``name``:
    how the caller calls it) for one of another type, or when mlflow is not installed."""
    source = name
    if setting is None and experiment is not None:
        source = f"metadata.annotations.{ANNOTATION}"
        setting = (experiment.metadata.annotations or {}).get(ANNOTATION)
        if isinstance(setting, str) and setting.strip().lower() in ("true", "false"):
            setting = setting.strip().lower() == "true"
    if setting is None or setting is False:
        return None
    if not isinstance(setting, (bool, str)):
        raise ValidationError([f"{source}: must be True or a tracking URI, got {type(setting).__name__}"])
    if importlib.util.find_spec("mlflow") is None:
        raise ValidationError([f"{source}: needs mlflow: pip install 'katibx[mlflow]'"])
    return "" if setting is True else setting.strip()
