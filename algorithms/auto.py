"""``auto``: one of the installed search algorithms, chosen from the experiment, then run as it is.

The choice rests on what the experiment says before any trial: the search space (its size and parameter types),
the budget (``maxTrialCount``), the parallelism, the objectives and whether early stopping is set. It is recorded in
the experiment's annotations (:data:`katibx.status.CHOSEN_ALGORITHM_ANNOTATION`), which are stored with
it and shown in its status, so a resumed experiment goes on with the algorithm it started with whatever its new
budget. The rules and the measurements behind them: ``benchmarks/README.md`` (the black-box suite).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from katibx import plugins
from katibx.search_algorithm import AlgorithmSettingsError, SearchAlgorithm, Suggestion
from katibx.search_space import Parameter, SearchSpace
from katibx.spec import Experiment
from katibx.status import CHOSEN_ALGORITHM_ANNOTATION, CHOSEN_REASON_ANNOTATION
from katibx.trial import TrialRecord

# A Gaussian process refits on every suggestion, at a cost that grows with the history (about 0.1 s a suggestion at
# 150 trials here): beyond this budget, or with no budget, a cheaper model is chosen.
GP_MAX_TRIALS = 200
# ... and beyond this many parameters its few trials per dimension model the space poorly.
GP_MAX_DIMENSIONS = 12


# What choose() may answer: an annotation naming anything else is not a choice of auto's, and is refused.
CHOICES = frozenset({"random", "multivariate-tpe", "tpe", "cmaes", "bayesianoptimization"})


def choose(experiment: Experiment, space: SearchSpace, installed: set[str]) -> tuple[str, str]:
    """The algorithm ``auto`` runs for ``experiment`` (among ``installed``) and why, in one line."""
    spec = experiment.spec
    budget = spec.max_trial_count
    objectives = 1 + len(spec.objective.additional_objectives or []) if spec.objective else 1
    free = [p for p in space if _free(p)]
    categorical = [p.name for p in free if not p.is_numeric_range]
    integers = [p.name for p in free if p.is_numeric_range and p.type == "int"]
    dims = len(free)
    kinds = [f"{len(names)} {kind}" for kind, names in (("categorical", categorical), ("integer", integers)) if names]
    described = ((f"{dims} parameter{'s' if dims != 1 else ''}" if dims else "no parameter with more than one value")
                 + (f" ({', '.join(kinds)})" if kinds else "")
                 + (f", {budget} trials" if budget is not None else ", no maxTrialCount"))

    def first(*names: str) -> str:
        return next(n for n in names if n in installed)

    normal = [p.name for p in space if p.is_numeric_range and p.distribution in ("normal", "logNormal")]
    if normal:
        return "random", f"{described}: only random search draws from normal distributions ({', '.join(normal)})"
    if not dims:
        return "random", f"{described}: there is nothing for a model to learn"
    if spec.early_stopping is not None and spec.early_stopping.algorithm_name:
        return first("multivariate-tpe", "tpe", "random"), f"{described}, early stopping: a TPE learns from the " \
                                                          "trials it stops too"
    if objectives > 1:
        return first("multivariate-tpe", "tpe", "random"), f"{objectives} objectives, {described}: a TPE that " \
                                                          "models them together"
    if budget is None or budget > GP_MAX_TRIALS:
        if not categorical and dims > 1 and "cmaes" in installed:
            return "cmaes", f"{described}: more trials than a Gaussian process affords; CMA-ES adapts to the " \
                            "space's scaling and correlations"
        return first("multivariate-tpe", "tpe", "random"), f"{described}: more trials than a Gaussian process " \
                                                          "affords; a TPE models the parameters together"
    if dims > GP_MAX_DIMENSIONS:
        return first("multivariate-tpe", "tpe", "random"), f"{described}: too many parameters for a Gaussian " \
                                                          "process to model in few trials"
    if 2 * len(integers) >= dims:
        return first("multivariate-tpe", "tpe", "random"), f"{described}: a TPE models integer values as they " \
                                                          "are (a Gaussian process did worse with half of them)"
    return first("bayesianoptimization", "multivariate-tpe", "tpe", "random"), \
        f"{described}: a Gaussian process makes the most of a small budget"


def _free(parameter: Parameter) -> bool:
    """Whether the parameter has more than one value to search: a step at least as long as the range leaves one
    (as the grid counts them, float noise forgiven), and so does a logUniform integer range below 2 (it starts at 1)."""
    if not parameter.is_numeric_range:
        return len(parameter.values) > 1
    assert parameter.min is not None and parameter.max is not None
    if parameter.distribution == "logUniform":  # (logUniform drops step, as in Katib)
        low = max(1, parameter.min) if parameter.type == "int" else parameter.min
        return parameter.max > low
    if parameter.min == parameter.max:
        return False
    return parameter.step is None or (parameter.max - parameter.min) / parameter.step + 1e-9 >= 1


class Auto(SearchAlgorithm):
    """``auto``: chooses the algorithm (see :func:`choose`); ``random_state`` is handed to the one chosen."""

    name = "auto"
    default_settings = {"random_state": None}
    supports_multi_objective = True

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        annotations = self.experiment.metadata.annotations
        chosen = annotations.get(CHOSEN_ALGORITHM_ANNOTATION)
        installed = plugins.algorithm_names() - {self.name}
        if not len(self.space):
            errors.append("spec.algorithm.algorithmName: auto chooses among search algorithms for spec.parameters; "
                          "for nasConfig name darts or enas")
            return
        if chosen is not None and chosen not in CHOICES:
            errors.append(f"metadata.annotations[{CHOSEN_ALGORITHM_ANNOTATION}]: {chosen!r} is not a choice auto makes "
                          f"(one of {', '.join(sorted(CHOICES))})")
            return
        if chosen is None:
            chosen, reason = choose(self.experiment, self.space, installed)
            annotations[CHOSEN_ALGORITHM_ANNOTATION] = chosen
            annotations[CHOSEN_REASON_ANNOTATION] = reason
        elif chosen not in installed:
            errors.append(f"spec.algorithm.algorithmName: auto chose {chosen!r} when the experiment started, and it is "
                          "not installed")
            return
        given = {"random_state": settings["random_state"]} if settings.get("random_state") else {}
        inner = self.experiment.model_copy(deep=True)
        assert inner.spec.algorithm is not None
        inner.spec.algorithm = inner.spec.algorithm.model_validate(
            {"algorithmName": chosen, "algorithmSettings": [{"name": k, "value": v} for k, v in given.items()]})
        try:
            self.chosen: SearchAlgorithm = plugins.load(plugins.ALGORITHMS, chosen)(inner, self.space)
        except AlgorithmSettingsError as exc:
            errors.extend(f"{e} (auto chose {chosen!r})" for e in exc.errors)

    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        return self.chosen.suggest(trials, count)
