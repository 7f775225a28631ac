"""Plugin conformance kit: the same checks for every search algorithm and worker backend, built in or not.

A plugin author runs it from their own tests::

    from katibx.testing import AlgorithmConformance, AlgorithmCase, algorithm_doc

    def test_my_algorithm_conforms() -> None:
        case = AlgorithmCase(algorithm_doc("my-algo", {"random_state": "1"}))
        AlgorithmConformance("my-algo", case).check_all()

Search algorithms are driven directly through their class with simulated trial histories (fast, no processes):

* :meth:`AlgorithmConformance.check_count` - ``suggest(history, count)`` never returns more than ``count``;
* :meth:`AlgorithmConformance.check_rebuilt_equals_running` - the store's history is the only state: a fresh
  instance given the history suggests what the instance that saw the whole run did (a resumed run equals an
  uninterrupted one);
* :meth:`AlgorithmConformance.check_no_repeat_of_active` - parallel suggestions never repeat the assignment of a
  trial that is still Created/Running, nor each other;
* :meth:`AlgorithmConformance.check_settings_errors` - an unknown setting and a malformed value of every declared
  setting are refused with :class:`~katibx.search_algorithm.AlgorithmSettingsError` lines naming the setting.

Backends run tiny real experiments (:class:`BackendConformance`): exact trial counts with every metric, a killed
trial ends, and a controller that crashes with trials in flight is resumed to exactly ``maxTrialCount`` trials,
no trial running twice at once and no worker left behind.

Only the standard library and katibx are imported here (psutil, a katibx dependency, when a backend check runs).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from katibx import plugins
from katibx.backend import Backend, TrialEvent, TrialExited, TrialJob
from katibx.objective import Objective
from katibx.search_algorithm import AlgorithmSettingsError, SearchAlgorithm, Suggestion, TrialHistory, setting_path
from katibx.search_space import SearchSpace, point_key
from katibx.spec import Experiment
from katibx.trial import CHECKPOINT_FROM_LABEL, EXPERIMENT_LABEL, MetricSummary, TrialRecord, TrialState

__all__ = [
    "ALGORITHM_CASES", "AlgorithmCase", "AlgorithmConformance", "BackendConformance", "ConformanceError",
    "SimulatedCrash", "algorithm_case", "algorithm_doc", "register_algorithm_case",
]

#: A value no declared setting accepts (used unless a case names another one for a setting).
MALFORMED = "@not-a-valid-value@"
#: A setting name no algorithm declares.
UNKNOWN_SETTING = "katibx_conformance_unknown_setting"


class ConformanceError(AssertionError):
    """A plugin broke its contract; the message says which check, for which plugin, and what was seen."""


def _fail(plugin: str, check: str, detail: str) -> ConformanceError:
    return ConformanceError(f"{plugin}: {check}: {detail}")


# experiment documents ----------------------------------------------------------------------------------------------


def _int(name: str, low: int, high: int) -> dict[str, Any]:
    return {"name": name, "parameterType": "int", "feasibleSpace": {"min": str(low), "max": str(high)}}


def _double(name: str, low: float, high: float, step: float | None = None) -> dict[str, Any]:
    space = {"min": str(low), "max": str(high), **({"step": str(step)} if step else {})}
    return {"name": name, "parameterType": "double", "feasibleSpace": space}


def algorithm_doc(algorithm: str, settings: Mapping[str, str] | None = None,
                  parameters: Sequence[dict[str, Any]] | None = None, *, parallel: int = 3,
                  max_trials: int | None = 12, **spec: Any) -> dict[str, Any]:
    """A minimal valid Experiment document for ``algorithm`` (maximize ``result``; trials run ``python -c``)."""
    parameters = list(parameters or [_int("x", 1, 3), _int("y", 1, 3)])
    doc: dict[str, Any] = {
        "apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment", "metadata": {"name": "conformance"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "result"},
            "algorithm": {"algorithmName": algorithm,
                          "algorithmSettings": [{"name": k, "value": v} for k, v in (settings or {}).items()]},
            "parallelTrialCount": parallel,
            "parameters": parameters,
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": p["name"], "reference": p["name"]} for p in parameters],
                "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "python:3.11", "command": [
                        "python", "-c", "print('result=1')",
                        *(f"${{trialParameters.{p['name']}}}" for p in parameters)]}]}}}},
            },
            **copy.deepcopy(spec),
        },
    }
    if max_trials is not None:
        doc["spec"]["maxTrialCount"] = max_trials
    return doc


def _darts_doc() -> dict[str, Any]:
    """Katib's darts example, shrunk: nasConfig instead of parameters, one trial."""
    doc = algorithm_doc("darts", {"num_epochs": "1", "random_state": "1"}, [_int("unused", 1, 2)], parallel=1,
                        max_trials=1)
    del doc["spec"]["parameters"]
    doc["spec"]["objective"]["objectiveMetricName"] = "Best-Genotype"
    doc["spec"]["nasConfig"] = {"graphConfig": {"numLayers": 2}, "operations": [
        {"operationType": "separable_convolution",
         "parameters": [{"name": "filter_size", "parameterType": "categorical", "feasibleSpace": {"list": ["3"]}}]},
        {"operationType": "skip_connection"}]}
    template = doc["spec"]["trialTemplate"]
    template["trialParameters"] = [{"name": "settings", "reference": "algorithm-settings"},
                                   {"name": "space", "reference": "search-space"},
                                   {"name": "layers", "reference": "num-layers"}]
    template["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"] = [
        "python", "-c", "print('Best-Genotype=x')", "${trialParameters.settings}", "${trialParameters.space}",
        "${trialParameters.layers}"]
    return doc


