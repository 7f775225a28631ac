"""Katib's ``sobol``: a Sobol' low-discrepancy sequence over the whole search space (optuna's QMCSampler)."""

from __future__ import annotations

from typing import Any, Mapping

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, QMCSampler

from katibx.algorithms._optuna import OptunaSearch, quiet


class _WholeSpaceQMC(QMCSampler):
    """QMCSampler drawing every trial from the sequence (optuna draws the first at random); unscrambled, it skips
    the all-zero point, so it starts at the centre as Katib's goptuna sampler does."""

    def __init__(self, space: dict[str, BaseDistribution], **options: Any) -> None:
        super().__init__(**options)
        self._space = {name: space[name] for name in sorted(space) if not space[name].single()}  # goptuna sorts too

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def _find_sample_id(self, study: Any, search_space: dict[str, BaseDistribution]) -> int:
        return super()._find_sample_id(study, search_space) + (0 if self._scramble else 1)


class Sobol(OptunaSearch):
    """Katib's ``sobol``: the plain Sobol' sequence (Joe-Kuo directions, as goptuna); ``random_state`` scrambles it."""

    name = "sobol"
    supports_multi_objective = True

    def configure_sampler(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        self._sobol: _WholeSpaceQMC | None = None

    def sampler(self, number: int) -> BaseSampler:
        if self._sobol is None:
            with quiet():
                self._sobol = _WholeSpaceQMC(
                    self.distributions, qmc_type="sobol", scramble=self.seed is not None, seed=self.root_seed,
                    warn_independent_sampling=False, warn_asynchronous_seeding=False,
                )
        return self._sobol
