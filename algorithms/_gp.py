"""The Gaussian-process engine of ``bayesianoptimization`` with ``base_estimator: GP``: what scikit-optimize's
``Optimizer(base_estimator="GP")`` computes, in numpy / scipy without scikit-learn's generic kernel machinery.

Model, as skopt's ``cook_estimator("GP")``: ConstantKernel(1, (0.01, 1000)) * Matern(nu=2.5, one length scale
per transformed dimension, (0.01, 100)) + WhiteKernel(1, (1e-5, 1e5)), 1e-10 added to the diagonal, y normalised
by its mean and standard deviation, hyperparameters maximising the log marginal likelihood (L-BFGS-B on its
analytic gradient, in log space). Predictions leave the white noise out, as skopt's GaussianProcessRegressor does.

Acquisition, as skopt's Optimizer: EI / PI (xi 0.01) and LCB (kappa 1.96); gp_hedge's gains and softmax choice;
``sampling`` scores 10,000 random candidates, ``lbfgs`` polishes the 5 best of them with L-BFGS-B (maxiter 20)
on the acquisition's analytic gradient.

Where it differs from skopt, for speed only: a fit starts from the previous fit's optimum and from skopt's initial
kernel, and adds skopt's two random starts (the same at every fit) only at the first fit and at the fit that reaches
each multiple of ``RESTART_EVERY`` observations, batch tells included (warm starts alone, without the initial
kernel, lost regret against skopt); mean and std are predicted once per candidate set for all of gp_hedge's
functions; the constant-liar model for pending points keeps the fitted hyperparameters (one Cholesky, no fit);
candidates are drawn per dimension in the transformed space (the same distributions as skopt's ``Space.rvs``).
For robustness: y is normalised on itself over its largest magnitude (finite values beyond ~1e154 do not overflow
the std), and gp_hedge picks with equal probabilities where its gains are not finite.

``LogEI``, katibx's own acquisition (not skopt's, and the default when ``acq_func`` is not given), is what optuna's
``GPSampler`` does on this engine: the log of the expected improvement over the best value (no ``xi``), in the units
of the normalised y with optuna's stabilising variance (1e-12) added, so it is finite everywhere and keeps its
gradient where EI underflows; hyperparameters maximising the log posterior with
optuna's weak priors (on the inverse squared length scales, the kernel's scale and the noise, whose floor is 1e-6);
and ``lbfgs`` also starts from the best point observed. Measured against gp_hedge and optuna's GPSampler in
``benchmarks/README.md`` ("The bayesianoptimization default").
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.linalg import LinAlgError, cho_solve, cholesky, solve_triangular
from scipy.optimize import fmin_l_bfgs_b, minimize
from scipy.special import erfcx, ndtr
from skopt.space import Categorical, Dimension, Real, Space
from skopt.utils import normalize_dimensions

SQRT5 = math.sqrt(5.0)
CONSTANT_BOUNDS = (0.01, 1000.0)
LENGTH_SCALE_BOUNDS = (0.01, 100.0)
NOISE_BOUNDS = (1e-5, 1e5)
PRIOR_NOISE_BOUNDS = (1e-6, 1e5)  # LogEI's fit: optuna's minimum noise variance
JITTER = 1e-10  # scikit-learn's GaussianProcessRegressor ``alpha``
N_RESTARTS = 2  # skopt's ``n_restarts_optimizer`` of the GP fit
RESTART_EVERY = 10  # skopt's random restarts at every this-many-th observation (and the first fit)
N_POINTS = 10000  # skopt's ``n_points``
CHUNK = 2000  # candidates predicted at a time (their kernel matrix stays in cache)
N_STARTS = 5  # skopt's ``n_restarts_optimizer`` of lbfgs
LBFGS_MAXITER = 20
XI = 0.01
KAPPA = 1.96
HEDGE = ("EI", "LCB", "PI")
LOG_EI = "LogEI"
_LOG_2PI = math.log(2 * math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2 * math.pi)
SQRT2 = math.sqrt(2.0)
SQRT_PI_2 = math.sqrt(math.pi / 2)
LOG_EI_VARIANCE = 1e-12  # added to LogEI's normalised predictive variance, as optuna's stabilising noise


def log_bounds(dims: int, prior: bool = False) -> np.ndarray:
    """Bounds of the log hyperparameters: constant, one length scale per dimension, noise."""
    return np.log([CONSTANT_BOUNDS, *[LENGTH_SCALE_BOUNDS] * dims, PRIOR_NOISE_BOUNDS if prior else NOISE_BOUNDS])


def log_prior(theta: np.ndarray) -> tuple[float, np.ndarray]:
    """optuna GPSampler's log prior of the hyperparameters (up to a constant) and its gradient in log space:
    -(0.1 / l + 0.1 l) for each inverse squared length scale l, Gamma(2, 1) for the constant, Gamma(1.1, 30) for
    the noise."""
    c, noise = math.exp(theta[0]), math.exp(theta[-1])
    inverse = np.exp(-2.0 * theta[1:-1])
    value = -(0.1 / inverse + 0.1 * inverse).sum() + (theta[0] - c) + (0.1 * theta[-1] - 30.0 * noise)
    grad = np.empty_like(theta)
    grad[0] = 1.0 - c
    grad[1:-1] = 0.2 * inverse - 0.2 / inverse
    grad[-1] = 0.1 - 30.0 * noise
    return float(value), grad


def _matern(r2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matern-5/2 of squared scaled distances, and (1 + sqrt5 r) exp(-sqrt5 r) for its derivatives."""
    r = np.sqrt(r2)
    e = np.exp(-SQRT5 * r)
    return (1.0 + SQRT5 * r + (5.0 / 3.0) * r2) * e, (1.0 + SQRT5 * r) * e


