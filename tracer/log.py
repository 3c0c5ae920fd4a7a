"""The event log: JSON Lines with a header, one line per event, and a closing summary.

    {"type": "header", "schema": 1, ...}
    {"type": "event", "seq": 0, "kind": "stage", ...}
    ...
    {"type": "summary", "events": 812, "stages": {...}, "error": null, ...}

Identical inputs give byte-identical logs once timing fields are left out (`timing=False`).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path

SCHEMA_VERSION = 1
TIMING_KEYS = ("time_ms",)


class LogError(ValueError):
    """A log file that cannot be read back."""


def dump_line(obj) -> str:
    """One JSON Lines record as a log holds it: UTF-8 as is, no spaces, no NaN."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def stage_totals(events: list[dict], timing: bool) -> dict:
    """Per stage: event counts, FLOPs (exclusive, summed), time of the stage's outermost events."""
    totals: dict[str, dict] = {}
    by_seq = {e["seq"]: e for e in events}
    for e in events:
        stage = e.get("stage") or "(none)"
        t = totals.setdefault(stage, {"events": 0, "flops": 0})
        t["events"] += 1
        t["flops"] += e.get("flops", 0)
        parent = by_seq.get(e.get("parent"))
        if timing and "time_ms" in e and (parent is None or (parent.get("stage") or "(none)") != stage):
            t["time_ms"] = round(t.get("time_ms", 0.0) + e["time_ms"], 3)
    return totals


