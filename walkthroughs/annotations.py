"""The prose of each stage (annotations.toml), filled in from the trace's facts."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

ANNOTATIONS = Path(__file__).with_name("annotations.toml")


@dataclass(frozen=True)
class Annotation:
    what: str = ""
    why: str = ""
    gotchas: tuple[str, ...] = ()
    hf: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)


class TemplateError(KeyError):
    """A placeholder that the trace does not provide."""


@lru_cache(maxsize=1)
def _load(path: Path = ANNOTATIONS) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def load_annotations(path: Path = ANNOTATIONS) -> dict[str, dict]:
    """Each stage's prose, by stage id."""
    return _load(path).get("stage", {})


def load_phrases(path: Path = ANNOTATIONS) -> dict[str, str]:
    """The phrases the context puts into the prose only when the run calls for it ([phrase] table)."""
    return _load(path).get("phrase", {})


def phrase(name: str) -> str:
    return load_phrases()[name]


# "`1` chunks" -> "`1` chunk": the nouns the prose counts, after a filled-in number of one
_ONE = re.compile(r"(`1`(?: empty| real| more)? )(chunk|slot|position|row|time|call|block|token|square|layer|step)s\b")


def fill(template: str, ctx: dict, where: str) -> str:
    try:
        text = template.format_map(ctx)
    except KeyError as err:
        raise TemplateError(f"{where}: the trace has no value for {{{err.args[0]}}}") from None
    return _ONE.sub(r"\1\2", text)


def annotate(stage_id: str, ctx: dict) -> Annotation:
    raw = load_annotations().get(stage_id, {})
    return Annotation(
        what=fill(raw.get("what", ""), ctx, f"{stage_id}.what").strip(),
        why=fill(raw.get("why", ""), ctx, f"{stage_id}.why").strip(),
        gotchas=tuple(fill(g, ctx, f"{stage_id}.gotchas").strip() for g in raw.get("gotchas", [])),
        hf=fill(raw.get("hf", ""), ctx, f"{stage_id}.hf").strip(),
    )
