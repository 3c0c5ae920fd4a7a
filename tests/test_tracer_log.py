import errno
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import torch
from logs import DELETE, changed
from torch import nn

from tracer import LogError, load_log, log, trace
from tracer.log import atomic_write_files, atomic_write_text

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
        ('{"type": "header"}\n{"type": "summary"}\n', "has no schema version; this llama-trace reads version"),
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
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_text(target, 12345)  # not text: the write fails before any file is touched
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_write_that_fails_midway_leaves_no_temporary_file(tmp_path, monkeypatch):
    """A full disk while the bytes go out: the old file stays, and no temporary file is left."""
    target = tmp_path / "out.txt"
    target.write_text("old")

    def full_disk(fd, mode):
        os.close(fd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(log.os, "fdopen", full_disk)
    with pytest.raises(OSError) as info:
        atomic_write_text(target, "new")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_failed_rename_names_the_path_asked_for(tmp_path, monkeypatch):
    """Through a symlink the file replaced is its target, but the error names the link given."""
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)

    def refused(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(log.os, "replace", refused)
    with pytest.raises(OSError) as info:
        atomic_write_text(link, "new")
    assert info.value.filename == str(link) and real.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "real.txt"]


def test_files_written_together_are_written_all_or_none(tmp_path):
    """A page and its pictures: when one cannot be written (here a folder stands where a picture
    goes), none is, no temporary file stays, and the error names the file asked for."""
    page, picture = tmp_path / "page.md", tmp_path / "page.chunks.png"
    page.write_text("old page")
    picture.mkdir()
    with pytest.raises(IsADirectoryError) as info:
        atomic_write_files({tmp_path / "page.canvas.png": b"png", picture: b"png", page: b"new page"})
    assert info.value.filename == str(picture)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.chunks.png", "page.md"] and page.read_text() == "old page"
    atomic_write_files({tmp_path / "page.canvas.png": b"png", page: b"new page"})
    assert page.read_text() == "new page" and (tmp_path / "page.canvas.png").read_bytes() == b"png"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_special_file_failing_leaves_no_regular_file_behind(tmp_path):
    """A FIFO or device among the files is written before the others are renamed into place: when
    it fails (/dev/full), the regular files are not left behind."""
    with pytest.raises(OSError) as info:
        atomic_write_files({tmp_path / "page.canvas.png": b"png", Path("/dev/full"): b"page"})
    assert info.value.filename == "/dev/full" and list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_utf8_is_not_a_text_file(tmp_path):
    path = tmp_path / "picture.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x8e\xff\x00")
    with pytest.raises(LogError) as info:
        load_log(path)
    assert str(info.value) == f"{path} is not a text file: is this a llama-trace log (JSON Lines)?"


@pytest.mark.parametrize("text", ["", "\n\n", "  \n\t\n"])
def test_an_empty_file_says_it_is_empty(tmp_path, text):
    path = tmp_path / "empty.jsonl"
    path.write_text(text)
    with pytest.raises(LogError, match=f"^{path} is empty: write the log again with `llama-trace run --format json -o {path}`$"):
        load_log(path)


