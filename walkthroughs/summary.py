"""A compact stage-by-stage summary of a trace, for the terminal (rich) or as plain text."""

from __future__ import annotations

import re

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tracer.values import SIGNIFICANT_DIGITS

from .catalog import stage_index, title_of
from .header import RANDOM_TEXT, mode_label, random_weights, values_summarised


MAX_SHOWN_INTS = 4  # a list of ints this short is shown whole, e.g. a canvas size (1120, 560)
MAX_TABLE_ITEMS = 8  # inputs (and outputs) listed per event in a walkthrough's tables: e.g. all 8 candidate canvases of the 11B


_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # control characters, line breaks aside


def visible(text: str) -> str:
    """Text from a log (a prompt, a file name) with its control characters shown as `\\x1b`
    escapes, so that no escape sequence, bell or carriage return reaches a terminal or a page
    raw. Line breaks stay: each view shows them its own way."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def preset_label(header: dict) -> str:
    """The log's model name for a title (a checkpoint run's names its folder, which may hold anything)."""
    return visible(str(header.get("model", {}).get("preset", "?")))


def fmt_shape(item: dict) -> str:
    shape = item.get("shape")
    if shape is None:
        if "image" in item:
            w, h = item["image"]["size"]
            return f"image {w}x{h} {item['image']['mode']}"
        if "values" in item:
            return f"{item.get('length', len(item['values']))} ints"
        return visible(str(item.get("value", item.get("type", ""))))
    sym = item.get("sym")
    concrete = "[" + ", ".join(str(s) for s in shape) + "]"
    if not sym:
        return concrete
    letters = "[" + ", ".join(s if s is not None else str(d) for s, d in zip(sym, shape)) + "]"
    return f"{letters} = {concrete}" if letters != concrete else concrete


def fmt_item(item: dict) -> str:
    """One input or output in a walkthrough's table, where it has its own row and name: a short
    list of ints in full, e.g. a canvas (1120, 560) in parentheses (a shape has brackets), else
    `fmt_shape`. (A stage's one-line summary keeps "2 ints": its first output need not be the
    one that matters.)"""
    values = item.get("values")
    if "shape" not in item and values is not None and len(values) == item.get("length", len(values)) <= MAX_SHOWN_INTS:
        return "(" + ", ".join(str(v) for v in values) + ")"
    return fmt_shape(item)


INTEGER_DTYPES = ("int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8", "bool")


def stats_parts(item: dict) -> tuple[str, list[str]]:
    """An item's value summary in one line, "range [min, max] μ=mean σ=std", and its NaN and Inf
    counts as flags for the caller to make loud ("", [] where it has none). An integer or
    boolean tensor's range reads as integers while they are exact: summaries keep
    SIGNIFICANT_DIGITS, so past 10**6 it stays a float (1.09951e+12 would print as 1099510000000)."""
    s = item.get("stats")
    if not s:
        return "", []
    lo, hi = s["min"], s["max"]
    if item.get("dtype") in INTEGER_DTYPES:
        lo, hi = (int(v) if type(v) is float and abs(v) < 10**SIGNIFICANT_DIGITS else v for v in (lo, hi))  # "nan" stays a word
    return f"range [{lo}, {hi}] μ={s['mean']} σ={s['std']}", nonfinite_counts(s)


def nonfinite_counts(stats: dict) -> list[str]:
    """A value summary's NaN and Inf counts, where not zero: ["NaN×3", "Inf×1"]."""
    return [f"{name}×{stats[key]}" for name, key in (("NaN", "nan"), ("Inf", "inf")) if stats.get(key)]


def table_items(items: list[dict]) -> tuple[list[dict], int]:
    """The first `MAX_TABLE_ITEMS` of an event's inputs or outputs, and how many are left out."""
    return items[:MAX_TABLE_ITEMS], max(len(items) - MAX_TABLE_ITEMS, 0)


def display_path(path: str) -> str:
    """`['x']` -> `x`, `['parts'][0]` -> `parts[0]`, `[1]` -> `[1]`, `` -> `·` (the value itself)."""
    m = re.match(r"^\['([^']*)'\](.*)$", path)
    if m:
        return m.group(1) + m.group(2)
    return path.lstrip(".") or "·"