def _enas_doc() -> dict[str, Any]:
    """Katib's enas example, shrunk: two layers, two operations, a controller trained two steps a call."""
    doc = algorithm_doc("enas", {"random_state": "1", "controller_train_steps": "2"}, [_int("unused", 1, 2)])
    del doc["spec"]["parameters"]
    doc["spec"]["nasConfig"] = {"graphConfig": {"numLayers": 2, "inputSizes": [8, 8, 1], "outputSizes": [10]},
                                "operations": [
        {"operationType": "convolution", "parameters": [
            {"name": "filter_size", "parameterType": "categorical", "feasibleSpace": {"list": ["3", "5"]}}]},
        {"operationType": "reduction", "parameters": [
            {"name": "reduction_type", "parameterType": "categorical", "feasibleSpace": {"list": ["max_pooling"]}}]}]}
    template = doc["spec"]["trialTemplate"]
    template["trialParameters"] = [{"name": "architecture", "reference": "architecture"},
                                   {"name": "config", "reference": "nn_config"}]
    template["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"] = [
        "python", "-c", "print('result=1')", "${trialParameters.architecture}", "${trialParameters.config}"]
    return doc


@dataclass
class AlgorithmCase:
    """How to exercise one algorithm: a minimal valid experiment document and what the checks may expect of it.

    ``malformed``: per setting, a value that must be refused (default :data:`MALFORMED`); settings listed in
    ``free_form`` accept any text and get no malformed-value check. ``reproducible``: whether a fresh instance must
    repeat the running one's suggestions (true for any algorithm whose randomness comes from ``random_state`` or
    the history); ``replay_from``: completed trials from which that holds (an algorithm without ``random_state``
    may draw its start at random: each draw is stored before it runs). ``steps``: simulated controller steps."""

    doc: dict[str, Any]
    malformed: dict[str, str] = field(default_factory=dict)
    free_form: frozenset[str] = frozenset()
    reproducible: bool = True
    replay_from: int = 0
    steps: int = 10

    def multi_objective(self) -> AlgorithmCase:
        """This case with a second objective (``spec.objective.additionalObjectives``), for algorithms that
        support several."""
        doc = copy.deepcopy(self.doc)
        doc["spec"]["objective"]["additionalObjectives"] = [{"objectiveMetricName": "cost", "type": "minimize"}]
        return dataclasses.replace(self, doc=doc)


