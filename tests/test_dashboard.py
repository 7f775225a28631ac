"""``katibx dashboard``: optuna-dashboard over the store, every experiment a study, live (checked through the
dashboard's own JSON API, which its pages draw from)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import katibx
from katibx.dashboard import StoreStudies
from katibx.store import Store
from tests.conftest import wait_until
from tests.test_cli_kubectl import start_gated_run


def _objective(p: dict[str, Any]) -> float:
    for step in range(3):
        katibx.report_metrics({"loss": p["x"] ** 2 + 1 / (step + 1)})
    return p["x"] ** 2


@pytest.fixture
def dashboard(tmp_path):
    """``katibx dashboard --port 0`` on a store; yields (store path, base URL) once it serves."""
    db = tmp_path / "katibx.db"
    katibx.tune("finished", _objective, {"x": katibx.search.double(-1, 1)}, objective_metric_name="loss",
                objective_type="minimize", max_trial_count=4, parallel_trial_count=2, store=db, progress=False)
    server = subprocess.Popen([sys.executable, "-m", "katibx.cli", "dashboard", "--port", "0", "--store", str(db)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()  # said once it is bound
        assert "http://127.0.0.1:" in line, line + server.stderr.read()
        yield db, line.split()[2].removesuffix("/dashboard")
    finally:
        server.terminate()
        server.communicate(timeout=30)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _studies(base: str) -> dict[str, int]:
    return {s["study_name"]: s["study_id"] for s in _get(f"{base}/api/studies")["study_summaries"]}


def test_the_dashboard_shows_a_finished_experiment_as_a_study(dashboard):
    db, base = dashboard
    studies = _studies(base)
    assert studies == {"finished": katibx.Store(db).get_experiment("finished").id}  # the store's id: it never moves
    detail = _get(f"{base}/api/studies/{studies['finished']}")
    trials = detail["trials"]
    names = {a["value"] for t in trials for a in t["user_attrs"] if a["key"] == "katib_name"}
    stored = katibx.KatibxClient(db).get_experiment("finished")
    assert names == {t.name for t in stored.trials}
    assert all(t["params"][0]["name"] == "x" and t["state"] == "Complete" for t in trials)
    assert [v["value"] for v in trials[0]["intermediate_values"]][:3] == pytest.approx(
        stored.trials[0].history["loss"][:3])  # the curve: one step per report
    assert detail["best_trials"][0]["values"] == [pytest.approx(stored.best_value)]


def test_a_running_experiment_appears_and_updates_live(dashboard, tmp_path, write_experiment):
    db, base = dashboard
    run = start_gated_run(tmp_path, write_experiment, db)
    try:
        study = wait_until(lambda: _studies(base).get("exp"))
        running = wait_until(lambda: [t for t in _get(f"{base}/api/studies/{study}")["trials"] if t["state"] == "Running"])
        assert running  # its trials show while they run
        (tmp_path / "go").touch()
        done = wait_until(lambda: [t for t in _get(f"{base}/api/studies/{study}")["trials"] if t["state"] == "Complete"]
                      if len(_get(f"{base}/api/studies/{study}")["trials"]) == 2 else None)
        assert len(done) >= 1
    finally:
        (tmp_path / "go").touch()
        run.communicate(timeout=60)
    assert run.returncode == 0


def test_only_the_experiments_that_changed_are_read_again(tmp_path):
    """A change to one experiment (or a controller's heartbeat) leaves the others as the dashboard holds them: a
    note written on one study through the dashboard stays while another experiment gets more trials."""
    db = tmp_path / "katibx.db"
    args = dict(parameters={"x": katibx.search.double(-1, 1)}, objective_metric_name="loss", parallel_trial_count=1,
                store=db, progress=False)
    katibx.tune("first", _objective, max_trial_count=2, **args)
    katibx.tune("second", _objective, max_trial_count=2, **args)
    with Store(db) as store:
        studies = StoreStudies(Store(db, read_only=True), refresh_seconds=0)
        first = studies.get_study_id_from_name("first")
        studies.set_study_user_attr(first, "note", "kept")  # as the dashboard's note editor does
        katibx.tune("second", _objective, max_trial_count=1, load_if_exists=True, **args)  # one more trial
        assert len(studies.get_all_trials(studies.get_study_id_from_name("second"))) == 3  # the change is seen
        assert studies.get_study_user_attrs(first)["note"] == "kept"  # ... and "first" was not read again
        record = store.get_experiment("first")
        record.experiment.spec.max_trial_count = 5
        store.save_experiment(record)  # "first" itself changes (as a budget edit does): read again
        assert "note" not in studies.get_study_user_attrs(first)
        assert len(studies.get_all_trials(first)) == 2


def test_the_study_list_reads_no_trial_and_each_study_maps_its_trials_when_asked(tmp_path, monkeypatch):
    """The first page stays quick however many trials the store holds: listing the studies reads no trial; a read
    of a study's trials, or of one trial by its id, maps that study's trials only, with the store's ids."""
    db = tmp_path / "katibx.db"
    args = dict(parameters={"x": katibx.search.double(-1, 1)}, objective_metric_name="loss",
                objective_type="minimize", parallel_trial_count=1, store=db, progress=False)
    katibx.tune("first", _objective, max_trial_count=3, **args)
    second = katibx.tune("second", _objective, max_trial_count=2, **args)
    read: list[int] = []
    trials = Store.trials
    monkeypatch.setattr(Store, "trials", lambda self, experiment_id, **kw: read.append(experiment_id) or trials(
        self, experiment_id, **kw))
    with Store(db, read_only=True) as store:
        studies = StoreStudies(store, refresh_seconds=0)
        assert [s.study_name for s in studies.get_all_studies()] == ["first", "second"]
        assert read == []
        first = studies.get_study_id_from_name("first")
        assert studies.get_n_trials(first) == 3 and len(read) == 1
        stored = Store(db, read_only=True)
        record = stored.get_experiment("second")
        trial = stored.trials(record.id)[1]
        stored.close()
        read.clear()
        shown = studies.get_trial(trial.id)  # a trial of a study not yet opened
        assert (shown._trial_id, shown.number, shown.user_attrs["katib_name"]) == (trial.id, 1, trial.name)
        assert read == [record.id]
        best = studies.get_best_trial(record.id)
        assert best.user_attrs["katib_name"] == second.best_trial.name and best.value == second.best_value

        # the experiment changes: its study, being looked at, is mapped again with its trials, and a trial is found
        # by its id without a read of the study first (as the dashboard's trial notes and attributes are written)
        katibx.tune("second", _objective, max_trial_count=1, load_if_exists=True, **args)
        studies.get_all_studies()
        assert studies.get_trial_number_from_id(trial.id) == 1
        assert studies.get_trial_id_from_study_id_trial_number(record.id, 2) > trial.id


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: apt-get install chromium (README, Tests)")


def _render(url: str, screenshot: Path) -> str:
    """The page as headless Chromium renders it (its DOM once the single-page app has run), and a screenshot."""
    assert CHROMIUM is not None
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900",
            "--virtual-time-budget=10000", f"--user-data-dir={screenshot.parent / 'chromium'}"]
    subprocess.run([*args, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    assert screenshot.stat().st_size > 30_000  # a drawn page (a browser error page is about 18 kB)
    return subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout


def _js(number: float) -> str:
    """A number as the page's JavaScript writes it (String(x): no exponent from 1e-7 to 1e21, shortest digits)."""
    return np.format_float_positional(number, trim="-")


@needs_chromium
def test_the_dashboard_page_shows_trials_parameters_and_the_best_value(dashboard, tmp_path):
    db, base = dashboard
    stored = katibx.KatibxClient(db).get_experiment("finished")
    study_id = _studies(base)["finished"]
    study = _render(f"{base}/dashboard/studies/{study_id}", tmp_path / "study.png")
    assert f"Best Trial (number={stored.best_trial.number})" in study and _js(stored.best_value) in study
    trials = _render(f"{base}/dashboard/studies/{study_id}/trials", tmp_path / "trials.png")  # the first trial's
    first = stored.trials[0]
    assert f">katib_name {first.name}<" in trials and f">x {_js(first.params['x'])}<" in trials


@needs_chromium
def test_the_dashboard_page_of_a_running_experiment(dashboard, tmp_path, write_experiment):
    db, base = dashboard
    run = start_gated_run(tmp_path, write_experiment, db)
    try:
        study = wait_until(lambda: _studies(base).get("exp"))
        wait_until(lambda: [t for t in _get(f"{base}/api/studies/{study}")["trials"] if t["state"] == "Running"])
        page = _render(f"{base}/dashboard/studies/{study}/trials", tmp_path / "running.png")
        assert "Running" in page and ">katib_name exp-" in page and ">katib_state Running<" in page
    finally:
        (tmp_path / "go").touch()
        run.communicate(timeout=60)


def test_serving_beyond_this_machine_warns(tmp_path):
    db = tmp_path / "katibx.db"
    katibx.tune("one", _objective, {"x": katibx.search.double(-1, 1)}, objective_metric_name="loss",
                max_trial_count=1, parallel_trial_count=1, store=db, progress=False)
    server = subprocess.Popen([sys.executable, "-m", "katibx.cli", "dashboard", "--host", "0.0.0.0", "--port", "0",
                               "--store", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "warning: serving on 0.0.0.0" in server.stderr.readline()
        assert "http://0.0.0.0:" in server.stdout.readline()
    finally:
        server.terminate()
        server.communicate(timeout=30)
    missing = subprocess.run([sys.executable, "-m", "katibx.cli", "dashboard", "--store", str(Path(tmp_path, "no.db"))],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "there is no store" in missing.stderr


def test_a_darts_trials_genotype_picture_is_reachable_as_its_artifact(tmp_path):
    """The genotype picture and JSON a DARTS trial saves in its folder are that trial's artifacts on the dashboard."""
    from katibx.nas.genotype import Genotype, plot_genotype

    db = tmp_path / "katibx.db"
    katibx.tune("cells", _objective, {"x": katibx.search.double(-1, 1)}, objective_metric_name="loss",
                max_trial_count=1, parallel_trial_count=1, store=db, progress=False)
    client = katibx.KatibxClient(db)
    trial = client.get_experiment("cells").trials[0]
    folder = client.trial_log_path("cells", trial.name).parent
    genotype = Genotype.parse("Genotype(normal=[[('separable_convolution_3x3',0),('skip_connection',1)],"
                              "[('max_pooling_3x3',0),('separable_convolution_3x3',2)]],normal_concat=[2,3],"
                              "reduce=[[('max_pooling_3x3',0),('skip_connection',1)],"
                              "[('separable_convolution_5x5',1),('skip_connection',2)]],reduce_concat=[2,3])")
    picture = plot_genotype(genotype, folder / "genotype.png")
    assert picture is not None
    genotype.save_json(folder / "genotype.json")
    server = subprocess.Popen([sys.executable, "-m", "katibx.cli", "dashboard", "--port", "0", "--store", str(db)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = server.stdout.readline().split()[2].removesuffix("/dashboard")
        study_id = _studies(base)["cells"]
        detail = _get(f"{base}/api/studies/{study_id}")
        shown = detail["trials"][0]
        artifacts = {a["filename"]: a for a in shown["artifacts"]}
        assert set(artifacts) == {"genotype.png", "genotype.json"}
        url = f"{base}/artifacts/{study_id}/{shown['trial_id']}/{artifacts['genotype.png']['artifact_id']}"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.headers["Content-Type"] == "image/png"
            assert response.read() == (folder / "genotype.png").read_bytes()
    finally:
        server.terminate()
        server.communicate(timeout=30)
