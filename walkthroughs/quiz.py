"""A shape quiz from a trace log: given a stage's inputs, the symbol table and its code line, what is the output shape?

`questions(header, events, summary, n, seed)` picks the stages (seeded, so a seed always gives the
same questions in the same order); `parse_answer` reads `1,1,4,1601,4096`, `[1, 1, 4, 1601, 4096]`
or symbolic `[B, I, C, N, D]` (any expression `tracer.symbols.evaluate` reads, such as `C*N8`);
`run_quiz` asks, checks and explains each answer with the stage's annotation and returns the score.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Iterator

from tracer.symbols import SymbolTable, evaluate

from .annotations import TemplateError, annotate
from .catalog import stage_index, title_of
from .context import all_stage_contexts
from .diff import log_symbols
from .summary import display_path, first_tensor, fmt_shape, plural, preset_label
from .terminal import prose

_SHAPE_COMMENT = re.compile(r"\s*#\s*\[.*$")  # the trailing `# [B, S, D]` comment: it is the answer


class QuizError(ValueError):
    """A log that gives no questions."""


@dataclass
class Question:
    number: int
    stage: str
    phase: str | None
    title: str
    inputs: list[str]  # "x: [B, S, D] = [1, 18, 4096]"
    code: str
    where: str  # file:line
    answer: list[int]
    answer_sym: list[str | None]
    explanation: str

    @property
    def expected(self) -> str:
        return fmt_shape({"shape": self.answer, "sym": self.answer_sym})


def code_line(src: dict) -> str:
    """The stage's source line without its trailing shape comment (which would give the answer away)."""
    return _SHAPE_COMMENT.sub("", (src or {}).get("code", "")).rstrip()


def questions(header: dict, events: list[dict], summary: dict, n: int, seed: int) -> list[Question]:
    """n stages (or all there are) whose first output is a tensor, in a seeded random order; decode steps are left out
    (their S is 1 per step, not the header's S)."""
    catalog = stage_index()
    pool = []
    for row, ctx in all_stage_contexts(header, events, summary):
        if row["phase"] == "decode":
            continue
        out = first_tensor(row["first"].get("outputs", []))
        if not out or "shape" not in out:
            continue
        pool.append((row, ctx, out))
    if not pool:
        raise QuizError("the log has no stage with a tensor output to ask about")
    picked = random.Random(seed).sample(pool, min(n, len(pool)))
    out_questions = []
    for number, (row, ctx, out) in enumerate(picked, 1):
        e = row["first"]
        title = title_of(row["stage"], catalog, "")
        try:
            what = prose(annotate(row["stage"], ctx).what).plain  # plain text: no Markdown backticks
        except TemplateError:
            what = ""
        inputs = [f"{display_path(i.get('path', ''))}: {fmt_shape(i)}" for i in e.get("inputs", [])]
        src = e.get("src") or {}
        out_questions.append(Question(
            number=number, stage=row["stage"], phase=row["phase"], title=title,
            inputs=inputs, code=code_line(src), where=f"{src.get('file', '?')}:{src.get('line', '?')}",
            answer=list(out["shape"]), answer_sym=list(out.get("sym") or [None] * len(out["shape"])),
            explanation=what or title,
        ))
    return out_questions


QUIT_WORDS = ("q", "quit")  # typed instead of an answer: stop here, scoring the questions answered


def symbol_env(header: dict, events: list[dict] | None = None) -> dict[str, int]:
    """The log's symbols (S as the prefill feeds it) with the run-together products (BI, BIC) the code comments use."""
    return SymbolTable(log_symbols(header, events or [])).env


def answer_parts(text: str) -> list[str] | None:
    """An answer's dimensions as written: `[B, S, D]`, `(1, 18, 64)`, `1 18 64`, `1x18x64`,
    `torch.Size([1, 18, 64])`; None if there are none."""
    text = (text or "").strip()
    if "=" in text:  # "[B, S, D] = [1, 18, 4096]": the sizes decide
        text = text.rsplit("=", 1)[1].strip()
    if text.startswith("torch.Size(") and text.endswith(")"):
        text = text[len("torch.Size("):-1].strip()
    if text[:1] in "[(" and text[-1:] in "])":
        text = text[1:-1]
    if "," not in text and re.fullmatch(r"[\w*]+(\s*[x×]\s*[\w*]+)+", text):  # 1x18x64, B×S×D
        text = re.sub(r"\s*[x×]\s*", ",", text)
    parts = [p.strip() for p in text.split(",")] if "," in text else text.split()
    if parts and parts[-1] == "":  # a trailing comma: (4,)
        parts.pop()
    return None if not parts or any(not p for p in parts) else parts


