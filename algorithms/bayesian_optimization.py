"""Katib's ``bayesianoptimization``: an optimizer (katibx's GP engine or ``skopt.Optimizer``) kept for the whole run.

With ``base_estimator: GP`` (acq_func gp_hedge, LCB, EI or PI, and an int or double parameter) the kept optimizer is
``katibx.algorithms._gp.GPOptimizer``: skopt's GP optimizer (same kernel, fit, acquisition functions and acquisition
optimizers) computed directly in numpy / scipy, several times faster; see that module for where it differs. katibx's
``LogEI`` runs on the same engine with optuna GPSampler's acquisition and fit. EIps / PIps, categorical-only spaces and the tree estimators (RF, ET, GBRT) run on ``skopt.Optimizer`` itself.

``acq_func`` not given: ``LogEI`` (katibx's: optuna GPSampler's log EI and priors on the engine) where the engine
runs, else Katib's default ``gp_hedge``. Over the black-box suite's bbob functions (2, 5 and 10 dimensions, several
seeds) gp_hedge was worse than optuna's GPSampler in 2 dimensions and LogEI was not, nor worse than gp_hedge in 5 and
10 (``benchmarks/README.md``). A ``gp_hedge`` written in the spec keeps skopt's meaning.

Search space (unlike Katib, which makes every double log-uniform, each parameter keeps its distribution):
uniform / logUniform doubles -> ``Real`` with that prior; ints -> ``Integer`` (log-uniform prior when logUniform);
a ``step`` -> ``Integer`` index k of the grid point min + k*step, so the model keeps the order of the points and
never proposes an off-grid value (logUniform: log-uniform over k + 1, exactly log-uniform in the value when
min == step); categorical / discrete -> ``Categorical`` of list positions, so values keep their Python types;
min == max and one-item lists are fixed. normal / logNormal are refused.

Objective: the objective metric's strategy value (negated to maximize) of Succeeded / EarlyStopped trials;
Failed, MetricsUnavailable, Killed and non-numeric values are skipped. EIps / PIps also get the trial's duration.

Determinism: the kept optimizer is told one completed trial at a time in completion order, and trial i's point is
picked with a generator seeded by (random_state, i) without touching the optimizer's own random state. A point is
therefore a function of the history alone, and a resumed controller rebuilds the same state by telling the stored
trials in completion order. Created / Running trials and earlier points of the same batch are pending: they are
told, with the constant-liar value min(y) (skopt's ``cl_min``), to a throwaway optimizer that picks the next point
(the GP engine's throwaway keeps the fitted hyperparameters: one Cholesky, no fit), and a point equal to a pending
one is never returned (if nothing else is found the batch is cut short).
"""

from __future__ import annotations

import math
import secrets
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from skopt import Optimizer
from skopt.learning import GradientBoostingQuantileRegressor
from skopt.space import Categorical, Dimension, Integer, Real
from threadpoolctl import threadpool_limits

from katibx.algorithms._gp import LOG_EI, GPOptimizer
from katibx.search_algorithm import SearchAlgorithm, Suggestion, active_trials, int_setting, setting_path
from katibx.search_space import Parameter
from katibx.trial import TrialRecord

ESTIMATORS = ("GP", "RF", "ET", "GBRT")
ACQ_FUNCS = ("gp_hedge", "LCB", "EI", "PI", "EIps", "PIps", LOG_EI)
ACQ_OPTIMIZERS = ("auto", "sampling", "lbfgs")
_LIE = min  # the constant liar's value for pending points: skopt's ``cl_min``
_DRAWS = 64  # random points tried when every model candidate is taken


class _GradientBoosting(GradientBoostingQuantileRegressor):
    """skopt's GBRT made usable with scikit-learn >= 1.6 (regressor tag) and numpy >= 2.4 (no ``np.in1d``)."""

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor"
        return tags

    def predict(self, X: Any, return_std: bool = False, return_quantiles: bool = False) -> Any:
        if not return_std or return_quantiles:
            return super().predict(X, return_quantiles=return_quantiles)
        low, mean, high = (self.regressors_[self.quantiles.index(q)].predict(X) for q in (0.16, 0.5, 0.84))
        return mean, (high - low) / 2.0


