"""Tests for katibx.metric_parsers: Katib's TEXT/JSON log formats and TensorFlow event files."""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from katibx.metric_parsers import (
    DEFAULT_METRICS_FORMAT,
    LineParser,
    MetricsCollectorUnavailable,
    MetricsFormatError,
    parse_text,
    read_tfevents,
    record_logs,
)
from katibx.metrics import MetricLog, as_float

TS = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()


def pairs(logs: list[MetricLog]) -> list[tuple[str, str]]:
    return [(m.name, m.value) for m in logs]


# --- TEXT, default regex ----------------------------------------------------


def test_default_format_is_katibs_regex() -> None:
    assert DEFAULT_METRICS_FORMAT == r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"


def test_default_regex_katib_example_takes_all_matches_on_a_line() -> None:
    logs = parse_text("loss=0.3 accuracy=.98 Score=-7.53e-05\n", ["loss", "accuracy", "Score"])
    assert logs == [
        MetricLog("loss", "0.3", None),
        MetricLog("accuracy", ".98", None),
        MetricLog("Score", "-7.53e-05", None),
    ]


def test_default_regex_value_forms_and_spacing() -> None:
    text = "epoch 3: Score=1E0, loss = 2, val-acc=+0.5e+2\n"
    assert pairs(parse_text(text, ["Score", "loss", "val-acc"])) == [
        ("Score", "1E0"),
        ("loss", "2"),
        ("val-acc", "+0.5e+2"),
    ]


def test_unwanted_names_are_ignored() -> None:
    logs = parse_text("loss=0.3 lr=0.01 accuracy=0.9\nother=1\n", ["accuracy"])
    assert pairs(logs) == [("accuracy", "0.9")]


def test_wanted_name_must_match_exactly_not_as_substring() -> None:
    # "val_accuracy" contains "accuracy", so the line is scanned, but the name differs.
    assert parse_text("val_accuracy=0.7\n", ["accuracy"]) == []


def test_empty_values_are_ignored() -> None:
    assert parse_text("accuracy= \naccuracy=abc\naccuracy=\n", ["accuracy"]) == []


def test_no_metric_names_collects_nothing() -> None:
    assert parse_text("loss=0.3\n", []) == []


# --- TEXT, custom metricsFormat ---------------------------------------------


def test_custom_format_katib_example_with_nested_groups() -> None:
    fmt = [r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}"]
    text = "{metricName: accuracy, metricValue: 0.98}\n{metricName: loss, metricValue: -3}\n"
    logs = parse_text(text, ["accuracy", "loss"], fmt)
    assert pairs(logs) == [("accuracy", "0.98"), ("loss", "-3")]


def test_custom_format_darts_genotype_value_is_any_string() -> None:
    genotype = "Genotype(normal=[[('sep_conv_3x3', 0), ('skip_connect', 1)]], normal_concat=range(2, 6))"
    text = f"Epoch 9\nBest-Genotype={genotype}\n"
    logs = parse_text(text, ["Best-Genotype"], [r"([\w-]+)=(Genotype.*)"])
    assert logs == [MetricLog("Best-Genotype", genotype, None)]


def test_several_custom_formats_are_all_applied() -> None:
    fmt = [r"(\w+): (\d+\.\d+)", r"(\w+)=(\d+)"]
    logs = parse_text("acc: 0.5 steps=10\n", ["acc", "steps"], fmt)
    assert pairs(logs) == [("acc", "0.5"), ("steps", "10")]


def test_custom_format_name_and_value_are_stripped() -> None:
    logs = parse_text("| accuracy | 0.9 |\n", ["accuracy"], [r"\|([^|]+)\|([^|]+)\|"])
    assert pairs(logs) == [("accuracy", "0.9")]


def test_empty_metrics_format_list_means_default() -> None:
    assert pairs(parse_text("loss=0.3\n", ["loss"], [])) == [("loss", "0.3")]


def test_invalid_regex_raises_naming_it() -> None:
    with pytest.raises(MetricsFormatError) as info:
        LineParser(["loss"], [r"(\w+=(\d+)"])
    assert r"`(\w+=(\d+)`" in str(info.value)


def test_regex_without_two_groups_raises() -> None:
    with pytest.raises(MetricsFormatError, match="two groups"):
        LineParser(["loss"], [r"loss=(\d+)"])


def test_unknown_file_format_raises() -> None:
    with pytest.raises(MetricsFormatError, match="YAML"):
        LineParser(["loss"], file_format="YAML")


# --- TEXT timestamps --------------------------------------------------------


