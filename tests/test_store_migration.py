"""The store lasts across katibx versions: schema versions, forward migrations, refusal of newer files, old specs."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydantic
import pytest
from conftest import experiment_doc

from katibx.spec import Experiment, ExperimentSpec, FeasibleSpace, Objective, TrialParameter, TrialTemplate
from katibx.status import optimal_trial
from katibx.store import SCHEMA_VERSION, Store, StoreError, _alias
from katibx.trial import TrialState

V0_STORE = Path(__file__).parent / "data" / "store-v0" / "katibx.db"


def v0_copy(tmp_path: Path) -> Path:
    """A copy of the committed store written by the schema without a version (the original is never opened)."""
    path = tmp_path / "katibx.db"
    shutil.copyfile(V0_STORE, path)
    return path


def file_state(path: Path) -> tuple[int, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """user_version, the schema and the experiments rows of a store file, read with plain sqlite3."""
    db = sqlite3.connect(path)
    try:
        return (db.execute("PRAGMA user_version").fetchone()[0],
                db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall(),
                db.execute("SELECT * FROM experiments ORDER BY id").fetchall())
    finally:
        db.close()


def experiment_columns(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [row[1] for row in db.execute("PRAGMA table_info(experiments)")]
    finally:
        db.close()


def test_v0_store_opens_with_everything_intact_and_is_migrated(tmp_path: Path) -> None:
    path = v0_copy(tmp_path)
    assert file_state(path)[0] == 0
    store = Store(path)
    try:
        assert file_state(path)[0] == SCHEMA_VERSION == 4
        assert experiment_columns(path)[-3:] == ["backend", "backend_options", "optimal_trial"]
        records = {r.name: r for r in store.list_experiments()}
        assert sorted(records) == ["finished", "interrupted"]
        for record in records.values():  # the local backend's handles (a pid) name the backend that ran them
            assert (record.backend, record.backend_options, record.workdir) == ("local", {}, "/tmp")
            assert store.get_experiment(record.name).backend == "local"
        finished, interrupted = records["finished"], records["interrupted"]
        assert finished.experiment.spec.max_trial_count == 3 and interrupted.experiment.spec.max_trial_count == 4
        assert [c["type"] for c in finished.conditions if c["status"] == "True"] == ["Created", "Succeeded"]
        assert finished.completed is not None and interrupted.completed is None
        assert [c["type"] for c in interrupted.conditions if c["status"] == "True"] == ["Created", "Running"]

        done = store.trials(finished.id)
        assert [t.name for t in done] == ["finished-z138vzbt", "finished-ml27p4e2", "finished-8kel4sue"]
        assert {t.state for t in done} == {TrialState.SUCCEEDED}
        assert done[0].assignments == {"x": 0.08564916714362436}
        assert done[0].observation["result"].max == "0.08564916714362436"
        assert done[0].labels == {"katib.kubeflow.org/experiment": "finished"}
        running = store.trials(interrupted.id)
        assert [(t.name, t.state) for t in running] == [
            ("interrupted-39ap64lt", TrialState.RUNNING), ("interrupted-9p61a7if", TrialState.RUNNING)]
        assert [store.trial_handle(t) for t in running] == [
            {"pid": 8918, "create_time": 1796422477.87}, {"pid": 8919, "create_time": 1796422477.87}]
        assert [len(store.observation_logs(t.id or 0)) for t in done + running] == [1, 1, 1, 1, 1]
        log = store.observation_logs(running[1].id or 0)[0]
        assert (log.name, log.value) == ("result", "0.25325307785026463")
        # the optimal trial was not kept before schema 4: readers work it out from the trials
        assert finished.optimal_trial_id is None and interrupted.optimal_trial_id is None
        assert store.optimal_trial(finished).name == optimal_trial(finished.experiment, done).name and store.optimal_trial(interrupted) is None
        assert store.trial_counts(finished.id).succeeded == 3 and store.trial_counts(interrupted.id).running == 2
    finally:
        store.close()


def test_v0_store_resumes_its_interrupted_experiment(tmp_path: Path) -> None:
    path = v0_copy(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("KATIBX_V0_HOLD", "KATIBX_STORE")}
    done = subprocess.run([sys.executable, "-m", "katibx.cli", "resume", "interrupted", "--store", str(path), "-q"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    store = Store(path)
    try:
        assert file_state(path)[0] == SCHEMA_VERSION
        record = store.get_experiment("interrupted")
        assert record.completed is not None
        assert record.conditions[-1]["type"] == "Succeeded" and record.conditions[-1]["status"] == "True"
        trials = store.trials(record.id)
        assert len(trials) == 4 and {t.state for t in trials} == {TrialState.SUCCEEDED}
        assert record.optimal_trial_id == optimal_trial(record.experiment, trials).id  # kept by the resuming controller
        assert store.get_experiment("finished").optimal_trial_id is None  # not run again: still worked out
        assert [t.name for t in trials[:2]] == ["interrupted-39ap64lt", "interrupted-9p61a7if"]
        assert len(store.trials(store.get_experiment("finished").id)) == 3
    finally:
        store.close()


def test_v0_experiment_gets_its_backend_later(tmp_path: Path) -> None:
    path = v0_copy(tmp_path)
    with_backend = Store(path)
    record = with_backend.get_experiment("interrupted")
    with_backend.set_backend(record, "ray", {"address": "127.0.0.1:6379"})
    assert (record.backend, record.backend_options) == ("ray", {"address": "127.0.0.1:6379"})
    with_backend.close()
    reopened = Store(path)
    try:
        assert reopened.get_experiment("interrupted").backend_options == {"address": "127.0.0.1:6379"}
        assert reopened.get_experiment("interrupted").backend == "ray"
        assert reopened.get_experiment("finished").backend == "local"
    finally:
        reopened.close()


@pytest.mark.parametrize("handle,backend", [
    ({"backend": "kubernetes", "kind": "Job", "uid": "u1", "namespace": "ns"}, "kubernetes"),
    ({"kind": "Job", "uid": "u1", "name": "t"}, "kubernetes"),  # written before handles named their backend
    ({"backend": "ray", "trial_dir": "/x", "resources": {}}, "ray"),
    ({"pid": 1, "create_time": 2.0}, "local"),
    (None, None),  # no trial ever started: nothing tells
])
def test_v0_experiments_get_the_backend_their_trial_handles_name(tmp_path: Path, handle: dict[str, Any] | None,
                                                                 backend: str | None) -> None:
    """So that `katibx resume` of an old Kubernetes experiment does not run its trials again locally."""
    path = v0_copy(tmp_path)
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE trials SET handle=?", (json.dumps(handle) if handle is not None else None,))
    db.close()
    store = Store(path)
    try:
        assert {r.name: r.backend for r in store.list_experiments()} == {"finished": backend, "interrupted": backend}
    finally:
        store.close()


def test_new_store_reopens_unchanged_and_keeps_the_backend(tmp_path: Path) -> None:
    path = tmp_path / "new" / "katibx.db"
    store = Store(path)
    experiment = Experiment.model_validate(experiment_doc())
    created = store.create_experiment(experiment, [], str(tmp_path), backend="ray",
                                      backend_options={"address": "127.0.0.1:6379"})
    plain = store.create_experiment(Experiment.model_validate(experiment_doc() | {"metadata": {"name": "plain"}}), [],
                                    str(tmp_path))
    assert (created.backend, created.backend_options) == ("ray", {"address": "127.0.0.1:6379"})
    store.close()
    before = file_state(path)
    assert before[0] == SCHEMA_VERSION

    again = Store(path)
    try:
        assert file_state(path) == before
        assert experiment_columns(path).count("backend") == 1
        loaded = again.get_experiment("exp")
        assert (loaded.backend, loaded.backend_options) == ("ray", {"address": "127.0.0.1:6379"})
        assert loaded.experiment == experiment
        assert (again.get_experiment("plain").backend, again.get_experiment("plain").backend_options) == (None, {})
        assert (plain.backend, plain.backend_options) == (None, {})
    finally:
        again.close()


def test_new_store_and_migrated_v0_store_have_the_same_schema(tmp_path: Path) -> None:
    Store(tmp_path / "new.db").close()
    Store(v0_copy(tmp_path)).close()
    new, migrated = file_state(tmp_path / "new.db"), file_state(tmp_path / "katibx.db")
    assert new[:2] == migrated[:2] and new[0] == SCHEMA_VERSION


def test_store_of_a_newer_katibx_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "katibx.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    before = file_state(path)
    with pytest.raises(StoreError) as refused:
        Store(path)
    message = str(refused.value)
    assert "\n" not in message and str(path) in message
    assert f"was written by a newer katibx (schema {SCHEMA_VERSION + 1}, this katibx reads up to {SCHEMA_VERSION})" \
        in message and message.endswith("upgrade katibx")
    assert file_state(path) == before


def test_stored_spec_that_todays_validation_refuses_still_loads_typed(tmp_path: Path) -> None:
    """A spec stored by an older katibx may break a newer rule: an unknown key, a type strict mode refuses."""
    path = tmp_path / "katibx.db"
    Store(path).close()
    doc = experiment_doc(parallelTrialCount="2")  # strict mode: "2" is not an int
    doc["metadata"]["name"] = "old"
    doc["spec"]["trialTemplate"]["legacyOption"] = True  # extra="forbid": a key since removed
    doc["metadata"]["owner"] = "someone"  # metadata keeps keys it does not know
    with pytest.raises(pydantic.ValidationError):
        Experiment.model_validate(doc)
    db = sqlite3.connect(path)
    db.execute("INSERT INTO experiments (namespace, name, spec, created) VALUES ('default', 'old', ?, 1.0)",
               (json.dumps(doc),))
    db.commit()
    db.close()

    store = Store(path)
    try:
        for record in (store.list_experiments()[0], store.get_experiment("old")):
            experiment = record.experiment
            assert isinstance(experiment, Experiment) and experiment.name == "old"
            assert experiment.namespace == "default" and experiment.metadata.model_extra == {"owner": "someone"}
            spec = experiment.spec
            assert isinstance(spec.objective, Objective) and spec.objective.objective_metric_name == "result"
            assert spec.objective.objectives() == [("result", "maximize")]
            assert spec.algorithm is not None and spec.algorithm.settings_dict() == {"random_state": "7"}
            assert [p.name for p in spec.parameters] == ["a", "b"]
            assert isinstance(spec.parameters[1].feasible_space, FeasibleSpace)
            assert spec.parameters[1].feasible_space.max == "0.2"
            assert isinstance(spec.trial_template, TrialTemplate)
            assert spec.trial_template.trial_parameters is not None
            assert all(isinstance(p, TrialParameter) for p in spec.trial_template.trial_parameters)
            assert spec.trial_template.primary_container_name == "main"
            assert spec.trial_template.trial_spec == doc["spec"]["trialTemplate"]["trialSpec"]
            assert (spec.max_trial_count, spec.parallel_trial_count) == (4, "2")
            assert spec.early_stopping is None and experiment.source_dir is None
    finally:
        store.close()


def test_stored_keys_map_through_the_alias_generator_while_pydantic_has_set_no_alias() -> None:
    """The spec models defer building; pydantic before 2.12 sets their aliases only then, so the stored camelCase
    keys are named by the models' alias generator."""
    field = ExperimentSpec.model_fields["max_trial_count"]
    assert _alias(ExperimentSpec, "max_trial_count", SimpleNamespace(alias=None)) == "maxTrialCount"
    assert _alias(ExperimentSpec, "max_trial_count", field) == "maxTrialCount"