def fmt_count(n: int | float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))


def stage_rows(events: list[dict]) -> list[dict]:
    """One row per stage, in order of first appearance: its first outermost event, call count,
    parameters, FLOPs and time."""
    rows: dict[tuple, dict] = {}
    counted: set[tuple] = set()  # (phase, stage, path): a module's parameters count once, however often it runs
    by_seq = {e["seq"]: e for e in events}
    for e in events:
        stage = e.get("stage")
        if stage is None or e["kind"] == "op":
            continue
        parent = by_seq.get(e.get("parent"))
        outermost = parent is None or parent.get("stage") != stage
        key = (e.get("phase"), stage)
        row = rows.get(key)
        if row is None:
            row = rows[key] = {"stage": stage, "phase": e.get("phase"), "first": e, "calls": 0, "params": 0, "flops": 0, "time_ms": 0.0}
        if outermost:
            row["calls"] += 1
            if (*key, e["path"]) not in counted:
                counted.add((*key, e["path"]))
                row["params"] += (e.get("params") or {}).get("total") or 0
            row["time_ms"] += e.get("time_ms", 0.0)
        row["flops"] += e.get("flops", 0)
    return list(rows.values())


def taking_turns(rows: list[tuple[dict, dict]], events: list[dict]) -> set[int]:
    """The indices i of the rows whose stage first ran between two calls of row i-1's stage, in
    the same phase (the prefill, or one decode step) and not inside one of those calls: the
    decoder's cross-attention layers between its self-attention layers."""
    phase, parent, stage = {}, {}, {}  # by seq: the phase event it ran in, its parent, its stage
    earliest, last = {}, {}  # (stage, phase event) -> the seq of the stage's first, last event in it
    for e in events:  # a parent comes before its children
        seq = e["seq"]
        parent[seq], stage[seq] = e.get("parent"), e.get("stage")
        phase[seq] = seq if e["kind"] == "phase" else phase.get(e.get("parent"))
        earliest.setdefault((stage[seq], phase[seq]), seq)
        last[stage[seq], phase[seq]] = seq
    turns = set()
    for i in range(1, len(rows)):
        a, b = rows[i - 1][0], rows[i][0]
        first = b["first"]["seq"]
        up = parent[first]
        while up is not None and stage[up] != a["stage"]:
            up = parent.get(up)
        inside = up is not None
        key = (a["stage"], phase[first])
        if a["phase"] == b["phase"] and not inside and earliest.get(key, first) < first < last.get(key, first):
            turns.add(i)
    return turns


def first_nonfinite(events: list[dict]) -> tuple[dict, dict] | None:
    """(event, item) where NaN or Inf first appear: of the events with a NaN or Inf in an output's
    value summary, the first to finish. That is the first, in order, of those with no such event
    inside them (an event finishes after the events inside it, and before the ones after it that
    are not). Every value computed from it afterwards is suspect."""
    bad = {}
    for e in events:
        item = next((i for i in e.get("outputs", []) if (i.get("stats") or {}).get("nan") or (i.get("stats") or {}).get("inf")), None)
        if item is not None:
            bad[e["seq"]] = (e, item)
    by_seq = {e["seq"]: e for e in events}
    inner = set(bad)  # those with no bad event inside them
    for seq in bad:
        parent = by_seq[seq].get("parent")
        while parent is not None:
            inner.discard(parent)
            parent = by_seq.get(parent, {}).get("parent")
    return bad[min(inner)] if inner else None


def nonfinite_line(events: list[dict]) -> str | None:
    """One line naming where NaN or Inf first appear, or None where they never do."""
    found = first_nonfinite(events)
    if found is None:
        return None
    e, item = found
    s = item["stats"]
    counts = " and ".join(nonfinite_counts(s))
    where = e["path"] or e["name"]
    return (f"NaN/Inf first appear in stage {e.get('stage')}, event {e['seq']} ({where}, output {display_path(item['path'])}): "
            f"{counts}; everything computed from it is suspect")


def print_nonfinite(events: list[dict], console: Console) -> None:
    """The `nonfinite_line` warning, in red, where the run has NaN or Inf."""
    alarm = nonfinite_line(events)
    if alarm:
        console.print(f"[bold red]{escape(alarm)}[/]")


