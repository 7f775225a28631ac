"""Embedded SQLite store (WAL): every experiment, trial, assignment and observation is committed before it is acted on."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import re
import sqlite3
import time
import types
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Union, get_args, get_origin

from katibx import trial_dir
from katibx.metrics import MetricLog
from katibx.objective import Objective
from katibx.status import ExperimentSummary, TrialCounts, optimal_trial
from katibx.trial import MetricSummary, TrialRecord, TrialState

if TYPE_CHECKING:  # (reading builds no model: pydantic and the spec's models are imported when one is)
    import pydantic

    from katibx.spec import Experiment

DEFAULT_STORE = ".katibx/katibx.db"
STORE_ENV = "KATIBX_STORE"

# The schema of stores written before schema versions existed (``PRAGMA user_version`` 0). Frozen: a schema change is a
# new entry of _MIGRATIONS, never an edit here, so that old files and new ones end up with the same tables.
_SCHEMA_V0: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    conditions TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL,
    completed REAL,
    workdir TEXT NOT NULL DEFAULT '.',
    UNIQUE (namespace, name)
)""",
    """CREATE TABLE IF NOT EXISTS trials (
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
)""",
    """CREATE TABLE IF NOT EXISTS observations (
    id INTEGER PRIMARY KEY,
    trial_id INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    timestamp REAL NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS observations_trial ON observations(trial_id)",
)

# _MIGRATIONS[n] takes a store from schema n to schema n + 1 (statements run in order, in one transaction).
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the worker backend plugin that runs each experiment and its constructor options (JSON object)
        "ALTER TABLE experiments ADD COLUMN backend TEXT",
        "ALTER TABLE experiments ADD COLUMN backend_options TEXT NOT NULL DEFAULT '{}'",
        # Experiments whose trials started: the backend their handles were written by (ray and kubernetes named
        # themselves; older kubernetes handles have kind + uid, local ones a pid). Options were not kept before.
        """UPDATE experiments SET backend = (
            SELECT CASE
                WHEN json_extract(t.handle, '$.backend') IS NOT NULL THEN json_extract(t.handle, '$.backend')
                WHEN json_extract(t.handle, '$.kind') IS NOT NULL AND json_extract(t.handle, '$.uid') IS NOT NULL
                    THEN 'kubernetes'
                WHEN json_extract(t.handle, '$.pid') IS NOT NULL THEN 'local'
            END
            FROM trials t WHERE t.experiment_id = experiments.id AND t.handle IS NOT NULL ORDER BY t.seq DESC LIMIT 1
        )""",
    ),
    (  # 2: the lease of the one controller that runs an experiment (see katibx.lease)
        """CREATE TABLE leases (
    experiment_id INTEGER PRIMARY KEY REFERENCES experiments(id) ON DELETE CASCADE,
    holder TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pid_started REAL NOT NULL,
    acquired REAL NOT NULL,
    heartbeat REAL NOT NULL,
    stop_requested TEXT
)""",
    ),
    (  # 3: the run that stands for each trial (and the experiment's summary) in a tracking server such as MLflow
        """CREATE TABLE tracking_runs (
    experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    tracking_uri TEXT NOT NULL,
    key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (experiment_id, tracking_uri, key)
)""",
    ),
    (  # 4: Katib's currentOptimalTrial kept as trials finish (the trial's id; 0 while none has a result; NULL in
        # stores written before: readers work it out from the trials until a controller runs the experiment again),
        # the trials counted by state from an index, so readers of a large experiment need not load its trials, and
        # read in creation order from another (a page of them without sorting them all)
        "ALTER TABLE experiments ADD COLUMN optimal_trial INTEGER",
        "CREATE INDEX trials_state ON trials(experiment_id, state)",
        "CREATE INDEX trials_order ON trials(experiment_id, seq)",
    ),
)

SCHEMA_VERSION = len(_MIGRATIONS)  # the schema this katibx writes; older stores are migrated up to it when opened
_READ_ONLY_OLDEST = 3  # the oldest schema read without migrating it (a read-only store): 4 only added a kept value

_LEASE_COLUMNS = "holder, host, pid, pid_started, acquired, heartbeat, stop_requested"
_EXPERIMENT_COLUMNS = ("id, spec, conditions, created, completed, workdir, backend, backend_options, namespace,"
                       " optimal_trial")
_TRIAL_COLUMNS = ("id, name, seq, assignments, labels, state, reason, message, conditions, observation, started,"
                  " completed, created")


class TrialEnd(NamedTuple):
    """A trial's end not yet written: the trial, its last metric logs, and the experiment whose optimal trial it has
    become (None when it has not)."""

    trial: TrialRecord
    logs: list[MetricLog] | None
    optimal_of: ExperimentRecord | None


class StoreError(RuntimeError):
    """A store problem a user can act on (unreachable file, unknown or duplicate experiment)."""


class StoreFault(StoreError):
    """The store's file failed under katibx (read-only, full disk, locked, damaged): one line with what to do.
    Every change is committed in one transaction, so what was stored before the fault is intact."""


def _fault(path: Path, exc: sqlite3.Error) -> StoreFault:
    text = str(exc)
    lower = f"{text} {getattr(exc, 'sqlite_errorname', '')}".lower()
    if "readonly" in lower or "read-only" in lower:
        hint = "it is read-only here; make the file and its folder writable, or use a writable --store"
    elif "full" in lower:
        hint = "the disk is full; free some space"
    elif "locked" in lower or "busy" in lower:
        hint = "another process kept it locked for 30 s; try again"
    elif "malformed" in lower or "not a database" in lower or "corrupt" in lower:
        hint = "the file is damaged; 'katibx store check' says which experiments can still be read"
    else:
        hint = "check that the file and its folder exist and are readable"
    return StoreFault(f"store {path}: {text} ({hint})")


def _faults_named(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` with SQLite errors raised as StoreFault naming the store."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise _fault(self.path, exc) from exc

    return wrapper


def _name_faults(cls: type[Any]) -> type[Any]:
    """Class decorator: every public method raises StoreFault, never sqlite3.Error (see _faults_named)."""
    for name, member in list(vars(cls).items()):
        if isinstance(member, types.FunctionType) and not name.startswith("_"):
            setattr(cls, name, _faults_named(member))
    return cls


class ExperimentExists(StoreError):
    pass


class ExperimentNotFound(StoreError):
    pass


@dataclass(frozen=True)
class LeaseRow:
    """The stored lease of an experiment's controller: who holds it and when it last said it was alive."""

    holder: str  # a token unique to one controller run
    host: str
    pid: int
    pid_started: float  # the holder process's start time, so a reused pid is not taken for the holder
    acquired: float
    heartbeat: float
    stop_requested: str | None = None  # who asked the holder to stop (katibx delete --force), if anyone