class _Axis:
    """One parameter as a skopt dimension (none when it has a single value) and its value <-> coordinate mapping."""

    def __init__(self, param: Parameter) -> None:
        self.param = param
        self.log = param.distribution == "logUniform"
        self.stepped = param.is_numeric_range and param.step is not None
        low, high = param.min or 0.0, param.max or 0.0
        if not param.is_numeric_range:
            self.size = len(param.values)
        elif self.stepped:
            self.size = int(math.floor((high - low) / (param.step or 1.0) + 1e-9)) + 1
        else:
            self.size = 1 if low == high else 0  # 0: a continuous range
        self.offset = 1 if self.stepped and self.log else 0

    @property
    def fixed(self) -> bool:
        return self.size == 1

    def dimension(self) -> Dimension:
        """A fresh skopt dimension (skopt sets transformers on the objects it gets)."""
        p, prior = self.param, "log-uniform" if self.log else "uniform"
        if not p.is_numeric_range:
            return Categorical(list(range(self.size)), name=p.name)
        if self.stepped:
            return Integer(self.offset, self.size - 1 + self.offset, prior=prior, name=p.name)
        if p.type == "int":
            return Integer(int(p.min or 0), int(p.max or 0), prior=prior, name=p.name)
        return Real(p.min, p.max, prior=prior, name=p.name)

    def scalar(self, x: Any) -> int | float:
        """A coordinate as a plain Python number."""
        return float(x) if self.param.type == "double" and not self.stepped else int(x)

    def encode(self, value: Any) -> int | float | None:
        """The coordinate of an assigned value, or None when it is not in this parameter's space."""
        p = self.param
        try:
            value = p.cast(value)
        except (TypeError, ValueError):
            return None
        if not p.is_numeric_range:
            return next((i for i, v in enumerate(p.values) if type(v) is type(value) and v == value), None)
        low, high = p.min or 0.0, p.max or 0.0
        if self.stepped:
            return min(max(round((value - low) / (p.step or 1.0)), 0), self.size - 1) + self.offset
        return self.scalar(min(max(value, low), high))

    def decode(self, x: Any) -> Any:
        """The typed value of a coordinate (or of the only value, for a fixed parameter)."""
        p = self.param
        if not p.is_numeric_range:
            return p.values[0 if self.fixed else int(x)]
        low, high = p.min or 0.0, p.max or 0.0
        if self.fixed:
            value = low
        elif self.stepped:
            value = low + (int(x) - self.offset) * (p.step or 1.0)
        else:
            value = min(max(float(x), low), high)
        return int(round(value)) if p.type == "int" else float(round(value, 12) if self.stepped else value)


@contextmanager
def _quiet() -> Iterator[None]:
    """Fit on one BLAS thread (small matrices: faster, and the same numbers on any core count) without the fit and
    acquisition warnings scikit-learn and scikit-optimize emit on small histories."""
    with warnings.catch_warnings(), threadpool_limits(1, "blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", module=r"(skopt|sklearn)(\.|$)")
        yield


