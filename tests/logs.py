"""Runs as the tests read them: a traced run's log, as a saved log loads back; and log records
with one field changed, for the tests of what a malformed log says."""

import copy

from tracer.log import build_lines, dump_line, load_lines
from walkthroughs.defaults import DEFAULT_PROMPT


def logged(preset: str, prompt: str = DEFAULT_PROMPT, image=None, **options) -> tuple:
    """(header, events, summary, image) of a run without timings (`options`: run's, e.g. max_new_tokens)."""
    from walkthroughs.run import run  # here: the tracer's tests use this module too

    result = run(image, prompt, preset=preset, timing=False, **options)
    return (*load_lines(build_lines(result.trace, result.header, result.summary)), result.image)


def lines_of(header: dict, events: list[dict], summary: dict) -> list[str]:
    """A loaded log's lines as llama-trace writes them (no spaces after separators)."""
    return [dump_line(r) for r in (header, *({"type": "event", **e} for e in events), summary)]


DELETE = object()  # as `changed`'s value: remove the field


def changed(record: dict, where: tuple, value=DELETE) -> dict:
    """A deep copy of `record` with record[where[0]]…[where[-1]] set to `value`, or removed."""
    record = copy.deepcopy(record)
    inner = record
    for key in where[:-1]:
        inner = inner[key]
    if value is DELETE:
        del inner[where[-1]]
    else:
        inner[where[-1]] = value
    return record


def without(record: dict, *where) -> dict:
    return changed(record, where)


def with_value(record: dict, value, *where) -> dict:
    return changed(record, where, value)
