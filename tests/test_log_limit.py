"""A trial's log is capped (``--log-limit``, default 1Gi) with its end kept; the metrics are read first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import experiment_doc, katibx_cli, set_command

from katibx.loader import experiment_from_dict
from katibx.quantities import parse_size
from katibx.runner import run_experiment
from katibx.store import Store
from katibx.trial import TrialState
from katibx.trial_dir import STDOUT_LOG
from katibx.workers.local import LocalBackend, keep_tail

LOUD_SCRIPT = """
for i in range(20000):
    print(f"line {i} " + "x" * 40 + f" result={i}")
print("last line result=-5")
"""


def _loud(tmp_path: Path, write_experiment) -> dict:
    doc = experiment_doc(maxTrialCount=1, parallelTrialCount=1)
    set_command(doc, ["python3", "objective.py", "${trialParameters.a}", "${trialParameters.b}"])
    write_experiment(doc, script=LOUD_SCRIPT)
    return doc


def test_a_long_log_keeps_its_end_and_the_metrics_stay_exact(tmp_path: Path, store: Store, write_experiment) -> None:
    doc = _loud(tmp_path, write_experiment)
    record = run_experiment(experiment_from_dict(doc), store=store, workdir=tmp_path,
                            backend=LocalBackend(log_limit_bytes=64 << 10))
    (trial,) = store.trials(record.id)
    assert trial.state is TrialState.SUCCEEDED
    summary = trial.observation["result"]
    assert (summary.min, summary.max, summary.latest) == ("-5", "19999", "-5")  # read before the cut
    log = store.trial_dir(record, trial.name) / STDOUT_LOG
    lines = log.read_text().splitlines()
    assert log.stat().st_size <= (64 << 10) + 200
    assert lines[0].startswith("[katibx: the first ") and "log limit 65536 bytes" in lines[0]
    assert lines[1].startswith("line ") and lines[-1] == "last line result=-5"


def test_the_log_limit_is_a_backend_option_kept_for_resume(tmp_path: Path, write_experiment) -> None:
    path = tmp_path / "experiment.yaml"
    _loud(tmp_path, write_experiment)
    store_path = tmp_path / "katibx.db"
    done = katibx_cli("run", str(path), "-q", "--log-limit", "64Ki", cwd=tmp_path, store=store_path)
    assert done.returncode == 0, done.stderr
    assert Store(store_path).get_experiment("exp").backend_options == {"log_limit_bytes": 65536}
    bad = katibx_cli("run", str(path), "-q", "--log-limit", "lots", cwd=tmp_path, store=tmp_path / "other.db")
    assert bad.returncode == 2 and "--log-limit" in bad.stderr and "Traceback" not in bad.stderr
    env = {**os.environ, "KATIBX_LOG_LIMIT": "lots"}
    bad = katibx_cli("run", str(path), "-q", cwd=tmp_path, store=tmp_path / "other.db", env=env)
    assert bad.returncode == 2 and "error: KATIBX_LOG_LIMIT: expected a positive size" in bad.stderr  # not the flag


@pytest.mark.parametrize(("text", "size"), [("1048576", 1048576), ("512Ki", 512 << 10), ("100M", 100_000_000),
                                            ("2Gi", 2 << 30), (" 3 Mi ", 3 << 20), ("1.5Gi", 3 << 29),
                                            ("100K", 100_000), ("1e6", 1_000_000)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "1.5", "500m", "lots", "2Xi", "1e400"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="expected a positive size"):
        parse_size(text)


def test_a_log_without_newlines_near_the_cut_keeps_its_last_bytes(tmp_path: Path) -> None:
    """A progress bar redrawn with \\r has no line to start from: the cut falls at the byte, the end is kept."""
    log = tmp_path / "stdout.log"
    log.write_bytes(b"\rprogress 50%" * 20000 + b"\nFINAL ERROR: disk on fire\n")
    keep_tail(log, 4096)
    text = log.read_bytes()
    assert text.startswith(b"[katibx: the first ") and text.endswith(b"FINAL ERROR: disk on fire\n")
    assert len(text) <= 4096 + 100


def test_a_cut_on_a_line_start_keeps_that_line(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(b"a" * 99 + b"\n" + b"b" * 99 + b"\n")
    keep_tail(log, 100)
    assert log.read_bytes().splitlines()[1:] == [b"b" * 99]