def test_leading_rfc3339_token_timestamps_every_metric_on_the_line() -> None:
    logs = parse_text("2024-01-02T03:04:05Z loss=0.3 accuracy=0.9\n", ["loss", "accuracy"])
    assert logs == [MetricLog("loss", "0.3", TS), MetricLog("accuracy", "0.9", TS)]


def test_timestamp_with_nanoseconds_and_offset() -> None:
    logs = parse_text("2024-01-02T03:04:05.123456789+02:00 loss=0.3\n", ["loss"])
    assert logs[0].timestamp == pytest.approx(TS - 2 * 3600 + 0.123456, abs=1e-6)


def test_timestamp_token_is_not_scanned_for_metrics() -> None:
    # Were the timestamp token scanned, this regex would report it as a metric named after itself.
    logs = parse_text("2024-01-02T03:04:05Z loss=0.3\n", ["2024-01-02T03:04:05Z", "loss"], [r"(\S+) (\S+)"])
    assert logs == []


def test_non_timestamp_first_token_gives_no_timestamp() -> None:
    logs = parse_text("2024-13-02T03:04:05Z loss=0.3\nepoch=1 loss=0.2\nloss=0.1\n", ["loss"])
    assert [m.timestamp for m in logs] == [None, None, None]
    assert pairs(logs) == [("loss", "0.3"), ("loss", "0.2"), ("loss", "0.1")]


# --- incremental feeding ----------------------------------------------------


def test_chunk_boundary_splitting_a_line_and_a_value() -> None:
    parser = LineParser(["loss", "accuracy"])
    assert parser.feed("loss=0.") == []
    assert parser.feed("35 accur") == []
    assert parser.feed("acy=0.9\nloss=0") == [MetricLog("loss", "0.35", None), MetricLog("accuracy", "0.9", None)]
    assert parser.feed(".2") == []
    assert parser.flush() == [MetricLog("loss", "0.2", None)]
    assert parser.flush() == []


def test_crlf_split_across_chunks() -> None:
    parser = LineParser(["loss"], [r"(\w+)=(.*)"])
    assert parser.feed("loss=0.5\r") == []
    assert parser.feed("\n") == [MetricLog("loss", "0.5", None)]


def test_feed_one_character_at_a_time_matches_whole_parse() -> None:
    text = "2024-01-02T03:04:05Z loss=0.3\nnoise\naccuracy=.98 loss=1e-3\nloss=4"
    parser = LineParser(["loss", "accuracy"])
    logs = [m for ch in text for m in parser.feed(ch)] + parser.flush()
    assert logs == parse_text(text, ["loss", "accuracy"])
    assert len(logs) == 4


# --- JSON -------------------------------------------------------------------


def test_json_strings_and_numbers_are_collected_as_strings() -> None:
    text = '{"loss": "0.3", "accuracy": 0.98, "step": 7}\n{"accuracy": 1e-3}\n'
    logs = parse_text(text, ["loss", "accuracy", "step"], file_format="JSON")
    assert pairs(logs) == [("loss", "0.3"), ("accuracy", "0.98"), ("step", "7"), ("accuracy", "1e-3")]
    assert all(type(m.value) is str for m in logs)


def test_json_ignores_booleans_null_objects_and_unwanted_keys() -> None:
    text = '{"ok": true, "loss": null, "acc": {"v": 1}, "lr": "0.1"}\n'
    assert parse_text(text, ["ok", "loss", "acc"], file_format="JSON") == []


def test_json_timestamps_string_and_number() -> None:
    text = (
        '{"loss": 0.3, "timestamp": "2024-01-02T03:04:05Z"}\n'
        f'{{"loss": 0.2, "timestamp": {TS + 1.5}}}\n'
        '{"loss": 0.1}\n'
        '{"loss": 0.0, "timestamp": "yesterday"}\n'
    )
    logs = parse_text(text, ["loss"], file_format="JSON")
    assert [m.timestamp for m in logs] == [TS, TS + 1.5, None, None]


def test_json_blank_lines_skipped() -> None:
    logs = parse_text('\n  \n{"loss": "0.3"}\n\n', ["loss"], file_format="JSON")
    assert pairs(logs) == [("loss", "0.3")]


def test_json_nan_is_kept_but_not_numeric() -> None:
    logs = parse_text('{"loss": NaN}\n', ["loss"], file_format="JSON")
    assert pairs(logs) == [("loss", "NaN")]
    assert as_float(logs[0].value) is None


def test_invalid_json_names_line_number_and_truncated_content() -> None:
    parser = LineParser(["loss"], file_format="JSON")
    assert parser.feed('{"loss": 1}\n\n') == [MetricLog("loss", "1", None)]
    bad = "epoch 1 done " + "x" * 200
    with pytest.raises(MetricsFormatError) as info:
        parser.feed(bad + "\n")
    message = str(info.value)
    assert "line 3" in message
    assert bad[:80] in message
    assert bad[:81] not in message


