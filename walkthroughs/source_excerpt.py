"""Lines of our own source around a traced line, read from the project tree when it is there."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def excerpt(src: dict | None, context: int = 3) -> tuple[list[str], int, int] | None:
    """(lines, first line number, highlighted line number) around `src`, or None."""
    if not src:
        return None
    path = PROJECT_ROOT / src["file"]
    if not path.is_file() or path.suffix != ".py":
        return [src.get("code", "")], src["line"], src["line"]
    lines = path.read_text(encoding="utf-8").splitlines()
    line = src["line"]
    if not (1 <= line <= len(lines)) or lines[line - 1].strip() != src.get("code", "").strip():
        return [src.get("code", "")], line, line  # the file changed since the trace: show what ran
    start = max(1, line - context)
    end = min(len(lines), line + context)
    return lines[start - 1 : end], start, line
