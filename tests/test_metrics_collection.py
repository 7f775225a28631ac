"""Metrics collection from real trial processes into the SQLite store: StdOut, File, TensorFlowEvent and Push."""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import experiment_doc

import katibx
from katibx.loader import experiment_from_dict
from katibx.metrics import MetricLog
from katibx.runner import run_experiment
from katibx.store import ExperimentNotFound, ExperimentRecord, Store
from katibx.trial import TrialRecord, TrialState
from katibx.trial_dir import FILES_DIR
from katibx.workers.local import relocate


def script_doc(script: str, tmp_path: Path, *, metrics: list[str] | None = None, args: list[str] | None = None,
               trials: int = 1, **spec: Any) -> dict[str, Any]:
    """An experiment whose trials run ``script`` (saved as trial.py) with ``--a=<a>`` and ``args``."""
    (tmp_path / "trial.py").write_text(script)
    names = metrics or ["result"]
    doc = experiment_doc(
        algorithm={"algorithmName": "grid"},
        parameters=[{"name": "a", "parameterType": "discrete", "feasibleSpace": {"list": [str(i + 1) for i in range(trials)]}}],
        objective={"type": "maximize", "objectiveMetricName": names[0], "additionalMetricNames": names[1:]},
        maxTrialCount=trials, parallelTrialCount=trials, **spec,
    )
    template = doc["spec"]["trialTemplate"]
    template["trialParameters"] = [{"name": "a", "reference": "a"}]
    template["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"] = [
        "python3", "trial.py", "--a=${trialParameters.a}", *(args or []),
    ]
    return doc


def run(doc: dict[str, Any], store: Store, workdir: Path) -> tuple[ExperimentRecord, list[TrialRecord]]:
    record = run_experiment(experiment_from_dict(doc), store=store, workdir=workdir)
    return record, store.trials(record.id)


def observed(trial: TrialRecord) -> dict[str, tuple[str | None, str | None, str]]:
    """metric -> (min, max, latest)."""
    return {name: (m.min, m.max, m.latest) for name, m in trial.observation.items()}


def file_collector(path: str, file_format: str = "TEXT") -> dict[str, Any]:
    return {"collector": {"kind": "File"}, "source": {"fileSystemPath": {"path": path, "kind": "File", "format": file_format}}}


# StdOut ---------------------------------------------------------------------------------------------------------


def test_stdout_default_regex_min_max_latest(store: Store, tmp_path: Path) -> None:
    script = """
print("epoch 1: loss=0.3 accuracy=.98 Score=-7.53e-05 other=5")
print("loss = 0.1, accuracy=0.5")
print("no metrics here; lossy=7 loss=")
print("loss=0.2 Score=1E0")
"""
    doc = script_doc(script, tmp_path, metrics=["loss", "accuracy", "Score"])
    doc["spec"]["objective"]["type"] = "minimize"
    _, (trial,) = run(doc, store, tmp_path)
    assert trial.state is TrialState.SUCCEEDED
    assert observed(trial) == {
        "loss": ("0.1", "0.3", "0.2"),
        "accuracy": ("0.5", ".98", "0.5"),
        "Score": ("-7.53e-05", "1E0", "1E0"),
    }


def test_stdout_custom_metrics_format_replaces_the_default(store: Store, tmp_path: Path) -> None:
    script = """
print("{metricName: accuracy, metricValue: 0.8542};{metricName: loss, metricValue: 0.4213}")
print("loss=99 accuracy=99")
print("{metricName: accuracy, metricValue: 0.9};{metricName: loss, metricValue: 0.3}")
print("acc is 0.95")
"""
    doc = script_doc(script, tmp_path, metrics=["accuracy", "loss"], metricsCollectorSpec={
        "collector": {"kind": "StdOut"},
        "source": {"filter": {"metricsFormat": [
            r"{metricName: ([\w|-]+), metricValue: ((-|\+)?[\d.]+)}",
            r"(acc) is ([\d.]+)",
        ]}},
    })
    doc["spec"]["objective"]["additionalMetricNames"] = ["loss", "acc"]
    _, (trial,) = run(doc, store, tmp_path)
    assert observed(trial) == {
        "accuracy": ("0.8542", "0.9", "0.9"), "loss": ("0.3", "0.4213", "0.3"), "acc": ("0.95", "0.95", "0.95"),
    }


