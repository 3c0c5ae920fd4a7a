"""The step-by-step walkthrough in the terminal (rich): per stage, the prose, a shape-flow table,
the source line in context, and the module tree with repeated layers folded."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.rule import Rule
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from .annotations import annotate
from .catalog import stage_index
from .context import all_stage_contexts
from .defaults import DEFAULT_DEPTH
from .header import mode_label
from .source_excerpt import excerpt
from .summary import display_path, fmt_count, fmt_item, plain, plural, print_nonfinite, print_results, stage_title, stats_parts, table_items, preset_label, visible
from .tree import build_tree


def stats_cell(item: dict) -> Text:
    """The values column: the summary as plain text (a range of "[nan, nan]" is not markup), its
    NaN and Inf flags in bold red."""
    line, flags = stats_parts(item)
    cell = Text(line)
    for flag in flags:
        cell.append(" ").append(flag, style="bold red")
    return cell


def prose(text: str) -> Text:
    """An annotation for the terminal: its `code` spans in colour, without the backticks (plain
    where colour is off). Text, not markup: '[start, end]' in the prose stays as it is."""
    out = Text()
    for i, part in enumerate(text.split("`")):
        out.append(part, style="bold cyan" if i % 2 else None)
    return out


def shape_table(event: dict) -> Table:
    table = Table(box=box.SIMPLE, pad_edge=False, show_edge=False)
    table.add_column("", style="dim")
    table.add_column("name")
    table.add_column("shape")
    table.add_column("dtype", style="dim")
    real = any("stats" in o for o in event.get("outputs", []))
    if real:
        table.add_column("values")
    for side, items in (("in", event.get("inputs", [])), ("out", event.get("outputs", []))):
        shown, hidden = table_items(items)
        for item in shown:
            cells = plain(side, display_path(item["path"]), fmt_item(item), item.get("dtype", ""))
            if real:
                cells.append(stats_cell(item))
            table.add_row(*cells)
        if hidden:
            table.add_row(side, f"… {hidden} more", *[""] * (3 if real else 2))
    return table


def code_panel(src: dict | None) -> Syntax | Text:
    found = excerpt(src)
    if not found:
        return Text("")
    lines, start, hl = found
    return Syntax("\n".join(lines), "python", line_numbers=True, start_line=start, highlight_lines={hl},
                  theme="ansi_dark", word_wrap=True, background_color="default")


def module_tree(events: list[dict], event: dict, depth: int) -> Tree | None:
    """The calls under the event (modules, functions, ops where logged), repeated layers folded,
    `depth` levels deep."""
    node = build_tree(events, event["seq"])
    if not node.children or depth <= 0:
        return None

    def add(branch: Tree, n, level: int) -> None:
        for child in n.children:
            sub = branch.add(Text(child.label))
            if level + 1 < depth:
                add(sub, child, level + 1)

    tree = Tree(Text(node.label), guide_style="dim")
    add(tree, node, 0)
    return tree


def render_stage_body(events: list[dict], row: dict, ctx: dict, console: Console, depth: int, details: bool = True) -> None:
    """What every view shows of one stage under its title: facts, prose, shapes, and with `details`
    the source, the modules and the references (step mode's `d` leaves them out, for short screens)."""
    sid, e = row["stage"], row["first"]
    info = stage_index().get(sid)
    note = annotate(sid, ctx)
    facts = [plural(row["calls"], "call")]
    if row["params"]:
        facts.append(f"{fmt_count(row['params'])} parameters")
    if row["flops"]:
        facts.append(f"{fmt_count(row['flops'])} FLOPs ({ctx['flops_share']})")
    console.print(Text(" · ".join(facts), style="dim"))
    if note.what:
        console.print(prose(note.what))
    if note.why:
        console.print(Text("Why: ", style="italic") + prose(note.why))
    for g in note.gotchas:
        console.print(Text("  ! ", style="bold yellow") + prose(g))
    if note.hf:
        console.print(Text("  HF: ", style="bold cyan") + prose(note.hf))
    console.print(shape_table(e))
    if not details:
        return
    src = e.get("src")
    if src:
        console.print(Panel(code_panel(src), title=Text(f"{src['file']}:{src['line']}"), title_align="left", box=box.ROUNDED, expand=True))
    tree = module_tree(events, e, depth)
    if tree is not None:
        console.print(tree)
    if info and (info.meta or info.hf):
        console.print(Text(f"Meta: {info.meta}   HF: {info.hf}", style="dim"))


def render_walkthrough(header: dict, events: list[dict], summary: dict, console: Console, stage: str | None = None, depth: int = DEFAULT_DEPTH) -> None:
    catalog = stage_index()
    image = header["inputs"].get("image") or {}
    console.print(Rule(f"[bold]Llama 3.2 Vision {escape(preset_label(header))}[/] — " + escape(f"traced in {mode_label(header)}, {header['dtype']}")))
    console.print(  # the user's text, not markup: a prompt may hold "[/]"
        visible(f"image {image.get('path')} {image.get('size', ['?', '?'])[0]}x{image.get('size', ['?', '?'])[1]} {image.get('mode')} · "
        f"prompt {header['inputs'].get('prompt')!r} ({summary.get('prompt_tokens')} tokens, {header['inputs'].get('layout')} layout)"),
        markup=False,
    )
    print_nonfinite(events, console)
    shown = 0
    for i, (row, ctx) in enumerate(all_stage_contexts(header, events, summary), 1):
        if stage and not row["stage"].startswith(stage):
            continue
        shown += 1
        title, beside = stage_title(row, events, catalog)
        console.print()
        console.print(Rule(f"[bold]{i}. {escape(title)}[/] [dim]({escape(beside)})[/]", align="left"))
        render_stage_body(events, row, ctx, console, depth)
    if stage and not shown:
        console.print(f"[yellow]no stage matches {escape(repr(stage))}[/]; stages: {', '.join(catalog)}")
    print_results(header, summary, console, gap=True)
