"""The benchmark harness in its CI-sized mode, so it never rots: ``python -m benchmarks --quick --out DIR``.

The full run (``python -m benchmarks``, about 10 minutes) is not a test; this one checks that every section
runs and writes sane numbers, the Markdown report and, with matplotlib installed, the plots.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import report  # noqa: E402
from benchmarks.problems import OPTIMA, PROBLEMS, REGRET_FLOOR  # noqa: E402

pytestmark = pytest.mark.timeout(300)  # the quick run itself takes under a minute on an idle 2-core machine


def test_problems_reach_their_known_optimum() -> None:
    for name, problem in PROBLEMS.items():
        value = problem.value(OPTIMA[name])
        assert abs(value - problem.optimum) < 1e-6, name
        assert problem.regret(problem.optimum - 1.0) == REGRET_FLOOR
        assert len(problem.katibx_parameters()) == problem.dims == len(problem.skopt_dimensions())


def test_black_box_problems_reach_their_known_optimum_and_their_spaces_agree() -> None:
    """The suite's problems: a bbob function's optimum is its value at its optimal point; a mixed problem has the
    integers it says; a categorical problem's optimum 0 is the first category's optimum, the others shifted up."""
    import cocoex
    import numpy as np

    from benchmarks import blackbox

    names = blackbox.problem_names()
    assert len(names) == 24 * 5 and len({blackbox._function(n) for n in names}) == 24
    assert {n.split("-")[0] for n in names} == {"bbob", "mixed", "categorical"}
    for name in ("bbob-f15-d5-i2", "bbob-f24-d10-i3"):
        problem = blackbox.problem(name)
        fn = cocoex.BareProblem("bbob", blackbox._function(name), problem.dims, int(name[-1]))
        best = fn.best_parameter()
        assert problem.value({f"x{i}": v for i, v in enumerate(best)}) == problem.optimum == fn.best_value()
        assert len(problem.katibx_parameters()) == len(problem.optuna_distributions()) == len(problem.skopt_dimensions())
    mixed = blackbox.problem("mixed-f08-d4-i1")
    assert [q.kind for q in mixed.params] == ["int", "int", "double", "double"]
    categorical = blackbox.problem("categorical-f03-d4")
    for c, shift in blackbox.CATEGORY_SHIFTS.items():
        fn = cocoex.BareProblem("bbob", 3, 4, list(blackbox.CATEGORY_SHIFTS).index(c) + 1)
        point = {"c": c, **{f"x{i}": v for i, v in enumerate(fn.best_parameter())}}
        assert categorical.value(point) == pytest.approx(shift, abs=1e-9)
    assert categorical.optimum == 0.0 and blackbox.log10_regret(categorical, 0.0) == math.log10(blackbox.REGRET_FLOOR)
    assert not np.isnan(categorical.value({"c": "b", **{f"x{i}": 0.0 for i in range(4)}}))


def test_black_box_pairs_say_which_default_is_worse() -> None:
    """The suite's verdicts: a katibx arm worse on most problems by a clear margin is 'katibx worse', the
    reverse 'katibx better', equal regrets a tie."""
    from benchmarks import blackbox

    names = [f"bbob-f{f:02d}-d5-i2" for f in range(1, 21)]
    results = []
    for i, name in enumerate(names):
        results += [{"arm": "katibx-tpe", "problem": name, "log10_regret": 1.0 + (i % 3), "seconds": 1.0},
                    {"arm": "optuna-tpe", "problem": name, "log10_regret": 0.0 + (i % 3), "seconds": 0.5},
                    {"arm": "katibx-cmaes", "problem": name, "log10_regret": -1.0, "seconds": 0.1},
                    {"arm": "optuna-cmaes", "problem": name, "log10_regret": -1.0, "seconds": 0.1}]
    summary = blackbox.summarize(names, ["katibx-tpe", "optuna-tpe", "katibx-cmaes", "optuna-cmaes"], results, 50)
    pairs = {p["katibx"]: p for p in summary["pairs"]}
    assert pairs["katibx-tpe"]["verdict"] == "katibx worse" and pairs["katibx-tpe"]["worse"] == 20
    assert pairs["katibx-tpe"]["median_difference"] == 1.0 and pairs["katibx-tpe"]["p"] < 0.001
    assert pairs["katibx-cmaes"]["verdict"] == "no significant difference" and pairs["katibx-cmaes"]["ties"] == 20
    ranks = summary["average_rank"]["all problems, arms without a GP"]
    assert list(ranks)[:2] in (["katibx-cmaes", "optuna-cmaes"], ["optuna-cmaes", "katibx-cmaes"])
    tie = summary["rank_ties"]["all problems, arms without a GP"]
    assert (tie["problems"], tie["arms"]) == (20, 4) and tie["first"] in ("katibx-cmaes", "optuna-cmaes")
    assert sorted(tie["tied_with_first"]) == ["katibx-cmaes", "optuna-cmaes"]  # tpe's 3 and 4 lie beyond 1.5 + 1.05


def test_critical_difference_is_nemenyis() -> None:
    """Demsar (2006), Table 5(a): q_0.05 is 2.569 for 4 arms and 3.164 for 10; CD = q sqrt(k (k + 1) / (6 N))."""
    from benchmarks import blackbox

    assert abs(blackbox.critical_difference(4, 20) - 2.569 * math.sqrt(4 * 5 / 120)) < 1e-3
    assert abs(blackbox.critical_difference(10, 120) - 3.164 * math.sqrt(10 * 11 / 720)) < 1e-3


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Quality at a fixed budget" in proc.stdout  # the tables are printed too
    return out, json.loads((out / "latest.json").read_text()), (out / "report.md").read_text()


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_quick_run_meta(quick_run: tuple[Path, dict, str]) -> None:
    _, results, report = quick_run
    meta = results["meta"]
    assert meta["quick"] is True and meta["sections"] == ["quality", "blackbox", "overhead", "growth"]
    assert isinstance(meta["loaded"], bool) and len(meta["load_average_start"]) == 3
    env = meta["environment"]
    assert env["cpus"] >= 1 and env["versions"]["optuna"]["installed"]
    assert env["versions"]["optuna"]["pinned"].startswith("==")  # peers are pinned in the benchmarks extra
    assert _positive(meta["wall_seconds"])
    for title in ("## Run", "## Quality at a fixed budget", "## Defaults on a broad black-box suite",
                  "## Overhead per trial", "## Growth"):
        assert title in report


def test_quick_run_quality(quick_run: tuple[Path, dict, str]) -> None:
    _, results, report = quick_run
    q = results["quality"]
    assert q["arms"]["katibx-random"]["status"] == "ok" and q["arms"]["optuna-random"]["status"] == "ok"
    for arm, info in q["arms"].items():
        assert info["status"] == "ok" or info["status"].startswith("not installed"), (arm, info["status"])
    ran = [a for a, info in q["arms"].items() if info["status"] == "ok"]
    assert not q["errors"], q["errors"]
    for problem in q["settings"]["problems"]:
        for arm in ran:
            cell = q["runs"][problem][arm]
            assert cell["seeds"] == q["settings"]["seeds"]
            assert all(len(c) == q["settings"]["trials"] for c in cell["curves"])
            assert all(c[i] >= c[i + 1] for c in cell["curves"] for i in range(len(c) - 1))  # best so far
            assert cell["missing_values"] == [0] * len(cell["seeds"])
            assert -12 <= q["median_log10_regret"][problem][arm] < 6
    assert set(q["average_rank"]) == set(ran)
    assert all(1 <= r <= len(ran) for r in q["average_rank"].values())
    tests = q["mann_whitney"]
    assert {t["katibx"] for t in tests} == {a for a in ran if a.startswith("katibx-")}
    assert all(t["verdict"] for t in tests)
    assert "Mann-Whitney" in report


def test_quick_run_blackbox(quick_run: tuple[Path, dict, str]) -> None:
    _, results, report = quick_run
    suite = results["blackbox"]
    assert not suite["errors"], suite["errors"]
    families = {(p["katibx"], p["peer"]) for p in suite["pairs"]}
    assert {("katibx-tpe", "optuna-tpe"), ("katibx-cmaes", "optuna-cmaes"),
            ("katibx-bayesianoptimization", "skopt-gp")} <= families
    for pair in suite["pairs"]:
        assert pair["better"] + pair["worse"] + pair["ties"] == pair["problems"] == suite["settings"]["problems"]
    for ranks in suite["average_rank"].values():
        assert all(1 <= r <= len(ranks) for r in ranks.values())
    assert all(_positive(s) for s in suite["median_seconds_per_run"].values())
    assert "| katibx-tpe | optuna-tpe |" in report
    assert "Tied with the first" in report and "p None" not in report  # 4 problems: too few for the auto test


def test_quick_run_overhead(quick_run: tuple[Path, dict, str]) -> None:
    _, results, _ = quick_run
    rows = {r["name"]: r for r in results["overhead"]["rows"]}
    assert set(rows) >= {"function-random-vs-optuna-inmemory", "function-tpe-vs-optuna-inmemory",
                         "function-random-vs-optuna-sqlite", "function-random-vs-optuna-journal",
                         "command-vs-bare-interpreter", "parallel-2-vs-1", "ray-vs-ray-tune"}
    for name, row in rows.items():
        if name == "ray-vs-ray-tune" and row["status"] != "ok":
            assert row["status"].startswith(("not available", "not installed", "skipped"))
            continue
        if name == "function-tpe-vs-optuna-inmemory" and results["quality"]["arms"]["katibx-tpe"]["status"] != "ok":
            continue
        assert row["status"] == "ok", (name, row["status"])
        assert _positive(row["katibx_ms_per_trial"]) and _positive(row["other_ms_per_trial"]) and _positive(row["ratio"])
        assert len(row["ratios"]) == results["overhead"]["settings"]["repeats"] >= 3
    assert rows["function-random-vs-optuna-inmemory"]["ratio"] > 1  # a forked process per trial costs something
    assert _positive(rows["parallel-2-vs-1"]["parallel_efficiency"])


def test_quick_run_growth(quick_run: tuple[Path, dict, str]) -> None:
    _, results, report = quick_run
    g = results["growth"]
    for algorithm in ("tpe", "bayesianoptimization"):
        entry = g["suggest_latency"][algorithm]
        if entry["status"] != "ok":
            assert entry["status"].startswith("not installed")
            continue
        assert entry["rows"]
        for row in entry["rows"]:
            assert "error" not in row, row
            assert _positive(row["katibx_ms"]) and _positive(row["library_ms"]) and _positive(row["ratio"])
    large = g["scale"]
    assert "error" not in large, large
    assert large["succeeded"] == large["trials"] and large["parallel"] >= 2
    assert [int(mark) for mark in large["rss_mb_at_finished_trials"]] == [30, 150, 300]
    assert all(0 < mb < 4096 for mb in large["rss_mb_at_finished_trials"].values())
    assert set(large["read_ms"]) >= {"get experiment", "get trials -o json --limit 100", "dashboard: studies listed"}
    assert all(_positive(ms) for ms in large["read_ms"].values())
    assert "**Scale**: 300 trials" in report


def test_a_run_is_compared_with_the_one_it_replaces(quick_run: tuple[Path, dict, str], tmp_path: Path) -> None:
    """The report quotes, beside each timing ratio and scale measure, the run whose results it overwrites."""
    out, results, _ = quick_run
    previous = json.loads((out / "latest.json").read_text())
    previous["meta"]["environment"]["git"] = {"commit": "0123456789abcdef"}
    row = previous["overhead"]["rows"][0]
    row["ratio"] = 2 * results["overhead"]["rows"][0]["ratio"]
    (tmp_path / "latest.json").write_text(json.dumps(previous))
    report_text = report.write(json.loads((out / "latest.json").read_text()), tmp_path)["report"].read_text()
    assert "Previous run (the one this replaced" in report_text and "`0123456789ab`" in report_text
    line = next(x for x in report_text.splitlines() if x.startswith(f"| {row['name']} |"))
    assert line.split(" | ")[6] == "0.500"  # this ratio over the previous one
    scale_lines = [x for x in report_text.splitlines() if x.startswith("| controller RSS MB at")]
    assert scale_lines and all(len(x.split(" | ")) == 3 for x in scale_lines)
    assert json.loads((tmp_path / "latest.json").read_text())["meta"]["previous"]["commit"] == "0123456789abcdef"


def test_quick_run_plots(quick_run: tuple[Path, dict, str]) -> None:
    out, results, report = quick_run
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in report
        return
    for name in ("regret_curves.png", "overhead.png", "growth.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in report


def test_bo_speed_quick_run(tmp_path: Path) -> None:
    """``python -m benchmarks.bo_speed --quick``: both arms, both acquisition settings, a table and sane numbers."""
    out = tmp_path / "bo_speed.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bo_speed", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| setting | problem |" in proc.stdout
    result = json.loads(out.read_text())
    assert not [r for r in result["runs"] if "error" in r]
    assert len(result["runs"]) == 2 * 2 * len(result["settings"]["seeds"])  # arms x settings x seeds
    assert {(r["setting"], r["problem"]) for r in result["rows"]} == {("default", "branin-mixed"),
                                                                      ("ei-sampling", "branin-mixed")}
    for row in result["rows"]:
        assert -12 <= row["median_log10_regret_katibx"] < 6 and -12 <= row["median_log10_regret_skopt"] < 6
        assert 0 <= row["p_two_sided"] <= 1 and 0 <= row["p_katibx_worse"] <= 1
        assert _positive(row["median_seconds_katibx"]) and _positive(row["median_seconds_skopt"])
        assert _positive(row["time_ratio"])
