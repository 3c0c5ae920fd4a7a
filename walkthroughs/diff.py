"""Compare two trace logs: config, shape symbols, every stage's output shape, parameters, FLOPs, events.

Stages are aligned by (phase, stage id) in order of first appearance; a stage found in one log
only is listed as added (only in B) or removed (only in A). For each aligned stage the first
tensor outputs are compared dim by dim, and every changed dim is explained by the shape letter
the trace gave it (`D: 4096 → 8192`), or, for a dim without a letter, by the run-wide facts
(symbols, chunks, canvas, rows, cols) that take the same two values in A and B.

`compare(a, b)` gives plain data; `render_terminal` (rich) and `render_markdown` draw it.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tracer.symbols import SymbolTable

from .context import run_context
from .markdown import md_code, md_escape_cell, md_one_line, md_text
from .header import from_checkpoint, random_weights, values_summarised
from .summary import first_tensor, fmt_count, fmt_shape, phase_label, phase_length, plain, plural, stage_rows

ARROW = "→"
_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
# Run-wide facts (from walkthroughs.context) that may explain a dim the trace left without a letter.
FACTS = ("chunks", "rows", "cols", "canvas_w", "canvas_h", "resized_w", "resized_h", "image_w", "image_h", "prompt_tokens")


def log_symbols(header: dict, events: list[dict]) -> dict[str, int]:
    """The header's shape symbols, with S as the prefill feeds it (its phase event's positions),
    where the log has a prefill."""
    symbols = dict(header.get("symbols", {}))
    prefill = next((e for e in events if e["kind"] == "phase" and e.get("path") == "prefill"), None)
    length = phase_length(prefill)
    if "S" in symbols and length is not None:
        symbols["S"] = length
    return symbols


@dataclass
class Log:
    """One side of the comparison: a loaded log and what the diff reads from it."""

    label: str
    header: dict
    events: list[dict]
    summary: dict
    rows: list[dict] = field(init=False)
    symbols: dict = field(init=False)
    env: dict = field(init=False)
    facts: dict = field(init=False)
    phase_stage_events: Counter = field(init=False)  # (phase, stage) -> events

    def __post_init__(self) -> None:
        self.rows = stage_rows(self.events)
        self.phase_stage_events = Counter((e.get("phase"), e.get("stage")) for e in self.events)
        self.symbols = log_symbols(self.header, self.events)
        self.env = SymbolTable(self.symbols).env
        try:
            ctx = run_context(self.header, self.events, self.summary)
        except (KeyError, TypeError, IndexError, ZeroDivisionError):
            ctx = {}
        self.facts = {k: ctx[k] for k in FACTS if isinstance(ctx.get(k), int)}

    def stage_events(self, phase: str | None, stage: str) -> int:
        """Events of `stage` recorded in `phase` (the summary's per-stage counts add up the phases)."""
        return self.phase_stage_events[(phase, stage)]


@dataclass
class StageDiff:
    phase: str | None
    stage: str
    status: str  # "same", "changed", "added" (only in B), "removed" (only in A)
    a: str = ""  # output shape as shown
    b: str = ""
    changes: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # letters of the dims that kept their size
    params: tuple[int, int] = (0, 0)
    flops: tuple[int, int] = (0, 0)
    events: tuple[int, int] = (0, 0)
    calls: tuple[int, int] = (0, 0)

    def change_text(self) -> str:
        if self.status == "added":
            return "added (only in B)"
        if self.status == "removed":
            return "removed (only in A)"
        if self.changes:
            return "; ".join(self.changes)
        kept = ", ".join(self.unchanged)
        return f"{kept} unchanged" if kept else "unchanged"


@dataclass
class Diff:
    a: Log
    b: Log
    runs: list[tuple[str, str, str]]  # (what, A, B)
    config: list[tuple[str, str, str]]  # differing fields only
    config_same: int
    symbols: list[tuple[str, str, str]]  # differing symbols only
    symbols_same: list[str]
    stages: list[StageDiff]
    totals: list[tuple[str, str, str]]


# ---------------------------------------------------------------------------------------------
# comparison


def _show(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _pair(a, b) -> str:
    return f"{_show(a)} {ARROW} {_show(b)}"


def _dims(item: dict | None) -> tuple[list[int] | None, list]:
    """The sizes of one output (a tensor's shape, an image's width x height, a list's length) and their letters."""
    if not item:
        return None, []
    if "shape" in item:
        shape = list(item["shape"])
        sym = list(item.get("sym") or [None] * len(shape))
        return shape, sym
    if "image" in item:
        return list(item["image"]["size"]), [None, None]
    if "values" in item:
        return [item.get("length", len(item["values"]))], [None]
    return None, []


def _names(expr: str) -> list[str]:
    return _NAME.findall(expr)


def _explain_letter(letter: str, a: Log, b: Log, size_a: int, size_b: int) -> str:
    text = f"{letter}: {size_a} {ARROW} {size_b}"
    if letter in a.symbols and letter in b.symbols:
        return text
    # an expression (C*N8, 2T …): name the letters inside it that changed
    moved = [n for n in dict.fromkeys(_names(letter)) if a.env.get(n) != b.env.get(n)]
    if moved:
        text += " (" + ", ".join(f"{n}: {_show(a.env.get(n))} {ARROW} {_show(b.env.get(n))}" for n in moved) + ")"
    return text


def _explain_plain(index: int, a: Log, b: Log, size_a: int, size_b: int) -> str:
    """A dim without a letter: the symbols and run facts that go from size_a to size_b."""
    matches = [name for name, v in a.symbols.items() if v == size_a and b.symbols.get(name) == size_b]
    matches += [name for name, v in a.facts.items() if v == size_a and b.facts.get(name) == size_b]
    if matches:
        return f"{' = '.join(matches)}: {size_a} {ARROW} {size_b}"
    return f"dim {index}: {size_a} {ARROW} {size_b} (no letter)"


def compare_shapes(a: Log, b: Log, item_a: dict | None, item_b: dict | None) -> tuple[list[str], list[str]]:
    """(changes, unchanged letters) between two outputs."""
    shape_a, sym_a = _dims(item_a)
    shape_b, sym_b = _dims(item_b)
    if shape_a is None or shape_b is None:
        text_a = fmt_shape(item_a) if item_a else "—"
        text_b = fmt_shape(item_b) if item_b else "—"
        return ([] if text_a == text_b else [f"{text_a} {ARROW} {text_b}"]), []
    changes, unchanged = [], []
    if len(shape_a) != len(shape_b):
        changes.append(f"rank {len(shape_a)} {ARROW} {len(shape_b)}")
        return changes, unchanged
    for i, (da, db, la, lb) in enumerate(zip(shape_a, shape_b, sym_a, sym_b)):
        la, lb = (None if label is None or label.isdigit() else label for label in (la, lb))  # a comment's literal 2 is no letter
        letter = la if la == lb else None
        if da == db:
            if letter and letter not in unchanged:
                unchanged.append(letter)
            continue
        if letter:
            change = _explain_letter(letter, a, b, da, db)
        elif la or lb:  # the letter itself differs between the logs
            change = f"{la or '·'} {ARROW} {lb or '·'}: {da} {ARROW} {db}"
        else:
            change = _explain_plain(i, a, b, da, db)
        if change not in changes:  # [C*N8, C*N8], or a chunk's [R, R], says it once
            changes.append(change)
    return changes, unchanged


def _align(a: Log, b: Log) -> list[tuple[dict | None, dict | None]]:
    keys_a = [(r["phase"], r["stage"]) for r in a.rows]
    keys_b = [(r["phase"], r["stage"]) for r in b.rows]
    pairs: list[tuple[dict | None, dict | None]] = []
    matcher = difflib.SequenceMatcher(a=keys_a, b=keys_b, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            pairs += [(a.rows[i], b.rows[j]) for i, j in zip(range(i1, i2), range(j1, j2))]
        else:
            pairs += [(a.rows[i], None) for i in range(i1, i2)]
            pairs += [(None, b.rows[j]) for j in range(j1, j2)]
    return pairs


def _stage_diff(a: Log, b: Log, ra: dict | None, rb: dict | None) -> StageDiff:
    row = ra or rb
    out_a = first_tensor(ra["first"].get("outputs", [])) if ra else None
    out_b = first_tensor(rb["first"].get("outputs", [])) if rb else None
    d = StageDiff(
        phase=row["phase"], stage=row["stage"], status="same",
        a=(fmt_shape(out_a) if out_a else "—") if ra else "",
        b=(fmt_shape(out_b) if out_b else "—") if rb else "",
        params=(ra["params"] if ra else 0, rb["params"] if rb else 0),
        flops=(ra["flops"] if ra else 0, rb["flops"] if rb else 0),
        events=(a.stage_events(row["phase"], row["stage"]) if ra else 0, b.stage_events(row["phase"], row["stage"]) if rb else 0),
        calls=(ra["calls"] if ra else 0, rb["calls"] if rb else 0),
    )
    if ra is None:
        d.status = "added"
    elif rb is None:
        d.status = "removed"
    else:
        d.changes, d.unchanged = compare_shapes(a, b, out_a, out_b)
        if ra["calls"] != rb["calls"]:
            d.changes.append(f"calls: {ra['calls']} {ARROW} {rb['calls']}")
        d.status = "changed" if d.changes else "same"
    return d


def _image(header: dict) -> str:
    image = header.get("inputs", {}).get("image") or {}
    if not image:
        return "none"
    w, h = image.get("size", ["?", "?"])
    name = Path(str(image.get("path", ""))).name
    return f"{name} {w}x{h} {image.get('mode', '')}".strip()


def _images(ha: dict, hb: dict) -> tuple[str, str]:
    """The two runs' image rows; where they read the same but the pixels differ, each with the
    start of its pixels' SHA-256."""
    a, b = _image(ha), _image(hb)
    da, db = ((h.get("inputs", {}).get("image") or {}).get("pixels_sha256") for h in (ha, hb))
    if a == b and isinstance(da, str) and isinstance(db, str) and da != db:
        return f"{a}, pixels {da[:12]}…", f"{b}, pixels {db[:12]}…"
    return a, b


def _canvas(log: Log) -> str:
    f = log.facts
    return f"{f['canvas_w']}x{f['canvas_h']}" if f.get("canvas_w") else "—"


def _weights(header: dict) -> str:
    """Where the values came from: none (meta), a checkpoint, or random weights and their seed."""
    if random_weights(header):
        return f"random, seed {(header.get('generation') or {}).get('seed')}"
    if from_checkpoint(header):
        return f"checkpoint {header.get('model', {}).get('checkpoint') or '(path not recorded)'}"
    return "none (meta)"


def _generation(header: dict) -> str:
    gen = header.get("generation") or {}
    if header.get("mode") != "real":
        return "prefill only, shapes (no token)"
    if not gen.get("max_new_tokens"):
        return "prefill only (picks the next token)"
    how = (f"top-p {gen.get('top_p')} at temperature {gen.get('temperature')}, seed {gen.get('seed')}"
           if gen.get("temperature") else "greedy")
    return f"{how}, up to {plural(gen['max_new_tokens'], 'token')}"


def _traced(header: dict) -> str:
    parts = ["modules", "torch ops" if header.get("ops") else None,
             "value summaries" if values_summarised(header) else None,
             "timing" if header.get("timing") else None]
    return ", ".join(p for p in parts if p)


def _token(token) -> str | None:
    return f"{token.get('id')} {token.get('text')!r}" if isinstance(token, dict) else None


def _generated(summary: dict) -> str | None:
    g = summary.get("generated")
    return f"{plural(len(g.get('ids', [])), 'token')}: {g.get('text')!r}" if isinstance(g, dict) else None


def _chunks(log: Log) -> str:
    f = log.facts
    return f"{f['chunks']} ({f['rows']} x {f['cols']})" if f.get("chunks") else "—"


def compare(a: Log, b: Log) -> Diff:
    ha, hb = a.header, b.header
    runs = [
        ("model", ha.get("model", {}).get("preset"), hb.get("model", {}).get("preset")),
        ("mode", ha.get("mode"), hb.get("mode")),
        ("dtype", ha.get("dtype"), hb.get("dtype")),
        ("image", *_images(ha, hb)),
        ("canvas", _canvas(a), _canvas(b)),
        ("chunks (rows x cols)", _chunks(a), _chunks(b)),
        ("prompt", ha.get("inputs", {}).get("prompt"), hb.get("inputs", {}).get("prompt")),
        ("prompt tokens", a.summary.get("prompt_tokens"), b.summary.get("prompt_tokens")),
        ("weights", _weights(ha), _weights(hb)),
        ("generation", _generation(ha), _generation(hb)),
        ("traced", _traced(ha), _traced(hb)),
        ("next token", _token(a.summary.get("next_token")), _token(b.summary.get("next_token"))),
        ("generated", _generated(a.summary), _generated(b.summary)),
    ]
    runs = [(k, _show(x), _show(y)) for k, x, y in runs]

    ca, cb = ha.get("model", {}).get("config", {}), hb.get("model", {}).get("config", {})
    keys = list(dict.fromkeys([*ca, *cb]))
    config = [(k, _show(ca.get(k)), _show(cb.get(k))) for k in keys if ca.get(k) != cb.get(k)]

    sym_keys = list(dict.fromkeys([*a.symbols, *b.symbols]))
    symbols = [(k, _show(a.symbols.get(k)), _show(b.symbols.get(k))) for k in sym_keys if a.symbols.get(k) != b.symbols.get(k)]
    symbols_same = [k for k in sym_keys if a.symbols.get(k) == b.symbols.get(k)]

    stages = [_stage_diff(a, b, ra, rb) for ra, rb in _align(a, b)]

    def params(log: Log) -> int:  # the whole model's module event (path ""), else the largest one
        totals = [(e.get("params") or {}).get("total") or 0 for e in log.events if e["kind"] == "module"]
        return max(totals, default=0)

    flops_a, flops_b = (sum(e.get("flops", 0) for e in log.events) for log in (a, b))
    totals = [
        ("events", str(len(a.events)), str(len(b.events))),
        ("stages", str(len(a.rows)), str(len(b.rows))),
        ("parameters (whole model)", fmt_count(params(a)), fmt_count(params(b))),
        ("FLOPs", fmt_count(flops_a), fmt_count(flops_b)),
    ]
    return Diff(a, b, runs, config, len(keys) - len(config), symbols, symbols_same, stages, totals)


# ---------------------------------------------------------------------------------------------
# rendering


def _counts(pair: tuple[int, int], fmt=fmt_count) -> str:
    x, y = pair
    show = lambda n: fmt(n) if n else "0"  # noqa: E731
    return show(x) if x == y else f"{show(x)} {ARROW} {show(y)}"


def _cost_rows(diff: Diff) -> list[StageDiff]:
    """Stages with parameters or FLOPs on either side, or whose event counts differ."""
    return [s for s in diff.stages if any(s.params) or any(s.flops) or s.events[0] != s.events[1]]


def _stage_name(s: StageDiff) -> str:
    return s.stage if s.phase is None else f"{s.stage} ({s.phase})"


def _headline(diff: Diff) -> str:
    changed = sum(s.status == "changed" for s in diff.stages)
    same = sum(s.status == "same" for s in diff.stages)
    added = sum(s.status == "added" for s in diff.stages)
    removed = sum(s.status == "removed" for s in diff.stages)
    runs = [k for k, x, y in diff.runs if x != y]
    return (f"{len(diff.stages)} stages: {changed} changed, {same} unchanged, {added} added, {removed} removed · "
            f"{_differ(len(diff.config), 'config field')} ({diff.config_same} the same) · {_differ(len(diff.symbols), 'symbol')}"
            + (f" · the runs differ in {', '.join(runs)}" if runs else ""))


def _differ(n: int, noun: str | None = None) -> str:
    """'1 symbol differs', '2 symbols differ'; without a noun, '2 differ'."""
    return f"{plural(n, noun) if noun else n} {'differs' if n == 1 else 'differ'}"


def render_terminal(diff: Diff, console: Console) -> None:
    """The diff as rich tables. What comes from the logs (prompts, file names, config values)
    goes in as text (`summary.plain`) or escaped: a prompt holding "[/]" is not markup."""
    def table(title: str, *columns: str, right: tuple[int, ...] = ()) -> Table:
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=escape(title), title_justify="left", title_style="bold")
        for i, c in enumerate(columns):
            t.add_column(c, justify="right" if i in right else "left", overflow="fold")
        return t

    console.print(f"[bold]llama-trace diff[/] A: {escape(diff.a.label)}  B: {escape(diff.b.label)}")
    console.print(_headline(diff))
    t = table("runs", "", "A", "B", "")
    for k, x, y in diff.runs:
        t.add_row(*plain(k, x, y, "" if x == y else "differs"))
    console.print(t)

    if diff.config:
        t = table(f"config: {_differ(len(diff.config), 'field')}", "field", "A", "B")
        for row in diff.config:
            t.add_row(*plain(*row))
        console.print(t)
    else:
        console.print("[bold]config[/]: the same")

    if diff.symbols:
        t = table(f"symbols: {_differ(len(diff.symbols))}", "symbol", "A", "B")
        for row in diff.symbols:
            t.add_row(*plain(*row))
        console.print(t)
    console.print(f"symbols unchanged: {', '.join(diff.symbols_same) or 'none'}", markup=False)

    t = None
    phase = object()
    for i, s in enumerate(diff.stages, 1):
        if s.phase != phase:
            if t is not None:
                console.print(t)
            phase = s.phase
            t = table(f"output shapes · {phase_label(phase, diff.a.events if phase is None or s.status != 'added' else diff.b.events)}",
                      "#", "stage", "A", "B", "change", right=(0,))
        style = {"changed": "yellow", "added": "green", "removed": "red"}.get(s.status, "dim")
        t.add_row(*plain(str(i), s.stage, s.a, s.b), Text(s.change_text(), style=style))
    if t is not None:
        console.print(t)

    t = table("parameters, FLOPs and events per stage", "stage", "params", "FLOPs", "events")
    for s in _cost_rows(diff):
        t.add_row(*plain(_stage_name(s), _counts(s.params), _counts(s.flops), _counts(s.events, str)))
    console.print(t)

    t = table("totals", "", "A", "B", "")
    for k, x, y in diff.totals:
        t.add_row(*plain(k, x, y, "" if x == y else "differs"))
    console.print(t)


def _md_cell(text: str) -> str:
    return md_escape_cell(str(text)) or " "


def _md_value(text: str) -> str:
    """A value from a log (a prompt, a path, a config value) as a cell that shows it as it is."""
    return md_one_line(md_text(str(text))) or " "


def _md_shape(text: str) -> str:
    """A shape as code, as the page shows it: [BI, C*N8] as Markdown would set C in italics."""
    return _md_cell(md_code(text)) if text and text != "—" else _md_cell(text)


def _md_table(header: list[str], rows: list[list[str]], values: tuple[int, ...] = ()) -> list[str]:
    """A Markdown table; the columns numbered in `values` hold the logs' values (`_md_value`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join((_md_value if i in values else _md_cell)(c) for i, c in enumerate(row)) + " |" for row in rows]
    return lines


def render_markdown(diff: Diff) -> str:
    out = ["# llama-trace diff", "", f"A: {md_code(diff.a.label)}  ", f"B: {md_code(diff.b.label)}", "", _headline(diff), "", "## Runs", ""]
    out += _md_table(["", "A", "B", ""], [[k, x, y, "" if x == y else "differs"] for k, x, y in diff.runs], values=(1, 2))
    out += ["", "## Config", ""]
    if diff.config:
        out += _md_table(["field", "A", "B"], [list(r) for r in diff.config], values=(1, 2))
    else:
        out.append("The same.")
    out += ["", "## Symbols", ""]
    if diff.symbols:
        out += _md_table(["symbol", "A", "B"], [list(r) for r in diff.symbols])
        out.append("")
    out.append(f"Unchanged: {', '.join(f'`{s}`' for s in diff.symbols_same) or 'none'}")
    phase = object()
    for i, s in enumerate(diff.stages, 1):
        if s.phase != phase:
            phase = s.phase
            events = diff.b.events if s.status == "added" else diff.a.events
            out += ["", f"## Output shapes · {phase_label(phase, events)}", ""]
            out += _md_table(["#", "stage", "A", "B", "change"], [])
        out.append("| " + " | ".join([str(i), f"`{s.stage}`", _md_shape(s.a), _md_shape(s.b), _md_value(s.change_text())]) + " |")
    out += ["", "## Parameters, FLOPs and events per stage", ""]
    out += _md_table(["stage", "params", "FLOPs", "events"],
                     [[f"`{_stage_name(s)}`", _counts(s.params), _counts(s.flops), _counts(s.events, str)] for s in _cost_rows(diff)])
    out += ["", "## Totals", ""]
    out += _md_table(["", "A", "B", ""], [[k, x, y, "" if x == y else "differs"] for k, x, y in diff.totals])
    return "\n".join(out) + "\n"


TEXT_WIDTH = 140  # of the plain text a file gets (and a pipe, where no COLUMNS is set)


def render_text(diff: Diff, width: int = TEXT_WIDTH) -> str:
    """The terminal rendering as plain text, `width` wide (a file's and the golden files': TEXT_WIDTH)."""
    import io

    console = Console(record=True, no_color=True, width=width, file=io.StringIO(), highlight=False, soft_wrap=False)
    render_terminal(diff, console)
    text = console.export_text()
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