def test_json_line_number_counts_across_chunks_and_flush() -> None:
    parser = LineParser(["loss"], file_format="JSON")
    parser.feed('{"loss": 1}\n{"lo')
    parser.feed('ss": 2}\n')
    parser.feed("[1, 2]")
    with pytest.raises(MetricsFormatError, match="line 3.*not an object"):
        parser.flush()


def test_json_ignores_metrics_format() -> None:
    logs = parse_text('{"loss": 2}\n', ["loss"], [r"(nomatch)(x)"], file_format="JSON")
    assert pairs(logs) == [("loss", "2")]


# --- as_float ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0.3", 0.3), (".98", 0.98), ("-7.53e-05", -7.53e-05), ("1E0", 1.0), (" 2 ", 2.0)],
)
def test_as_float_numeric(value: str, expected: float) -> None:
    assert as_float(value) == expected


@pytest.mark.parametrize("value", ["", "abc", "nan", "NaN", "inf", "-Infinity", "Genotype(normal=[])"])
def test_as_float_not_numeric(value: str) -> None:
    assert as_float(value) is None


# --- TensorFlowEvent --------------------------------------------------------


def test_read_tfevents_unavailable_without_tensorboard(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(MetricsCollectorUnavailable) as info:
        read_tfevents(tmp_path, ["loss"])
    assert str(info.value) == (
        "TensorFlowEvent metrics collector needs the 'tensorboard' package: pip install 'katibx[tensorboard]'"
    )


def test_read_tfevents_scalars_tensors_and_subdirectories(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary import Writer
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    top = Writer(str(tmp_path))
    top.add_scalar("loss", 0.5, step=1, wall_time=TS)
    top.add_scalar("loss", 0.25, step=2, wall_time=TS + 1)
    top.add_scalar("lr", 0.1, step=1, wall_time=TS)
    top.close()

    val = Writer(str(tmp_path / "eval"))
    val.add_scalar("accuracy", 0.875, step=1, wall_time=TS + 2)
    val.close()

    # Legacy simple_value scalar and a text (string tensor) summary, in a nested directory.
    legacy = EventFileWriter(str(tmp_path / "a" / "b"))
    event = event_pb2.Event(wall_time=TS + 3, step=1)
    event.summary.value.add(tag="acc", simple_value=0.1)
    event.summary.value.add(tag="genotype", tensor=tensor_util.make_tensor_proto("Genotype(normal=[])"))
    event.summary.value.add(tag="hist", tensor=tensor_util.make_tensor_proto([1.0, 2.0]))
    legacy.add_event(event)
    legacy.close()
    (tmp_path / "eval" / "notes.txt").write_text("accuracy=1\n")

    wanted = ["loss", "accuracy", "eval/accuracy", "a/b/acc", "a/b/genotype", "a/b/hist"]
    logs = sorted(read_tfevents(tmp_path, wanted), key=lambda m: (m.name, m.timestamp))
    assert logs == [
        MetricLog("a/b/acc", "0.1", TS + 3),
        MetricLog("a/b/genotype", "Genotype(normal=[])", TS + 3),
        MetricLog("eval/accuracy", "0.875", TS + 2),
        MetricLog("loss", "0.5", TS),
        MetricLog("loss", "0.25", TS + 1),
    ]


def test_read_tfevents_empty_directory(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    assert read_tfevents(tmp_path, ["loss"]) == []


def test_timestamps_are_finite_floats() -> None:
    logs = parse_text("2024-01-02T03:04:05.5-00:30 loss=1\n", ["loss"])
    assert logs[0].timestamp is not None and math.isfinite(logs[0].timestamp)
    assert logs[0].timestamp == TS + 1800.5


def test_a_record_handed_over_gives_the_logs_its_json_line_gives() -> None:
    """A trial on a thread of the controller hands its report_metrics records over as they are: the metric logs
    must be those its JSON line in a metrics file would give (values as JSON writes them, the timestamp, order)."""
    names = ["loss", "acc", "genotype", "count", "missing"]
    for values in ({"loss": 0.1, "acc": 3}, {"loss": float("nan"), "acc": float("inf"), "count": -float("inf")},
                   {"loss": 1e-300, "acc": 2 ** 70, "genotype": "Genotype(normal=[('sep_conv_3x3', 0)])"},
                   {"other": 1.0}, {"loss": -0.0, "count": 12345678901234567890.5}):
        record = {**values, "timestamp": 1733500000.123456}
        line = json.dumps(record) + "\n"
        assert record_logs(record, names) == LineParser(names, file_format="JSON").feed(line), values
