"""Write the results: ``latest.json``, a Markdown report (``report.md``) and its plots (PNG), plus text tables.

Plots need matplotlib (the ``benchmarks`` extra); without it the report says so and has tables only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

JSON_NAME = "latest.json"
REPORT_NAME = "report.md"
PLOTS = {"quality": "regret_curves.png", "overhead": "overhead.png", "growth": "growth.png"}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -digits):
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- sections ----------------------------------------------------------------------------------------------
def meta_section(meta: dict[str, Any]) -> str:
    env = meta["environment"]
    out = [f"Mode: **{'quick (CI-sized)' if meta['quick'] else 'full'}**; sections: {', '.join(meta['sections'])}. "
           f"Started {meta['started']}, wall time {meta['wall_seconds']:.0f} s, CPU time {meta['cpu_seconds']:.0f} s. "
           f"Phases: {', '.join(f'{k} {v:.0f} s' for k, v in meta['phase_seconds'].items())} (the pool of "
           f"{meta['workers']} processes runs the untimed work one job at a time beside the one-core timed phases, "
           "then on every process; the every-core rows run alone at the end).",
           "",
           f"Machine: {env['cpus']} CPUs, {env['platform']}, Python {env['python']}; one BLAS thread per process. "
           f"Load average (1, 5, 15 min) at start {meta['load_average_start']}, at end {meta['load_average_end']} "
           "(at the end mostly this run's own). Other processes used "
           f"{_fmt(meta.get('other_processes_cpus'))} CPUs on average while it ran (/proc/stat less the run's own CPU time)."]
    if meta["loaded"]:
        out += ["", "**LOADED MACHINE**: the 1-minute load average exceeded the CPU count at the start, or other "
                    "processes used more than half a CPU during the run; timings are upper bounds, compare ratios "
                    "rather than absolute times."]
    git = env.get("git", {})
    if git.get("commit"):
        out += ["", f"Code: commit `{git['commit'][:12]}`{' with uncommitted changes' if git.get('dirty') else ''}."]
    before = meta.get("previous")
    if before:
        out += ["", f"Previous run (the one this replaced, compared with in the tables): "
                    f"{'quick' if before.get('quick') else 'full'}, started {before.get('started')}"
                    + (f", commit `{before['commit'][:12]}`." if before.get("commit") else ".")]
    rows = [[d, v.get("installed") or "not installed", v.get("pinned", ""),
             "" if "matches_pin" not in v else ("yes" if v["matches_pin"] else "**no**")]
            for d, v in env["versions"].items()]
    out += ["", table(["distribution", "installed", "pinned (benchmarks extra)", "matches pin"], rows)]
    return "\n".join(out)


def quality_section(q: dict[str, Any], plot: str | None) -> str:
    s = q["settings"]
    problems = s["problems"]
    arms = [a for a, info in q["arms"].items() if info["status"] == "ok"]
    out = [f"{s['trials']} trials, seeds {s['seeds']}, parallelTrialCount {s['parallel_trial_count']}. "
           f"Metric: {s['metric']}. katibx arms run through `katibx.tune` (function trials, SQLite store); "
           "direct arms call the library in-process with the same settings.", ""]
    skipped = {a: info["status"] for a, info in q["arms"].items() if info["status"] != "ok"}
    if skipped:
        out += ["Not run: " + "; ".join(f"`{a}` ({st})" for a, st in skipped.items()) + ".", ""]
    ranks = q["average_rank"]
    rows = [[a, *[q["median_log10_regret"][p].get(a) for p in problems], ranks.get(a),
             q["median_seconds_per_run"].get(a)] for a in sorted(arms, key=lambda a: ranks.get(a, math.inf))]
    out += ["Median log10 simple regret (lower is better), average rank over the problems, median seconds per run:", "",
            table(["arm", *problems, "avg rank", "s/run"], rows), ""]
    tests = q["mann_whitney"]
    if tests:
        out += [f"Mann-Whitney U, katibx vs the direct call of the same library, on the {len(s['seeds'])} final "
                f"regrets per problem (p_worse: one-sided, katibx has larger regret; alpha {s['alpha']}):", "",
                table(["problem", "katibx arm", "direct arm", "median katibx", "median direct", "U", "p two-sided",
                       "p_worse", "verdict"],
                      [[t["problem"], t["katibx"], t["direct"], t.get("median_katibx"), t.get("median_direct"),
                        t.get("u"), t.get("p_two_sided"), t.get("p_worse"), t["verdict"]] for t in tests]), ""]
        worse = [t for t in tests if t["verdict"] == "katibx worse"]
        tested = [t for t in tests if t.get("p_worse") is not None]
        out += [f"katibx significantly worse than its library in {len(worse)} of {len(tested)} comparisons"
                + (": " + ", ".join(f"{t['katibx']} on {t['problem']}" for t in worse) if worse else "")
                + f" (each side is a one-sided test at {s['alpha']}, so about {s['alpha'] * len(tested):.1f} of "
                f"{len(tested)} comparisons come out 'worse' by chance alone).", ""]
    if q.get("errors"):
        out += ["Failed runs: " + "; ".join(f"{e.get('arm')} {e.get('problem')} seed {e.get('seed')}: {e.get('error')}"
                                            for e in q["errors"][:10]), ""]
    if plot:
        out += [f"![regret curves]({plot})", ""]
    return "\n".join(out)


def blackbox_section(b: dict[str, Any]) -> str:
    s = b["settings"]
    out = [f"Every algorithm with its defaults against the peers' defaults (`benchmarks/blackbox.py`): {s['problems']} "
           f"problems of COCO's bbob functions (2, 5 and 10 dimensions, mixed and categorical problems), "
           f"{s['trials']} trials each, one run per problem (katibx's arms with no settings, the peers seeded); the "
           f"GP arms on the {s['gp_problems']} 2-dimensional bbob problems. Metric: {s['metric']}, regret floor {s['regret_floor']}.", ""]
    rows = [[p["katibx"], p["peer"], p["problems"], p["better"], p["worse"], p["ties"], p["median_difference"], p["p"],
             p["verdict"]] for p in b["pairs"]]
    out += [f"Each katibx default against the peer default of its family: problems where katibx's regret is lower "
            f"(better), higher (worse) or equal; median difference of log10 regret (katibx - peer; below 0: katibx "
            f"better); Wilcoxon signed-rank p (two-sided, alpha {s['alpha']}):", "",
            table(["katibx", "peer", "problems", "better", "worse", "ties", "median diff", "p", "verdict"], rows), ""]
    for title, ranks in b["average_rank"].items():
        out += [f"Average rank ({title}; 1 is best): "
                + ", ".join(f"{a} {r}" for a, r in ranks.items()) + ".", ""]
        tie = b.get("rank_ties", {}).get(title)
        if tie:
            p = tie.get("auto_against_first_p")
            auto = (f" katibx-auto against {tie['first']}, problem by problem: Wilcoxon p {p}." if p is not None
                    else f" katibx-auto against {tie['first']}: too few problems for a test." if
                    "auto_against_first_p" in tie else "")
            out += [f"Tied with the first ({tie['first']}): {', '.join(tie['tied_with_first'])} (average ranks within "
                    f"Nemenyi's critical difference, {tie['critical_difference']}, for {tie['arms']} arms over "
                    f"{tie['problems']} problems at alpha {s['alpha']}).{auto}", ""]
    out += ["Median seconds per run: " + ", ".join(f"{a} {v}" for a, v in b["median_seconds_per_run"].items()) + ".",
            ""]
    if b.get("errors"):
        out += ["Failed runs: " + "; ".join(f"{e.get('arm')} {e.get('problem')}: {e.get('error')}"
                                            for e in b["errors"][:10]), ""]
    return "\n".join(out)


def _change(now: Any, before: Any) -> float | None:
    """This run's value over the previous run's (None where either is missing)."""
    if isinstance(now, (int, float)) and isinstance(before, (int, float)) and before:
        return now / before
    return None


def overhead_section(o: dict[str, Any], plot: str | None, previous: dict[str, Any] | None = None) -> str:
    s = o["settings"]
    out = [f"Trivial objective ({s['objective']}); {s['measure']}; median of {s['repeats']} repetitions, arms "
           "interleaved; ratio = katibx / other within each repetition, then the median. Previous: the ratio in "
           "the run this one replaced (see Run).", ""]
    before = {r["name"]: r.get("ratio") for r in (previous or {}).get("rows", [])}
    rows = []
    for r in o["rows"]:
        if r["status"] != "ok":
            rows.append([r["name"], r["trials"], None, None, r["status"], before.get(r["name"]), None, ""])
            continue
        extra = ""
        if "speedup" in r:
            extra = f"speed-up {r['speedup']:.2f}, efficiency {r['parallel_efficiency']:.2f}"
        elif "katibx_overhead_ms_per_trial" in r:
            extra = f"katibx adds {r['katibx_overhead_ms_per_trial']:.1f} ms/trial"
        rows.append([r["name"], r["trials"], r["katibx_ms_per_trial"], r["other_ms_per_trial"], r["ratio"],
                     before.get(r["name"]), _change(r["ratio"], before.get(r["name"])), extra])
    out += [table(["row", "trials", "katibx ms/trial", "other ms/trial", "ratio (median)", "previous ratio",
                   "ratio / previous", "note"], rows), ""]
    out += ["Rows: " + "; ".join(f"`{r['name']}`: {r['description']}" for r in o["rows"]) + ".", ""]
    if o.get("errors"):
        out += ["Errors: " + "; ".join(f"{k}: {v}" for k, v in o["errors"].items()), ""]
    if plot:
        out += [f"![overhead per trial]({plot})", ""]
    return "\n".join(out)


def growth_section(g: dict[str, Any], plot: str | None, previous: dict[str, Any] | None = None) -> str:
    out = []
    for algorithm, entry in g.get("suggest_latency", {}).items():
        out += [f"**{algorithm}** suggestion latency (one controller step: the plugin's `suggest(history, 1)` after "
                f"one more finished trial; median of {entry['steps_per_size']} steps) vs {entry['library']}; the arms "
                f"in turn {entry.get('repeats', 1)} times, the median of the ratios; previous: the ratio in the run "
                "this one replaced:", ""]
        if entry.get("status") != "ok":
            out += [entry.get("status", ""), ""]
            continue
        before = {r["n"]: r.get("ratio") for r in
                  (previous or {}).get("suggest_latency", {}).get(algorithm, {}).get("rows", [])}
        out += [table(["history n", "katibx ms", "library ms", "ratio", "previous ratio", "ratio / previous"],
                      [[r["n"], r.get("katibx_ms"), r.get("library_ms"), r.get("ratio", r.get("error")),
                        before.get(r["n"]), _change(r.get("ratio"), before.get(r["n"]))]
                       for r in entry["rows"]]), ""]
    if g.get("scale"):
        out += [scale_part(g["scale"], (previous or {}).get("scale")), ""]
    if plot:
        out += [f"![growth]({plot})", ""]
    return "\n".join(out)


def scale_part(r: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """The long run: its time, the controller's memory as finished trials pile up, and the reads of its store."""
    where = ("on the controller's threads (isolation none), counted with it" if r.get("isolation") == "none" else
             "in the worker processes the controller forks, which are not counted")
    head = (f"**Scale**: {r['trials']:,} trials of a trivial function (random, parallelTrialCount {r['parallel']}; "
            f"the controller in a process of its own, the trials {where})")
    if "error" in r:
        return f"{head}: failed: {r['error']}"
    before = previous or {}
    rows: list[list[Any]] = [["trials succeeded", r.get("succeeded"), before.get("succeeded")],
            ["wall time s (beside the pool: not a timing row)", r.get("wall_seconds"), before.get("wall_seconds")]]
    rows += [[f"controller RSS MB at {int(mark):,} finished trials", mb,
              (before.get("rss_mb_at_finished_trials") or {}).get(str(mark))]
             for mark, mb in r.get("rss_mb_at_finished_trials", {}).items()]
    rows += [["controller RSS MB once `tune` holds its result (every trial)", r.get("rss_mb_with_tunes_result"),
              before.get("rss_mb_with_tunes_result")]]
    rows += [[f"ms: {name}", ms, (before.get("read_ms") or {}).get(name)] for name, ms in r.get("read_ms", {}).items()]
    rows = [[measure, *(f"{v:.1f}" if isinstance(v, float) else v for v in values)] for measure, *values in rows]
    return "\n".join([head + "; the reads of its store measured alone afterwards (the CLI's: a fresh `katibx` "
                      "process each, its start included, median of 3; every trial as JSON once):", "",
                      table(["measure", "this run", "previous run"], rows)])


