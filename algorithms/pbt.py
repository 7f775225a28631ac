"""Population based training: Katib's ``pbt``, with its whole state rebuilt from the trial history on every call.

Katib's suggestion service keeps a job queue in memory; here every decision is a function of the trials in the
store, so a resumed experiment continues the same populations:

- until ``n_population + 1`` trials have completed, trials get random assignments (generation 0);
- completed trials, in completion order, form pools of ``n_population + 1``; once pool ``k`` is full, new trials
  come from it (a stream of rounds, each of up to ``n_population`` jobs, until pool ``k + 1`` is full): trials in
  the bottom ``truncation_threshold`` quantile (by rank) are replaced by a copy of the assignments of a random
  top-quantile trial (exploit; the parent is that trial), the others are perturbed or resampled (explore; the
  parent is the trial itself). Round ``r`` of pool ``k`` is drawn with a seed derived from the pool's trial names, so it is the
  same after a restart; which jobs were issued is read from the ``pbt.katibx.io/job`` label;
- a Failed or Killed trial is queued again once, with the same assignments, generation and parent.

Children carry Katib's labels ``pbt.suggestion.katib.kubeflow.org/generation`` and ``.../parent`` and the
controller's ``katibx.io/checkpoint-from``, so each child starts from a copy of its parent's checkpoint directory.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from katibx.search_algorithm import SearchAlgorithm, Suggestion, int_setting, setting_path
from katibx.search_space import Parameter, point_key
from katibx.trial import CHECKPOINT_FROM_LABEL, TrialRecord, TrialState

GENERATION_LABEL = "pbt.suggestion.katib.kubeflow.org/generation"
PARENT_LABEL = "pbt.suggestion.katib.kubeflow.org/parent"
# "<pool>-<position>": the job's place in the stream of pool <pool> (0: the random first generation).
JOB_LABEL = "pbt.katibx.io/job"
# The Failed or Killed trial this one runs again.
RETRY_LABEL = "pbt.katibx.io/retry-of"

# Trials that join a pool; Failed and Killed ones are queued again instead.
_POOLED = (TrialState.SUCCEEDED, TrialState.EARLY_STOPPED, TrialState.METRICS_UNAVAILABLE)
_RETRIED = (TrialState.FAILED, TrialState.KILLED)
_PERTURB_FACTORS = (0.8, 1.2)


@dataclass(frozen=True)
class _Job:
    assignments: dict[str, Any]
    generation: int
    parent: str | None


class PopulationBasedTraining(SearchAlgorithm):
    """Katib's ``pbt`` (settings ``suggestion_trial_dir``, ``n_population``, ``truncation_threshold``, ``resample_probability``)."""

    name = "pbt"
    default_settings = {
        "suggestion_trial_dir": None,
        "n_population": None,
        "truncation_threshold": None,
        "resample_probability": None,
    }

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        trial_dir = settings.get("suggestion_trial_dir")
        if not trial_dir:
            errors.append(f"{setting_path('suggestion_trial_dir')}: Required value: the checkpoint directory "
                          "the trial reads and writes (Katib mounts it there), e.g. /var/log/katib/checkpoints/")
        elif not trial_dir.startswith("/") or trial_dir.strip("/") == "":
            errors.append(f"{setting_path('suggestion_trial_dir')}: must be an absolute path below / (got {trial_dir!r})")
        if not settings.get("n_population"):
            errors.append(f"{setting_path('n_population')}: Required value: the population size, an integer >= 5")
            self.n_population = 5
        else:
            self.n_population = int_setting(settings, "n_population", errors, minimum=5) or 5
        self.truncation_threshold = _fraction(settings, "truncation_threshold", errors, required=True)
        self.resample_probability = _fraction(settings, "resample_probability", errors, required=False)

    # suggestions ---------------------------------------------------------------------------------------------
    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        out = [self._retry(t) for t in self._to_retry(trials)[:count]]
        pooled = sorted((t for t in trials if t.state in _POOLED), key=_completion_order)
        size = self.n_population + 1
        pool = len(pooled) // size
        issued = sum(1 for t in trials if RETRY_LABEL not in t.labels and _job_pool(t) == pool)
        if pool == 0:
            rng = np.random.default_rng()  # random assignments need no replay: each is stored before it runs
            used = {point_key(t.assignments) for t in trials if t.state.is_active and PARENT_LABEL not in t.labels}
            jobs: Iterator[_Job] = (_Job({k: _plain(v) for k, v in self.space.sample_unused(rng, used).items()}, 0, None)
                                    for _ in range(count - len(out)))
        else:
            jobs = self._stream(pooled[(pool - 1) * size: pool * size], skip=issued)
        for position, job in zip(range(issued, issued + count - len(out)), jobs):
            labels = {GENERATION_LABEL: str(job.generation), JOB_LABEL: f"{pool}-{position}"}
            if job.parent is not None:
                labels.update({PARENT_LABEL: job.parent, CHECKPOINT_FROM_LABEL: job.parent})
            out.append(Suggestion(job.assignments, labels=labels))
        return out

    @staticmethod
    def _to_retry(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
        """Failed and Killed trials not queued again yet, oldest first."""
        done = {t.labels.get(RETRY_LABEL) for t in trials}
        return sorted((t for t in trials if t.state in _RETRIED and t.name not in done), key=_completion_order)

    @staticmethod
    def _retry(trial: TrialRecord) -> Suggestion:
        keep = (GENERATION_LABEL, PARENT_LABEL, JOB_LABEL, CHECKPOINT_FROM_LABEL)
        labels = {k: v for k, v in trial.labels.items() if k in keep}
        labels.setdefault(GENERATION_LABEL, "0")
        labels[RETRY_LABEL] = trial.name
        return Suggestion(dict(trial.assignments), labels=labels)

    def _stream(self, pool: list[TrialRecord], skip: int) -> Iterator[_Job]:
        """The jobs made from a full pool, round after round, from position ``skip`` on."""
        digest = hashlib.sha256("\n".join(sorted(t.name for t in pool)).encode()).digest()
        seed = int.from_bytes(digest[:16], "big")
        for round_ in range(1 << 30):
            jobs = self._round(pool, np.random.default_rng([seed, round_]))
            if skip >= len(jobs):
                skip -= len(jobs)
                continue
            yield from jobs[skip:]
            skip = 0

    def _round(self, pool: list[TrialRecord], rng: np.random.Generator) -> list[_Job]:
        """One new generation from a pool: Katib's truncation selection (exploit) and perturbation (explore).

        Katib compares values with the pool's ``truncation_threshold`` and ``1 - truncation_threshold``
        quantiles; ranks are used here, ties in random order, so that a pool whose bottom values are all equal
        (every trial at 0 accuracy, say) still replaces its bottom trials.
        """
        count, threshold, size = self.n_population, self.truncation_threshold, len(pool)
        assert count is not None and threshold is not None  # required settings, checked in configure()
        values = [self._value(t) for t in pool]
        known = [v for v in values if v is not None]
        worst = min(known) - 1.0 if known else 0.0  # a trial without an objective value ranks last
        scores = np.array([worst if v is None else v for v in values])
        shuffled = rng.permutation(size)
        ranked = [int(i) for i in shuffled[np.argsort(scores[shuffled], kind="stable")]]  # worst first
        # Katib's "value < lower quantile" and "value >= upper quantile", as counts (linear interpolation, no ties).
        below = math.ceil(threshold * (size - 1) - 1e-9)
        above = max(1, size - math.ceil((1 - threshold) * (size - 1) - 1e-9))
        exploit, explore, upper = ranked[:below], ranked[below:], ranked[size - above:]
        rng.shuffle(exploit)
        rng.shuffle(explore)
        exploit = exploit[: int(count * threshold + 1e-9)]
        explore = explore[: count - len(exploit)]
        jobs = []
        for _ in exploit:
            best = pool[upper[int(rng.integers(len(upper)))]]
            jobs.append(_Job(dict(best.assignments), _generation(best) + 1, best.name))
        for i in explore:
            trial = pool[i]
            jobs.append(_Job(self._explore(trial.assignments, rng), _generation(trial) + 1, trial.name))
        return jobs

    def _explore(self, assignments: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        out = {}
        for param in self.space:
            value = assignments.get(param.name)
            if value is None:
                value = param.sample(rng)
            elif self.resample_probability is None:
                value = perturb(param, value, rng)
            elif rng.random() < self.resample_probability:
                value = param.sample(rng)
            out[param.name] = _plain(value)
        return out

    def _value(self, trial: TrialRecord) -> float | None:
        """The objective value by the metric's strategy, larger is better; None when there is none."""
        loss = self.objective.loss(trial)
        return None if loss is None else -loss


def perturb(param: Parameter, value: Any, rng: np.random.Generator) -> Any:
    """Katib's explore step: numbers x0.8 or x1.2 within bounds (on the step grid), lists a neighbouring value."""
    if not param.is_numeric_range:
        index = _index(param, value)
        if index is None:
            return param.sample(rng)
        size = len(param.values)
        if size == 1:
            return param.values[0]
        move = int(rng.choice((-1, 1)))
        if param.type == "categorical":  # no order: wrap around, as Katib does
            return param.values[(index + move) % size]
        if not 0 <= index + move < size:  # discrete values are ordered: turn back at the ends
            move = -move
        return param.values[index + move]
    assert param.min is not None and param.max is not None
    low, high = param.min, param.max
    factor = float(rng.choice(_PERTURB_FACTORS))
    x = min(max(float(value) * factor, low), high)
    if param.step is not None:
        top = low + math.floor((high - low) / param.step + 1e-9) * param.step
        x = min(low + round((x - low) / param.step) * param.step, top)
    if param.type != "int":
        return round(float(x), 12) if param.step is not None else float(x)
    new = int(round(x))
    if new == int(value):  # small integers would never move: step once in the chosen direction
        step = int(param.step or 1)
        moved = new + (step if (factor > 1) == (new >= 0) else -step)
        new = moved if low <= moved <= high else new
    return new


def _index(param: Parameter, value: Any) -> int | None:
    for i, choice in enumerate(param.values):
        if type(choice) is type(value) and choice == value:
            return i
    try:
        return param.values.index(param.cast(value))
    except ValueError:
        return None


def _fraction(settings: Mapping[str, str | None], name: str, errors: list[str], required: bool) -> float | None:
    """A setting that must be a number between 0 and 1 inclusive (Katib compares the raw string; here it is parsed)."""
    raw = settings.get(name)
    if raw is None or raw == "":
        if required:
            errors.append(f"{setting_path(name)}: Required value: a number between 0 and 1")
        return None
    try:
        value = float(raw)
    except ValueError:
        errors.append(f"{setting_path(name)}: must be a number between 0 and 1 (got {raw!r})")
        return None
    if not 0 <= value <= 1:  # NaN fails this too
        errors.append(f"{setting_path(name)}: must be between 0 and 1, inclusive (got {raw!r})")
        return None
    return value


def _completion_order(trial: TrialRecord) -> tuple[float, int]:
    return (trial.completion_time if trial.completion_time is not None else math.inf, trial.index)


def _job_pool(trial: TrialRecord) -> int | None:
    pool, _, _ = trial.labels.get(JOB_LABEL, "").partition("-")
    return int(pool) if pool.isdigit() else None


def _generation(trial: TrialRecord) -> int:
    raw = trial.labels.get(GENERATION_LABEL, "0")
    return int(raw) if raw.isdigit() else 0


def _plain(value: Any) -> Any:
    """NumPy scalars as Python values (assignments are stored as JSON)."""
    return value.item() if isinstance(value, np.generic) else value
