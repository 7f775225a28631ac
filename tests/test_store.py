"""The SQLite store shared by several processes and threads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from katibx.store import Store, StoreError, store_file


def test_many_connections_can_open_a_new_store_at_once(tmp_path):
    """The controller and readers (CLI, tests, a second controller) may open the file while it is being set up."""
    errors: list[Exception] = []

    def open_repeatedly() -> None:
        try:
            for _ in range(20):
                Store(tmp_path / "shared.db").close()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_repeatedly) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Store(tmp_path / "shared.db").list_experiments() == []


def test_a_store_url_with_a_drive_letter() -> None:
    assert store_file("sqlite:///C:/runs/katibx.db", windows=True) == "C:/runs/katibx.db"
    assert store_file("sqlite:///d:\\runs\\katibx.db", windows=True) == "d:\\runs\\katibx.db"
    with pytest.raises(StoreError, match=r"sqlite:///C:/runs/katibx.db names a Windows drive"):
        store_file("sqlite:///C:/runs/katibx.db", windows=False)
    assert store_file("sqlite:////srv/katibx.db", windows=False) == "/srv/katibx.db"
    assert store_file("sqlite:///srv/katibx.db", windows=False) == "/srv/katibx.db"


def test_a_new_trial_named_as_a_stored_one_is_refused_naming_it(tmp_path: Path) -> None:
    """A search algorithm that names a new trial as an existing one gets a StoreError naming the trial (the
    controller's own drawn names are drawn again instead)."""
    from conftest import experiment_doc

    from katibx.loader import experiment_from_dict
    from katibx.trial import TrialRecord

    store = Store(tmp_path / "k.db")
    record = store.create_experiment(experiment_from_dict(experiment_doc()), [], str(tmp_path))
    store.add_trials(record.id, [TrialRecord(name="named-a", index=0, assignments={})])
    with pytest.raises(StoreError, match="a trial named 'named-a' already"):
        store.add_trials(record.id, [TrialRecord(name="named-b", index=1, assignments={}),
                                     TrialRecord(name="named-a", index=2, assignments={})])
    assert [t.name for t in store.trials(record.id)] == ["named-a"]  # all or none
