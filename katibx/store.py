"""Embedded SQLite store (WAL): every experiment, trial, assignment and observation is committed before it is acted on."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from katibx.spec import Experiment
from katibx.trial import MetricSummary, TrialRecord, TrialState, summarize

DEFAULT_STORE = ".katibx/katibx.db"
STORE_ENV = "KATIBX_STORE"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    conditions TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL,
    completed REAL,
    workdir TEXT NOT NULL DEFAULT '.',
    UNIQUE (namespace, name)
);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    assignments TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    conditions TEXT NOT NULL DEFAULT '[]',
    observation TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    started REAL,
    completed REAL,
    handle TEXT,
    UNIQUE (experiment_id, name)
);
CREATE TABLE IF NOT EXISTS observations (
    id INTEGER PRIMARY KEY,
    trial_id INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    timestamp REAL NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS observations_trial ON observations(trial_id);
"""


class StoreError(RuntimeError):
    """A store problem a user can act on (unreachable file, unknown or duplicate experiment)."""


class ExperimentExists(StoreError):
    pass


class ExperimentNotFound(StoreError):
    pass


@dataclass
class ExperimentRecord:
    """An experiment as stored: its spec plus status conditions."""

    id: int
    experiment: Experiment
    conditions: list[dict[str, Any]] = field(default_factory=list)
    created: float = 0.0
    completed: float | None = None
    workdir: str = "."

    @property
    def name(self) -> str:
        return self.experiment.name

    @property
    def namespace(self) -> str:
        return self.experiment.namespace


def resolve_store_path(url: str | os.PathLike[str] | None = None) -> Path:
    """``--store`` / ``KATIBX_STORE`` / default, as a file path (``sqlite:///abs`` or ``sqlite:rel`` URLs accepted)."""
    raw = str(url or os.environ.get(STORE_ENV) or DEFAULT_STORE)
    if raw.startswith("sqlite://"):
        raw = raw[len("sqlite://"):]
        raw = raw[1:] if raw.startswith("//") else raw
    elif raw.startswith("sqlite:"):
        raw = raw[len("sqlite:"):]
    elif "://" in raw:
        raise StoreError(f"--store: unsupported store URL {raw!r}; use a file path or sqlite:///path")
    return Path(raw).expanduser().absolute()


