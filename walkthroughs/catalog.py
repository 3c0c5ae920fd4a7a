"""The stage catalog (stages.toml): ids, titles, matching rules, functions to wrap, references;
and the options `llama-trace run` traces with, which come from it."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

CATALOG = Path(__file__).with_name("stages.toml")


@dataclass(frozen=True)
class Stage:
    id: str
    title: str
    match: tuple[str, ...]
    wrap: tuple[str, ...] = ()
    meta: str = ""
    hf: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@lru_cache(maxsize=1)
def load_catalog(path: Path = CATALOG) -> tuple[Stage, ...]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    stages = []
    for raw in data["stage"]:
        raw = dict(raw)
        known = {k: raw.pop(k) for k in ("id", "title", "match", "wrap", "meta", "hf") if k in raw}
        known["match"] = tuple(known.get("match", ()))
        known["wrap"] = tuple(known.get("wrap", ()))
        stages.append(Stage(**known, extra=raw))
    return tuple(stages)


def stage_rules() -> list[tuple[str, str]]:
    return [(pattern, s.id) for s in load_catalog() for pattern in s.match]


def trace_options(values: bool = True, timing: bool = True, ops: bool = False) -> dict:
    """The keywords `llama-trace run` passes to `tracer.trace`, less `source_roots`: the catalog's
    wrapped functions and stage rules; value summaries unless `--no-values`, timings unless
    `--no-timing`, op events with `--ops`."""
    return dict(ops=ops, values_summary=values, functions=wrapped_functions(), stage_rules=stage_rules(), timing=timing)


def wrapped_functions() -> list[str]:
    return [target for s in load_catalog() for target in s.wrap]


def stage_index() -> dict[str, Stage]:
    return {s.id: s for s in load_catalog()}


def title_of(stage_id: str, catalog: dict[str, Stage], default: str | None = None) -> str:
    """A stage's title from `catalog` (`stage_index()`); for a stage it lacks, `default`, or the id."""
    stage = catalog.get(stage_id)
    return stage.title if stage else (stage_id if default is None else default)
