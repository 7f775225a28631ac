"""API calls per trial and controller throughput of the kubernetes backend against the fake API server.

Runs one experiment of ``--trials`` trivial trials (``echo loss=...``, metrics from the pod log) with
``parallelTrialCount`` = ``--parallel`` through the real client, fake API server, fake Job controller and
kubelet of the test suite, and prints the calls by kind and the trials per second.

    python benchmarks/kubernetes_throughput.py --trials 1000 --parallel 1000
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.fake_kube import FakeCluster  # noqa: E402

from katibx.loader import experiment_from_dict  # noqa: E402
from katibx.runner import run_experiment  # noqa: E402
from katibx.store import Store  # noqa: E402
from katibx.trial import TrialState  # noqa: E402
from katibx.workers.kubernetes import KubernetesBackend  # noqa: E402


def experiment(trials: int, parallel: int) -> object:
    return experiment_from_dict({
        "apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment", "metadata": {"name": "bench", "namespace": "default"},
        "spec": {
            "objective": {"type": "minimize", "objectiveMetricName": "loss"},
            "algorithm": {"algorithmName": "random", "algorithmSettings": [{"name": "random_state", "value": "1"}]},
            "parallelTrialCount": parallel, "maxTrialCount": trials,
            "parameters": [{"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}}],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": "x", "reference": "x"}],
                "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", "command": ["echo", "loss=${trialParameters.x}"]}],
                }}}},
            },
        },
    })


def kind_of(method: str, path: str, query: dict[str, str]) -> str:
    """A call's kind: method and resource, with names and namespaces left out."""
    path = re.sub(r"/namespaces/[^/]+", "", path)
    parts = path.strip("/").split("/")
    resource = "/".join(parts[3:] if parts[0] == "apis" else parts[2:])
    resource = re.sub(r"^(jobs|pods|configmaps)/[^/]+", r"\1/NAME", resource)
    if query.get("watch") in ("true", "1"):
        method = "WATCH"
    return f"{method} {resource}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeCluster(Path(tmp)) as cluster:
        store = Store(Path(tmp) / "db.sqlite")
        backend = KubernetesBackend(kubeconfig=str(cluster.kubeconfig))
        started = time.monotonic()
        record = run_experiment(experiment(args.trials, args.parallel), store=store, backend=backend, workdir=tmp)
        elapsed = time.monotonic() - started
        trials = store.trials(record.id)
        states = collections.Counter(t.state.value for t in trials)
        calls = collections.Counter(kind_of(c.method, c.path, c.query) for c in cluster.calls)
        with_metric = sum(1 for t in trials if t.state is TrialState.SUCCEEDED and "loss" in t.observation)
    result = {
        "trials": len(trials), "parallel": args.parallel, "states": dict(states), "with_metric": with_metric,
        "seconds": round(elapsed, 2), "trials_per_second": round(len(trials) / elapsed, 1),
        "api_calls": sum(calls.values()), "api_calls_per_trial": round(sum(calls.values()) / max(len(trials), 1), 2),
        "calls_by_kind": dict(calls.most_common()),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        if key != "calls_by_kind":
            print(f"{key:>20}: {value}")
    for kind, count in result["calls_by_kind"].items():  # type: ignore[union-attr]
        print(f"{count:>8}  {kind}")


if __name__ == "__main__":
    main()