def parse_answer(text: str, env: dict[str, int]) -> list[int] | None:
    """`1,1,4,1601,4096`, `[1, 1, 4, 1601, 4096]`, `(B, I, C, N, D)` or `[B, I, C, N, 4096]` -> sizes; None if unreadable."""
    parts = answer_parts(text)
    sizes = [evaluate(p, env) for p in parts] if parts else [None]
    return None if any(s is None for s in sizes) else sizes


def wrong_letters(parts: list[str], expected: list[str | None], env: dict[str, int]) -> list[tuple[str, str]]:
    """(given, expected) for each dimension (`answer_parts`) answered with a single shape letter
    other than the one the trace labels it with: their sizes agree only by chance (in tiny,
    W = D = 64)."""
    return [(given, want) for given, want in zip(parts, expected) if given in env and want is not None and given != want]


def symbol_table_lines(symbols: dict[str, int], width: int = 96) -> list[str]:
    items = [f"{k}={v}" for k, v in symbols.items()]
    lines, line = [], ""
    for item in items:
        if line and len(line) + 2 + len(item) > width:
            lines.append(line)
            line = ""
        line = f"{line}  {item}" if line else item
    return lines + ([line] if line else [])


def run_quiz(header: dict, events: list[dict], summary: dict, n: int, seed: int,
             answers: Iterator[str | None], echo: Callable[[str], None], typed: bool = False) -> tuple[int, int]:
    """Ask n questions, reading each answer from `answers` (None: no answer); return (right, asked).
    Answers from a file are repeated in the output, and once they run out the questions left
    are shown unanswered; `typed` answers are not repeated, and their end (Ctrl-D), or `q`, stops
    the quiz."""
    qs = questions(header, events, summary, n, seed)
    symbols = log_symbols(header, events)
    env = symbol_env(header, events)
    model = preset_label(header)
    echo(f"llama-trace quiz · {model} · {plural(len(qs), 'question')} · seed {seed}")
    if len(qs) < n:
        echo(f"(this log has {len(qs)} stages to ask about, not {n})")
    letters = [k for k in ("B", "S", "D") if k in symbols] or list(symbols)[:3]
    sizes = [str(symbols[k]) for k in letters]
    echo(f"Give each output shape as numbers ({','.join(sizes)} or [{', '.join(sizes)}]) or with symbols ([{', '.join(letters)}]).")
    echo("symbols:")
    for line in symbol_table_lines(env):  # with the products the answers may use (BI, BIC)
        echo(f"  {line}")
    right, asked, stopped = 0, len(qs), ""
    for q in qs:
        echo("")
        phase = f" ({q.phase})" if q.phase else ""
        echo(f"Question {q.number}/{len(qs)}: {q.stage}{phase}" + (f" · {q.title}" if q.title else ""))
        echo(f"  code   {q.where}: {q.code}")
        for i, line in enumerate(q.inputs):
            echo(f"  {'input' if i == 0 else '':6} {line}")
        if not q.inputs:
            echo("  input  (none)")
        raw = next(answers, None)
        if typed and (raw is None or raw.strip().lower() in QUIT_WORDS):  # the end of typed input, or q
            why = "end of input" if raw is None else raw.strip()
            asked, stopped = q.number - 1, f" (stopped at question {q.number} of {len(qs)}: {why})"
            break
        if not typed:
            echo(f"  your answer: {'(none)' if raw is None else raw.strip()}")
        got = None if raw is None else parse_answer(raw, env)
        swapped = wrong_letters(answer_parts(raw), q.answer_sym, env) if got == q.answer else []
        if got == q.answer and not swapped:
            right += 1
            echo(f"  right: {q.expected}")
        elif swapped:
            named = "; ".join(f"{given} = {env[given]} only happens to equal {want} here" for given, want in swapped)
            echo(f"  wrong: {named}; the output is {q.expected}")
        else:
            why = "" if got is not None or raw is None else " (could not read it as a shape)"
            symbolic = got is not None and re.search(r"[A-Za-z]", raw or "")
            shown = f" = [{', '.join(str(s) for s in got)}]" if symbolic else ""
            echo(f"  wrong{why}{shown}; the output is {q.expected}")
        for line in q.explanation.splitlines():
            echo(f"  {line}".rstrip())
    echo("")
    echo(f"score: {right}/{asked}{stopped}")
    return right, asked