def phase_length(phase_event: dict | None) -> int | None:
    """S of a phase event (prefill, a decode step): how many positions it feeds, from its info."""
    positions = ((phase_event or {}).get("info") or {}).get("positions")
    if isinstance(positions, list) and len(positions) == 2 and all(type(p) is int for p in positions):
        return positions[1] - positions[0]
    return None


def phase_label(phase: str | None, events: list[dict]) -> str:
    """'prefill', or the folded decode steps: 'decode steps 1-15 (×15, one position each)'."""
    if phase is None:
        return "before the first forward step"
    if phase != "decode":
        return phase
    steps = [e["info"]["step"] for e in events if e["kind"] == "phase" and e["path"] == "decode"]
    if not steps:
        return phase
    if len(steps) == 1:
        return f"decode step {steps[0]} (one position)"
    return f"decode steps {steps[0]}-{steps[-1]} (×{len(steps)}, the same shapes, one position each)"


def is_letter(name: str) -> bool:
    """A shape letter (B, N8, Dh), not an expression of letters (C*N8, Dh/2)."""
    return name[:1].isupper() and name.isidentifier()


def plural(n: int, noun: str) -> str:
    """'1 token', '3 tokens'."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def stage_title(row: dict, events: list[dict], catalog: dict) -> tuple[str, str]:
    """A stage's title in the terminal views (the catalog's, else its id), and what goes beside
    it, dimmed: the id and the phase, as in `text.layer · prefill`."""
    sid = row["stage"]
    phase = f" · {phase_label(row['phase'], events)}" if row["phase"] else ""
    return title_of(sid, catalog), f"{sid}{phase}"


def first_tensor(items: list[dict]) -> dict | None:
    return next((i for i in items if "shape" in i), items[0] if items else None)


def result_lines(header: dict, summary: dict) -> list[str]:
    """What the run produced, in plain text: the generated text (or the next token), how it was
    chosen when sampled, and the prefill's five likeliest next tokens."""
    lines = []
    if "generated" in summary:
        g = summary["generated"]
        lines.append(f"generated {plural(len(g['ids']), 'token')}, stopped at {g['stopped']}: {g['text']!r}"
                     + (RANDOM_TEXT if random_weights(header) else ""))
    elif "next_token" in summary:
        nt = summary["next_token"]
        lines.append(f"next token: {nt['id']} {nt['text']!r}")
    gen = header.get("generation") or {}
    if lines and gen.get("temperature"):
        lines.append(f"sampled: temperature {gen['temperature']}, top-p {gen.get('top_p')}, seed {gen.get('seed')}")
    if summary.get("top5"):
        lines.append("top 5 after the prefill: " + ", ".join(f"{t['text']!r} ({t['id']}) {t['logit']}" for t in summary["top5"]))
    return lines


def print_results(header: dict, summary: dict, console: Console, gap: bool = False) -> None:
    """`result_lines` as text (generated text may hold "[/]"), after a blank line where `gap` and there are any."""
    lines = result_lines(header, summary)
    if gap and lines:
        console.print()
    for line in lines:
        console.print(line, markup=False)


def plain(*cells) -> list[Text]:
    """Table cells holding what a log says (a prompt, a path, a shape), as text, not rich markup."""
    return [Text(visible(str(c))) for c in cells]


def stage_label(row: dict) -> str:
    """A row's stage id, with its call count where it ran more than once: `text.layer ×8`."""
    return row["stage"] + (f" ×{row['calls']}" if row["calls"] > 1 else "")


def _row_cells(i: int, row: dict, catalog: dict, timing: bool) -> list[str]:
    e = row["first"]
    title = title_of(row["stage"], catalog, "")
    outs = first_tensor(e.get("outputs", []))
    cells = [str(i), f"{escape(stage_label(row))}\n[dim]{escape(title)}[/]", escape(fmt_shape(outs).replace(" = ", "\n= ")) if outs else "",
             fmt_count(row["params"]) if row["params"] else "", fmt_count(row["flops"]) if row["flops"] else ""]
    if timing:
        cells.append(f"{row['time_ms']:.1f}")
    return cells


