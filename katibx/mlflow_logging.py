"""Live MLflow logging while an experiment runs (``katibx run --mlflow``, ``tune(mlflow=...)``,
``KatibClient(mlflow=...)``, or the experiment's ``katibx.io/mlflow`` annotation).

A controller listener that only notes that something changed; a thread of its own, with its own store connection,
then writes what is new through :func:`katibx.mlflow_export.export_experiment` (at most every
:data:`EVERY_SECONDS`, and once more when the run ends). So logging never slows a trial or the controller, a crash
and ``katibx resume`` make no duplicate runs (the store keeps the runs' ids), and a tracking server that is down
costs one warning line: the next round, or ``katibx export mlflow NAME`` later, writes what was missed.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from katibx.controller import TrialListener, combined_listener
from katibx.mlflow_export import ExportState, MlflowUnavailable, export_experiment, new_client
from katibx.store import ExperimentRecord, Store, StoreError

log = logging.getLogger(__name__)

# How often the logger writes what changed while the experiment runs.
EVERY_SECONDS = 2.0
@contextmanager
def logged_to_mlflow(store: Store, target: str | None, listener: TrialListener | None) -> Iterator[TrialListener | None]:
    """``listener`` joined by an :class:`MlflowLogger` writing to ``target`` (see
    :func:`katibx.tracking.mlflow_target`; None: no logger), which writes its last changes when the block ends."""
    if target is None:
        yield listener
        return
    logger = MlflowLogger(store.path, target or None)
    try:
        yield combined_listener(listener, logger)
    finally:
        logger.close()


class MlflowLogger:
    """A controller listener writing the experiment into MLflow at ``tracking_uri`` (None: MLflow's default, or
    ``MLFLOW_TRACKING_URI``); ``close()`` writes the last changes and stops it."""

    def __init__(self, store_path: Path, tracking_uri: str | None = None, every_seconds: float = EVERY_SECONDS) -> None:
        self.store_path = store_path
        self.tracking_uri = tracking_uri
        self.every_seconds = every_seconds
        self._record: ExperimentRecord | None = None
        self._changed = threading.Event()
        self._closing = threading.Event()
        self._warned = False
        self._thread: threading.Thread | None = None
        self._client: Any = None  # made once: opening a tracking store costs about a second
        self._state = ExportState()  # what the rounds remember: trials written whole, the runs' ids

    def __call__(self, record: ExperimentRecord, trials: Any) -> None:
        self._record = record
        self._changed.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="katibx-mlflow", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        try:
            store = Store(self.store_path, create=False)
        except StoreError as exc:
            log.warning("MLflow logging stopped: %s", exc)
            return
        with store:
            while not self._closing.is_set():
                self._changed.wait()
                if self._closing.wait(self.every_seconds):  # changes of the next seconds go in the same round
                    break
                self._changed.clear()
                self._export(store)
            self._export(store)  # the last changes

    def _export(self, store: Store) -> None:
        record = self._record
        if record is None:
            return
        try:
            if self._client is None:
                self._client = new_client(self.tracking_uri)
            export_experiment(store, store.get_experiment(record.name, record.namespace), self.tracking_uri,
                              client=self._client, state=self._state)
        except (MlflowUnavailable, StoreError) as exc:
            problem = str(exc)
        except Exception as exc:  # noqa: BLE001 - MlflowClient() itself (a store it cannot open): never fatal here
            problem = f"MLflow at {self.tracking_uri or 'its default tracking URI'}: {exc}"
        else:
            return
        if not self._warned:  # once: the next rounds retry quietly
            self._warned = True
            log.warning("MLflow logging: %s; the experiment goes on (katibx export mlflow %s writes what was "
                        "missed)", problem, record.name)

    def close(self) -> None:
        """Write the last changes and stop; a warning says when MLflow could not take them."""
        thread = self._thread
        if thread is None:
            return
        self._closing.set()
        self._changed.set()
        thread.join()