_XY = [_int("x", 1, 3), _int("y", 1, 3)]
_RESOURCE = [_double("x", 0, 1), _int("epochs", 1, 9)]

#: Built-in algorithms -> their case. Plugins add theirs with :func:`register_algorithm_case`.
ALGORITHM_CASES: dict[str, AlgorithmCase] = {
    "random": AlgorithmCase(algorithm_doc("random", {"random_state": "1"}, [*_XY, {
        "name": "c", "parameterType": "categorical", "feasibleSpace": {"list": ["a", "b"]}}])),
    "grid": AlgorithmCase(algorithm_doc("grid", {"random_state": "1"}, _XY, max_trials=9)),
    "tpe": AlgorithmCase(algorithm_doc("tpe", {"random_state": "1"}, _XY)),
    "multivariate-tpe": AlgorithmCase(algorithm_doc("multivariate-tpe", {"random_state": "1", "n_startup_trials": "3"},
                                                    _XY)),
    "cmaes": AlgorithmCase(algorithm_doc("cmaes", {"random_state": "1"}, _XY)),
    "sobol": AlgorithmCase(algorithm_doc("sobol", {"random_state": "1"}, _XY)),
    "bayesianoptimization": AlgorithmCase(algorithm_doc(
        "bayesianoptimization", {"random_state": "1", "n_initial_points": "3", "base_estimator": "RF"}, _XY),
        steps=6),
    "hyperband": AlgorithmCase(algorithm_doc("hyperband", {"resource_name": "epochs", "r_l": "3", "eta": "3",
                                                           "random_state": "1"}, _RESOURCE, max_trials=None)),
    "asha": AlgorithmCase(algorithm_doc("asha", {"resource_name": "epochs", "random_state": "1"}, _RESOURCE)),
    "pbt": AlgorithmCase(algorithm_doc("pbt", {"suggestion_trial_dir": "/var/log/katib/checkpoints/",
                                               "n_population": "5", "truncation_threshold": "0.2"},
                                       [_double("lr", 0.0001, 0.02, 0.0001)], max_trials=20),
                         replay_from=6, steps=16),  # generation 0 is drawn unseeded (pbt has no random_state)
    "auto": AlgorithmCase(algorithm_doc("auto", {"random_state": "1"}, _XY)),  # (chooses multivariate-tpe here)
    "darts": AlgorithmCase(_darts_doc(), steps=2),
    "enas": AlgorithmCase(_enas_doc(), steps=4),
}


def register_algorithm_case(name: str, case: AlgorithmCase) -> None:
    """Make ``case`` the one used for algorithm ``name`` (the hook for plugins, and for tests of the kit itself)."""
    ALGORITHM_CASES[name] = case


def algorithm_case(name: str) -> AlgorithmCase:
    """The registered case of ``name``; ConformanceError telling the author how to add one when there is none."""
    if name not in ALGORITHM_CASES:
        raise _fail(name, "no conformance case", "register an experiment document for it with "
                    "katibx.testing.register_algorithm_case(name, AlgorithmCase(algorithm_doc(name, {...})))")
    return ALGORITHM_CASES[name]


# simulated runs ----------------------------------------------------------------------------------------------------


