import json
from pathlib import Path

import jsonschema
import pytest
import torch
from torch import nn

from tracer import LogError, load_log, trace
from tracer.log import atomic_write_text

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "tracer" / "schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def small_trace(timing=True):
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with trace(m, timing=timing, symbols={"F": 8}) as t:
        m(torch.ones(3, 4))
    return t


def validate_lines(path):
    for line in Path(path).read_text().splitlines():
        VALIDATOR.validate(json.loads(line))


def test_round_trip_and_schema(tmp_path):
    path = tmp_path / "run.jsonl"
    t = small_trace()
    t.save(path, header={"tool": "test"}, summary={"note": "ok"})
    validate_lines(path)
    header, events, summary = load_log(path)
    assert header["schema"] == 1 and header["tool"] == "test" and header["symbols"] == {"F": 8}
    assert [e["seq"] for e in events] == list(range(len(t.events)))
    assert summary["events"] == len(events) and summary["note"] == "ok" and summary["error"] is None


def test_identical_runs_are_byte_identical_without_timing(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    torch.manual_seed(0)
    small_trace(timing=False).save(a)
    torch.manual_seed(0)
    small_trace(timing=False).save(b)
    assert a.read_bytes() == b.read_bytes()
    assert "time_ms" not in a.read_text()


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json at all\n", "is not JSON"),
        ('{"type": "event"}\n{"type": "summary"}\n', "does not start with a llama-trace header"),
        ('{"type": "header", "schema": 99}\n{"type": "summary"}\n', "schema version 99"),
        ('{"type": "header", "schema": 1}\n{"type": "event", "seq": 0}\n', "truncated"),
        ('{"type": "header", "schema": 1}\n{"type": "event", "seq": 1}\n{"type": "event", "seq": 0}\n{"type": "summary"}\n', "out of order"),
        ("[1, 2]\n", "not a JSON object"),
        ('{"type": "header", "schema": 1}\n{"type": "event", "seq": 0}\n{"type": "summ', r"last line \(3\) is cut off"),
    ],
)
def test_malformed_logs_give_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(LogError, match=message) as info:
        load_log(path)
    assert "\n" not in str(info.value)


def test_a_folder_is_not_a_log(tmp_path):
    with pytest.raises(LogError, match="is a folder"):
        load_log(tmp_path)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    class Exploding(str):
        pass

    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_text(target, 12345)  # not text: the write fails midway
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