class BayesianOptimization(SearchAlgorithm):
    """Katib's ``bayesianoptimization``: GP on ``GPOptimizer``, the rest on ``skopt.Optimizer``; no pending repeats."""

    name = "bayesianoptimization"
    default_settings = {"base_estimator": "GP", "n_initial_points": "10", "acq_func": None,
                        "acq_optimizer": "auto", "random_state": None}

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        self._estimator = _choice(settings, "base_estimator", ESTIMATORS, errors)
        acq_optimizer = _choice(settings, "acq_optimizer", ACQ_OPTIMIZERS, errors)
        initial = int_setting(settings, "n_initial_points", errors)
        self._initial = 10 if initial is None else initial
        seed = int_setting(settings, "random_state", errors)
        self._seed = secrets.randbelow(2**31) if seed is None else seed
        for i, p in enumerate(self.space):
            if p.is_numeric_range and p.distribution in ("normal", "logNormal"):
                errors.append(f"spec.parameters[{i}].feasibleSpace.distribution: parameter {p.name!r}: "
                              f"{p.distribution} is not supported by bayesianoptimization (use uniform or logUniform)")
        self._axes = [_Axis(p) for p in self.space]
        self._free = [a for a in self._axes if not a.fixed]
        gradients = self._estimator == "GP" and any(a.param.is_numeric_range for a in self._free)
        if settings.get("acq_func") is None:  # katibx's default where its GP engine runs, Katib's (skopt's) elsewhere
            self._acq_func = LOG_EI if gradients else "gp_hedge"
        else:
            self._acq_func = _choice(settings, "acq_func", ACQ_FUNCS, errors)
        if self._acq_func == LOG_EI and not gradients:
            errors.append(f"{setting_path('acq_func')}: {LOG_EI} needs base_estimator GP and an int or double "
                          "parameter; use gp_hedge, EI, PI or LCB")
        if acq_optimizer == "lbfgs" and not gradients:
            errors.append(f"{setting_path('acq_optimizer')}: lbfgs needs base_estimator GP and an int or double "
                          "parameter (tree models and categorical-only spaces have no gradients); use sampling or auto")
        if acq_optimizer == "auto":  # skopt's own choice, except that it picks lbfgs for trees wrapped for EIps / PIps
            acq_optimizer = "lbfgs" if gradients else "sampling"
        self._acq_optimizer = acq_optimizer
        self._engine = gradients and not self._acq_func.endswith("ps")
        self._told: set[int] = set()
        if not errors and self._free:
            try:
                self._opt = self._optimizer(self._seed)
            except ValueError as exc:
                errors.append(f"spec.algorithm.algorithmSettings: scikit-optimize refused these settings: {exc}")

    def _optimizer(self, seed: int) -> Optimizer | GPOptimizer:
        """A new optimizer with this experiment's space and settings (the GP engine where it applies)."""
        if self._engine:
            return GPOptimizer([a.dimension() for a in self._free], self._acq_func, self._acq_optimizer,
                               self._initial, seed)
        estimator: Any = self._estimator
        if estimator == "GBRT":  # what skopt's cook_estimator("GBRT") builds, with the compatibility fixes
            estimator = _GradientBoosting(base_estimator=GradientBoostingRegressor(n_estimators=30, loss="quantile"),
                                          random_state=seed)
        return Optimizer([a.dimension() for a in self._free], base_estimator=estimator, n_initial_points=self._initial,
                         acq_func=self._acq_func, acq_optimizer=self._acq_optimizer, random_state=seed,
                         model_queue_size=1)

    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        if not self._free:  # nothing to search: every trial gets the fixed values
            return [Suggestion({a.param.name: a.decode(None) for a in self._axes}) for _ in range(count)]
        out: list[Suggestion] = []
        with _quiet():
            self._tell(trials)
            pending = [x for t in active_trials(trials) if (x := self._encode(t)) is not None]
            for index in range(len(trials), len(trials) + count):
                x = self._next(index, pending)
                if x is None:
                    break
                pending.append(x)
                values = iter(x)
                out.append(Suggestion({a.param.name: a.decode(None if a.fixed else next(values)) for a in self._axes}))
        return out

    def _tell(self, trials: Sequence[TrialRecord]) -> None:
        """Tell the kept optimizer every newly completed trial, one at a time in completion order."""
        done = [t for t in trials if t.state.is_terminal and t.index not in self._told]
        for trial in sorted(done, key=lambda t: (t.completion_time or math.inf, t.index)):
            self._told.add(trial.index)
            x, y = self._encode(trial), self._objective(trial)
            if x is not None and y is not None:
                self._opt.tell(x, y)

    def _encode(self, trial: TrialRecord) -> list[int | float] | None:
        """A trial's point in the optimizer's space, or None when an assignment is missing or out of the space."""
        values = trial.assignments
        x = [a.encode(values[a.param.name]) if a.param.name in values else None for a in self._free]
        return None if any(v is None for v in x) else x  # type: ignore[return-value]

    def _objective(self, trial: TrialRecord) -> float | tuple[float, float] | None:
        """The value to minimize (and the duration, for EIps / PIps), or None for a trial the model must not see."""
        loss = self.objective.loss(trial)
        if loss is None or not self._acq_func.endswith("ps"):
            return loss
        start = trial.start_time or trial.creation_time or 0.0
        return loss, max((trial.completion_time or start) - start, 1e-3)

    def _next(self, index: int, pending: list[list[Any]]) -> list[Any] | None:
        """Trial ``index``'s point: random while initial points remain, else the model's (pending points as liars)."""
        rng = np.random.RandomState(np.random.SeedSequence([self._seed, index]).generate_state(1)[0])
        opt = self._opt
        candidates: list[list[Any]] = []
        if opt.Xi and opt._n_initial_points - len(pending) <= 0:
            if pending and isinstance(self._opt, GPOptimizer):
                opt = self._opt.lied(pending, _LIE(self._opt.yi), int(rng.randint(2**31)))
            elif pending:
                opt = self._optimizer(int(rng.randint(2**31)))
                if hasattr(self._opt, "gains_"):
                    opt.gains_ = np.copy(self._opt.gains_)
                yi = self._opt.yi
                lie = [_LIE(y[0] for y in yi), _LIE(y[1] for y in yi)] if self._acq_func.endswith("ps") else _LIE(yi)
                opt._tell(self._opt.Xi + pending, yi + [lie] * len(pending))
            xs = [opt._next_x, *opt.space.inverse_transform(np.vstack(opt.next_xs_))]
            candidates = [self._point(x) for x in xs]
        return self._pick(candidates, pending, rng)

    def _pick(self, candidates: list[list[Any]], pending: list[list[Any]],
              rng: np.random.RandomState) -> list[Any] | None:
        """The first candidate, then random point, neither evaluated nor pending; a completed point again only in a
        small finite space; None when every point found is pending."""
        busy = {tuple(x) for x in pending}
        seen = busy | {tuple(x) for x in self._opt.Xi}
        tried: list[list[Any]] = []
        for draws in (0, 1, _DRAWS):
            batch = candidates if not draws else [
                self._point(x) for x in self._opt.space.rvs(n_samples=draws, random_state=rng)]
            fresh = [x for x in batch if tuple(x) not in seen]
            if fresh:
                return fresh[0]
            tried += batch
        return next((x for x in tried if tuple(x) not in busy), None)

    def _point(self, x: Sequence[Any]) -> list[Any]:
        return [a.scalar(v) for a, v in zip(self._free, x)]


def _choice(settings: Mapping[str, str | None], name: str, allowed: tuple[str, ...], errors: list[str]) -> str:
    """A setting that must be one of ``allowed`` (as written: Katib compares them exactly)."""
    value = settings.get(name) or ""
    if value not in allowed:
        errors.append(f"{setting_path(name)}: must be one of {', '.join(allowed)} (got {value!r})")
    return value