def test_leading_rfc3339_timestamp_orders_the_values(store: Store, tmp_path: Path) -> None:
    script = """
print("2024-05-01T10:00:02Z result=1")
print("2024-05-01T10:00:01.5+00:00 result=7")
print("2024-05-01T12:00:00+02:00 result=3")
"""
    _, (trial,) = run(script_doc(script, tmp_path), store, tmp_path)
    # 12:00+02:00 is 10:00:00Z, the earliest: the latest value is the one stamped 10:00:02Z.
    assert observed(trial) == {"result": ("1", "7", "1")}
    stamps = sorted(log.timestamp for log in store.observation_logs(trial.id))
    expected = ["2024-05-01T10:00:00+00:00", "2024-05-01T10:00:01.500000+00:00", "2024-05-01T10:00:02+00:00"]
    assert stamps == [datetime.fromisoformat(s).timestamp() for s in expected]


def test_function_trial_prints_metrics_to_its_own_log(tmp_path: Path) -> None:
    store = Store(tmp_path / "katibx.db")
    katibx.tune(
        name="printer", objective=_printing_objective, parameters={"a": katibx.search.int(1, 2)},
        objective_metric_name="result", additional_metric_names=["pushed"], algorithm_name="grid",
        parallel_trial_count=2, store=store,
    )
    record = store.get_experiment("printer")
    for trial in store.trials(record.id):
        a = trial.assignments["a"]
        assert trial.state is TrialState.SUCCEEDED
        assert observed(trial) == {"result": (str(a), str(a * 10), str(a * 10)), "pushed": ("0.5", "0.5", "0.5")}
        assert f"result={a}" in katibx.KatibxClient(store).get_trial_logs("printer", trial.name)
    store.close()


def _printing_objective(params: dict[str, Any]) -> None:
    print(f"result={params['a']}")
    print(f"result={params['a'] * 10}")
    katibx.report_metrics({"pushed": 0.5})


# File -----------------------------------------------------------------------------------------------------------

FILE_SCRIPT = """
import argparse, json
p = argparse.ArgumentParser()
p.add_argument("--a", type=int)
p.add_argument("--log-path")
p.add_argument("--json", action="store_true")
args = p.parse_args()
with open(args.log_path, "a") as f:
    if args.json:
        f.write(json.dumps({"result": args.a, "accuracy": "0.5"}) + "\\n")
        f.write(json.dumps({"result": str(args.a * 10), "timestamp": "2030-01-01T00:00:00Z"}) + "\\n")
        f.write(json.dumps({"result": args.a * 2, "accuracy": 0.75, "timestamp": 1000}) + "\\n")
        f.write(json.dumps({"result": True, "accuracy": None, "note": "ignored"}) + "\\n")
    else:
        f.write(f"result={args.a}\\n{{metricName: accuracy, metricValue: 0.5}}\\n")
        f.write(f"result={args.a * 10}\\n")
print("result=1000")
"""


def test_file_text_at_katibs_default_path_is_per_trial(store: Store, tmp_path: Path) -> None:
    # /var/log/katib is Katib's default: the path named in the command moves into each trial's directory.
    path = "/var/log/katib/metrics.log"
    doc = script_doc(FILE_SCRIPT, tmp_path, metrics=["result", "accuracy"], args=[f"--log-path={path}"], trials=2,
                     metricsCollectorSpec=file_collector(path))
    doc["spec"]["metricsCollectorSpec"]["source"]["filter"] = {"metricsFormat": [
        r"(result)=(\d+)", r"{metricName: ([\w|-]+), metricValue: ((-|\+)?[\d.]+)}",
    ]}
    record, trials = run(doc, store, tmp_path)
    for trial in trials:
        a = trial.assignments["a"]
        assert trial.state is TrialState.SUCCEEDED
        # Each trial sees only its own lines, never the other trial's, and not stdout's result=1000.
        assert observed(trial) == {"result": (str(a), str(a * 10), str(a * 10)), "accuracy": ("0.5", "0.5", "0.5")}
        assert (store.trial_dir(record, trial.name) / FILES_DIR / "var/log/katib/metrics.log").is_file()


