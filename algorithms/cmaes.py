"""Katib's ``cmaes``: CMA-ES (the ``cmaes`` package, in an optuna sampler) with IPOP or BIPOP restarts."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from optuna._transform import _SearchSpaceTransform
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from katibx.algorithms._optuna import OptunaSearch, derive_seed
from katibx.search_algorithm import float_setting, setting_path

if TYPE_CHECKING:
    import cmaes  # type: ignore[import-untyped]

RESTART_STRATEGIES = ("none", "ipop", "bipop")
# Population growth per restart (Katib's goptuna service uses 2).
INC_POPSIZE = 2
# Initial step size, as a fraction of each parameter's range (optuna's and goptuna's default).
DEFAULT_SIGMA = 1 / 6


class CmaEsSampler(BaseSampler):
    """CMA-ES in [0, 1]^d over the numeric parameters; list parameters are drawn at random.

    The optimizer, its restarts and which generation each trial belongs to live in this object, so
    replaying the same asks and tells rebuilds them exactly. Optuna 5's own CmaEsSampler no longer restarts.
    """

    def __init__(self, space: Mapping[str, BaseDistribution], root_seed: int, sigma: float,
                 restart_strategy: str) -> None:
        self._space = {n: d for n, d in space.items()
                       if not isinstance(d, CategoricalDistribution) and not d.single()}
        self._transform = _SearchSpaceTransform(self._space, transform_step=True, transform_0_1=True)
        self._root = root_seed
        self._sigma = sigma
        self._restart_strategy = restart_strategy
        self._optimizer: cmaes.CMA | None = None
        self._restarts = 0
        self._evaluations = {"small": 0, "large": 0}  # BIPOP's budget per regime
        self._regime = "large"
        self._generation_of: dict[int, tuple[int, int]] = {}  # trial number -> (restart, generation)
        self._random: tuple[int, RandomSampler] | None = None

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        rng = np.random.RandomState(derive_seed(self._root, trial.number, 1))
        if self._optimizer is None:
            self._optimizer = self._start(np.full(len(self._space), 0.5), self._sigma, None, rng)
        optimizer = self._optimizer
        tag = (self._restarts, optimizer.generation)
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if self._generation_of.get(t.number) == tag]
        if len(done) >= optimizer.population_size:
            sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
            optimizer.tell([(self._transform.transform(t.params), sign * float(t.value))  # type: ignore[arg-type]
                            for t in done[: optimizer.population_size]])
            if self._restart_strategy != "none" and optimizer.should_stop():
                optimizer = self._restart(optimizer, rng)
        optimizer.reseed_rng(int(rng.randint(1, 2**31 - 1)))
        x = optimizer.ask()
        self._generation_of[trial.number] = (self._restarts, optimizer.generation)
        return self._transform.untransform(x)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if self._random is None or self._random[0] != trial.number:
            self._random = (trial.number, RandomSampler(seed=derive_seed(self._root, trial.number, 2)))
        return self._random[1].sample_independent(study, trial, param_name, param_distribution)

    def _start(self, mean: np.ndarray, sigma: float, popsize: int | None, rng: np.random.RandomState) -> cmaes.CMA:
        # Imported here: it imports scipy.stats (a second or more), which validating a file does not need.
        import cmaes  # type: ignore[import-untyped]

        return cmaes.CMA(mean=mean, sigma=sigma, bounds=self._transform.bounds, seed=int(rng.randint(1, 2**31 - 1)),
                         n_max_resampling=10 * len(self._space), population_size=popsize)

    def _restart(self, stopped: cmaes.CMA, rng: np.random.RandomState) -> cmaes.CMA:
        """A new run from a random mean: IPOP doubles the population; BIPOP alternates large and small ones."""
        self._restarts += 1
        base = self._base_popsize
        sigma = self._sigma
        if self._restart_strategy == "ipop":
            popsize = stopped.population_size * INC_POPSIZE
        else:
            self._evaluations[self._regime] += stopped.population_size * stopped.generation
            if self._evaluations["small"] < self._evaluations["large"]:
                self._regime = "small"
                popsize = max(2, math.floor(base * (INC_POPSIZE ** self._restarts) ** (rng.uniform() ** 2)))
                sigma = self._sigma * 10 ** (-2 * rng.uniform())
            else:
                self._regime = "large"
                popsize = base * INC_POPSIZE ** self._restarts
        self._optimizer = self._start(rng.uniform(size=len(self._space)), sigma, popsize, rng)
        return self._optimizer

    @property
    def _base_popsize(self) -> int:
        return 4 + math.floor(3 * math.log(len(self._space)))


class CmaEs(OptunaSearch):
    """Katib's ``cmaes``: settings ``random_state``, ``sigma`` (fraction of each range, 1/6) and ``restart_strategy``."""

    name = "cmaes"
    default_settings = {"random_state": None, "sigma": None, "restart_strategy": "none"}

    def configure_sampler(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        sigma = float_setting(settings, "sigma", errors, lambda v: v > 0, "sigma should be greater than zero")
        self.sigma = DEFAULT_SIGMA if sigma is None else sigma
        self.restart_strategy = settings.get("restart_strategy") or "none"
        if self.restart_strategy not in RESTART_STRATEGIES:
            errors.append(f"{setting_path('restart_strategy')}: restart_strategy {self.restart_strategy!r} is not "
                          f"supported (supported: {', '.join(RESTART_STRATEGIES)})")
        numeric = [p for p in self.space if p.is_numeric_range and p.min != p.max]
        if len(numeric) < 2:
            errors.append("spec.parameters: CMA-ES only supports two or more dimensional continuous search space.")
        self._cma: CmaEsSampler | None = None

    def sampler(self, number: int) -> BaseSampler:
        if self._cma is None:
            self._cma = CmaEsSampler(self.distributions, self.root_seed, self.sigma, self.restart_strategy)
        return self._cma