OUTPUT_WIDTH = 25  # characters of the output column, where the console has room


def text_widths(width: int, numbers: int, columns: int, names: int, longest: int) -> tuple[int | None, int | None]:
    """Widths of the summary table's stage and output columns on a console `width` wide, beside
    number columns `numbers` wide in all: (None, None) where the longest stage cell (`longest`,
    with its " ×N") and `OUTPUT_WIDTH` characters of output fit, and rich lays the table out. The table's own
    spaces: one at each edge (SIMPLE_HEAD), one between columns, one of padding on each inner side
    of a column. On a narrower console the padding collapses (two spaces between columns) and the
    output gets up to `OUTPUT_WIDTH` characters beside the longest stage id (`names`), at least 10; the stage
    column the rest. The text wraps (a stage id folds only where even that leaves too little); no
    number is cut."""
    if width - numbers - (3 * columns - 1) >= longest + OUTPUT_WIDTH:
        return None, None
    room = width - numbers - 2 * columns
    output = max(min(OUTPUT_WIDTH, room - names), 10)
    stage = max(min(longest, room - output), 6)
    return stage, room - stage


def render_summary(header: dict, events: list[dict], summary: dict, console: Console) -> None:
    catalog = stage_index()
    image = header.get("inputs", {}).get("image") or {}  # null in a log without an image
    w, h = image.get("size", ["?", "?"])
    values_off = " (no value summaries)" if header.get("mode") == "real" and not values_summarised(header) else ""
    console.print(
        f"[bold]llama-trace[/] {escape(preset_label(header))} · " + escape(visible(
            f"{mode_label(header)}{values_off} · {header.get('dtype')} on {header.get('device')} · image {image.get('path')} ({w}x{h} "
            f"{image.get('mode')}) · {summary.get('prompt_tokens')} prompt tokens"
            + (f" ({header['inputs']['layout']} layout)" if header.get("inputs", {}).get("layout") else "")))
    )
    timing = header.get("timing", False)
    rows = stage_rows(events)
    cells = [_row_cells(i, row, catalog, timing) for i, row in enumerate(rows, 1)]
    headers = ["#", "stage", "output", "params", "FLOPs"] + (["ms"] if timing else [])
    names = max((len(r["stage"]) for r in rows), default=10)
    longest = max((len(stage_label(r)) for r in rows), default=10)
    numbers = sum(max(len(c[k]) for c in [headers, *cells]) for k in range(len(headers)) if k not in (1, 2))
    stage_width, output_width = text_widths(console.width, numbers, len(headers), names, longest)

    def new_table(title: str) -> Table:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=title, title_justify="left", title_style="bold",
                      collapse_padding=stage_width is not None)
        table.add_column("#", justify="right", style="dim", no_wrap=True)
        if stage_width is None:
            table.add_column("stage", min_width=longest, ratio=1)
            table.add_column("output", min_width=OUTPUT_WIDTH, ratio=1)
        else:
            table.add_column("stage", width=stage_width, overflow="fold")  # a stage id folds, whole, rather than lose its end
            table.add_column("output", width=output_width)
        for name in headers[3:]:  # numbers are never cut: the text columns above give way instead
            table.add_column(name, justify="right", no_wrap=True)
        return table

    table, phase = None, object()
    for row, row_cells in zip(rows, cells):
        if row["phase"] != phase:  # one table per phase: setup, prefill, the folded decode steps
            if table is not None:
                console.print(table)
            phase = row["phase"]
            table = new_table(escape(phase_label(phase, events)))
        table.add_row(*row_cells)
    if table is not None:
        console.print(table)
    print_nonfinite(events, console)
    if summary.get("error"):
        err = summary["error"]
        src = err.get("src", {})
        console.print("[bold red]failed[/] " + escape(f"in stage {err.get('stage')} at {src.get('file')}:{src.get('line')}: {err.get('type')}: {err.get('message')}"))
    print_results(header, summary, console)
    total = sum(e.get("flops", 0) for e in events)
    console.print(f"{len(events)} events · {fmt_count(total)} FLOPs in matmuls and attention · shape letters: see model/args.py")
