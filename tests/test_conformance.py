"""The plugin conformance kit (katibx.testing) over every installed algorithm and backend entry point, and proof that
each of its checks fails for a plugin that breaks the contract."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import pytest
from support.fake_kube.cluster import FakeCluster
from support.fake_kube.fixtures import fake_cluster  # noqa: F401 - pytest fixture

# test_ray_backend sets Ray's environment (loopback only, no auth) before it imports ray: take ray from there.
from test_ray_backend import ray, start_head, stop_head

from katibx import plugins
from katibx.backend import Backend, TrialEvent, TrialExited, TrialMetrics
from katibx.preparation import create_backend
from katibx.search_algorithm import AlgorithmSettingsError, SearchAlgorithm, Suggestion, int_setting
from katibx.search_space import SearchSpace
from katibx.spec import Experiment
from katibx.testing import (
    ALGORITHM_CASES,
    AlgorithmCase,
    AlgorithmConformance,
    BackendConformance,
    ConformanceError,
    algorithm_case,
    algorithm_doc,
    register_algorithm_case,
)
from katibx.trial import TrialRecord
from katibx.workers.kubernetes import KubernetesBackend
from katibx.workers.local import LocalBackend
from katibx.workers.ray_backend import RayBackend

ALGORITHMS = sorted(plugins.algorithm_names())
BACKENDS = sorted(plugins.backend_names())

ALGORITHM_CHECKS = ["check_count", "check_rebuilt_equals_running", "check_no_repeat_of_active"]


# every installed algorithm -----------------------------------------------------------------------------------------


def test_every_installed_algorithm_has_a_case() -> None:
    """A newly installed algorithm without a registered experiment fails here, naming the hook; it is never skipped."""
    missing = [name for name in ALGORITHMS if name not in ALGORITHM_CASES]
    assert not missing, f"no conformance case for {missing}: add one with katibx.testing.register_algorithm_case"


@pytest.mark.parametrize(("name", "check"), [
    pytest.param(name, check, id=f"{name}-{check}")
    for name in ALGORITHMS for check in ALGORITHM_CHECKS])
def test_algorithm_suggestions_conform(name: str, check: str) -> None:
    getattr(AlgorithmConformance(name), check)()


@pytest.mark.parametrize(("name", "check"), [
    pytest.param(name, check, id=f"{name}-{check}")
    for name in ALGORITHMS if plugins.load(plugins.ALGORITHMS, name).supports_multi_objective
    for check in ALGORITHM_CHECKS])
def test_multi_objective_algorithm_suggestions_conform(name: str, check: str) -> None:
    getattr(AlgorithmConformance(name, algorithm_case(name).multi_objective()), check)()


@pytest.mark.parametrize("name", ALGORITHMS)
def test_algorithm_settings_errors_name_the_setting(name: str) -> None:
    AlgorithmConformance(name).check_settings_errors()


# every installed backend -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 2-CPU Ray head on loopback for this module's Ray checks; its address."""
    head, address = start_head(tmp_path_factory.mktemp("ray") / "head.log")
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)  # as test_ray_backend connects
        yield address
    finally:
        ray.shutdown()
        stop_head(head)


def _local(request: pytest.FixtureRequest, workdir: Path) -> BackendConformance:
    return BackendConformance("local", lambda: create_backend("local"), workdir)


def _ray(request: pytest.FixtureRequest, workdir: Path) -> BackendConformance:
    address = request.getfixturevalue("ray_head")
    # half a CPU per trial: the crashed controller's workers keep theirs in this process until the kit closes them
    return BackendConformance("ray", lambda: RayBackend(address=address), workdir,
                              container={"resources": {"requests": {"cpu": "500m"}}})


def _kubernetes(request: pytest.FixtureRequest, workdir: Path) -> BackendConformance:
    cluster: FakeCluster = request.getfixturevalue("fake_cluster")
    return BackendConformance("kubernetes", lambda: KubernetesBackend(kubeconfig=str(cluster.kubeconfig)), workdir,
                              namespace="default")


#: Installed backend -> how to set up its conformance kit here. A backend missing from it fails, it is not skipped.
BACKEND_SETUPS: dict[str, Callable[[pytest.FixtureRequest, Path], BackendConformance]] = {
    "local": _local, "ray": _ray, "kubernetes": _kubernetes,
}


@pytest.fixture
def backend_kit(request: pytest.FixtureRequest, tmp_path: Path) -> BackendConformance:
    name: str = request.param
    if name not in BACKEND_SETUPS:
        pytest.fail(f"no conformance setup for the installed backend {name!r}: add it to BACKEND_SETUPS")
    return BACKEND_SETUPS[name](request, tmp_path / "work")


BACKEND_CHECKS = ["check_counts_and_metrics", "check_kill", "check_crash_and_resume"]


@pytest.mark.parametrize("backend_kit", BACKENDS, indirect=True)
@pytest.mark.parametrize("check", BACKEND_CHECKS)
def test_backend_conforms(backend_kit: BackendConformance, check: str) -> None:
    getattr(backend_kit, check)()


# each check fails for a broken algorithm ---------------------------------------------------------------------------

POINTS = [{"x": x, "y": y} for x in (1, 2, 3) for y in (1, 2, 3)]