def _kernel(a: np.ndarray, b: np.ndarray, c: float) -> np.ndarray:
    """c times the Matern-5/2 correlation of the rows of a and b (already divided by the length scales), computed in
    place: the candidate matrices are large, and temporaries cost more than the arithmetic."""
    k = a @ b.T
    k *= -2.0
    k += (a * a).sum(1)[:, None]
    k += (b * b).sum(1)[None, :]
    np.maximum(k, 0.0, out=k)
    r = np.sqrt(k)
    r *= SQRT5
    k *= 5.0 / 3.0
    k += 1.0
    k += r
    np.exp(-r, out=r)
    k *= r
    k *= c
    return k


def normalize(y: np.ndarray) -> tuple[np.ndarray, float, float]:
    """y minus its mean over its standard deviation (1 when constant), as ``normalize_y=True``; computed on y over
    its largest magnitude, so that finite values too large to square (|y| > ~1e154) do not overflow the std."""
    scale = float(np.abs(y).max()) if len(y) else 0.0
    scale = 1.0 if scale == 0.0 or not math.isfinite(scale) else scale
    unit = y / scale
    mean, std = float(unit.mean()), float(unit.std())
    std = 1.0 if std == 0.0 else std
    return (unit - mean) / std, mean * scale, std * scale


def neg_log_marginal_likelihood(theta: np.ndarray, diff2: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Minus the log marginal likelihood of normalised y and its gradient in log hyperparameters (``diff2``: the
    per-dimension squared differences of the inputs, n x n x d); +inf where the kernel is not positive definite."""
    c, noise = math.exp(theta[0]), math.exp(theta[-1])
    scaled = diff2 * np.exp(-2.0 * theta[1:-1])
    km, dk = _matern(scaled.sum(2))
    n = len(y)
    K = c * km
    K[np.diag_indices(n)] += noise + JITTER
    try:
        L = cholesky(K, lower=True, check_finite=False)
    except LinAlgError:
        return math.inf, np.zeros_like(theta)
    alpha = cho_solve((L, True), y, check_finite=False)
    lml = -0.5 * y @ alpha - np.log(np.diag(L)).sum() - 0.5 * n * _LOG_2PI
    W = np.outer(alpha, alpha) - cho_solve((L, True), np.eye(n), check_finite=False)
    grad = np.empty_like(theta)
    grad[0] = 0.5 * c * (W * km).sum()
    grad[1:-1] = 0.5 * c * (5.0 / 3.0) * np.einsum("ij,ijd->d", W * dk, scaled)
    grad[-1] = 0.5 * noise * np.trace(W)
    return -lml, -grad


def neg_log_posterior(theta: np.ndarray, diff2: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Minus the log marginal likelihood plus log prior (:func:`log_prior`), and its gradient."""
    value, grad = neg_log_marginal_likelihood(theta, diff2, y)
    if not math.isfinite(value):
        return value, grad
    prior, prior_grad = log_prior(theta)
    return value - prior, grad - prior_grad


def fit_hyperparameters(X: np.ndarray, y: np.ndarray, starts: Sequence[np.ndarray], prior: bool = False
                        ) -> np.ndarray:
    """The log hyperparameters of the best L-BFGS-B run from each start, of minus the log marginal likelihood (or,
    with ``prior``, of minus the log posterior)."""
    diff2 = (X[:, None, :] - X[None, :, :]) ** 2
    bounds = log_bounds(X.shape[1], prior)
    loss = neg_log_posterior if prior else neg_log_marginal_likelihood
    best, best_value = np.asarray(starts[0], float), math.inf
    for start in starts:
        result = minimize(loss, start, args=(diff2, y), method="L-BFGS-B", jac=True, bounds=bounds)
        if result.fun < best_value:
            best, best_value = result.x, float(result.fun)
    return best


class GaussianProcess:
    """The posterior at fixed log hyperparameters (constant, length scales, noise), in the original y units."""

    def __init__(self, X: np.ndarray, y: np.ndarray, theta: np.ndarray) -> None:
        yn, self.y_mean, self.y_std = normalize(y)
        self.X = X
        self.c, self.inv_ls = math.exp(theta[0]), np.exp(-theta[1:-1])
        self.Xs = X * self.inv_ls
        K = _kernel(self.Xs, self.Xs, self.c)
        K[np.diag_indices(len(y))] += math.exp(theta[-1]) + JITTER
        self.L = cholesky(K, lower=True, check_finite=False)
        self.alpha = cho_solve((self.L, True), yn, check_finite=False)
        self.K_inv = cho_solve((self.L, True), np.eye(len(y)), check_finite=False)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation at the rows of X (in chunks of ``CHUNK`` rows)."""
        Xs = X * self.inv_ls
        mean, explained = np.empty(len(X)), np.empty(len(X))
        for i in range(0, len(X), CHUNK):
            Kt = _kernel(Xs[i:i + CHUNK], self.Xs, self.c)
            mean[i:i + CHUNK] = Kt @ self.alpha
            v = solve_triangular(self.L, Kt.T, lower=True, check_finite=False)
            explained[i:i + CHUNK] = (v * v).sum(0)
        return mean * self.y_std + self.y_mean, np.sqrt(np.maximum(self.c - explained, 0.0)) * self.y_std

    def predict_gradient(self, x: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
        """Mean, standard deviation and their gradients at one point x."""
        diff = x - self.X
        scaled = diff * self.inv_ls**2
        km, dk = _matern((diff * scaled).sum(1))
        k = self.c * km
        dk_dx = (-self.c * 5.0 / 3.0) * dk[:, None] * scaled
        w = self.K_inv @ k
        var = self.c - k @ w
        mean = (k @ self.alpha) * self.y_std + self.y_mean
        mean_grad = (dk_dx.T @ self.alpha) * self.y_std
        if var <= 0.0:
            return mean, 0.0, mean_grad, np.zeros_like(x)
        std = math.sqrt(var)
        return mean, std * self.y_std, mean_grad, -(w @ dk_dx) / std * self.y_std


def _pdf(z: np.ndarray | float) -> np.ndarray | float:
    """The standard normal density at z."""
    return np.exp(-0.5 * np.square(z)) * _INV_SQRT_2PI


def log_h(z: np.ndarray) -> np.ndarray:
    """log(z Phi(z) + phi(z)), the log of the expected improvement of a unit normal over -z, accurate for any z:
    direct above -1, as log phi(z) + log1p(z m(z)) with Mills' ratio m = erfcx(-z / sqrt2) sqrt(pi / 2) below, and
    by its asymptotic series below -100 (where 1 + z m(z) cancels)."""
    z, out, (high, mid, far) = _log_h_ranges(z)
    zh, zm, zf = z[high], z[mid], z[far]
    out[high] = np.log(zh * ndtr(zh) + _pdf(zh))
    out[mid] = -0.5 * zm * zm - 0.5 * _LOG_2PI + np.log1p(zm * erfcx(-zm / SQRT2) * SQRT_PI_2)
    out[far] = -0.5 * zf * zf - 0.5 * _LOG_2PI - 2.0 * np.log(-zf) + np.log1p(_tail(zf))
    return out


def _log_h_ranges(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """z as floats, an output array like it, and the masks of :func:`log_h`'s three ranges: above -1, between,
    below -100."""
    z = np.asarray(z, float)
    high, far = z > -1.0, z < -100.0
    return z, np.empty_like(z), (high, ~high & ~far, far)


def _tail(z: np.ndarray) -> np.ndarray:
    """-3/z^2 + 15/z^4: the asymptotic series of z^2 (z Phi(z) + phi(z)) / phi(z) - 1 far below 0 (its next term,
    -105/z^6, is at most about 1e-10 there)."""
    return -3.0 / z**2 + 15.0 / z**4


def log_h_slope(z: np.ndarray) -> np.ndarray:
    """d log_h / dz = Phi(z) / (z Phi(z) + phi(z)), over the same three ranges as :func:`log_h`."""
    z, out, (high, mid, far) = _log_h_ranges(z)
    zh, zm, zf = z[high], z[mid], z[far]
    out[high] = ndtr(zh) / (zh * ndtr(zh) + _pdf(zh))
    ratio = erfcx(-zm / SQRT2) * SQRT_PI_2
    out[mid] = ratio / (1.0 + zm * ratio)
    out[far] = -zf - 2.0 / zf + (6.0 / zf**3 - 60.0 / zf**5) / (1.0 + _tail(zf))
    return out


def acquisition(name: str, mean: np.ndarray, std: np.ndarray, y_opt: float, scale: float = 1.0) -> np.ndarray:
    """skopt's acquisition values to minimise (-EI, -PI, LCB), or -LogEI, from predicted means and standard
    deviations (``scale``: y's normalising standard deviation, for LogEI)."""
    if name == LOG_EI:
        std = np.sqrt(np.square(std / scale) + LOG_EI_VARIANCE)
        return -(np.log(std) + log_h((y_opt - mean) / scale / std))
    if name == "LCB":
        return mean - KAPPA * std
    values = np.zeros_like(mean)
    mask = std > 0
    improve = y_opt - XI - mean[mask]
    scaled = improve / std[mask]
    cdf = ndtr(scaled)
    values[mask] = cdf if name == "PI" else improve * cdf + std[mask] * _pdf(scaled)
    return -values


def acquisition_gradient(x: np.ndarray, model: GaussianProcess, name: str, y_opt: float) -> tuple[float, np.ndarray]:
    """One point's acquisition value to minimise and its gradient (what L-BFGS-B gets), as skopt computes them, or
    -LogEI's (in normalised units, as :func:`acquisition`)."""
    mean, std, mean_grad, std_grad = model.predict_gradient(x)
    if name == "LCB":
        return mean - KAPPA * std, mean_grad - KAPPA * std_grad
    if name == LOG_EI:
        scale = model.y_std
        sd = math.sqrt((std / scale) ** 2 + LOG_EI_VARIANCE)
        sd_grad = (std / scale) * (std_grad / scale) / sd
        improve, improve_grad = (y_opt - mean) / scale, -mean_grad / scale
        z = np.array([improve / sd])
        z_grad = (improve_grad * sd - sd_grad * improve) / sd**2
        return -(math.log(sd) + float(log_h(z)[0])), -(sd_grad / sd + float(log_h_slope(z)[0]) * z_grad)
    if std <= 0.0:
        return 0.0, np.zeros_like(x)
    improve = y_opt - XI - mean
    scaled = improve / std
    cdf, pdf = float(ndtr(scaled)), float(_pdf(scaled))
    scaled_grad = (-mean_grad * std - std_grad * improve) / std**2
    if name == "PI":
        return -cdf, -scaled_grad * pdf
    # d(improve cdf + std pdf) = -dmean cdf + dstd pdf (the pdf terms of improve's derivative cancel)
    return -(improve * cdf + std * pdf), mean_grad * cdf - std_grad * pdf


def sample(space: Space, n: int, rng: np.random.RandomState) -> np.ndarray:
    """n random points of the space, transformed: drawn per dimension from skopt's own distributions (doubles are
    uniform in the normalised space for either prior; categories uniform), in one vectorised step each."""
    columns = []
    for dim in space.dimensions:
        if isinstance(dim, Real):
            columns.append(rng.uniform(0.0, 1.0, (n, 1)))
        elif isinstance(dim, Categorical):
            rows = np.asarray(dim.transform(list(dim.categories)), float).reshape(len(dim.categories), -1)
            columns.append(rows[rng.randint(0, len(dim.categories), n)])
        else:
            columns.append(np.asarray(dim.transform(dim.rvs(n, random_state=rng)), float).reshape(n, -1))
    return np.hstack(columns)


def hedge_probabilities(gains: np.ndarray) -> np.ndarray:
    """gp_hedge's softmax of the gains, as skopt's; equal probabilities where gains or softmax are not finite."""
    logits = gains - np.max(gains)
    probs = np.exp(logits) / np.exp(logits).sum()
    return probs if np.all(np.isfinite(probs)) else np.full(len(gains), 1.0 / len(gains))


class GPOptimizer:
    """skopt's ``Optimizer(base_estimator="GP")`` for one run, with its attribute names (``Xi``, ``yi``, ``space``,
    ``_n_initial_points``, ``_next_x``, ``next_xs_``, ``gains_``): told points refit the model and pick the next."""

    def __init__(self, dimensions: Sequence[Dimension], acq_func: str, acq_optimizer: str, n_initial_points: int,
                 seed: int) -> None:
        self.space = Space(normalize_dimensions(list(dimensions)))
        self.acq_func, self.acq_optimizer = acq_func, acq_optimizer
        self.cand_acq_funcs = HEDGE if acq_func == "gp_hedge" else (acq_func,)
        self.prior = acq_func == LOG_EI  # LogEI fits with optuna's priors
        if acq_func == "gp_hedge":
            self.gains_ = np.zeros(len(HEDGE))
        self.rng = np.random.RandomState(seed)
        self._restart_seed = int(self.rng.randint(0, np.iinfo(np.int32).max))  # as skopt seeds its GP
        self._n_initial_points = n_initial_points
        self.Xi: list[list[Any]] = []
        self.yi: list[float] = []
        self.theta_: np.ndarray | None = None
        self._fitted_n = 0  # observations at the last hyperparameter fit
        self._bounds = np.array(self.space.transformed_bounds, float)

    def tell(self, x: Sequence[Any], y: float | Sequence[float]) -> None:
        """Add one point (or a list of points and values, fitted once) and, past the initial points, refit."""
        batch = len(x) > 0 and isinstance(x[0], (list, tuple, np.ndarray))
        xs, ys = (list(x), list(y)) if batch else ([list(x)], [y])  # type: ignore[arg-type]
        self.Xi.extend(list(p) for p in xs)
        self.yi.extend(float(v) for v in ys)
        self._n_initial_points -= len(ys)
        if self._n_initial_points <= 0:
            self._update(refit=True)

    def lied(self, pending: Sequence[Sequence[Any]], lie: float, seed: int) -> GPOptimizer:
        """A copy told the pending points with the constant liar's value, with these hyperparameters when fitted."""
        other = copy.copy(self)
        other.rng = np.random.RandomState(seed)
        other.Xi = self.Xi + [list(p) for p in pending]
        other.yi = self.yi + [float(lie)] * len(pending)
        other._n_initial_points = self._n_initial_points - len(pending)
        if hasattr(self, "gains_"):
            other.gains_ = np.copy(self.gains_)
        other.__dict__.pop("next_xs_", None)  # as a fresh skopt optimizer: no gains update on its first fit
        other._update(refit=self.theta_ is None)
        return other

    def _starts(self, dims: int) -> list[np.ndarray]:
        """Where the fit starts: the last optimum and skopt's initial kernel, plus skopt's two random starts at the
        first fit and at the fit that reaches or passes each multiple of ``RESTART_EVERY`` observations (a batch
        tell restarts where telling its points one at a time would have)."""
        bounds = log_bounds(dims, self.prior)
        starts = [np.zeros(len(bounds))] if self.theta_ is None else [self.theta_, np.zeros(len(bounds))]
        if self.theta_ is None or len(self.yi) // RESTART_EVERY > self._fitted_n // RESTART_EVERY:
            starts += list(np.random.RandomState(self._restart_seed).uniform(bounds[:, 0], bounds[:, 1],
                                                                             (N_RESTARTS, len(bounds))))
        return starts

    def _update(self, refit: bool) -> None:
        """Fit (or only condition) the model on every point, then pick the next point as skopt's ``_tell`` does."""
        X = self.space.transform(self.Xi)
        y = np.asarray(self.yi, float)
        if refit or self.theta_ is None:
            self.theta_ = fit_hyperparameters(X, normalize(y)[0], self._starts(X.shape[1]), self.prior)
            self._fitted_n = len(y)
        model = GaussianProcess(X, y, self.theta_)
        if self.acq_func == "gp_hedge" and hasattr(self, "next_xs_"):
            self.gains_ = self.gains_ - model.predict(np.vstack(self.next_xs_))[0]
        self.next_xs_ = self._acquire(model, float(y.min()), X[int(np.argmin(y))])
        if self.acq_func == "gp_hedge":
            next_x = self.next_xs_[int(np.argmax(self.rng.multinomial(1, hedge_probabilities(self.gains_))))]
        else:
            next_x = self.next_xs_[0]
        self._next_x = self.space.inverse_transform(next_x.reshape((1, -1)))[0]

    def _acquire(self, model: GaussianProcess, y_opt: float, observed_best: np.ndarray) -> list[np.ndarray]:
        """Each candidate acquisition function's minimiser over random candidates (polished by lbfgs, from the best
        of them and, for LogEI, from the best point observed too)."""
        X = sample(self.space, N_POINTS, self.rng)
        mean, std = model.predict(X)
        out = []
        for name in self.cand_acq_funcs:
            values = acquisition(name, mean, std, y_opt, model.y_std)
            if self.acq_optimizer == "sampling":
                best = X[np.argmin(values)]
            else:
                starts = X[np.argsort(values)[:N_STARTS]]
                if name == LOG_EI:
                    starts = np.vstack([starts, observed_best])
                runs = [fmin_l_bfgs_b(acquisition_gradient, x0, args=(model, name, y_opt), bounds=self._bounds,
                                      maxiter=LBFGS_MAXITER) for x0 in starts]
                best = min(runs, key=lambda r: r[1])[0]
            out.append(np.clip(best, self._bounds[:, 0], self._bounds[:, 1]))
        return out
