"""Where did this happen? The first frame outside torch and the tracer, as `file:line` plus the
line's text, and the shape comment written on that line (`# [B, S, D]`), if any."""

from __future__ import annotations

import linecache
import os
import re
import sys
from functools import lru_cache
from pathlib import Path

import torch

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_TRACER_DIR = os.path.dirname(__file__) + os.sep
_SKIP_PREFIXES = (_TORCH_DIR, _TRACER_DIR, os.path.dirname(os.__file__) + os.sep + "contextlib.py")
_SHAPE_GROUP = re.compile(r"\[([^\[\]]*)\]")


_SKIPPED: dict[int, tuple[object, bool]] = {}  # id(code) -> (code, whether its frames are skipped)


def caller_frame(skip: int = 1, frame=None):
    """The innermost frame, from `frame` or else `sys._getframe(skip)` up, that is not torch's,
    the tracer's or contextlib's. (The verdict is remembered per code object, by id: hashing a
    code object hashes its contents.)"""
    if frame is None:
        frame = sys._getframe(skip)
    while frame is not None:
        code = frame.f_code
        known = _SKIPPED.get(id(code))
        if known is None or known[0] is not code:
            known = _SKIPPED[id(code)] = (code, code.co_filename.startswith(_SKIP_PREFIXES))
        if not known[1]:
            return frame
        frame = frame.f_back
    return None


@lru_cache(maxsize=None)
def display_path(filename: str, roots: tuple[str, ...]) -> str:
    """A stable path for logs: relative to the first root that contains the file, else the name."""
    for root in roots:
        if filename.startswith(root):
            return Path(os.path.relpath(filename, root)).as_posix()
    return Path(filename).name


def location(frame, roots: tuple[str, ...]) -> dict:
    return location_at(frame.f_code, frame.f_lineno, roots)


def location_at(code, line: int, roots: tuple[str, ...]) -> dict:
    """file:line, function and source text of a line of `code` (a code object)."""
    filename = code.co_filename
    return {
        "file": display_path(filename, roots),
        "line": line,
        "func": code.co_qualname if hasattr(code, "co_qualname") else code.co_name,
        "code": linecache.getline(filename, line).strip(),
        "_abs": filename,
    }


@lru_cache(maxsize=None)
def shape_hints(code: str) -> tuple[tuple[str, ...], ...]:
    """Bracketed shape groups in the line's trailing comment: `x = f(x)  # [B, S, D]` -> (("B","S","D"),)."""
    _, hash_, comment = code.partition("#")
    if not hash_:
        return ()
    groups = []
    for body in _SHAPE_GROUP.findall(comment):
        parts = tuple(p.strip() for p in body.split(","))
        if parts and all(parts):
            groups.append(parts)
    return tuple(groups)
