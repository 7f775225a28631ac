"""``katibx dashboard``: optuna-dashboard over a katibx store, every experiment a study (``pip install
'katibx[dashboard]'``).

The dashboard reads an Optuna storage. :class:`StoreStudies` is one whose studies are the store's experiments,
mapped by :mod:`katibx.optuna_study` with the store's ids, and brought up to date when the store has changed
(SQLite's data version tells; looked at most once a second; only the experiments that changed are mapped again),
so a running experiment's new trials and reports appear within seconds from any backend. The store is only read:
what the dashboard itself writes (a note, a study it creates) lives in memory until its experiment changes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
import wsgiref.simple_server
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from optuna.storages import InMemoryStorage

from katibx.optuna_study import add_study, add_trials, quiet

with quiet():  # optuna.artifacts imports google.api_core where installed (Ray's opencensus), which warns about Python
    from optuna.artifacts.exceptions import ArtifactNotFound
from katibx.status import current_condition
from katibx.store import ExperimentRecord, Store
from katibx.trial import TrialRecord

log = logging.getLogger(__name__)
# The reads the dashboard makes; each first brings the studies up to date.
_READS = ("get_all_studies", "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
          "get_study_user_attrs", "get_study_system_attrs", "get_all_trials", "get_trial", "get_best_trial",
          "get_n_trials", "get_trial_id_from_study_id_trial_number")


# Files of a trial folder the dashboard shows as the trial's artifacts (DARTS saves its found cells so), by MIME type.
ARTIFACT_FILES = {"genotype.png": "image/png", "genotype.json": "application/json"}


class TrialFiles:
    """An Optuna artifact store serving files of the store's trial folders by id, read-only (the dashboard's
    artifact ids are hexadecimal: each file gets a UUID derived from its path)."""

    def __init__(self) -> None:
        self.paths: dict[str, Path] = {}

    def register(self, path: Path) -> str:
        artifact_id = str(uuid.uuid5(uuid.NAMESPACE_URL, str(path)))
        self.paths[artifact_id] = path
        return artifact_id

    def open_reader(self, artifact_id: str) -> BinaryIO:
        try:
            return self.paths[artifact_id].open("rb")
        except (KeyError, FileNotFoundError):
            raise ArtifactNotFound(f"artifact {artifact_id} not found") from None

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        raise PermissionError("katibx dashboard does not write into trial folders")

    def remove(self, artifact_id: str) -> None:
        raise PermissionError("katibx dashboard does not delete from trial folders")


@dataclasses.dataclass
class _Mapped:
    """An experiment as the one study of a storage of its own (None when Optuna cannot show it), as of the store's
    ``fingerprint`` of it; its trials are added when first asked for."""

    fingerprint: str
    record: ExperimentRecord
    alone: InMemoryStorage | None
    with_trials: bool = False


class StoreStudies(InMemoryStorage):
    """An in-memory Optuna storage holding the experiments of a katibx store as studies, refreshed from the store
    when it has changed, at most every ``refresh_seconds``; ``files`` serves the trials' artifacts.

    A study's trials are mapped when a read or write of trials asks for them, not before: the study list (the
    dashboard's first page) maps no trial, however many the store holds. A study whose trials were mapped is mapped
    with them again when its experiment changes. One lock (InMemoryStorage's) guards the studies and their refresh."""

    def __init__(self, store: Store, files: TrialFiles | None = None, refresh_seconds: float = 1.0) -> None:
        super().__init__()
        self.store = store
        self.files = files or TrialFiles()
        self.refresh_seconds = refresh_seconds
        self._checked_at = -float("inf")
        self._version: int | None = None
        self._built: dict[int, _Mapped] = {}  # by experiment id (which is its study's id)

    def refresh(self) -> None:
        """Bring the studies up to date if the store changed since the last look (and that was long enough ago):
        only the experiments whose trials, reports or conditions changed are mapped again (a running controller's
        heartbeat changes the store every few seconds, its trials less often, a finished experiment never)."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at < self.refresh_seconds:
                return
            self._checked_at = now
            version = self.store.data_version()
            if version == self._version:
                return
            fingerprints = self.store.experiment_fingerprints()
            built: dict[int, _Mapped] = {}
            for record in self.store.list_experiments():  # in creation order
                kept = self._built.get(record.id)
                fingerprint = fingerprints.get(record.id, "")
                if kept and kept.fingerprint == fingerprint:
                    built[record.id] = kept
                    continue
                built[record.id] = _Mapped(fingerprint, record, self._study(record))
                if kept and kept.with_trials:  # a study being looked at keeps its trials
                    self._add_trials(built[record.id])
            self._built = built
            # the studies, each with the store's ids, side by side in one storage
            self._studies = {}
            self._prev_waiting_trial_number = {}
            for mapped in built.values():
                if mapped.alone is not None:
                    self._studies.update(mapped.alone._studies)
                    self._prev_waiting_trial_number.update(mapped.alone._prev_waiting_trial_number)
            # the indexes from the studies as they are now (with what was written to them since they were built)
            self._study_name_to_id = {study.name: study_id for study_id, study in self._studies.items()}
            self._trial_id_to_study_id_and_number = {}
            self._index_trials(self._studies)
            self._max_study_id = max(self._studies, default=-1)
            self._version = version

    def with_trials(self, study_id: int) -> None:
        """Map the trials of the experiment that is study ``study_id`` into it, if not yet done."""
        with self._lock:
            mapped = self._built.get(study_id)
            if mapped is None or mapped.with_trials or mapped.alone is None:
                return
            self._add_trials(mapped)
            self._index_trials({study_id: mapped.alone._studies[study_id]})

    def _add_trials(self, mapped: _Mapped) -> None:
        """The experiment's trials into its study; on a failure the study is left without any (and a ValueError or
        TypeError, an experiment Optuna cannot show, is not tried again: the other studies still show)."""
        assert mapped.alone is not None
        record, alone = mapped.record, mapped.alone
        try:
            add_trials(alone, record.id, record, self.store.trials(record.id),
                       self.store.experiment_observation_logs(record.id),
                       system_attrs=self._artifacts(record), stable_ids=True)
        except Exception as exc:
            study = alone._studies[record.id]
            study.trials.clear()
            study.best_trial_id = None
            alone._trial_id_to_study_id_and_number.clear()
            if not isinstance(exc, (ValueError, TypeError)):
                raise
            log.warning("dashboard: the trials of experiment %s are left out: %s", record.qualified_name, exc)
        mapped.with_trials = True

    def _index_trials(self, studies: dict[int, Any]) -> None:
        for study_id, study in studies.items():
            self._trial_id_to_study_id_and_number.update((t._trial_id, (study_id, t.number)) for t in study.trials)
        self._max_trial_id = max(self._trial_id_to_study_id_and_number, default=-1)

    def create_new_trial(self, study_id: int, template_trial: Any = None) -> int:
        """Refused: trials come from the store (with its ids), never from the dashboard."""
        raise PermissionError("katibx dashboard does not create trials; the store's experiments make them")

    def _study(self, record: ExperimentRecord) -> InMemoryStorage | None:
        """The experiment as the one study of a storage of its own, trials not yet added (None when Optuna cannot
        show it)."""
        alone = InMemoryStorage()
        try:
            study_id = add_study(alone, record, stable_ids=True)
        except (ValueError, TypeError) as exc:  # one experiment Optuna cannot show: the others still
            log.warning("dashboard: experiment %s is left out: %s", record.qualified_name, exc)
            return None
        condition = current_condition(record.conditions) or {}
        alone.set_study_user_attr(study_id, "katib_condition", condition.get("type", ""))
        alone.set_study_user_attr(study_id, "katib_namespace", record.namespace)
        algorithm = record.experiment.spec.algorithm
        alone.set_study_user_attr(study_id, "katib_algorithm", algorithm.algorithm_name if algorithm else "")
        return alone

    def _artifacts(self, record: ExperimentRecord) -> Callable[[TrialRecord], dict[str, Any]]:
        """The artifact entries (Optuna's ``artifacts:<id>`` system attributes) for the files a trial of the
        experiment has."""
        folder = str(self.store.experiment_dir(record))

        def of(trial: TrialRecord) -> dict[str, Any]:
            entries = {}
            for name, mimetype in ARTIFACT_FILES.items():
                path = os.path.join(folder, trial.name, name)
                if os.path.isfile(path):
                    artifact_id = self.files.register(Path(path))
                    entries[f"artifacts:{artifact_id}"] = json.dumps(
                        {"artifact_id": artifact_id, "filename": name, "mimetype": mimetype, "encoding": None})
            return entries

        return of


def _study_id(_: StoreStudies, study_id: Any) -> int | None:
    return study_id if isinstance(study_id, int) else None


def _study_of_trial(studies: StoreStudies, trial_id: Any) -> int | None:
    if not isinstance(trial_id, int) or trial_id in studies._trial_id_to_study_id_and_number:
        return None  # (mapped already: no need to ask the store)
    return studies.store.trial_experiment_id(trial_id)


# The storage's methods that read or write trials: what names the study they need mapped (their first argument, as
# the keyword it is called by).
_TRIAL_ACCESS: dict[str, tuple[str, Callable[[StoreStudies, Any], int | None]]] = {
    **{name: ("study_id", _study_id) for name in (
        "get_all_trials", "get_best_trial", "get_n_trials", "get_trial_id_from_study_id_trial_number")},
    **{name: ("trial_id", _study_of_trial) for name in (
        "get_trial", "get_trial_number_from_id", "get_trial_param", "set_trial_param", "set_trial_state_values",
        "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr")},
}


def _wrapped(name: str) -> Callable[..., Any]:
    """InMemoryStorage's ``name``: a read first brings the studies up to date (writes change what the dashboard
    holds, as before); a read or write of trials then has their study's trials mapped."""
    method = getattr(InMemoryStorage, name)
    keyword, study_of = _TRIAL_ACCESS.get(name, ("", None))

    def wrapped(self: StoreStudies, *args: Any, **kwargs: Any) -> Any:
        if name in _READS:
            self.refresh()
        if study_of is not None:
            key = args[0] if args else kwargs.get(keyword)
            study_id = study_of(self, key)
            if study_id is not None:
                self.with_trials(study_id)
        return method(self, *args, **kwargs)

    wrapped.__name__ = name
    return wrapped


for _name in {*_READS, *_TRIAL_ACCESS}:
    setattr(StoreStudies, _name, _wrapped(_name))


class DashboardUnavailable(RuntimeError):
    """optuna-dashboard is not installed."""


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """No line per request (the dashboard polls every few seconds)."""


def dashboard_server(store: Store, host: str, port: int) -> wsgiref.simple_server.WSGIServer:
    """A WSGI server of optuna-dashboard over ``store``, bound (``port`` 0: any free one); ``serve_forever`` runs it."""
    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise DashboardUnavailable("katibx dashboard needs optuna-dashboard: pip install 'katibx[dashboard]'") from None
    files = TrialFiles()
    app = wsgi(StoreStudies(store, files), artifact_store=files)
    return wsgiref.simple_server.make_server(host, port, app, handler_class=_QuietHandler)
