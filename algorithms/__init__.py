"""Search-algorithm plugins (entry-point group ``katibx.algorithms``) and their contract.

The optuna- and scikit-optimize-backed algorithms are imported on first use, so importing katibx imports neither.
"""

from __future__ import annotations

import importlib
from typing import Any

from katibx.algorithms.base import AlgorithmSettingsError, SearchAlgorithm, Suggestion
from katibx.algorithms.grid_search import GridSearch
from katibx.algorithms.random_search import RandomSearch

_LAZY = {
    "Asha": "katibx.algorithms.asha",
    "Hyperband": "katibx.algorithms.hyperband",
    "BayesianOptimization": "katibx.algorithms.bayesian_optimization",
    "CmaEs": "katibx.algorithms.cmaes",
    "MultivariateTpe": "katibx.algorithms.multivariate_tpe",
    "PopulationBasedTraining": "katibx.algorithms.pbt",
    "Sobol": "katibx.algorithms.sobol",
    "Tpe": "katibx.algorithms.tpe",
}

__all__ = ["AlgorithmSettingsError", "Asha", "BayesianOptimization", "CmaEs", "GridSearch", "Hyperband",
           "MultivariateTpe", "PopulationBasedTraining", "RandomSearch", "SearchAlgorithm", "Sobol", "Suggestion", "Tpe"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'algorithms' has no attribute {name!r}")
