"""katibx: Kubeflow Katib experiments anywhere, from the same v1beta1 YAML or a few lines of Python.

Names are imported on first use, so a trial that only calls ``katibx.report_metrics`` starts fast and
plugins can import katibx's modules without import cycles.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS = {
    # plugin contracts
    "AlgorithmSettingsError": "katibx.search_algorithm",
    "Backend": "katibx.backend",
    "BackendOption": "katibx.backend",
    "BackendUnavailable": "katibx.backend",
    "ClusterError": "katibx.backend",
    "WorkspaceError": "katibx.backend",
    "EarlyStoppingAlgorithm": "katibx.early_stopping",
    "MetricLog": "katibx.metrics",
    "SearchAlgorithm": "katibx.search_algorithm",
    "Suggestion": "katibx.search_algorithm",
    "TrialEvent": "katibx.backend",
    "TrialExited": "katibx.backend",
    "TrialJob": "katibx.backend",
    "TrialMetrics": "katibx.backend",
    "TrialRecord": "katibx.trial",
    "TrialStartError": "katibx.backend",
    "TrialState": "katibx.trial",
    "TrialResult": "katibx.results",
    "TuneError": "katibx.tuning",
    "TuneResult": "katibx.results",
    # using katibx
    "Experiment": "katibx.spec",
    "KatibxClient": "katibx.client",
    "KatibClient": "katibx.katib_client",
    "Store": "katibx.store",
    "StoreError": "katibx.store",
    "ValidationError": "katibx.validation",
    "load_experiment": "katibx.loader",
    "report_metrics": "katibx.report",
    "should_prune": "katibx.report",
    "TrialPruned": "katibx.report",
    "resume_experiment": "katibx.runner",
    "run_experiment": "katibx.runner",
    "search": "katibx.search",
    "tune": "katibx.tuning",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("katibx")
        except PackageNotFoundError:  # run from a source tree that was never installed
            raise AttributeError("katibx.__version__: katibx is not installed") from None
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'katibx' has no attribute {name!r}")
    if name == "search":
        return importlib.import_module(module)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
