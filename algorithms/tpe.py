"""Katib's ``tpe``: hyperopt's Tree-structured Parzen Estimator settings, on optuna's TPE (for one objective its
parameters are modelled together by default, as optuna 5 does; ``multivariate: "false"`` models each alone, as
hyperopt)."""

from __future__ import annotations

import math
from typing import Mapping

from optuna.samplers import BaseSampler, TPESampler

from katibx.algorithms._optuna import OptunaSearch
from katibx.search_algorithm import float_setting, int_setting, setting_path

# Random draws before the Parzen estimators take over (optuna's default; Katib's hyperopt service uses the
# size of the first request instead, hyperopt itself 20).
N_STARTUP_TRIALS = 10


def good_trials(gamma: float | None, n: int) -> int:
    """How many of ``n`` finished trials count as good: the fraction ``gamma`` of them, at most 25; unset, 10 % of
    them (optuna's default).

    hyperopt takes ceil(gamma * sqrt(n)); the plain fraction (optuna's rule, with Katib's default 0.25) found
    better points on Branin at 40-60 trials (median best 0.67 vs 0.96 over 20 seeds at 40). On the black-box suite
    (``benchmarks/blackbox.py``: 120 problems, 50 trials each, optuna's TPE otherwise as katibx's) 10 % did better
    still: better than 0.25 on 71 problems, worse on 43 (Wilcoxon p 0.002), and better than hyperopt's rule on 78,
    worse on 36 (p < 0.001). So 10 % is the default, and a ``gamma`` given keeps its meaning.
    """
    return min(math.ceil((DEFAULT_GAMMA if gamma is None else gamma) * n), 25)


# The good fraction when ``gamma`` is not given (see good_trials).
DEFAULT_GAMMA = 0.1


class Tpe(OptunaSearch):
    """Katib's ``tpe``: settings ``gamma``, ``prior_weight``, ``n_EI_candidates`` and ``random_state``, and
    katibx's ``multivariate`` ("true": one Parzen estimator over the parameters together; "false": one per parameter,
    as Katib's hyperopt models them; unset, as optuna 5: together for one objective, apart for several). On the
    black-box suite the independent estimators did worse than optuna's default TPE (better on 48 problems, worse on
    72, Wilcoxon p 0.005) and the joint ones as well as it (61 / 58, p 0.73)."""

    name = "tpe"
    supports_multi_objective = True
    default_settings = {"gamma": None, "prior_weight": "1.0", "n_EI_candidates": "24", "random_state": None,
                        "multivariate": None}

    def configure_sampler(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        given = str(settings.get("multivariate") or "").lower()
        if given not in ("", "true", "false"):
            errors.append(f"{setting_path('multivariate')}: must be true or false "
                          f"(got {settings.get('multivariate')!r})")
        self.multivariate = given == "true" if given else len(self.objective.objectives) == 1
        gamma = float_setting(settings, "gamma", errors, lambda v: 0 < v < 1, "gamma should be in the range of (0, 1)")
        prior = float_setting(settings, "prior_weight", errors, lambda v: v > 0, "prior_weight should be greater than zero")
        candidates = int_setting(settings, "n_EI_candidates", errors, minimum=1)
        self.gamma = gamma  # None: the default rule of good_trials
        self.prior_weight = 1.0 if prior is None else prior
        self.n_ei_candidates = 24 if candidates is None else candidates

    def good(self, n: int) -> int:
        """How many of ``n`` finished trials the Parzen estimators take as good (see :func:`good_trials`)."""
        return good_trials(self.gamma, n)

    def sampler(self, number: int) -> BaseSampler:
        # gamma and prior_weight are deprecated in optuna 5, still honoured
        return self.reseeded(number, lambda seed: TPESampler(
            multivariate=self.multivariate, constant_liar=True, n_startup_trials=N_STARTUP_TRIALS,
            n_ei_candidates=self.n_ei_candidates, prior_weight=self.prior_weight, gamma=self.good, seed=seed))