def test_file_json_accepts_numbers_and_katibs_strings(store: Store, tmp_path: Path) -> None:
    doc = script_doc(FILE_SCRIPT, tmp_path, metrics=["result", "accuracy"],
                     args=["--log-path=/katib/metrics.json", "--json"],
                     metricsCollectorSpec=file_collector("/katib/metrics.json", "JSON"))
    _, (trial,) = run(doc, store, tmp_path)
    assert trial.state is TrialState.SUCCEEDED
    # result: 1 (arrival time), "10" (2030), 2 (epoch 1000): the latest by timestamp is "10".
    assert observed(trial) == {"result": ("1", "10", "10"), "accuracy": ("0.5", "0.75", "0.5")}


@pytest.mark.parametrize("mode", ["a", "w"])
def test_file_named_only_inside_the_script_skips_what_an_earlier_run_left(
    store: Store, tmp_path: Path, mode: str
) -> None:
    metrics_file = tmp_path / "out" / "metrics.log"
    metrics_file.parent.mkdir()
    metrics_file.write_text("result=1000\nresult=1000\n")
    script = f"""
with open({str(metrics_file)!r}, {mode!r}) as f:
    f.write("result=3\\n")
"""
    doc = script_doc(script, tmp_path, metricsCollectorSpec=file_collector(str(metrics_file)))
    _, (trial,) = run(doc, store, tmp_path)
    assert observed(trial) == {"result": ("3", "3", "3")}


def test_malformed_json_metrics_line_fails_the_trial_with_the_reason(store: Store, tmp_path: Path) -> None:
    script = """
import sys
with open(sys.argv[2].split("=", 1)[1], "w") as f:
    f.write('{"result": "1"}\\n{not json\\n')
"""
    doc = script_doc(script, tmp_path, args=["--out=/katib/m.json"],
                     metricsCollectorSpec=file_collector("/katib/m.json", "JSON"))
    record, (trial,) = run(doc, store, tmp_path)
    assert trial.state is TrialState.FAILED
    assert "MetricsCollectorError" in trial.reason
    assert "line 2" in trial.message and "invalid JSON" in trial.message
    assert record.completed is not None


def test_relocate_moves_only_whole_mentions_of_the_metrics_path(tmp_path: Path) -> None:
    root = tmp_path / "files"
    values = ["--log-path=/katib/mnist.log", "/katib/mnist.log", "/data/katib/mnist.log", "/katib/mnist.log.bak", "x"]
    moved, source = relocate(values, "/katib/mnist.log", root)
    assert source == root / "katib/mnist.log" and source.parent.is_dir()
    assert moved == [f"--log-path={source}", str(source), *values[2:]]
    # A directory (TensorFlowEvent) also moves when a parent folder of it is named.
    moved, source = relocate(["--logdir=/logs/", "--data=/logs/data"], "/logs/run/test", root, directory=True)
    assert source == root / "logs/run/test" and source.is_dir()
    assert moved == [f"--logdir={root / 'logs'}/", "--data=/logs/data"]
    # Not named at all, or not a place of its own: nothing moves.
    assert relocate(["--out=metrics.txt"], "/katib/mnist.log", root) == (["--out=metrics.txt"], None)
    assert relocate(["--out=/"], "/", root, directory=True) == (["--out=/"], None)


# Push -----------------------------------------------------------------------------------------------------------

PUSH_SCRIPT = """
import sys
import katibx
a = int(sys.argv[1].split("=")[1])
print("result=1000")
katibx.report_metrics({"result": a, "loss": 0.5})
katibx.report_metrics({"result": a / 2, "loss": 0.25})
"""


def test_push_from_a_command_trial(store: Store, tmp_path: Path) -> None:
    doc = script_doc(PUSH_SCRIPT, tmp_path, metrics=["result", "loss"], trials=2,
                     metricsCollectorSpec={"collector": {"kind": "Push"}})
    _, trials = run(doc, store, tmp_path)
    for trial in trials:
        a = trial.assignments["a"]
        # Push does not read stdout: result=1000 is not a metric.
        assert observed(trial) == {"result": (str(a / 2), str(a), str(a / 2)), "loss": ("0.25", "0.5", "0.25")}


def _pushing_objective(params: dict[str, Any]) -> None:
    for step in range(3):
        katibx.report_metrics({"result": params["a"] + step})