def test_a_read_only_store_of_schema_3_is_read_and_its_optimal_trial_worked_out(tmp_path: Path) -> None:
    """Schema 4 only added the kept optimal trial (and an index): an archived schema-3 store still reads."""
    path = v0_copy(tmp_path)
    Store(path).close()  # migrated to 4, then made a schema-3 file again
    db = sqlite3.connect(path)
    db.executescript("DROP INDEX trials_state; DROP INDEX trials_order; ALTER TABLE experiments DROP COLUMN optimal_trial;"
                     "PRAGMA user_version=3; PRAGMA wal_checkpoint(TRUNCATE);")
    db.close()
    with Store(path, read_only=True) as store:
        finished = store.get_experiment("finished")
        trials = store.trials(finished.id)
        assert finished.optimal_trial_id is None and len(trials) == 3
        assert store.optimal_trial(finished).name == optimal_trial(finished.experiment, trials).name
        summary = store.summary(finished)
        assert summary.counts.succeeded == 3 and summary.best.name == optimal_trial(finished.experiment, trials).name
    assert file_state(path)[0] == 3  # left as it was


def _open_together(path: str, barrier: Any, results: Any) -> None:
    """Child process: open the store the moment every sibling is ready, report the outcome."""
    barrier.wait(timeout=60)
    try:
        store = Store(path)
        results.put(("ok", [r.name for r in store.list_experiments()]))
        store.close()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(("error", repr(exc)))


def test_processes_opening_an_old_store_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = v0_copy(tmp_path)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    children = [context.Process(target=_open_together, args=(str(path), barrier, results)) for _ in range(4)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=90) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert outcomes == [("ok", ["finished", "interrupted"])] * 4
    assert file_state(path)[0] == SCHEMA_VERSION
    columns = experiment_columns(path)
    assert columns.count("backend") == 1 and columns.count("backend_options") == 1