def build_lines(trace, header: dict | None = None, summary: dict | None = None) -> list[str]:
    head = {"type": "header", "schema": SCHEMA_VERSION, **(header or {})}
    if trace.symbols.symbols:
        head.setdefault("symbols", trace.symbols.to_dict())
    lines = [dump_line(head)]
    for event in trace.events:
        lines.append(dump_line({"type": "event", **event}))
    closing = {
        "type": "summary",
        "events": len(trace.events),
        "stages": stage_totals(trace.events, trace.timing),
        "error": trace.error,
        **(summary or {}),
    }
    lines.append(dump_line(closing))
    return lines


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write to a temporary file in the target folder, then rename: never a half-written file.
    Through a symlink, its target is the file replaced; a special file (a FIFO, /dev/null) is
    written through, never replaced."""
    atomic_write_files({Path(path): str.encode(text, "utf-8")})


def atomic_write_files(files: dict[Path, bytes]) -> None:
    """Write several files together: each to a temporary file in its target folder, then, once
    all are written, each renamed into place. A failure while writing (a full disk, a folder
    where a file goes) leaves nothing new behind; only a rename failing midway could leave some
    renamed. The OSError names the file the caller asked for (not a temporary one). A special
    file (a FIFO, /dev/null) is written through, never replaced: after the others are written,
    before they are renamed, so that its failing (/dev/full) leaves nothing new behind either."""
    staged: list[tuple[str, Path, object]] = []  # (temporary file, the file it replaces, the path asked for)
    special = {path: data for path, data in files.items() if is_special_file(Path(path))}
    try:
        for path, data in files.items():
            if path in special:
                continue
            target = Path(path).resolve()  # through a symlink: its target is the file replaced
            try:
                if target.is_dir():
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
                staged.append((tmp, target, path))
                os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            except OSError as err:
                raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        for path, data in special.items():
            try:
                with open(path, "wb") as f:
                    f.write(data)
            except OSError as err:
                raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        for tmp, target, path in staged:
            try:
                os.replace(tmp, target)
            except OSError as err:
                raise OSError(err.errno, err.strerror or str(err), str(path)) from None
    finally:
        for tmp, *_ in staged:
            Path(tmp).unlink(missing_ok=True)  # renamed already, or left over from a failure


def is_special_file(path: Path) -> bool:
    """An existing file that is not a regular one (after symlinks): a device, a FIFO, a socket."""
    try:
        return not stat.S_ISREG(path.stat().st_mode) and not path.is_dir()
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_log(path, trace, header: dict | None = None, summary: dict | None = None) -> None:
    atomic_write_text(path, "\n".join(build_lines(trace, header, summary)) + "\n")


def load_log(path) -> tuple[dict, list[dict], dict]:
    """Read a log back: (header, events, summary). Raises LogError with a one-line reason."""
    path = Path(path)
    if path.is_dir():
        raise LogError(f"{path} is a folder; pass a .jsonl log file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:  # a picture, an archive, a UTF-16 file: the decoder's byte offsets help no one
        raise LogError(f"{path} is not a text file: is this a llama-trace log (JSON Lines)?") from None
    except FileNotFoundError:
        raise LogError(f"{path} not found: pass a log written by `llama-trace run --format json -o FILE`") from None
    except OSError as err:
        raise LogError(f"cannot read {path} ({err.strerror or err}); pass a readable log file") from None
    return load_lines(text.splitlines(), str(path))


def load_lines(lines: list[str], path: str = "log") -> tuple[dict, list[dict], dict]:
    records = _parse(lines, path)
    if not records:
        raise LogError(f"{path} is empty: write the log again with `llama-trace run --format json -o {path}`")
    if records[0].get("type") != "header":
        raise LogError(f"{path} does not start with a llama-trace header line")
    header = records[0]
    if header.get("schema") != SCHEMA_VERSION:
        has = f"schema version {header['schema']!r}" if header.get("schema") is not None else "no schema version"
        raise LogError(f"{path} has {has}; this llama-trace reads version {SCHEMA_VERSION}")
    if records[-1].get("type") != "summary":
        raise LogError(f"{path} has no closing summary line: the log is truncated")
    summary = records[-1]
    events = records[1:-1]
    bad = _structure_problem(header, events, summary)
    if bad:
        record, problem = bad
        index = next(i for i, r in enumerate(records) if r is record)
        number = [n for n, line in enumerate(lines, 1) if line.strip()][index]  # records skip blank lines
        raise LogError(f"{path}:{number}: {problem}; the log is damaged or not a llama-trace log: write it again")
    if summary["events"] != len(events):
        raise LogError(f"{path} has {len(events)} event{'s' * (len(events) != 1)} where its summary counts {summary['events']}:"
                       " events are missing or repeated (the log was cut or edited); write it again")
    return header, events, summary


def _parse(lines: list[str], path: str) -> list[dict]:
    """The JSON object of every non-blank line."""
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines) and records and records[0].get("type") == "header":
                raise LogError(f"{path}: the last line ({number}) is cut off: the log is truncated; write it again") from None
            raise LogError(f"{path}:{number} is not JSON ({err.msg}); is this a llama-trace log (JSON Lines)?") from None
        if not isinstance(records[-1], dict):
            raise LogError(f"{path}:{number} is not a JSON object; is this a llama-trace log?")
    return records


# The structural check: the tracer's own fields must have the types that readers index, sum and
# compare without looking (schema.json has the whole schema; jsonschema would take longer than
# parsing the JSON). `_event_problem` runs on every event: about a tenth of the parsing time.
# (A second, unrolled pass that only said yes or no saved 15 ms on a 9,000-event log: not worth
# listing every field twice.)

_NULL = type(None)
_REQUIRED = object()  # a field every event has (schema.json), null or not
_EVENT_FIELDS = (  # key, its value when missing, the types it may have
    ("seq", _REQUIRED, (int,)), ("kind", _REQUIRED, (str,)), ("stage", _REQUIRED, (str, _NULL)),
    ("phase", _REQUIRED, (str, _NULL)), ("path", _REQUIRED, (str, _NULL)), ("name", _REQUIRED, (str, _NULL)),
    ("parent", _REQUIRED, (int, _NULL)), ("depth", _REQUIRED, (int,)), ("flops", 0, (int,)), ("time_ms", 0, (int, float)),
    ("inputs", _REQUIRED, (list,)), ("outputs", _REQUIRED, (list,)),
)
_INTS = {int}


def _structure_problem(header: dict, events: list[dict], summary: dict) -> tuple[dict, str] | None:
    """The first record that does not fit, and what is wrong with it; None when all fit."""
    if problem := _header_problem(header):
        return header, problem
    for i, event in enumerate(events):
        if event.get("type") != "event":
            return event, f"a record of type {shown(event.get('type'))} between the header and the summary, where only events belong"
        if problem := _event_problem(event, i):
            return event, f"event {i}: {problem}"
    if problem := _summary_problem(summary):
        return summary, problem
    return None


def _event_problem(e: dict, index: int) -> str:
    """What is wrong with the event at `index`; "" when nothing is."""
    seq = e.get("seq")
    if type(seq) is int and seq != index:
        return f"its 'seq' is {seq}: events are out of order or missing (seq must run 0, 1, 2, …)"
    for key, default, allowed in _EVENT_FIELDS:
        if type(e.get(key, default)) not in allowed:
            return f"'{key}' must be {_kinds(allowed)} ({found(e, key)})"
    parent = e.get("parent")
    if parent is not None and not 0 <= parent < index:  # a call starts before the calls inside it: no cycles
        earlier = f"0 to {index - 1}" if index else "the first event has none"
        return f"its 'parent' is {parent}: a parent must be an earlier event ({earlier})"
    for side in ("inputs", "outputs"):
        for i, item in enumerate(e.get(side, [])):
            if type(item) is not dict:
                return f"{side}[{i}] must be an object (found {shown(item)})"
            if "shape" in item and (type(item["shape"]) is not list or not all(type(d) is int for d in item["shape"])):
                return f"{side}[{i}] 'shape' must be a list of integers ({found(item, 'shape')})"
    return ""


def _header_problem(header: dict) -> str:
    symbols = header.get("symbols", {})
    if type(symbols) is not dict or not set(map(type, symbols.values())) <= _INTS:
        return f"the header's 'symbols' must map letters to integers ({found(header, 'symbols')})"
    return ""


def _summary_problem(summary: dict) -> str:
    if type(summary.get("events")) is not int:
        return f"the summary's 'events' must be an integer, the number of events ({found(summary, 'events')})"
    stages = summary.get("stages", {})
    if type(stages) is not dict or not set(map(type, stages.values())) <= {dict}:
        return f"the summary's 'stages' must map stages to objects ({found(summary, 'stages')})"
    if type(summary.get("error")) not in (dict, _NULL):
        return f"the summary's 'error' must be an object or null ({found(summary, 'error')})"
    return ""


_KIND_NAMES = {float: "a number", int: "an integer", str: "a string", list: "a list", dict: "an object", _NULL: "null"}


def _kinds(allowed: tuple) -> str:
    """(int, NoneType) -> 'an integer or null'; (int, float) -> 'a number'."""
    return " or ".join(name for t, name in _KIND_NAMES.items() if t in allowed and not (t is int and float in allowed))


def found(record: dict, key: str) -> str:
    """`record[key]` for a one-line error: 'found …' or 'it is missing'."""
    return f"found {shown(record[key])}" if key in record else "it is missing"


def shown(value) -> str:
    """A bad value as it stood in the log, cut short: the message stays one line."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."