def test_push_from_a_function_trial(tmp_path: Path) -> None:
    store = Store(tmp_path / "katibx.db")
    katibx.tune(
        name="pusher", objective=_pushing_objective, parameters={"a": katibx.search.categorical([1])},
        objective_metric_name="result", objective_type="minimize", max_trial_count=1, parallel_trial_count=1,
        store=store,
    )
    (trial,) = store.trials(store.get_experiment("pusher").id)
    assert observed(trial) == {"result": ("1", "3", "3")}
    assert [log.value for log in store.observation_logs(trial.id)] == ["1", "2", "3"]
    store.close()


def test_report_metrics_outside_a_trial_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KATIB_TRIAL_NAME", raising=False)
    monkeypatch.delenv("KATIBX_METRICS_FILE", raising=False)
    with pytest.raises(RuntimeError, match="inside a katibx trial"):
        katibx.report_metrics({"loss": 1.0})


def test_report_metrics_refuses_values_that_are_not_numbers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KATIB_TRIAL_NAME", "t")
    monkeypatch.setenv("KATIBX_METRICS_FILE", str(tmp_path / "m.jsonl"))
    for bad in (None, [1.0], {"x": 1}, True):
        with pytest.raises(ValueError, match="'loss'"):
            katibx.report_metrics({"loss": bad})
    np = pytest.importorskip("numpy")
    katibx.report_metrics({"loss": np.float32(0.5), "genotype": "Genotype(normal=[])"})
    assert json.loads((tmp_path / "m.jsonl").read_text())["loss"] == 0.5


# TensorFlowEvent ------------------------------------------------------------------------------------------------

TFEVENT_SCRIPT = """
import os, sys
from tensorboard.summary import Writer
a = int(sys.argv[1].split("=")[1])
logdir = sys.argv[2].split("=", 1)[1]
top = Writer(logdir)
top.add_scalar("loss", 1.0 / a, step=1)
top.add_scalar("loss", 0.5 / a, step=2)
top.close()
val = Writer(os.path.join(logdir, "eval"))
val.add_scalar("accuracy", 0.25 * a, step=1)
val.close()
"""


