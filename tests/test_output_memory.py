"""Controller memory does not follow what a trial prints: output is read in bounded chunks, observations of a
running trial are sampled (the summary stays exact), an overlong line is dropped rather than held."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.output_memory import controller_run
from katibx.metric_parsers import MAX_LINE_CHARS, LineParser
from katibx.metrics import MetricLog
from katibx.observation_sampling import HEAD, TAIL, ObservationSampler
from katibx.trial import summarize


def _loss_lines(megabytes: float) -> int:
    """How many ``loss=<i>`` lines benchmarks.output_memory.TRIAL prints for ``megabytes``."""
    written = count = 0
    while written < megabytes * (1 << 20):
        written += len(f"loss={count}\n")
        count += 1
    return count


def test_a_trial_printing_100_mb_leaves_controller_memory_flat(tmp_path: Path) -> None:
    base = controller_run(0, 0, tmp_path / "base")
    loud = controller_run(90, 10, tmp_path / "loud")
    lines = _loss_lines(10)
    # before bounded reading, the controller grew by about 4 bytes per byte printed (~400 MB here)
    assert loud["peak_rss_mb"] - base["peak_rss_mb"] < 60, (base, loud)
    assert loud["state"] == "Succeeded"
    assert loud["summary"] == {"name": "loss", "min": "-1", "max": str(lines - 1), "latest": "-1"}
    assert loud["observations"] < HEAD + TAIL * math.log2(lines)  # sampled, not 870,000 rows


def test_the_sampler_keeps_summaries_exact_and_history_bounded() -> None:
    sampler = ObservationSampler(head=10, tail=20)
    values = [((i * 7919) % 1000) - 500 for i in range(5000)] + [3]
    logs = [MetricLog("loss", str(v), float(i)) for i, v in enumerate(values)]
    stored = []
    for start in range(0, len(logs), 37):
        stored += sampler.add(logs[start:start + 37])
    stored += sampler.unstored_final()
    assert sampler.summaries == summarize(logs)
    history = sampler.history()
    assert len(history) <= 10 + 20 + 3 and history[:10] == logs[:10]  # the first steps are all there
    assert {"-500", "499", "3"} <= {log.value for log in history}  # min, max, latest
    assert len(stored) < 10 + 20 * 10 and stored[-1] == logs[-1]
    assert {"-500", "499"} <= {log.value for log in stored}  # the extremes are stored too (a restart reads them)


def test_an_overlong_line_is_dropped_up_to_its_newline() -> None:
    parser = LineParser(["loss"])
    chunk = "loss=9" + "x" * (64 << 10)
    found = [parser.feed(chunk) for _ in range(MAX_LINE_CHARS // len(chunk) + 2)]
    assert not any(found) and len(parser._buffer) <= MAX_LINE_CHARS
    assert [log.value for log in parser.feed("still the same line loss=8\nloss=1\n")] == ["1"]
    assert parser.feed("loss=2") == [] and [log.value for log in parser.flush()] == ["2"]