class Store:
    """All persistent state of katibx: one SQLite file in WAL mode, safe for several processes."""

    def __init__(self, url: str | os.PathLike[str] | None = None) -> None:
        self.path = resolve_store_path(url)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._setup()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"--store: cannot open store {self.path}: {exc}") from None

    def _setup(self) -> None:
        """WAL mode and schema. SQLite answers "locked" without waiting when two connections set the file up
        at once (the busy timeout does not cover lock upgrades), so retry that for a while."""
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._db.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def trials_root(self) -> Path:
        """Where trial directories (logs, metrics, checkpoints) live: beside the database."""
        return self.path.parent / "trials"

    def trial_dir(self, record: ExperimentRecord, trial_name: str) -> Path:
        return self.trials_root / record.namespace / record.name / trial_name

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, tuple(args))

    def _transaction(self) -> "_Tx":
        return _Tx(self._db)

    # experiments ------------------------------------------------------------------------
    def create_experiment(self, experiment: Experiment, conditions: list[dict[str, Any]], workdir: str) -> ExperimentRecord:
        spec = json.dumps(experiment.to_dict())
        now = time.time()
        try:
            cur = self._write(
                "INSERT INTO experiments (namespace, name, spec, conditions, created, workdir) VALUES (?,?,?,?,?,?)",
                (experiment.namespace, experiment.name, spec, json.dumps(conditions), now, workdir),
            )
        except sqlite3.IntegrityError:
            raise ExperimentExists(
                f"metadata.name: experiment {experiment.name!r} already exists in namespace {experiment.namespace!r} "
                f"(store {self.path}); use 'katibx resume {experiment.name}' or 'katibx delete {experiment.name}'"
            ) from None
        return ExperimentRecord(int(cur.lastrowid or 0), experiment, conditions, now, None, workdir)

    def get_experiment(self, name: str, namespace: str | None = None) -> ExperimentRecord:
        rows = self._db.execute(
            "SELECT id, spec, conditions, created, completed, workdir, namespace FROM experiments WHERE name=?"
            + (" AND namespace=?" if namespace else ""),
            (name, namespace) if namespace else (name,),
        ).fetchall()
        if not rows:
            where = f" in namespace {namespace!r}" if namespace else ""
            raise ExperimentNotFound(f"experiment {name!r} not found{where} (store {self.path})")
        if len(rows) > 1:
            spaces = ", ".join(r[6] for r in rows)
            raise StoreError(f"experiment {name!r} exists in several namespaces ({spaces}); pass --namespace")
        return self._experiment_row(rows[0])

    def list_experiments(self) -> list[ExperimentRecord]:
        rows = self._db.execute(
            "SELECT id, spec, conditions, created, completed, workdir FROM experiments ORDER BY created"
        ).fetchall()
        return [self._experiment_row(r) for r in rows]

    @staticmethod
    def _experiment_row(row: tuple[Any, ...]) -> ExperimentRecord:
        experiment = Experiment.model_validate(json.loads(row[1]))
        return ExperimentRecord(row[0], experiment, json.loads(row[2]), row[3], row[4], row[5])

    def save_experiment(self, record: ExperimentRecord) -> None:
        """Persist the spec (budget edits on resume), conditions and completion time."""
        self._write(
            "UPDATE experiments SET spec=?, conditions=?, completed=? WHERE id=?",
            (json.dumps(record.experiment.to_dict()), json.dumps(record.conditions), record.completed, record.id),
        )

    def delete_experiment(self, record: ExperimentRecord) -> None:
        self._write("DELETE FROM experiments WHERE id=?", (record.id,))

    # trials -----------------------------------------------------------------------------
    def add_trials(self, experiment_id: int, trials: list[TrialRecord]) -> None:
        """Insert new trials in one transaction, so a crash leaves all of them or none."""
        now = time.time()
        with self._transaction():
            for t in trials:
                t.creation_time = now
                cur = self._db.execute(
                    "INSERT INTO trials (experiment_id, name, seq, assignments, labels, state, reason, message, conditions, created)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (experiment_id, t.name, t.index, json.dumps(t.assignments), json.dumps(t.labels), t.state.value,
                     t.reason, t.message, json.dumps(t.conditions), now),
                )
                t.id = int(cur.lastrowid or 0)

    def save_trial(self, trial: TrialRecord, handle: dict[str, Any] | None = None) -> None:
        """Persist a trial's state; ``handle`` is the backend's note for finding its worker after a crash."""
        self._write(
            "UPDATE trials SET state=?, reason=?, message=?, conditions=?, observation=?, started=?, completed=?,"
            " handle=COALESCE(?, handle) WHERE id=?",
            (trial.state.value, trial.reason, trial.message, json.dumps(trial.conditions),
             json.dumps({k: v.to_dict() for k, v in trial.observation.items()}), trial.start_time,
             trial.completion_time, json.dumps(handle) if handle is not None else None, trial.id),
        )

    def trials(self, experiment_id: int) -> list[TrialRecord]:
        rows = self._db.execute(
            "SELECT id, name, seq, assignments, labels, state, reason, message, conditions, observation, started, completed,"
            " created"
            " FROM trials WHERE experiment_id=? ORDER BY seq",
            (experiment_id,),
        ).fetchall()
        return [
            TrialRecord(
                name=r[1], index=r[2], assignments=json.loads(r[3]), labels=json.loads(r[4]), state=TrialState(r[5]),
                reason=r[6], message=r[7], conditions=json.loads(r[8]),
                observation={k: MetricSummary(k, _avail(v["min"]), _avail(v["max"]), v["latest"]) for k, v in json.loads(r[9]).items()},
                start_time=r[10], completion_time=r[11], creation_time=r[12], id=r[0],
            )
            for r in rows
        ]

    def trial_handle(self, trial: TrialRecord) -> dict[str, Any] | None:
        """The backend's handle recorded when the trial started (to re-attach or stop it after a crash)."""
        row = self._db.execute("SELECT handle FROM trials WHERE id=?", (trial.id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    # observations -----------------------------------------------------------------------
    def add_observations(self, trial_id: int, logs: list[tuple[float, str, str]]) -> None:
        if logs:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO observations (trial_id, timestamp, name, value) VALUES (?,?,?,?)",
                    [(trial_id, ts, name, value) for ts, name, value in logs],
                )

    def observation_logs(self, trial_id: int) -> list[tuple[float, str, str]]:
        return [tuple(r) for r in self._db.execute(  # type: ignore[misc]
            "SELECT timestamp, name, value FROM observations WHERE trial_id=? ORDER BY id", (trial_id,)
        )]

    def clear_observations(self, trial_id: int) -> None:
        self._write("DELETE FROM observations WHERE trial_id=?", (trial_id,))

    def summarize_trial(self, trial_id: int) -> dict[str, MetricSummary]:
        return summarize(self.observation_logs(trial_id))


def _avail(value: str) -> str | None:
    return None if value == "unavailable" else value


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT/ROLLBACK around a block (the connection runs in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
