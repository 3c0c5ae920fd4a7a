"""The event log: JSON Lines with a header, one line per event, and a closing summary.

    {"type": "header", "schema": 1, ...}
    {"type": "event", "seq": 0, "kind": "stage", ...}
    ...
    {"type": "summary", "events": 812, "stages": {...}, "error": null, ...}

Identical inputs give byte-identical logs once timing fields are left out (`timing=False`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

SCHEMA_VERSION = 1
TIMING_KEYS = ("time_ms",)


class LogError(ValueError):
    """A log file that cannot be read back."""


def _dumps(obj) -> str:
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
    lines = [_dumps(head)]
    for event in trace.events:
        lines.append(_dumps({"type": "event", **event}))
    closing = {
        "type": "summary",
        "events": len(trace.events),
        "stages": stage_totals(trace.events, trace.timing),
        "error": trace.error,
        **(summary or {}),
    }
    lines.append(_dumps(closing))
    return lines


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write to a temporary file in the target folder, then rename: never a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    except (OSError, UnicodeDecodeError) as err:
        raise LogError(f"cannot read {path}: {err.__class__.__name__}: {err}") from None
    return load_lines(text.splitlines(), str(path))


def load_lines(lines: list[str], path: str = "log") -> tuple[dict, list[dict], dict]:
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
    if not records or records[0].get("type") != "header":
        raise LogError(f"{path} does not start with a llama-trace header line")
    header = records[0]
    if header.get("schema") != SCHEMA_VERSION:
        raise LogError(f"{path} has schema version {header.get('schema')!r}; this llama-trace reads version {SCHEMA_VERSION}")
    if records[-1].get("type") != "summary":
        raise LogError(f"{path} has no closing summary line: the log is truncated")
    events = [r for r in records[1:-1] if r.get("type") == "event"]
    if any(e.get("seq") != i for i, e in enumerate(events)):
        raise LogError(f"{path}: events are out of order or missing (seq must run 0, 1, 2, …)")
    return header, events, records[-1]
