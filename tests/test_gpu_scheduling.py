"""GPU scheduling in the local backend: each trial gets the devices it asks for through CUDA_VISIBLE_DEVICES, no two
running trials share one, trials wait while they are taken, an impossible request is refused (issue 18).
``KATIBX_GPUS`` names the devices, so a machine without GPUs runs these tests as a GPU node would."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from conftest import experiment_doc, katibx_cli

import katibx
from katibx.gpus import GpuPool, discover_gpus
from katibx.store import Store
from katibx.trial import TrialState

# The trial records the devices it was given and when it ran (its own clock: start, then end after a second of
# work), so the test can tell which trials held a device at the same time.
RECORDING_TRIAL = """
import json, os, sys, time
started = time.time()
time.sleep(float(sys.argv[1]))
record = {"devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": started, "end": time.time()}
with open(os.path.join(os.environ["KATIBX_TRIAL_DIR"], "gpus.json"), "w") as f:
    json.dump(record, f)
print("result=1")
"""


def _experiment(folder: Path, gpus: int | str | None, trials: int, parallel: int, seconds: float = 1.0,
                env: dict[str, str] | None = None) -> Path:
    doc = experiment_doc(algorithm={"algorithmName": "random"}, maxTrialCount=trials, parallelTrialCount=parallel)
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    container["command"] = ["python3", "trial.py", str(seconds), "${trialParameters.a}", "${trialParameters.b}"]
    if gpus is not None:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    if env:
        container["env"] = [{"name": key, "value": value} for key, value in env.items()]
    (folder / "trial.py").write_text(RECORDING_TRIAL)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _records(db: Path) -> list[dict[str, Any]]:
    with Store(db) as store:
        record = store.get_experiment("exp")
        trials = store.trials(record.id)
        assert [t.state for t in trials] == [TrialState.SUCCEEDED] * len(trials)
        return [{**json.loads((store.trial_dir(record, t.name) / "gpus.json").read_text()), "trial": t}
                for t in trials]


def _overlapping(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(device, trial, trial) for two trials that held one device at the same time."""
    clashes = []
    for i, one in enumerate(records):
        for other in records[i + 1:]:
            shared = set(one["devices"].split(",")) & set(other["devices"].split(","))
            if shared and one["start"] < other["end"] and other["start"] < one["end"]:
                clashes.append((min(shared), one["trial"].name, other["trial"].name))
    return clashes


def _gpu_env(devices: str) -> dict[str, str]:
    return {**os.environ, "KATIBX_GPUS": devices}


def test_one_gpu_trials_share_no_device_and_wait_while_all_are_taken(tmp_path):
    path = _experiment(tmp_path, gpus=1, trials=6, parallel=4)
    ran = katibx_cli("run", str(path), "-q", cwd=tmp_path, store=tmp_path / "k.db", env=_gpu_env("0,1,2"))
    assert ran.returncode == 0, ran.stderr
    records = _records(tmp_path / "k.db")
    assert all(r["devices"] in ("0", "1", "2") for r in records), [r["devices"] for r in records]
    assert _overlapping(records) == []
    moments = sorted({r["start"] for r in records})
    most = max(sum(r["start"] <= m < r["end"] for r in records) for m in moments)
    assert 2 <= most <= 3  # parallelTrialCount 4, but three devices
    waited = [r["trial"].start_time - r["trial"].creation_time for r in records]
    assert max(waited) > 0.5  # a fourth trial was Created while three held the devices


def test_a_two_gpu_trial_gets_two_devices(tmp_path):
    path = _experiment(tmp_path, gpus=2, trials=3, parallel=2, seconds=0.5)
    ran = katibx_cli("run", str(path), "-q", cwd=tmp_path, store=tmp_path / "k.db", env=_gpu_env("0,1,2"))
    assert ran.returncode == 0, ran.stderr
    records = _records(tmp_path / "k.db")
    assert all(len(r["devices"].split(",")) == 2 for r in records), [r["devices"] for r in records]
    assert _overlapping(records) == []  # one at a time: a second pair is not free


def test_a_request_no_device_set_can_meet_is_refused_before_anything_runs(tmp_path):
    path = _experiment(tmp_path, gpus=4, trials=1, parallel=1)
    ran = katibx_cli("run", str(path), "-q", cwd=tmp_path, store=tmp_path / "k.db", env=_gpu_env("0,1,2"))
    assert ran.returncode == 2 and ran.stderr.strip() == (
        f"error: {path}: spec.trialTemplate.trialSpec: a trial asks for 4 GPUs (nvidia.com/gpu) and this machine "
        "has 3 ($KATIBX_GPUS); set KATIBX_GPUS=0,1,... to name the devices"), ran.stderr
    assert not (tmp_path / "k.db").exists()
    none = katibx_cli("run", str(path), "-q", cwd=tmp_path, store=tmp_path / "k.db", env=_gpu_env(""))
    assert none.returncode == 2 and "this machine has none ($KATIBX_GPUS lists none)" in none.stderr