def test_tensorflow_event_files(store: Store, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    doc = script_doc(TFEVENT_SCRIPT, tmp_path, metrics=["loss", "eval/accuracy"], trials=2,
                     args=["--logdir=/var/log/katib/tfevent/"], metricsCollectorSpec={
                         "collector": {"kind": "TensorFlowEvent"},
                         "source": {"fileSystemPath": {"path": "/var/log/katib/tfevent/", "kind": "Directory"}},
                     })
    doc["spec"]["objective"]["type"] = "minimize"
    _, trials = run(doc, store, tmp_path)
    for trial in trials:
        a = trial.assignments["a"]
        assert trial.state is TrialState.SUCCEEDED, trial.message
        loss = (str(0.5 / a), str(1.0 / a), str(0.5 / a))
        assert observed(trial) == {"loss": loss, "eval/accuracy": (str(0.25 * a),) * 3}


def test_tensorflow_event_without_tensorboard_is_a_clear_error(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    doc = script_doc("print('loss=1')", tmp_path, metricsCollectorSpec={"collector": {"kind": "TensorFlowEvent"}})
    with pytest.raises(katibx.ValidationError) as info:
        run(doc, store, tmp_path)
    assert "pip install 'katibx[tensorboard]'" in str(info.value)
    assert store.list_experiments() == []


# missing metrics, strategies ------------------------------------------------------------------------------------


def test_missing_objective_metric_is_metrics_unavailable(store: Store, tmp_path: Path) -> None:
    script = "print('accuracy=0.9')"
    doc = script_doc(script, tmp_path, metrics=["result", "accuracy"], trials=2, maxFailedTrialCount=2)
    record, trials = run(doc, store, tmp_path)
    assert [t.state for t in trials] == [TrialState.METRICS_UNAVAILABLE] * 2
    assert all(t.reason == "MetricsUnavailable" and "'result'" in t.message for t in trials)
    assert observed(trials[0]) == {"accuracy": ("0.9", "0.9", "0.9")}
    status = katibx.KatibxClient(store).get_experiment("exp")["status"]
    assert status["trialMetricsUnavailable"] == 2
    assert record.conditions[-1]["type"] == "Failed"


STRATEGY_SCRIPT = """
import sys
a = int(sys.argv[1].split("=")[1])
series = {1: [10, 1], 2: [5, 4]}[a]
for value in series:
    print(f"result={value} loss={value * 2}")
"""


@pytest.mark.parametrize(("strategy", "best_a"), [(None, 1), ("max", 1), ("min", 2), ("latest", 2)])
def test_metric_strategy_picks_the_value_that_ranks_trials(
    store: Store, tmp_path: Path, strategy: str | None, best_a: int
) -> None:
    doc = script_doc(STRATEGY_SCRIPT, tmp_path, metrics=["result", "loss"], trials=2)
    if strategy:
        doc["spec"]["objective"]["metricStrategies"] = [{"name": "result", "value": strategy}]
    _, trials = run(doc, store, tmp_path)
    by_a = {t.assignments["a"]: t for t in trials}
    assert observed(by_a[1])["result"] == ("1", "10", "1")
    assert observed(by_a[2])["result"] == ("4", "5", "4")
    best = katibx.KatibxClient(store).get_optimal_hyperparameters("exp")
    assert best is not None and best["bestTrialName"] == by_a[best_a].name
    metrics = {m["name"]: m for m in best["observation"]["metrics"]}
    loss = {1: ("2", "20", "2"), 2: ("8", "10", "8")}[best_a]
    assert metrics["loss"] == dict(zip(("name", "min", "max", "latest"), ("loss", *loss)))


# while the trial runs -------------------------------------------------------------------------------------------

LIVE_SCRIPT = """
import argparse, os, sys, time
import katibx
p = argparse.ArgumentParser()
p.add_argument("--a")
p.add_argument("--go")
p.add_argument("--log-path")
p.add_argument("--kind")
args = p.parse_args()

def emit(value):
    if args.kind == "Push":
        katibx.report_metrics({"result": value})
    elif args.kind == "File":
        with open(args.log_path, "a") as f:
            f.write(f"result={value}\\n")
    else:
        print(f"result={value}")   # no flush: stdout goes to a file, PYTHONUNBUFFERED makes it arrive

emit(1)
for _ in range(3000):              # at most about a minute, should the test not answer
    if os.path.exists(args.go):
        break
    time.sleep(0.02)
else:
    sys.exit("never saw the go file")
emit(2)
"""


@pytest.mark.parametrize("kind", ["StdOut", "File", "Push"])
def test_metrics_reach_the_store_while_the_trial_runs(tmp_path: Path, kind: str) -> None:
    go = tmp_path / "go"
    collector = file_collector("/katib/live.log") if kind == "File" else {"collector": {"kind": kind}}
    doc = script_doc(LIVE_SCRIPT, tmp_path, metricsCollectorSpec=collector,
                     args=[f"--go={go}", "--log-path=/katib/live.log", f"--kind={kind}"])
    db = tmp_path / "katibx.db"
    errors: list[BaseException] = []

    def controller() -> None:
        store = Store(db)
        try:
            run_experiment(experiment_from_dict(doc), store=store, workdir=tmp_path)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
        finally:
            store.close()

    thread = threading.Thread(target=controller, daemon=True)
    thread.start()
    watcher = Store(db)
    try:
        logs = _wait_for_observation(watcher, thread)
        assert [(log.name, log.value) for log in logs] == [("result", "1")]
        record = watcher.get_experiment("exp")
        (trial,) = watcher.trials(record.id)
        assert trial.state is TrialState.RUNNING
    finally:
        go.touch()
        thread.join(60)
    assert not errors and not thread.is_alive()
    (trial,) = watcher.trials(watcher.get_experiment("exp").id)
    assert trial.state is TrialState.SUCCEEDED
    assert observed(trial) == {"result": ("1", "2", "2")}
    watcher.close()


def _wait_for_observation(watcher: Store, thread: threading.Thread) -> list[MetricLog]:
    """Poll the store from this thread until the running trial's first observation is committed."""
    while thread.is_alive():
        try:
            record = watcher.get_experiment("exp")
        except ExperimentNotFound:
            record = None
        trials = watcher.trials(record.id) if record else []
        if trials and trials[0].id:
            logs = watcher.observation_logs(trials[0].id)
            if logs:
                return logs
        time.sleep(0.02)
    pytest.fail("the experiment ended before the test released the trial")