# --- plots -------------------------------------------------------------------------------------------------
_FAMILY = {"random": 0, "tpe": 1, "multivariate-tpe": 2, "cmaes": 3, "bayesianoptimization": 4, "gp": 4}


def _family(arm: str) -> int:
    for key in ("multivariate-tpe", "bayesianoptimization", "random", "cmaes", "tpe", "gp"):
        if arm.endswith(key):
            return _FAMILY[key]
    return 5


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality(q: dict[str, Any], path: Path) -> None:
    import numpy as np

    plt = _pyplot()
    problems = q["settings"]["problems"]
    cols = min(3, len(problems))
    rows = math.ceil(len(problems) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, problem in zip(axes.flat, problems):
        for arm, cell in sorted(q["runs"].get(problem, {}).items()):
            curves = [c for c in cell["curves"] if c and None not in c]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            med = np.median(np.array([c[:length] for c in curves]), axis=0)
            ax.plot(range(1, length + 1), med, label=arm, color=colors(_family(arm)),
                    linestyle="-" if arm.startswith("katibx") else "--", linewidth=1.4)
        ax.set_title(f"{problem} (f* = {q['problems'][problem]['optimum']:g})")
        ax.set_xlabel("trial")
        ax.set_ylabel("median log10 regret")
        ax.grid(alpha=0.3)
    spare = list(axes.flat)[len(problems):]
    for ax in spare:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if spare:  # the legend goes into the first empty panel
        spare[0].legend(handles, labels, loc="center", fontsize=8, frameon=False,
                        title="solid: katibx, dashed: direct call")
        fig.tight_layout()
    else:
        fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False,
                   title="solid: katibx\ndashed: direct call")
        fig.set_size_inches(5 * cols + 3, 3.6 * rows)
        fig.tight_layout(rect=(0, 0, (5 * cols) / (5 * cols + 3), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_overhead(o: dict[str, Any], path: Path) -> None:
    import numpy as np

    plt = _pyplot()
    rows = [r for r in o["rows"] if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.6))
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r["katibx_ms_per_trial"] for r in rows], height=0.4, label="katibx", color="tab:blue")
    ax.barh(y + 0.2, [r["other_ms_per_trial"] for r in rows], height=0.4, label="compared with", color="tab:gray")
    for i, r in enumerate(rows):
        ax.text(max(r["katibx_ms_per_trial"], r["other_ms_per_trial"]) * 1.15, i, f"× {r['ratio']:.2f}",
                va="center", fontsize=8)
    ax.set_yticks(y, [f"{r['name']}\n({r['katibx']} / {r['other']})" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=max(max(r["katibx_ms_per_trial"], r["other_ms_per_trial"]) for r in rows) * 5)
    ax.set_xlabel("ms per trial (median of repetitions, log scale)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_growth(g: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    entries = [(a, e) for a, e in g.get("suggest_latency", {}).items() if e.get("status") == "ok"]
    fig, axes = plt.subplots(1, max(1, len(entries)), figsize=(5 * max(1, len(entries)), 3.6), squeeze=False)
    for ax, (algorithm, entry) in zip(axes.flat, entries):
        rows = [r for r in entry["rows"] if "katibx_ms" in r]
        ax.plot([r["n"] for r in rows], [r["katibx_ms"] for r in rows], "o-", label=f"katibx {algorithm}")
        ax.plot([r["n"] for r in rows], [r["library_ms"] for r in rows], "s--", label=entry["library"])
        ax.set_xlabel("trials in history")
        ax.set_ylabel("ms per suggestion")
        ax.set_title(algorithm)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- writing -----------------------------------------------------------------------------------------------
def write(results: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Write JSON, plots and the Markdown report into ``out_dir``; returns {"json", "report", "plots", "text"}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    plot_note = None
    try:
        _pyplot()
    except ImportError:
        plot_note = "Plots skipped: matplotlib is not installed (`pip install -e '.[benchmarks]'`)."
    if plot_note is None:
        for section, fn in (("quality", plot_quality), ("overhead", plot_overhead), ("growth", plot_growth)):
            if section in results:
                try:
                    fn(results[section], out_dir / PLOTS[section])
                    plots[section] = PLOTS[section]
                except Exception as exc:  # noqa: BLE001 - a plot must not lose the numbers
                    plot_note = f"Plot {section} failed: {type(exc).__name__}: {exc}"
    results["meta"]["plots"] = plots
    if plot_note:
        results["meta"]["plot_note"] = plot_note
    json_path = out_dir / JSON_NAME
    previous = _previous(json_path)
    if previous is not None and previous["meta"]["quick"] != results["meta"]["quick"]:
        previous = None  # (a quick run's sizes differ: its ratios are no comparison)
    if previous is not None:
        results["meta"]["previous"] = previous["meta"]
    json_path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")

    parts = {"Run": meta_section(results["meta"])}
    if "quality" in results:
        parts["Quality at a fixed budget"] = quality_section(results["quality"], plots.get("quality"))
    if "blackbox" in results:
        parts["Defaults on a broad black-box suite"] = blackbox_section(results["blackbox"])
    if "overhead" in results:
        parts["Overhead per trial"] = overhead_section(results["overhead"], plots.get("overhead"),
                                                       (previous or {}).get("overhead"))
    if "growth" in results:
        parts["Growth"] = growth_section(results["growth"], plots.get("growth"), (previous or {}).get("growth"))
    body = ["# katibx benchmarks", "",
            "Generated by `python -m benchmarks` (see `benchmarks/__main__.py`); the numbers are in "
            f"`{JSON_NAME}`.", ""]
    if plot_note:
        body += [plot_note, ""]
    for title, text in parts.items():
        body += [f"## {title}", "", text.rstrip(), ""]
    report_path = out_dir / REPORT_NAME
    report_path.write_text("\n".join(body))
    text = "\n\n".join(f"== {title} ==\n{_strip_images(t)}" for title, t in parts.items())
    return {"json": json_path, "report": report_path, "plots": [out_dir / p for p in plots.values()], "text": text}


def _previous(path: Path) -> dict[str, Any] | None:
    """The results this run replaces (``latest.json`` in the output folder: the committed run's, in the
    repository's), without its own record of the run before it; None when there are none."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict) or not isinstance(previous.get("meta"), dict):
        return None
    meta = previous["meta"]
    previous["meta"] = {"started": meta.get("started"), "quick": meta.get("quick"),
                        "commit": meta.get("environment", {}).get("git", {}).get("commit")}
    return previous


def _strip_images(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("!["))