def test_where_trials_ask_for_gpus_one_that_asks_for_none_sees_none(tmp_path):
    path = _experiment(tmp_path, gpus="${trialParameters.b}", trials=2, parallel=2, seconds=0)  # b: 0 or 1
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["algorithm"] = {"algorithmName": "grid"}
    doc["spec"]["parameters"][1] = {"name": "b", "parameterType": "categorical", "feasibleSpace": {"list": ["0", "1"]}}
    doc["spec"]["parameters"] = doc["spec"]["parameters"][1:]
    doc["spec"]["trialTemplate"]["trialParameters"] = [{"name": "b", "reference": "b"}]
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    container["command"] = container["command"][:3] + ["${trialParameters.b}"]
    path.write_text(yaml.safe_dump(doc))
    ran = katibx_cli("run", str(path), "-q", cwd=tmp_path, store=tmp_path / "k.db", env=_gpu_env("0,1"))
    assert ran.returncode == 0, ran.stderr
    seen = {r["trial"].assignments["b"]: r["devices"] for r in _records(tmp_path / "k.db")}
    assert seen["0"] == "" and seen["1"] in ("0", "1"), seen


def test_an_experiment_that_never_asks_leaves_the_devices_alone_and_bad_resources_are_one_line(tmp_path):
    path = _experiment(tmp_path, gpus=None, trials=1, parallel=1, seconds=0)
    env = {**_gpu_env("0,1"), "CUDA_VISIBLE_DEVICES": "1"}
    ran = katibx_cli("run", str(path), "-q", cwd=tmp_path, store=tmp_path / "k.db", env=env)
    assert ran.returncode == 0 and [r["devices"] for r in _records(tmp_path / "k.db")] == ["1"], ran.stderr
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": "nvidia.com/gpu=1"}
    path.write_text(yaml.safe_dump(doc))
    bad = katibx_cli("run", str(path), "-q", cwd=tmp_path, store=tmp_path / "other.db", env=env)
    assert bad.returncode == 2 and bad.stderr.strip().endswith(
        "spec.trialTemplate.trialSpec: resources (and its limits and requests) must be a mapping"), bad.stderr


def test_under_ray_the_gpus_ray_gave_the_actor_stay_its_trials(tmp_path, monkeypatch, store):
    """Ray's actors run trials with a local backend that leaves CUDA_VISIBLE_DEVICES as Ray set it."""
    from katibx.loader import experiment_from_dict
    from katibx.runner import run_experiment
    from katibx.workers.local import LocalBackend

    monkeypatch.setenv("KATIBX_GPUS", "0,1,2")  # what the driver's environment may carry into a worker
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")  # what Ray set for the actor
    path = _experiment(tmp_path, gpus=1, trials=1, parallel=1, seconds=0)
    experiment = experiment_from_dict(yaml.safe_load(path.read_text()))
    experiment._source_dir = str(tmp_path)
    run_experiment(experiment, store=store, backend=LocalBackend(schedule_gpus=False))
    record = store.get_experiment("exp")
    (trial,) = store.trials(record.id)
    assert json.loads((store.trial_dir(record, trial.name) / "gpus.json").read_text())["devices"] == "2"


def _device_objective(params: dict[str, Any]) -> dict[str, Any]:
    return {"score": params["x"], "device": int(os.environ["CUDA_VISIBLE_DEVICES"]), "pid": os.getpid()}


def test_function_trials_take_resources_per_trial_gpus_in_fresh_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("KATIBX_GPUS", "0,1")
    result = katibx.tune("gpu-fn", _device_objective, {"x": katibx.search.int(1, 4)}, objective_metric_name="score",
                         additional_metric_names=["device", "pid"], algorithm_name="grid", max_trial_count=4,
                         parallel_trial_count=2, resources_per_trial={"gpu": 1}, store=str(tmp_path / "k.db"),
                         progress=False)
    metrics = [t.metrics for t in result.trials]
    assert {m["device"] for m in metrics} <= {0.0, 1.0} and len(metrics) == 4
    assert len({m["pid"] for m in metrics}) == 4  # a worker given GPUs serves no other trial


def test_devices_come_from_katibx_gpus_then_cuda_visible_devices_then_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.setenv("KATIBX_GPUS", " 2, 3 ")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert discover_gpus() == ["2", "3"]
    monkeypatch.delenv("KATIBX_GPUS")
    assert discover_gpus() == ["0"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    (fake / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    assert discover_gpus() == ["0", "1"]
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert discover_gpus() == []
    for listed, devices in (("-1", []), ("0,-1,1", ["0"]), ("1,1,0", ["1", "0"]), ("GPU-8f2a,MIG-8f2a/1/0", [
            "GPU-8f2a", "MIG-8f2a/1/0"])):  # as CUDA reads it: up to the first id it cannot, each once
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", listed)
        assert discover_gpus() == devices, listed
    pool = GpuPool(["0", "1", "2"])
    assert pool.take("a", 2) == ["0", "1"] and not pool.can_take(2) and pool.can_take(1)
    assert pool.take("b", 2) is None
    pool.give_back("a")
    assert pool.take("c", 3) == ["0", "1", "2"]