@dataclass
class StoreCheck:
    """What :meth:`Store.check` found: SQLite's integrity report and, per experiment, what stops reading it."""

    integrity: list[str]  # ["ok"] when the file is sound
    experiments: list[tuple[str, str, str | None]]  # (namespace, name, problem or None when fully readable)
    listing_problem: str | None = None  # set when not even the list of experiments can be read

    @property
    def ok(self) -> bool:
        return self.integrity == ["ok"] and self.listing_problem is None and not any(p for *_, p in self.experiments)


@dataclass
class ExperimentRecord:
    """An experiment as stored: its spec plus status conditions.

    ``spec`` is the Experiment as stored (Katib's JSON): what a reading command reads, building no model;
    :attr:`experiment` is the model, built from it when first asked for."""

    id: int
    spec: dict[str, Any]
    conditions: list[dict[str, Any]] = field(default_factory=list)
    created: float = 0.0
    completed: float | None = None
    workdir: str = "."
    backend: str | None = None  # worker backend plugin name; None for experiments stored before schema 1
    backend_options: dict[str, Any] = field(default_factory=dict)
    # Katib's currentOptimalTrial as the store keeps it: the trial's id, 0 while no trial has a result, None when
    # not recorded (a store written by an older katibx; Store.optimal_trial works it out from the trials)
    optimal_trial_id: int | None = 0
    _experiment: Experiment | None = field(default=None, repr=False, compare=False)

    @property
    def experiment(self) -> Experiment:
        """The Experiment, built from :attr:`spec` without validating it again (it was valid when stored)."""
        if self._experiment is None:
            self._experiment = _stored_experiment(self.spec)
        return self._experiment

    @experiment.setter
    def experiment(self, experiment: Experiment) -> None:
        self._experiment = experiment

    def spec_dict(self) -> dict[str, Any]:
        """The Experiment as Katib's JSON: the model's, once built (it may have been changed), else as stored."""
        return self._experiment.to_dict() if self._experiment is not None else copy.deepcopy(self.spec)

    @property
    def name(self) -> str:
        return str((self.spec.get("metadata") or {}).get("name") or "")

    @property
    def qualified_name(self) -> str:
        """The name other tools (Optuna, MLflow) know it by: its own, with its namespace unless that is ``default``
        (their names are unique in one flat space)."""
        return self.name if self.namespace == "default" else f"{self.namespace}/{self.name}"

    @property
    def namespace(self) -> str:
        return str((self.spec.get("metadata") or {}).get("namespace") or "default")