def _simulated_value(trial: TrialRecord, salt: int) -> str:
    """A deterministic objective value from the assignments (numbers summed, text hashed without randomness)."""
    total = float(salt % 7)
    for key in sorted(trial.assignments):
        value = trial.assignments[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            total += float(value) * (1 + len(key))
        else:
            total += sum(str(value).encode()) % 13
    return repr(round(total, 9))


@dataclass
class _Step:
    history: list[TrialRecord]
    count: int
    suggestions: list[Suggestion]


class _Simulation:
    """A controller stand-in: asks for up to parallelTrialCount trials, completes the oldest running one per step."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.objective = Objective(experiment)
        self.space = SearchSpace.from_experiment(experiment)
        self.trials: list[TrialRecord] = []
        self.clock = 0.0

    def wanted(self) -> int:
        spec = self.experiment.spec
        active = sum(t.state.is_active for t in self.trials)
        wanted = (spec.parallel_trial_count or 1) - active
        if spec.max_trial_count is not None:
            wanted = min(wanted, spec.max_trial_count - len(self.trials))
        return max(wanted, 0)

    def add(self, suggestions: Sequence[Suggestion]) -> None:
        for s in suggestions:
            self.clock += 1
            index = len(self.trials)
            self.trials.append(TrialRecord(
                name=s.name or f"{self.experiment.name}-{index:08d}", index=index,
                assignments=self.space.cast(s.assignments), state=TrialState.RUNNING,
                labels={EXPERIMENT_LABEL: self.experiment.name, **s.labels}, creation_time=self.clock,
                start_time=self.clock, id=index + 1))

    def complete_oldest(self) -> None:
        running = [t for t in self.trials if t.state.is_active]
        if not running:
            return
        trial = running[0]
        self.clock += 1
        trial.state, trial.completion_time = TrialState.SUCCEEDED, self.clock
        for i, (metric, _) in enumerate(self.objective.objectives):
            value = _simulated_value(trial, i)
            trial.observation[metric] = MetricSummary(metric, value, value, value)

    def snapshot(self) -> list[TrialRecord]:
        return [copy.deepcopy(t) for t in self.trials]


def _as_given(history: list[TrialRecord]) -> TrialHistory:
    """A history as the controller gives it to ``suggest``: a read-only sequence with its active trials."""
    return TrialHistory(history, [t for t in history if t.state.is_active])


class AlgorithmConformance:
    """The conformance checks of one search-algorithm entry point (``katibx.algorithms`` group)."""

    def __init__(self, name: str, case: AlgorithmCase | None = None,
                 cls: type[SearchAlgorithm] | None = None) -> None:
        self.name = name
        self.case = case or algorithm_case(name)
        self.cls: type[SearchAlgorithm] = cls or plugins.load(plugins.ALGORITHMS, name)

    def experiment(self, settings: Mapping[str, str] | None = None) -> Experiment:
        """The case's experiment, its settings replaced by ``settings`` when given (validated like a loaded file)."""
        from katibx.loader import experiment_from_dict

        doc = copy.deepcopy(self.case.doc)
        if settings is not None:
            doc["spec"]["algorithm"]["algorithmSettings"] = [{"name": k, "value": v} for k, v in settings.items()]
        return experiment_from_dict(doc)

    def create(self, experiment: Experiment | None = None) -> SearchAlgorithm:
        experiment = experiment or self.experiment()
        return self.cls(experiment, SearchSpace.from_experiment(experiment))

    def simulate(self) -> list[_Step]:
        """Run the case's experiment against one long-lived instance; every suggest call with what it saw."""
        experiment = self.experiment()
        algorithm, run = self.create(experiment), _Simulation(experiment)
        steps: list[_Step] = []
        for _ in range(self.case.steps):
            count = run.wanted()
            if count:
                history = run.snapshot()
                suggestions = algorithm.suggest(_as_given(history), count)
                steps.append(_Step(history, count, list(suggestions)))
                run.add(suggestions[:count])
            run.complete_oldest()
        return steps

    # the checks --------------------------------------------------------------------------------------------------
    def check_count(self, steps: list[_Step] | None = None) -> None:
        """Never more suggestions than asked, whatever the history; 0 asked gives none."""
        for step in steps if steps is not None else self.simulate():
            if len(step.suggestions) > step.count:
                raise _fail(self.name, "never more suggestions than asked",
                            f"asked for {step.count} after {len(step.history)} trials, got {len(step.suggestions)}")
        experiment = self.experiment()
        got = self.create(experiment).suggest([], 0)
        if got:
            raise _fail(self.name, "never more suggestions than asked", f"asked for 0, got {len(got)}")
        if not self.create(experiment).suggest([], 1) and experiment.spec.max_trial_count != 0:
            raise _fail(self.name, "suggestions", "no suggestion for an empty history")

    def check_rebuilt_equals_running(self, steps: list[_Step] | None = None) -> None:
        """A fresh instance given a step's history suggests exactly what the long-lived one did (resume == run)."""
        if not self.case.reproducible:
            return
        for step in steps if steps is not None else self.simulate():
            if sum(t.state.is_terminal for t in step.history) < self.case.replay_from:
                continue
            rebuilt = self.create().suggest(_as_given(copy.deepcopy(step.history)), step.count)
            if list(rebuilt) != step.suggestions:
                raise _fail(self.name, "a resumed run equals an uninterrupted one",
                            f"after {len(step.history)} trials a rebuilt instance suggested "
                            f"{[s.assignments for s in rebuilt]}, "
                            f"the running one {[s.assignments for s in step.suggestions]}")

    def check_no_repeat_of_active(self, steps: list[_Step] | None = None) -> None:
        """No suggestion repeats the point (:func:`_key`) of a Created/Running trial, nor another of its batch."""
        experiment = self.experiment()
        space = SearchSpace.from_experiment(experiment)
        for step in steps if steps is not None else self.simulate():
            taken = [_key(t.assignments, t.labels) for t in step.history if t.state.is_active]
            for s in step.suggestions:
                key = _key(space.cast(s.assignments), s.labels)
                if key in taken:
                    raise _fail(self.name, "no repeat of a running trial's assignment",
                                f"after {len(step.history)} trials it suggested {s.assignments}, which is still "
                                "running or pending")
                taken.append(key)

    def check_settings_errors(self) -> None:
        """An unknown setting and a malformed value of each declared setting: AlgorithmSettingsError naming it."""
        base = {k: v for k, v in self.experiment().spec.algorithm.settings_dict().items()  # type: ignore[union-attr]
                if v is not None}
        self._refused({**base, UNKNOWN_SETTING: "1"}, UNKNOWN_SETTING)
        for name in self.cls.default_settings:
            if name in self.case.free_form:
                continue
            self._refused({**base, name: self.case.malformed.get(name, MALFORMED)}, name)

    def _refused(self, settings: dict[str, str], name: str) -> None:
        check = f"settings errors name the setting ({name}={settings[name]!r})"
        try:
            self.create(self.experiment(settings))
        except AlgorithmSettingsError as exc:
            if not exc.errors or not any(_names_setting(line, name) for line in exc.errors):
                raise _fail(self.name, check, f"no error line starts with {setting_path(name)}: {exc.errors}") from None
            return
        except Exception as exc:  # noqa: BLE001 - any other exception is a broken contract too
            raise _fail(self.name, check,
                        f"raised {type(exc).__name__} instead of AlgorithmSettingsError: {exc}") from None
        raise _fail(self.name, check, "accepted")

    def check_suggestions(self) -> None:
        """The three suggestion checks on one simulated run."""
        steps = self.simulate()
        self.check_count(steps)
        self.check_rebuilt_equals_running(steps)
        self.check_no_repeat_of_active(steps)

    def check_all(self) -> None:
        """Every algorithm check; the suggestion checks again with two objectives when the algorithm supports them."""
        self.check_suggestions()
        self.check_settings_errors()
        if self.cls.supports_multi_objective:
            AlgorithmConformance(self.name, self.case.multi_objective(), self.cls).check_suggestions()


def _names_setting(line: str, name: str) -> bool:
    """Whether an error line is about setting ``name``: ``spec.algorithm.algorithmSettings[name]: ...``."""
    return line.startswith(setting_path(name) + ":")


def _key(assignments: Mapping[str, Any], labels: Mapping[str, str]) -> tuple[Any, ...]:
    """What makes a trial's point: its assignments by value and type (``1``, ``1.0`` and ``True`` differ) and the
    checkpoint it starts from (a PBT child that continues another trial's training is another point)."""
    return point_key(assignments), labels.get(CHECKPOINT_FROM_LABEL)


# backends ----------------------------------------------------------------------------------------------------------

# The trial program: argv = trial name, x, marker folder. It notes its pid, checks that no other process of the same
# trial is alive (a trial must never run twice at once), blocks on its first start while the folder holds a file
# "block" and no "go.<trial>", and prints result = 2x.
_TRIAL_PROGRAM = r"""
import os, sys, time
import psutil
name, x, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
mine = f"{name}.{os.getpid()}"
earlier = [f for f in os.listdir(marker) if f.startswith(name + ".") and f.split(".")[-1].isdigit()]
open(os.path.join(marker, mine), "w").close()
for other in earlier:
    try:
        if psutil.Process(int(other.split(".")[-1])).status() != psutil.STATUS_ZOMBIE:
            open(os.path.join(marker, "twin." + name), "w").close()
    except psutil.NoSuchProcess:
        pass
while not earlier and os.path.exists(os.path.join(marker, "block")) \
        and not os.path.exists(os.path.join(marker, "go." + name)):
    time.sleep(0.01)
print(f"result={2 * x}", flush=True)
"""


class SimulatedCrash(Exception):
    """Raised from ``poll`` by the crashing wrapper: the controller stops without closing the backend."""


class _Wrapper(Backend):
    """Delegates to ``inner``; lets the kit crash the controller and unblock trials that a backend re-attached."""

    def __init__(self, inner: Backend, marker: Path, crash_after_starts: int | None = None,
                 held: Sequence[str] = ()) -> None:
        self.inner, self.marker, self.crash_after, self.held = inner, marker, crash_after_starts, set(held)
        self.name = inner.name  # type: ignore[misc]
        self.started: list[str] = []
        self.attached: list[str] = []
        self.released: list[dict[str, Any]] = []

    def can_start(self, job: TrialJob) -> bool:
        return self.inner.can_start(job)

    def check(self, experiment: Experiment) -> list[str]:
        return self.inner.check(experiment)

    def settings(self) -> dict[str, Any]:
        return self.inner.settings()

    def start(self, job: TrialJob) -> dict[str, Any]:
        if self.crash_after is None and job.trial.name not in self.held:  # new trials of the resumed run never block
            (self.marker / f"go.{job.trial.name}").touch()
        handle = self.inner.start(job)
        self.started.append(job.trial.name)
        return handle

    def poll(self, timeout: float) -> list[TrialEvent]:
        """Crash once ``crash_after`` trials have started and each trial program has noted its pid (runs)."""
        if self.crash_after is not None and len(self.started) >= self.crash_after and all(
                any(self.marker.glob(f"{name}.*")) for name in self.started):
            raise SimulatedCrash(f"controller crashed with {self.started} running")
        events = self.inner.poll(timeout)
        if self.crash_after is not None:
            ended = [e.trial_name for e in events if isinstance(e, TrialExited)]
            if ended:
                raise _fail(self.inner.name, "attach/release after a controller crash",
                            f"trials {ended} ended before the crash, though they block on their first start")
        return events

    def kill(self, trial_name: str) -> None:
        self.inner.kill(trial_name)

    def attach(self, job: TrialJob, handle: dict[str, Any]) -> bool:
        attached = self.inner.attach(job, handle)
        if attached:
            self.attached.append(job.trial.name)
            (self.marker / f"go.{job.trial.name}").touch()
        return attached

    def release(self, handle: dict[str, Any]) -> None:
        self.released.append(handle)
        self.inner.release(handle)

    def close(self) -> None:
        if self.crash_after is None:
            self.inner.close()


@dataclass
class BackendConformance:
    """The conformance checks of one worker backend, on tiny real experiments.

    ``factory`` makes a configured backend (a fresh one per controller); ``workdir`` is an empty folder the
    backend's trials can read and write (on a cluster: a folder its pods see at the same path)."""

    name: str
    factory: Callable[[], Backend]
    workdir: Path
    namespace: str | None = None
    trial_timeout: float = 60.0
    #: Extra fields of the trials' container (``resources``: a crashed controller's workers hold theirs until the
    #: backend releases them, so a small cluster may need small trials).
    container: dict[str, Any] = field(default_factory=dict)

    def doc(self, experiment: str, max_trials: int = 4, parallel: int = 2) -> dict[str, Any]:
        """Random search over an int ``x``; each trial runs the trial program with this interpreter."""
        marker = self.marker(experiment)
        doc = algorithm_doc("random", {"random_state": "3"}, [_int("x", 1, 10 ** 6)], parallel=parallel,
                            max_trials=max_trials)
        doc["metadata"]["name"] = experiment
        if self.namespace:
            doc["metadata"]["namespace"] = self.namespace
        template = doc["spec"]["trialTemplate"]
        template["trialParameters"] = [{"name": "trialName", "reference": "${trialSpec.Name}"},
                                       {"name": "x", "reference": "x"}]
        template["trialSpec"]["spec"]["backoffLimit"] = 0
        container = template["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
        container["command"] = [
            "python", "-c", _TRIAL_PROGRAM, "${trialParameters.trialName}", "${trialParameters.x}", str(marker)]
        container.update(copy.deepcopy(self.container))
        return doc

    def marker(self, experiment: str) -> Path:
        path = self.workdir / f"markers-{experiment}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _run(self, doc: dict[str, Any], store: Any, backend: Backend) -> Any:
        from katibx.loader import experiment_from_dict
        from katibx.runner import run_experiment

        return run_experiment(experiment_from_dict(doc), store=store, backend=backend, workdir=self.workdir)

    def _store(self, experiment: str) -> Any:
        from katibx.store import Store

        return Store(self.workdir / f"{experiment}.db")

    def _check_trials(self, check: str, trials: list[TrialRecord], count: int) -> None:
        if len(trials) != count or len({t.name for t in trials}) != count:
            raise _fail(self.name, check, f"{len(trials)} trials, expected exactly {count}")
        for t in trials:
            if t.state is not TrialState.SUCCEEDED:
                raise _fail(self.name, check, f"trial {t.name} ended {t.state.value}: {t.reason} {t.message}")
            result = t.metric("result")
            if result is None or float(result) != 2 * t.assignments["x"]:
                raise _fail(self.name, check, f"trial {t.name} has result {t.metric('result')}, "
                            f"expected {2 * t.assignments['x']}")

    # the checks --------------------------------------------------------------------------------------------------
    def check_counts_and_metrics(self) -> None:
        """maxTrialCount trials, parallelTrialCount at a time, every one Succeeded with the metric it printed."""
        store = self._store("counts")
        try:
            record = self._run(self.doc("counts", max_trials=4), store, self.factory())
            self._check_trials("trial counts exact, every metric collected", store.trials(record.id), 4)
            self._check_no_workers_left("trial counts exact", "counts")
        finally:
            store.close()

    def check_kill(self) -> None:
        """A running trial stopped with ``kill`` ends (not Succeeded) and leaves no process."""
        from katibx.loader import experiment_from_dict

        doc = self.doc("killed", max_trials=1, parallel=1)
        marker = self.marker("killed")
        (marker / "block").touch()
        experiment = experiment_from_dict(doc)
        trial = TrialRecord(name="killed-00000000", index=0, assignments={"x": 5}, state=TrialState.RUNNING,
                            labels={EXPERIMENT_LABEL: "killed"}, id=1)
        backend = self.factory()
        try:
            backend.start(TrialJob(experiment, trial, self.workdir, self.workdir / "trials" / trial.name))
            self._wait_for_start(backend, marker, trial.name)
            backend.kill(trial.name)
            exited = self._wait_for_exit(backend, trial.name)
            if exited.succeeded:
                raise _fail(self.name, "a killed trial ends", f"it ended succeeded: {exited.reason} {exited.message}")
        finally:
            backend.close()
        self._check_no_workers_left("a killed trial ends", "killed")

    def _wait_for_start(self, backend: Backend, marker: Path, trial: str) -> None:
        """Poll the backend (its events are the clock) until the trial program has noted its pid."""
        deadline = time.monotonic() + self.trial_timeout
        while not any(p.name.startswith(trial + ".") for p in marker.iterdir()):
            for event in backend.poll(0.2):
                if isinstance(event, TrialExited) and event.trial_name == trial:
                    raise _fail(self.name, "a killed trial ends", f"it exited before it was killed: {event.message}")
            if time.monotonic() > deadline:
                raise _fail(self.name, "a killed trial ends", f"the trial did not start in {self.trial_timeout} s")

    def _wait_for_exit(self, backend: Backend, trial: str) -> TrialExited:
        deadline = time.monotonic() + self.trial_timeout
        while time.monotonic() < deadline:
            for event in backend.poll(0.5):
                if isinstance(event, TrialExited) and event.trial_name == trial:
                    return event
        raise _fail(self.name, "a killed trial ends", f"no exit reported within {self.trial_timeout} s")

    def check_crash_and_resume(self) -> None:
        """A controller that crashes with trials running (handles stored, workers alive) is resumed: exactly
        maxTrialCount trials, all Succeeded, none run twice at once, and no worker left behind."""
        check = "attach/release after a controller crash"
        experiment = "crashed"
        marker = self.marker(experiment)
        (marker / "block").touch()  # first starts block until released or re-attached
        store = self._store(experiment)
        crashing = _Wrapper(self.factory(), marker, crash_after_starts=2)
        try:
            try:
                self._run(self.doc(experiment, max_trials=4, parallel=2), store, crashing)
            except SimulatedCrash:
                pass
            else:
                raise _fail(self.name, check, "the controller was not interrupted (no trial started?)")
            record = store.get_experiment(experiment, self.namespace)
            before = store.trials(record.id)
            running = [t for t in before if t.state is TrialState.RUNNING]
            if len(running) != 2 or any(store.trial_handle(t) is None for t in running):
                raise _fail(self.name, check, f"expected 2 Running trials with handles, got "
                            f"{[(t.name, t.state.value, store.trial_handle(t)) for t in before]}")
            from katibx.runner import resume_experiment

            # a crashed trial's first worker stays blocked unless re-attached; a re-run is no first start: never blocks
            resumed = _Wrapper(self.factory(), marker, held=[t.name for t in running])
            record = resume_experiment(experiment, store=store, namespace=self.namespace, backend=resumed)
            trials = store.trials(record.id)
            self._check_trials(check, trials, 4)
            if [t.name for t in trials[:2]] != [t.name for t in before[:2]]:
                raise _fail(self.name, check, "the resumed run did not keep the crashed run's trials")
            twins = sorted(p.name for p in marker.glob("twin.*"))
            if twins:
                raise _fail(self.name, check, f"trials ran twice at once: {twins}")
            handled = set(resumed.attached) | {t.name for t in running if t.name in resumed.started}
            if handled != {t.name for t in running}:
                raise _fail(self.name, check, f"in-flight trials {[t.name for t in running]} were neither re-attached "
                            f"({resumed.attached}) nor released and re-run ({resumed.started})")
            self._check_no_workers_left(check, experiment)
        finally:
            crashing.inner.close()  # reaps what the crashed controller left (all stopped by now)
            store.close()

    def _check_no_workers_left(self, check: str, experiment: str) -> None:
        """Every process a trial program noted (its pid) is gone: released, killed or finished, nothing orphaned."""
        import psutil

        pids = [int(p.name.split(".")[-1]) for p in self.marker(experiment).iterdir()
                if p.name.split(".")[-1].isdigit() and not p.name.startswith("go.")]
        deadline = time.monotonic() + 5  # a process signalled just before the controller returned may still exit
        while True:
            alive = []
            for pid in pids:
                try:
                    if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                        alive.append(pid)
                except psutil.NoSuchProcess:
                    pass
            if not alive:
                return
            if time.monotonic() > deadline:
                raise _fail(self.name, check, f"worker processes left running: {alive}")
            time.sleep(0.05)

    def check_all(self) -> None:
        """Every backend check."""
        self.check_counts_and_metrics()
        self.check_kill()
        self.check_crash_and_resume()