def saved_lines(tmp_path) -> list[dict]:
    path = tmp_path / "run.jsonl"
    small_trace().save(path)
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_records(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize(
    "where, value, message",
    [
        (("seq",), "1", "'seq' must be an integer"),
        (("seq",), DELETE, "'seq' must be an integer (it is missing)"),
        (("kind",), 3, "'kind' must be a string (found 3)"),
        (("stage",), ["vision"], "'stage' must be a string or null"),
        (("phase",), 1, "'phase' must be a string or null"),
        (("path",), {}, "'path' must be a string or null"),
        (("name",), 1.5, "'name' must be a string or null"),
        (("parent",), "0", "'parent' must be an integer or null (found \"0\")"),
        (("depth",), None, "'depth' must be an integer (found null)"),
        (("flops",), "192", "'flops' must be an integer"),
        (("time_ms",), "fast", "'time_ms' must be a number"),
        (("inputs",), {"x": 1}, "'inputs' must be a list"),
        (("outputs",), "abc", "'outputs' must be a list"),
        (("inputs", 0), [3, 4], "inputs[0] must be an object (found [3, 4])"),
        (("outputs", 0, "shape"), "abc", "outputs[0] 'shape' must be a list of integers (found \"abc\")"),
        (("outputs", 0, "shape"), [3, "8"], "outputs[0] 'shape' must be a list of integers"),
        (("outputs", 0, "shape"), [3, 8.0], "outputs[0] 'shape' must be a list of integers"),
        (("inputs", 0, "shape"), 12, "inputs[0] 'shape' must be a list of integers"),
        (("inputs", 0, "shape"), None, "inputs[0] 'shape' must be a list of integers (found null)"),
    ],
)
def test_events_of_the_wrong_structure_name_line_event_and_field(tmp_path, where, value, message):
    records = saved_lines(tmp_path)
    records[2] = changed(records[2], where, value)  # line 3: event 1
    path = tmp_path / "bad.jsonl"
    write_records(path, records)
    with pytest.raises(LogError, match=f"^{re.escape(f'{path}:3: event 1: {message}')}") as info:
        load_log(path)
    assert "\n" not in str(info.value) and str(info.value).endswith("write it again")


def test_a_long_bad_value_is_cut_short_in_the_message(tmp_path):
    records = saved_lines(tmp_path)
    records[1] = changed(records[1], ("outputs", 0, "shape"), "x" * 500)
    path = tmp_path / "bad.jsonl"
    write_records(path, records)
    with pytest.raises(LogError, match=r":2: event 0: outputs\[0\] 'shape' must be a list of integers \(found \"x{36}\.\.\.\)") as info:
        load_log(path)
    assert len(str(info.value)) < 250


@pytest.mark.parametrize(
    "line, where, value, message",
    [
        (0, ("symbols",), {"F": "8"}, r":1: the header's 'symbols' must map letters to integers"),
        (-1, ("error",), "boom", r":6: the summary's 'error' must be an object or null \(found \"boom\"\)"),
        (-1, ("stages",), [], r":6: the summary's 'stages' must map stages to objects \(found \[\]\)"),
        (-1, ("stages", "(none)"), 4, r":6: the summary's 'stages' must map stages to objects"),
    ],
)
def test_header_and_summary_fields_of_the_wrong_type(tmp_path, line, where, value, message):
    records = saved_lines(tmp_path)
    records[line] = changed(records[line], where, value)
    path = tmp_path / "bad.jsonl"
    write_records(path, records)
    with pytest.raises(LogError, match=message):
        load_log(path)


def test_line_numbers_count_blank_lines(tmp_path):
    records = saved_lines(tmp_path)
    records[3] = changed(records[3], ("kind",), None)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) + ("\n" if i == 1 else "") for i, r in enumerate(records)) + "\n")
    with pytest.raises(LogError, match=r"bad.jsonl:5: event 2: 'kind' must be a string \(found null\)"):
        load_log(path)


def test_optional_fields_may_be_missing(tmp_path):
    records = saved_lines(tmp_path)
    for key in ("flops", "time_ms", "params", "src"):
        for record in records[1:-1]:
            record.pop(key, None)
    for item in records[2].get("inputs", []) + records[2].get("outputs", []):
        item.pop("shape", None)
    path = tmp_path / "lean.jsonl"
    write_records(path, records)
    _, events, _ = load_log(path)
    assert len(events) == 4


@pytest.mark.parametrize("key", ["seq", "kind", "stage", "phase", "path", "name", "parent", "depth", "inputs", "outputs"])
def test_a_field_every_event_has_is_required(tmp_path, key):
    """A stage, phase or parent may be null, but a log without the key is damaged: its event
    would silently leave its stage."""
    records = saved_lines(tmp_path)
    records[2].pop(key)
    path = tmp_path / "cut.jsonl"
    write_records(path, records)
    with pytest.raises(LogError, match=rf"cut.jsonl:3: .*'{key}' must be .*it is missing"):
        load_log(path)


@pytest.mark.parametrize("change, message", [
    (lambda r: r[:2] + r[-1:], r"has 1 event where its summary counts 4: events are missing"),
    (lambda r: r[:1] + r[:1] + r[1:], r"d.jsonl:2: a record of type \"header\" between the header and the summary"),
    (lambda r: r[:2] + [{**r[2], "type": "weird"}] + r[3:], r"d.jsonl:3: a record of type \"weird\""),
])
def test_records_missing_repeated_or_out_of_place_are_named(tmp_path, change, message):
    records = change(saved_lines(tmp_path))
    path = tmp_path / "d.jsonl"
    write_records(path, records)
    with pytest.raises(LogError, match=message):
        load_log(path)


@pytest.mark.parametrize("parent", ["self", "later", "first"])
def test_an_event_whose_parent_is_not_earlier_is_refused(tmp_path, parent):
    """A parent is entered before the calls inside it, so its seq is smaller: a log that says
    otherwise (an event its own parent, a cycle) is damaged, and the views that walk parents
    up would never stop on it."""
    path = tmp_path / "run.jsonl"
    small_trace(timing=False).save(path)
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    child = next(r for r in records if r.get("type") == "event" and (r["parent"] is not None or parent == "first"))
    child["parent"] = {"self": child["seq"], "later": len(records) - 3, "first": 1}[parent]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    with pytest.raises(LogError, match=rf"event {child['seq']}: its 'parent' is {child['parent']}: a parent must be an earlier event"):
        load_log(path)
