"""Katib's ``multivariate-tpe``: optuna's TPESampler(multivariate=True, constant_liar=True)."""

from __future__ import annotations

from typing import Mapping

from optuna.samplers import BaseSampler, TPESampler

from katibx.algorithms._optuna import OptunaSearch
from katibx.search_algorithm import int_setting


class MultivariateTpe(OptunaSearch):
    """Katib's ``multivariate-tpe``: settings ``n_startup_trials`` (10), ``n_ei_candidates`` (24) and ``random_state``."""

    name = "multivariate-tpe"
    supports_multi_objective = True
    default_settings = {"n_startup_trials": "10", "n_ei_candidates": "24", "random_state": None}

    def configure_sampler(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        startup = int_setting(settings, "n_startup_trials", errors, minimum=0)
        candidates = int_setting(settings, "n_ei_candidates", errors, minimum=1)
        self.n_startup_trials = 10 if startup is None else startup
        self.n_ei_candidates = 24 if candidates is None else candidates

    def sampler(self, number: int) -> BaseSampler:
        return self.reseeded(number, lambda seed: TPESampler(
            multivariate=True, constant_liar=True, n_startup_trials=self.n_startup_trials,
            n_ei_candidates=self.n_ei_candidates, seed=seed))
