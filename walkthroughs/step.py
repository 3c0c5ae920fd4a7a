"""Step mode: the walkthrough one stage per screen, driven by single keys.

    n, space, enter, →   next stage          p, b, ←   previous stage
    g <id or number>     jump to a stage     q         quit          ?   help

`step_through` reads keys from `keys` (an iterator of strings, for tests and scripts) or, by
default, from stdin: single key presses in cbreak mode when stdin is a terminal, else one line
per key (an empty line is enter; `g 12` or `g vision.model` on one line jumps).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.rule import Rule
from rich.text import Text

from .catalog import stage_index
from .context import all_stage_contexts
from .defaults import DEFAULT_DEPTH
from .header import mode_label
from .summary import print_nonfinite, print_results, preset_label, stage_title
from .terminal import render_stage_body

NEXT = {"n", " ", "\r", "\n", "j", "\x1b[C", "\x1b[B"}
BACK = {"p", "b", "k", "\x1b[D", "\x1b[A"}
QUIT = {"q", "\x03", "\x04", "\x1b"}
DETAILS = "d"
HELP_TEXT = (
    "keys: [bold]n[/], space, enter or → next · [bold]p[/], [bold]b[/] or ← back · "
    "[bold]g[/] then a stage id or number: jump · [bold]d[/] code and modules off/on (short screens) · "
    "[bold]q[/] quit · [bold]?[/] this help"
)
HINT = "n next · p back · g jump · d details · q quit · ? help"


class LineKeys:
    """Keys from a stream that is not a terminal: one key (or `g TARGET`) per line; EOF quits."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.stream.readline()
        if not line:
            raise StopIteration
        line = line.rstrip("\r\n")
        return line.strip() or "\n"

    def read_line(self, prompt: str, console: Console) -> str:
        console.print(prompt, end="")
        return next(self, "").strip()


class TerminalKeys:
    """Single key presses from a terminal, in cbreak mode (output keeps its newlines), restored after each key."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.fd = stream.fileno()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        import termios
        import tty

        old = termios.tcgetattr(self.fd)
        try:
            tty.setcbreak(self.fd)
            key = os.read(self.fd, 1).decode(errors="replace")
            if key == "\x1b":  # an arrow key sends ESC [ X; a lone ESC quits
                import select

                if select.select([self.fd], [], [], 0.05)[0]:
                    key += os.read(self.fd, 2).decode(errors="replace")
        finally:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, old)
        if key == "":
            raise StopIteration
        return key

    def read_line(self, prompt: str, console: Console) -> str:
        console.print(prompt, end="")
        console.file.flush()
        line = self.stream.readline()
        return line.strip()


def stdin_keys(stream: TextIO | None = None):
    stream = stream or sys.stdin
    try:
        tty_in = stream.isatty()
    except (AttributeError, ValueError):
        tty_in = False
    return TerminalKeys(stream) if tty_in else LineKeys(stream)


def render_stage(header: dict, events: list[dict], summary: dict, console: Console, rows: list[tuple[dict, dict]],
                 index: int, depth: int = DEFAULT_DEPTH, details: bool = True) -> None:
    """One screen: the title bar with "stage i/N", then what `render_walkthrough` shows for that
    stage (without the code and modules unless `details`)."""
    catalog = stage_index()
    row, ctx = rows[index]
    title, beside = stage_title(row, events, catalog)
    console.clear()
    console.print(Rule(f"[bold]Llama 3.2 Vision {escape(preset_label(header))}[/] · " + escape(f"{mode_label(header)} · stage {index + 1}/{len(rows)}"), align="left"))
    console.print(Text(f"stage {index + 1}/{len(rows)}: {title}", style="bold") + Text(f"  ({beside})", style="dim"))
    print_nonfinite(events, console)
    render_stage_body(events, row, ctx, console, depth, details)
    if index == len(rows) - 1:
        print_results(header, summary, console)


def find_stage(rows: list[tuple[dict, dict]], target: str) -> int | None:
    """A 1-based number, an exact stage id, or the first id that starts with `target`, else the first
    that contains it (`unpad` finds vision.unpad8); letter case aside."""
    target = target.strip().lower()
    if not target:
        return None
    if target.isdigit():
        n = int(target)
        return n - 1 if 1 <= n <= len(rows) else None
    ids = [row["stage"].lower() for row, _ in rows]
    if target in ids:
        return ids.index(target)
    prefixed = [i for i, sid in enumerate(ids) if sid.startswith(target)]
    if prefixed:
        return prefixed[0]
    return next((i for i, sid in enumerate(ids) if target in sid), None)


def step_through(header: dict, events: list[dict], summary: dict, console: Console, keys: Iterator[str] | None = None,
                 start_stage: str | None = None, depth: int = DEFAULT_DEPTH) -> list[str]:
    """Show one stage per screen and follow the keys; returns the stage ids shown, in order."""
    rows = all_stage_contexts(header, events, summary)
    if not rows:
        console.print("[yellow]this log has no stages[/]")
        return []
    source = keys if keys is not None else stdin_keys()
    it = iter(source)
    read_line = getattr(source, "read_line", None)
    index = 0
    if start_stage:
        found = find_stage(rows, start_stage)
        if found is None:
            console.print(f"[yellow]no stage matches {escape(repr(start_stage))}[/]; starting at stage 1")
        else:
            index = found
    shown: list[str] = []
    details = True

    def show(i: int) -> None:
        render_stage(header, events, summary, console, rows, i, depth, details)
        shown.append(rows[i][0]["stage"])

    def status(message: str = "") -> None:
        line = Text(f"[stage {index + 1}/{len(rows)}] ", style="bold") + Text(HINT, style="dim")
        if message:
            line = Text(message + " ", style="yellow") + line
        console.print(line)
        try:
            console.file.flush()
        except Exception:
            pass

    show(index)
    status()
    while True:
        try:
            key = next(it)
        except (StopIteration, KeyboardInterrupt):
            break
        if key in QUIT:
            break
        if key in NEXT:
            if index == len(rows) - 1:
                status(f"end of the walkthrough ({len(rows)} stages): p to go back, q to quit.")
                continue
            index += 1
            show(index)
            status()
        elif key in BACK:
            if index == 0:
                status("already at the first stage.")
                continue
            index -= 1
            show(index)
            status()
        elif key == DETAILS:
            details = not details
            show(index)
            status("code and modules " + ("shown." if details else "hidden: d shows them again."))
        elif key == "?" or key == "h":
            console.print(Text.from_markup(HELP_TEXT))
            console.print("stages: " + " ".join(f"{i}:{row['stage']}" for i, (row, _) in enumerate(rows, 1)), style="dim", markup=False)
            status()
        elif key.startswith("g"):
            target = key[1:].strip()
            if not target:
                if read_line is not None:
                    target = read_line("go to stage (id or number): ", console)
                else:
                    try:
                        target = next(it)
                    except StopIteration:
                        break
            found = find_stage(rows, target)
            if found is None:
                status(f"no stage {target!r} (give a number 1-{len(rows)} or an id such as {rows[-1][0]['stage']}).")
                continue
            index = found
            show(index)
            status()
        else:
            status(f"unknown key {key!r}.")
    console.print("bye.")
    return shown