def resolve_store_path(url: str | os.PathLike[str] | None = None) -> Path:
    """``--store`` / ``KATIBX_STORE`` / default, as a file path (``sqlite:///abs`` or ``sqlite:rel`` URLs accepted)."""
    return Path(store_file(str(url or os.environ.get(STORE_ENV) or DEFAULT_STORE))).expanduser().absolute()


def store_files(path: Path) -> list[Path]:
    """What a store at ``path`` keeps on disk: the database, SQLite's journal files and the trial folders beside it
    (never packaged into an image with the code of the folder it is in)."""
    return [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")),
            path.parent / trial_dir.TRIALS_FOLDER]


def store_file(text: str, *, windows: bool = os.name == "nt") -> str:
    """The file a ``--store`` value names: a path, or an ``sqlite:`` URL's path; ``sqlite:///C:/dir/file`` names a
    drive on Windows and is refused elsewhere (StoreError)."""
    raw = text
    if raw.startswith("sqlite://"):
        raw = raw[len("sqlite://"):]
        raw = raw[1:] if raw.startswith("//") else raw
        if re.match(r"/[A-Za-z]:[/\\]", raw):
            if not windows:
                raise StoreError(f"--store: {text} names a Windows drive; on this system give a path such as "
                                 "sqlite:////home/me/katibx.db or just the file's path")
            raw = raw[1:]
    elif raw.startswith("sqlite:"):
        raw = raw[len("sqlite:"):]
    elif "://" in raw:
        raise StoreError(f"--store: unsupported store URL {raw!r}; use a file path or sqlite:///path")
    return raw