class Toy(SearchAlgorithm):
    """A conforming toy: the n-th point is a function of (random_state, n) that avoids active points."""

    name = "toy"
    default_settings: ClassVar[Mapping[str, str | None]] = {"random_state": None}

    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        self.seed = int_setting(settings, "random_state", errors)

    def points(self, trials: Sequence[TrialRecord]) -> list[dict[str, Any]]:
        order = list(POINTS)
        random.Random(f"{self.seed}-{len(trials)}").shuffle(order)
        return order

    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        active = [t.assignments for t in trials if t.state.is_active]
        return [Suggestion(p) for p in self.points(trials) if p not in active][:count]


class TooMany(Toy):
    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        return super().suggest(trials, count + 1)


class IgnoresRandomState(Toy):
    def points(self, trials: Sequence[TrialRecord]) -> list[dict[str, Any]]:
        return random.sample(POINTS, len(POINTS))


class KeepsStateOutsideTheHistory(Toy):
    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        self.calls = getattr(self, "calls", 0) + 1
        return super().suggest(trials[: len(trials) - self.calls % 2], count)


class RepeatsRunning(Toy):
    def suggest(self, trials: Sequence[TrialRecord], count: int) -> list[Suggestion]:
        return [Suggestion(POINTS[len(trials) % 2]) for _ in range(count)]


class AcceptsUnknownSettings(Toy):
    def __init__(self, experiment: Experiment, space: SearchSpace) -> None:
        self.experiment, self.space, self.seed = experiment, space, 0


class UnnamedSettingError(Toy):
    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        if not str(settings.get("random_state") or "0").isdigit():
            errors.append("random seed must be an integer")
        self.seed = 0


class WrongErrorType(Toy):
    def configure(self, settings: Mapping[str, str | None], errors: list[str]) -> None:
        self.seed = int(settings.get("random_state") or 0)


@pytest.fixture
def toy_case() -> Iterator[AlgorithmCase]:
    """The toy's case, registered through the kit's hook for the test (and removed after it)."""
    case = AlgorithmCase(algorithm_doc("random", {"random_state": "1"}, parallel=3, max_trials=9))
    register_algorithm_case("toy", case)
    yield case
    del ALGORITHM_CASES["toy"]


def test_a_conforming_toy_passes(toy_case: AlgorithmCase) -> None:
    AlgorithmConformance("toy", cls=Toy).check_all()


@pytest.mark.parametrize(("cls", "check", "message"), [
    (TooMany, "check_count", "never more suggestions than asked"),
    (IgnoresRandomState, "check_rebuilt_equals_running", "a resumed run equals an uninterrupted one"),
    (KeepsStateOutsideTheHistory, "check_rebuilt_equals_running", "a resumed run equals an uninterrupted one"),
    (RepeatsRunning, "check_no_repeat_of_active", "no repeat of a running trial's assignment"),
    (AcceptsUnknownSettings, "check_settings_errors", "katibx_conformance_unknown_setting='1'): accepted"),
    (UnnamedSettingError, "check_settings_errors",
     "no error line starts with spec.algorithm.algorithmSettings[random_state]"),
    (WrongErrorType, "check_settings_errors", "raised ValueError instead of AlgorithmSettingsError"),
])
def test_each_algorithm_check_reports_a_broken_toy(toy_case: AlgorithmCase, cls: type[Toy], check: str,
                                                   message: str) -> None:
    with pytest.raises(ConformanceError, match="^toy: ") as info:
        getattr(AlgorithmConformance("toy", cls=cls), check)()
    assert message in str(info.value), str(info.value)


def test_an_algorithm_without_a_case_fails_naming_the_hook() -> None:
    with pytest.raises(ConformanceError, match="unregistered: no conformance case: register .*register_algorithm_case"):
        AlgorithmConformance("unregistered", cls=Toy)


def test_the_toy_refuses_what_the_kit_feeds_it(toy_case: AlgorithmCase) -> None:
    """The toy's own refusal is the core's (so the passing toy above proves the kit accepts the core's lines)."""
    experiment = AlgorithmConformance("toy", cls=Toy).experiment({"random_state": "x"})
    with pytest.raises(AlgorithmSettingsError, match=r"^spec\.algorithm\.algorithmSettings\[random_state\]"):
        Toy(experiment, SearchSpace.from_experiment(experiment))


# each check fails for a broken backend -----------------------------------------------------------------------------


class NeverReleases(LocalBackend):
    def release(self, handle: dict[str, Any]) -> None:
        pass


class IgnoresKill(LocalBackend):
    def kill(self, trial_name: str) -> None:
        pass


class LosesMetrics(LocalBackend):
    def poll(self, timeout: float) -> list[TrialEvent]:
        events = super().poll(timeout)
        return [TrialExited(e.trial_name, e.succeeded, e.reason, e.message) for e in events
                if not isinstance(e, TrialMetrics)]


@pytest.mark.parametrize(("cls", "check", "message"), [
    (LosesMetrics, "check_counts_and_metrics", "ended MetricsUnavailable"),
    (IgnoresKill, "check_kill", "no exit reported within 2.0 s"),
    (NeverReleases, "check_crash_and_resume", "ran twice at once"),
])
def test_each_backend_check_reports_a_broken_backend(tmp_path: Path, cls: Callable[[], Backend], check: str,
                                                     message: str) -> None:
    kit = BackendConformance("broken", cls, tmp_path, trial_timeout=2.0)
    with pytest.raises(ConformanceError, match="^broken: ") as info:
        getattr(kit, check)()
    assert message in str(info.value), str(info.value)
