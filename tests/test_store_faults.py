"""Store faults end in one line naming the store, exit 2, and lose nothing: a read-only file system, a disk that
fills up mid-run (a real tmpfs of 1 MiB), a damaged page; ``katibx store check`` says which experiments are readable.

Mounting a tmpfs needs root (CI runs as root); elsewhere these tests are skipped with that reason.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import experiment_doc, katibx_cli, set_command

from katibx.loader import experiment_from_dict
from katibx.metrics import MetricLog
from katibx.store import Store, StoreFault
from katibx.trial import TrialRecord, TrialState


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A fresh 1 MiB tmpfs mounted at tmp_path/fs, unmounted afterwards."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _remount(mount: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    text = result.stderr.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    for needle in needles:
        assert needle in text, text


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


# a filled store without running anything: experiments of ``trials`` trials with ``metrics`` observations each
def _fill(store: Store, name: str, trials: int, metrics: int) -> None:
    doc = experiment_doc(maxTrialCount=trials)
    doc["metadata"]["name"] = name
    record = store.create_experiment(experiment_from_dict(doc), [], ".")
    new = [TrialRecord(name=f"{name}-{i}", index=i, assignments={"a": i, "b": 0.15, "pad": "x" * 300})
           for i in range(trials)]
    store.add_trials(record.id, new)
    for trial in new:
        trial.state = TrialState.SUCCEEDED
        store.save_trial(trial)
        store.add_observations(trial.id, [MetricLog("result", str(v), 1.0 + v) for v in range(metrics)])


def test_a_read_only_store_is_readable_and_refuses_changes_in_one_line(tmpfs: Path, tmp_path: Path,
                                                                        write_experiment) -> None:
    store_path = tmpfs / "katibx.db"
    # a controller killed mid-run leaves the -wal and -shm files that read-only SQLite needs
    program = ("import os; from katibx.store import Store; import sys; sys.path.insert(0, 'tests');\n"
               "from test_store_faults import _fill\n"
               f"s = Store({str(store_path)!r}); _fill(s, 'kept', 3, 5); os.kill(os.getpid(), 9)")
    assert subprocess.run([sys.executable, "-c", program], cwd=Path(__file__).parent.parent).returncode == -9
    assert (tmpfs / "katibx.db-wal").exists()
    before = _digest(tmpfs)
    _remount(tmpfs, "ro")
    work = tmp_path / "work"
    work.mkdir()

    listed = katibx_cli("get", "trials", "kept", "-o", "json", cwd=work, store=store_path)
    assert listed.returncode == 0, listed.stderr
    assert [t["metadata"]["name"] for t in json.loads(listed.stdout)["items"]] == ["kept-0", "kept-1", "kept-2"]
    for args in (["resume", "kept", "--max-trial-count", "5", "-q"], ["delete", "kept"]):
        _one_line_error(katibx_cli(*args, cwd=work, store=store_path), str(store_path), "read-only")
    with pytest.raises(StoreFault, match="read-only"):
        Store(store_path).save_experiment(Store(store_path).get_experiment("kept"))
    assert _digest(tmpfs) == before


def test_a_read_only_store_whose_wal_cannot_be_read_is_refused_not_shown_stale(tmpfs: Path, tmp_path: Path) -> None:
    store_path = tmpfs / "katibx.db"
    program = ("import os, sys; sys.path.insert(0, 'tests'); from katibx.store import Store;\n"
               "from test_store_faults import _fill\n"
               f"s = Store({str(store_path)!r}); _fill(s, 'kept', 3, 5); os.kill(os.getpid(), 9)")
    assert subprocess.run([sys.executable, "-c", program], cwd=Path(__file__).parent.parent).returncode == -9
    (tmpfs / "katibx.db-shm").unlink()  # copied without it: the -wal holds committed trials SQLite cannot read
    _remount(tmpfs, "ro")
    _one_line_error(katibx_cli("get", "trials", "kept", cwd=tmp_path, store=store_path), str(store_path),
                    "copy the store with both files")


SPAMMY_SCRIPT = """
import sys
for i in range(3000):
    print(f"result={i}")