@_name_faults
class Store:
    """All persistent state of katibx: one SQLite file in WAL mode, safe for several processes."""

    def __init__(self, url: str | os.PathLike[str] | None = None, *, read_only: bool = False,
                 create: bool = True) -> None:
        """Open (or create) the store; ``read_only`` opens an existing one without changing it (no migration);
        ``create=False`` refuses a file that does not exist (a read command given a mistyped ``--store``)."""
        self.path = resolve_store_path(url)
        self.read_only = False
        self._experiment_columns, self._optimal_column = _EXPERIMENT_COLUMNS, "optimal_trial"
        if not create and not self.path.exists():
            raise StoreError(f"--store: there is no store at {self.path} (check --store or ${STORE_ENV}; "
                             "katibx run creates one)")
        db: sqlite3.Connection | None = None
        try:
            if read_only or (self.path.exists() and not os.access(self.path.parent, os.W_OK)):
                self._db = db = self._open_read_only()
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._setup()
        except (OSError, sqlite3.Error, StoreError) as exc:
            if db is not None:
                db.close()
            if isinstance(exc, StoreError):
                raise
            fault = _fault(self.path, exc) if isinstance(exc, sqlite3.Error) else exc
            raise StoreError(f"--store: cannot open store {self.path}: {fault}") from None

    def _open_read_only(self) -> sqlite3.Connection:
        """A store in a folder this process cannot write (a read-only file system, an archive): readable, and any
        change is refused. SQLite reads a WAL file read-only when its -wal and -shm files exist (a controller was
        killed); without them everything is in the main file, which is then opened as immutable."""
        self.read_only = True
        if not self.path.is_file():
            raise StoreError(f"--store: store {self.path} does not exist")
        import urllib.parse  # (only for a store this process may not write)

        base = f"file:{urllib.parse.quote(str(self.path))}?mode=ro"
        db = sqlite3.connect(base, uri=True, isolation_level=None, check_same_thread=False)
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.OperationalError:
            db.close()
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size:  # immutable would not read it: committed changes would vanish
                raise StoreError(f"--store: store {self.path} is read-only here and its {wal.name} holds changes "
                                 "that SQLite can only read with its -shm file; copy the store with both files to a "
                                 "writable folder") from None
            db = sqlite3.connect(base + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False)
            try:
                version = int(db.execute("PRAGMA user_version").fetchone()[0])
            except sqlite3.Error:
                db.close()
                raise
        if version == _READ_ONLY_OLDEST:  # it only lacks the kept optimal trial, which readers then work out
            self._experiment_columns, self._optimal_column = _EXPERIMENT_COLUMNS.replace("optimal_trial", "NULL"), "NULL"
        elif version != SCHEMA_VERSION:
            db.close()
            newer = version > SCHEMA_VERSION
            raise StoreError(f"--store: store {self.path} is opened read-only and was written by "
                             f"{'a newer' if newer else 'an older'} katibx (schema {version}, this katibx reads "
                             f"{SCHEMA_VERSION}); {'upgrade katibx' if newer else 'copy it to a writable folder'}")
        return db

    def _setup(self) -> None:
        """Refuse a newer schema, then WAL mode and migrations. SQLite answers "locked" without waiting when two
        connections set the file up at once (the busy timeout does not cover lock upgrades), so retry that a while."""
        deadline = time.monotonic() + 30
        while True:
            try:
                version = self._schema_version()
                if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                if version < SCHEMA_VERSION:
                    self._migrate()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _schema_version(self) -> int:
        """The file's ``PRAGMA user_version``; a store of a newer katibx is refused rather than misread or altered."""
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"--store: store {self.path} was written by a newer katibx (schema {version}, this katibx reads up to "
                f"{SCHEMA_VERSION}); upgrade katibx"
            )
        return version

    def _migrate(self) -> None:
        """Bring the file up to SCHEMA_VERSION in one write transaction (a new file gets the v0 tables first). The
        version is read again under the write lock, so of several processes opening an old file only one migrates."""
        with self._transaction():
            version = self._schema_version()
            for step in ((_SCHEMA_V0,) if version == 0 else ()) + _MIGRATIONS[version:]:
                for statement in step:
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def experiment_dir(self, record: ExperimentRecord) -> Path:
        """Where the experiment's trial folders (logs, metrics, checkpoints) live: beside the database."""
        return trial_dir.experiment_dir(self.path.parent, record.namespace, record.name)

    def trial_dir(self, record: ExperimentRecord, trial_name: str) -> Path:
        return trial_dir.trial_dir(self.path.parent, record.namespace, record.name, trial_name)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _write(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, tuple(args))

    def _transaction(self) -> _Tx:
        return _Tx(self._db)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Reads in the block see the store as of one moment (a read transaction; writers go on meanwhile)."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            if self._db.in_transaction:
                self._db.execute("COMMIT")

    # experiments ------------------------------------------------------------------------
    def create_experiment(
        self,
        experiment: Experiment,
        conditions: list[dict[str, Any]],
        workdir: str,
        *,
        backend: str | None = None,
        backend_options: dict[str, Any] | None = None,
        lease: LeaseRow | None = None,
    ) -> ExperimentRecord:
        """Store a new experiment with the backend that runs it (so that resume can use the same one) and, in the
        same transaction, the lease of the controller that will run it."""
        stored = experiment.to_dict()
        spec = json.dumps(stored)
        options = dict(backend_options or {})
        now = time.time()
        try:
            with self._transaction():
                cur = self._db.execute(
                    "INSERT INTO experiments (namespace, name, spec, conditions, created, workdir, backend,"
                    " backend_options, optimal_trial) VALUES (?,?,?,?,?,?,?,?,0)",
                    (experiment.namespace, experiment.name, spec, json.dumps(conditions), now, workdir, backend,
                     json.dumps(options)),
                )
                if lease is not None:
                    self._insert_lease(int(cur.lastrowid or 0), lease)
        except sqlite3.IntegrityError:
            raise self._exists(experiment) from None
        return ExperimentRecord(int(cur.lastrowid or 0), stored, conditions, now, None, workdir, backend, options,
                                _experiment=experiment)

    def _exists(self, experiment: Experiment) -> ExperimentExists:
        return ExperimentExists(
            f"metadata.name: experiment {experiment.name!r} already exists in namespace {experiment.namespace!r} "
            f"(store {self.path}); use 'katibx resume {experiment.name}' or 'katibx delete {experiment.name}'")

    def refuse_existing(self, experiment: Experiment) -> None:
        """ExperimentExists (as :meth:`create_experiment` would raise it) when the experiment's name is taken: asked
        before work that must not be done for nothing (an image built and pushed)."""
        try:
            self.get_experiment(experiment.name, experiment.namespace)
        except ExperimentNotFound:
            return
        raise self._exists(experiment)

    def get_experiment(self, name: str, namespace: str | None = None) -> ExperimentRecord:
        rows = self._db.execute(
            f"SELECT {self._experiment_columns} FROM experiments WHERE name=?" + (" AND namespace=?" if namespace else ""),
            (name, namespace) if namespace else (name,),
        ).fetchall()
        if not rows:
            where = f" in namespace {namespace!r}" if namespace else ""
            raise ExperimentNotFound(f"experiment {name!r} not found{where} (store {self.path})")
        if len(rows) > 1:
            spaces = ", ".join(r[8] for r in rows)
            raise StoreError(f"experiment {name!r} exists in several namespaces ({spaces}); pass --namespace")
        return self._experiment_row(rows[0])

    def list_experiments(self) -> list[ExperimentRecord]:
        rows = self._db.execute(f"SELECT {self._experiment_columns} FROM experiments ORDER BY created, id").fetchall()
        return [self._experiment_row(r) for r in rows]

    @staticmethod
    def _experiment_row(row: tuple[Any, ...]) -> ExperimentRecord:
        """An ExperimentRecord from a row of _EXPERIMENT_COLUMNS."""
        return ExperimentRecord(row[0], json.loads(row[1]), json.loads(row[2]), row[3], row[4],
                                row[5], row[6], json.loads(row[7]), row[9])

    def set_backend(self, record: ExperimentRecord, backend: str, options: dict[str, Any] | None = None) -> None:
        """Record the backend that runs an experiment (one stored before schema 1 gets it on its first resume)."""
        options = dict(options or {})
        self._write("UPDATE experiments SET backend=?, backend_options=? WHERE id=?",
                    (backend, json.dumps(options), record.id))
        record.backend, record.backend_options = backend, options

    def save_experiment(self, record: ExperimentRecord) -> None:
        """Persist the spec (budget edits on resume), conditions, completion time and optimal trial."""
        record.spec = record.spec_dict()
        self._write(
            "UPDATE experiments SET spec=?, conditions=?, completed=?, optimal_trial=? WHERE id=?",
            (json.dumps(record.spec), json.dumps(record.conditions), record.completed,
             record.optimal_trial_id, record.id),
        )

    def delete_experiment(self, record: ExperimentRecord) -> None:
        self._write("DELETE FROM experiments WHERE id=?", (record.id,))

    # leases -----------------------------------------------------------------------------
    def lease(self, experiment_id: int) -> LeaseRow | None:
        row = self._db.execute(f"SELECT {_LEASE_COLUMNS} FROM leases WHERE experiment_id=?",
                               (experiment_id,)).fetchone()
        return LeaseRow(*row) if row else None

    def take_lease(self, experiment_id: int, lease: LeaseRow, replacing: str | None) -> LeaseRow | None:
        """Make ``lease`` the experiment's lease if the stored one is still held by ``replacing`` (None: no lease
        stored), in one write transaction; returns the lease stored after the attempt (``lease`` when it won)."""
        with self._transaction():
            current = self.lease(experiment_id)
            if (current.holder if current else None) == replacing:
                self._db.execute("DELETE FROM leases WHERE experiment_id=?", (experiment_id,))
                self._insert_lease(experiment_id, lease)
                return lease
            return current

    def _insert_lease(self, experiment_id: int, lease: LeaseRow) -> None:
        self._db.execute(f"INSERT INTO leases (experiment_id, {_LEASE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                         (experiment_id, *astuple(lease)))

    def renew_lease(self, experiment_id: int, holder: str) -> LeaseRow | None:
        """Stamp the holder's heartbeat; the stored lease afterwards (another holder's, or None, when it was lost)."""
        self._write("UPDATE leases SET heartbeat=? WHERE experiment_id=? AND holder=?",
                    (time.time(), experiment_id, holder))
        return self.lease(experiment_id)

    def release_lease(self, experiment_id: int, holder: str) -> None:
        self._write("DELETE FROM leases WHERE experiment_id=? AND holder=?", (experiment_id, holder))

    def request_stop(self, experiment_id: int, holder: str, requester: str) -> None:
        """Ask the controller holding the lease to stop (it sees this at its next heartbeat)."""
        self._write("UPDATE leases SET stop_requested=? WHERE experiment_id=? AND holder=?",
                    (requester, experiment_id, holder))

    # trials -----------------------------------------------------------------------------
    def add_trials(self, experiment_id: int, trials: list[TrialRecord], ended: Iterable[TrialEnd] = (),
                   rename: Callable[[TrialRecord], bool] | None = None) -> None:
        """Insert new trials (none: only the ends) in one transaction, so a crash leaves all of them or none; the
        ``ended`` trials' ends are written in the same transaction, before them (the controller saves a trial's end
        with the next trials it creates: one commit a trial). A trial whose name the experiment has already is
        renamed by ``rename`` (False, or no ``rename``: StoreError)."""
        now = time.time()
        with self._transaction():
            for end in ended:
                self._save_trial(end.trial, None, end.logs, end.optimal_of)
            for t in trials:
                t.creation_time = now
                # (read in the write transaction: cheaper than on its own, and nothing can take the name meanwhile)
                while self._db.execute("SELECT 1 FROM trials WHERE experiment_id=? AND name=?",
                                       (experiment_id, t.name)).fetchone():
                    if rename is None or not rename(t):
                        raise StoreError(f"the experiment has a trial named {t.name!r} already: its search algorithm "
                                         "named a new trial the same")
                cur = self._db.execute(
                    "INSERT INTO trials (experiment_id, name, seq, assignments, labels, state, reason, message,"
                    " conditions, created) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (experiment_id, t.name, t.index, json.dumps(t.assignments), json.dumps(t.labels),
                     t.state.value, t.reason, t.message, json.dumps(t.conditions), now),
                )
                t.id = int(cur.lastrowid or 0)

    def save_trial(self, trial: TrialRecord, handle: dict[str, Any] | None = None, *,
                   logs: list[MetricLog] | None = None, optimal_of: ExperimentRecord | None = None) -> None:
        """Persist a trial's state; ``handle`` is the backend's note for finding its worker after a crash. In the
        same transaction: its metric ``logs`` (a trial's last ones, with its end) and, with ``optimal_of``, that
        experiment's optimal trial (``optimal_trial_id``)."""
        if optimal_of is None and not logs:
            self._db.execute(*_trial_update(trial, handle))
            return
        with self._transaction():
            self._save_trial(trial, handle, logs, optimal_of)

    def _save_trial(self, trial: TrialRecord, handle: dict[str, Any] | None, logs: list[MetricLog] | None,
                    optimal_of: ExperimentRecord | None) -> None:
        if logs:
            self._insert_observations(trial.id, logs)
        self._db.execute(*_trial_update(trial, handle))
        if optimal_of is not None:
            self._db.execute("UPDATE experiments SET optimal_trial=? WHERE id=?",
                             (optimal_of.optimal_trial_id, optimal_of.id))

    def trials(self, experiment_id: int, *, limit: int | None = None, offset: int = 0) -> list[TrialRecord]:
        """An experiment's trials in creation order (``limit`` of them from the ``offset``-th, when given)."""
        rows = self._db.execute(f"SELECT {_TRIAL_COLUMNS} FROM trials WHERE experiment_id=? ORDER BY seq"
                                " LIMIT ? OFFSET ?", (experiment_id, -1 if limit is None else limit, offset))
        return [_trial_row(r) for r in rows]

    def trial(self, trial_id: int) -> TrialRecord | None:
        row = self._db.execute(f"SELECT {_TRIAL_COLUMNS} FROM trials WHERE id=?", (trial_id,)).fetchone()
        return _trial_row(row) if row else None

    def trial_experiment_id(self, trial_id: int) -> int | None:
        """The id of the experiment the trial of this id belongs to (None when there is no such trial)."""
        row = self._db.execute("SELECT experiment_id FROM trials WHERE id=?", (trial_id,)).fetchone()
        return row[0] if row else None

    def trial_named(self, experiment_id: int, name: str) -> TrialRecord | None:
        row = self._db.execute(f"SELECT {_TRIAL_COLUMNS} FROM trials WHERE experiment_id=? AND name=?",
                               (experiment_id, name)).fetchone()
        return _trial_row(row) if row else None

    def trial_states(self, experiment_id: int) -> list[tuple[str, TrialState]]:
        """Each trial's name and state in creation order, without the rest of it (what a status lists)."""
        return [(name, TrialState(state)) for name, state in self._db.execute(
            "SELECT name, state FROM trials WHERE experiment_id=? ORDER BY seq", (experiment_id,))]

    def trial_counts(self, experiment_id: int) -> TrialCounts:
        """Katib's counters, counted by the store (from an index: no trial is read)."""
        return TrialCounts.from_states({TrialState(state): count for state, count in self._db.execute(
            "SELECT state, COUNT(*) FROM trials WHERE experiment_id=? GROUP BY state", (experiment_id,))})

    def optimal_trial(self, record: ExperimentRecord) -> TrialRecord | None:
        """Katib's currentOptimalTrial as kept in the store (worked out from the trials for an older store's)."""
        kept = self._db.execute(f"SELECT {self._optimal_column} FROM experiments WHERE id=?", (record.id,)).fetchone()
        kept_id = kept[0] if kept else record.optimal_trial_id
        if kept_id is None:
            return optimal_trial(record.spec, self.trials(record.id))
        return self.trial(kept_id) if kept_id else None

    def summary(self, record: ExperimentRecord, *, names: bool = True) -> ExperimentSummary:
        """What the experiment's status says of its trials, read in one snapshot (a running controller's commits
        land wholly before or after it): counts and the optimal trial from what the store keeps, each trial's name
        and state with ``names``, and, with several objectives, the Pareto front (which reads every trial)."""
        with self._snapshot():
            if len(Objective(record.spec).objectives) > 1:
                return ExperimentSummary.of(record.spec, self.trials(record.id))
            states = self.trial_states(record.id) if names else None
            counts = (TrialCounts.from_states(Counter(state for _, state in states)) if states is not None
                      else self.trial_counts(record.id))
            return ExperimentSummary(counts, self.optimal_trial(record), states)

    def trial_handle(self, trial: TrialRecord) -> dict[str, Any] | None:
        """The backend's handle recorded when the trial started (to re-attach or stop it after a crash)."""
        row = self._db.execute("SELECT handle FROM trials WHERE id=?", (trial.id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    # integrity --------------------------------------------------------------------------
    def check(self) -> StoreCheck:
        """SQLite's integrity check, then every experiment read in full (spec, trials, observations), so that a
        damaged file says which experiments can still be read."""
        try:
            integrity = [row[0] for row in self._db.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            integrity = [str(exc)]
        try:
            rows = self._db.execute("SELECT id, namespace, name FROM experiments ORDER BY id").fetchall()
        except sqlite3.DatabaseError as exc:
            return StoreCheck(integrity, [], str(exc))
        found = []
        for experiment_id, namespace, name in rows:
            problem = None
            try:
                row = self._db.execute(f"SELECT {self._experiment_columns} FROM experiments WHERE id=?",
                                       (experiment_id,)).fetchone()
                self._experiment_row(row).experiment  # noqa: B018 - the model built: its spec can be read
                trials = self.trials(experiment_id)
                for trial in trials:
                    self.observation_logs(trial.id)
            except (StoreFault, sqlite3.DatabaseError, ValueError, KeyError, TypeError) as exc:
                problem = str(exc.__cause__ if isinstance(exc, StoreFault) else exc) or type(exc).__name__
            found.append((namespace, name, problem))
        return StoreCheck(integrity, found)

    # observations -----------------------------------------------------------------------
    def add_observations(self, trial_id: int, logs: list[MetricLog]) -> None:
        """Keep a trial's metric logs (each stamped with its time) in one transaction."""
        if logs:
            with self._transaction():
                self._insert_observations(trial_id, logs)

    def _insert_observations(self, trial_id: int | None, logs: list[MetricLog]) -> None:
        self._db.executemany("INSERT INTO observations (trial_id, timestamp, name, value) VALUES (?,?,?,?)",
                             [(trial_id, log.timestamp, log.name, log.value) for log in logs])

    def observation_logs(self, trial_id: int) -> list[MetricLog]:
        """A trial's metric logs in arrival order."""
        return [MetricLog(name, value, timestamp) for timestamp, name, value in self._db.execute(
            "SELECT timestamp, name, value FROM observations WHERE trial_id=? ORDER BY id", (trial_id,)
        )]

    def experiment_observation_logs(self, experiment_id: int) -> dict[int, list[MetricLog]]:
        """Every trial's metric logs in arrival order, by trial id, in one query."""
        logs: dict[int, list[MetricLog]] = {}
        for trial_id, timestamp, name, value in self._db.execute(
                "SELECT o.trial_id, o.timestamp, o.name, o.value FROM observations o JOIN trials t ON t.id = o.trial_id"
                " WHERE t.experiment_id=? ORDER BY o.id", (experiment_id,)):
            logs.setdefault(trial_id, []).append(MetricLog(name, value, timestamp))
        return logs

    # tracking runs ----------------------------------------------------------------------
    def tracking_runs(self, experiment_id: int, tracking_uri: str) -> dict[str, str]:
        """The ids of the runs that stand for an experiment's trials (by trial name) at ``tracking_uri``."""
        return dict(self._db.execute("SELECT key, run_id FROM tracking_runs WHERE experiment_id=? AND tracking_uri=?",
                                     (experiment_id, tracking_uri)))

    def save_tracking_run(self, experiment_id: int, tracking_uri: str, key: str, run_id: str) -> None:
        self._write("INSERT OR REPLACE INTO tracking_runs (experiment_id, tracking_uri, key, run_id) VALUES (?,?,?,?)",
                    (experiment_id, tracking_uri, key, run_id))

    def experiment_fingerprints(self) -> dict[int, str]:
        """A digest per experiment (by id) that changes whenever its spec, conditions, trials or reports change:
        how a reader that keeps what it built tells, without reading them, which experiments to read again."""
        rows = self._db.execute("""SELECT e.id, e.spec, e.conditions, IFNULL(e.completed, ''),
            (SELECT group_concat(t.id || t.state || t.reason || IFNULL(t.started, '') || IFNULL(t.completed, '')
                                 || t.labels || t.observation, ',') FROM trials t WHERE t.experiment_id = e.id),
            (SELECT COUNT(*) || ':' || TOTAL(o.id) FROM observations o JOIN trials t ON t.id = o.trial_id
                                 WHERE t.experiment_id = e.id)
            FROM experiments e""")
        import hashlib  # (a reading command never asks)

        return {row[0]: hashlib.sha1("\x1f".join(map(str, row[1:])).encode()).hexdigest() for row in rows}

    def data_version(self) -> int:
        """A number that changes whenever another connection has committed a change to the store (SQLite's
        ``PRAGMA data_version``): how a reader learns, cheaply, that there is something new to read."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def clear_observations(self, trial_id: int) -> None:
        self._write("DELETE FROM observations WHERE trial_id=?", (trial_id,))


def _trial_update(trial: TrialRecord, handle: dict[str, Any] | None) -> tuple[str, tuple[Any, ...]]:
    """The statement that writes a trial's state (and its backend ``handle``, where given)."""
    return ("UPDATE trials SET state=?, reason=?, message=?, conditions=?, observation=?, started=?, completed=?,"
            " handle=COALESCE(?, handle) WHERE id=?",
            (trial.state.value, trial.reason, trial.message, json.dumps(trial.conditions),
             json.dumps({k: v.to_dict() for k, v in trial.observation.items()}), trial.start_time,
             trial.completion_time, json.dumps(handle) if handle is not None else None, trial.id))


def _trial_row(r: tuple[Any, ...]) -> TrialRecord:
    """A TrialRecord from a row of _TRIAL_COLUMNS."""
    return TrialRecord(
        name=r[1], index=r[2], assignments=json.loads(r[3]), labels=json.loads(r[4]), state=TrialState(r[5]),
        reason=r[6], message=r[7], conditions=json.loads(r[8]),
        observation={k: MetricSummary(k, _avail(v["min"]), _avail(v["max"]), v["latest"])
                     for k, v in json.loads(r[9]).items()},
        start_time=r[10], completion_time=r[11], creation_time=r[12], id=r[0],
    )


def _avail(value: str) -> str | None:
    return None if value == "unavailable" else value


def _stored_experiment(data: dict[str, Any]) -> Experiment:
    """A stored spec as an Experiment, built without validating it again: it is the dump of a model that was valid
    when stored (so building it is quick: a reading command never builds pydantic's validators), and one that
    today's rules would refuse (a key since removed, a stricter type) still reads, so that an upgrade never makes an
    old store unreadable."""
    from katibx.spec import Experiment

    return _unvalidated(Experiment, data)


def _unvalidated(annotation: Any, value: Any) -> Any:
    """``value`` shaped as ``annotation`` without validation: mappings become the (nested) models the annotation
    names, so attribute access works; other values are kept as stored, unknown keys only where a model allows extras."""
    if get_origin(annotation) in (Union, types.UnionType):  # Optional[X]
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    import pydantic

    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel) and isinstance(value, dict):
        fields = annotation.model_fields
        names = {_alias(annotation, name, field): name for name, field in fields.items()}
        values = {names.get(key, key): item for key, item in value.items()}
        return annotation.model_construct(**{
            name: _unvalidated(fields[name].annotation, item) if name in fields else item
            for name, item in values.items()
        })
    if get_origin(annotation) is list and isinstance(value, list):
        return [_unvalidated(get_args(annotation)[0], item) for item in value]
    return value


def _alias(model: type[pydantic.BaseModel], name: str, field: Any) -> str:
    """The key a field is stored under: its alias, which pydantic before 2.12 fills in from the model's alias
    generator only once the model is built (the spec models defer that until something validates)."""
    generator = model.model_config.get("alias_generator")
    return field.alias or (generator(name) if callable(generator) else None) or name


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT/ROLLBACK around a block (the connection runs in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        """Roll back what is still open (SQLite rolls back on its own after some errors, a full disk among them)."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

