"""The SQLite store shared by several processes and threads."""

from __future__ import annotations

import threading

from katibx.store import Store


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