"""


def test_a_disk_that_fills_up_mid_run_stops_the_controller_cleanly(tmpfs: Path, tmp_path: Path,
                                                                    write_experiment) -> None:
    doc = set_command(experiment_doc(maxTrialCount=30, parallelTrialCount=2), ["python3", "objective.py", "${trialParameters.a}", "${trialParameters.b}"])
    doc["metadata"]["name"] = "filler"
    path = write_experiment(doc, script=SPAMMY_SCRIPT)
    store_path = tmpfs / "katibx.db"

    full = katibx_cli("run", str(path), "-q", cwd=tmp_path, store=store_path)
    _one_line_error(full, str(store_path), "disk is full", "katibx resume filler")
    with Store(store_path) as probe:  # what was committed before the fault is all there
        record = probe.get_experiment("filler")
        done = [t for t in probe.trials(record.id) if t.state is TrialState.SUCCEEDED]
        assert 0 < len(done) < 30
        assert all(t.observation["result"].latest == "2999" for t in done)

    _remount(tmpfs, "size=64m")
    _resume_finishes("filler", done, tmp_path, store_path)


def _resume_finishes(name: str, done: list[TrialRecord], cwd: Path, store_path: Path) -> None:
    """``katibx resume NAME`` runs the experiment's 30 trials to success, keeping those ``done`` before."""
    resumed = katibx_cli("resume", name, "-q", cwd=cwd, store=store_path)
    assert resumed.returncode == 0, resumed.stderr
    with Store(store_path) as probe:
        trials = probe.trials(probe.get_experiment(name).id)
        assert len(trials) == 30 and all(t.state is TrialState.SUCCEEDED for t in trials)
        assert {t.name for t in done} <= {t.name for t in trials}


def test_trial_folders_that_find_no_room_stop_the_run_in_one_line(tmpfs: Path, tmp_path: Path,
                                                                 write_experiment) -> None:
    """A file system out of room for another trial folder (here: out of inodes, while the store's files still
    grow) stops the run with one line naming the folder, rather than fail trial after trial; resume finishes it."""
    doc = experiment_doc(maxTrialCount=30, parallelTrialCount=1)
    doc["metadata"]["name"] = "folders"
    path = write_experiment(doc)
    store_path = tmpfs / "katibx.db"
    _remount(tmpfs, "size=64m,nr_inodes=60")

    full = katibx_cli("run", str(path), "-q", cwd=tmp_path, store=store_path)
    _one_line_error(full, "trial folder", str(tmpfs / "trials"), "No space left on device", "katibx resume folders")
    with Store(store_path) as probe:  # what was committed before the fault is all there
        trials = probe.trials(probe.get_experiment("folders").id)
        done = [t for t in trials if t.state is TrialState.SUCCEEDED]
        assert 0 < len(done) < 30 and not [t for t in trials if t.state is TrialState.FAILED]

    _remount(tmpfs, "nr_inodes=2000")
    _resume_finishes("folders", done, tmp_path, store_path)


def _damage_last_page_of(path: Path, table: str) -> None:
    """Overwrite the highest-numbered page of ``table`` (its last inserted rows) with garbage."""
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        (page,) = db.execute("SELECT max(pageno) FROM dbstat WHERE name=? AND pagetype='leaf'", (table,)).fetchone()
    with path.open("r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(b"\xa5" * page_size)


def test_a_damaged_page_is_one_line_and_store_check_names_what_is_readable(tmp_path: Path) -> None:
    store_path = tmp_path / "katibx.db"
    with Store(store_path) as store:
        _fill(store, "early", 20, 3)
        _fill(store, "late", 20, 3)
    sqlite3.connect(store_path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    _damage_last_page_of(store_path, "trials")

    for args in (["get", "trials", "late"], ["resume", "late", "-q"], ["get", "experiment", "late"]):
        _one_line_error(katibx_cli(*args, cwd=tmp_path, store=store_path), str(store_path), "katibx store check")
    listed = katibx_cli("list", cwd=tmp_path, store=store_path)  # counts come from an index, not the damaged table
    assert listed.returncode == 0 and "early" in listed.stdout and "late" in listed.stdout, listed.stderr
    early = katibx_cli("get", "trials", "early", "-o", "json", cwd=tmp_path, store=store_path)
    assert early.returncode == 0 and len(json.loads(early.stdout)["items"]) == 20

    check = katibx_cli("store", "check", cwd=tmp_path, store=store_path)
    assert check.returncode == 1, check.stderr
    assert "integrity: DAMAGED" in check.stdout
    assert "default/early: readable" in check.stdout and "default/late: NOT readable" in check.stdout


def test_store_check_of_a_sound_store(tmp_path: Path) -> None:
    with Store(tmp_path / "katibx.db") as store:
        _fill(store, "fine", 2, 2)
    check = katibx_cli("store", "check", cwd=tmp_path, store=tmp_path / "katibx.db")
    assert check.returncode == 0 and check.stdout.splitlines() == ["integrity: ok", "default/fine: readable"]
