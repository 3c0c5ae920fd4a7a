"""`llama-trace`: trace Llama 3.2 Vision and show what happens at every stage."""

from __future__ import annotations

import contextlib
import errno
import gc
import math
import os
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from .defaults import DEFAULT_DEPTH, DEFAULT_DEVICE, DEFAULT_DTYPE, DEFAULT_PROMPT, DEFAULT_TOP_P

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help=(
        "Trace Llama 3.2 Vision stage by stage: shapes, dtypes, modules, source lines.\n\n"
        "[bold]Examples[/]\n\n"
        "  llama-trace run                                 # 11B-Instruct on meta, bundled image\n\n"
        "  llama-trace run --model 90b-instruct --ops      # every torch op too\n\n"
        "  llama-trace run --image cat.jpg --prompt 'What is this?' --format json -o run.jsonl\n\n"
        "  llama-trace run --model tiny                    # real arithmetic, random weights\n\n"
        "  llama-trace render run.jsonl                    # summary of a saved log\n\n"
        "  llama-trace run --format step                   # one stage per key press, for a workshop\n\n"
        "  llama-trace quiz --model tiny --seed 1          # predict the output shapes\n\n"
        "  llama-trace diff a.jsonl b.jsonl                # what changed between two traces, and why"
    ),
)


class ModelName(str, Enum):
    b11 = "11b"
    b11_instruct = "11b-instruct"
    b90 = "90b"
    b90_instruct = "90b-instruct"
    tiny = "tiny"


class Format(str, Enum):
    terminal = "terminal"
    walkthrough = "walkthrough"
    step = "step"
    markdown = "markdown"
    html = "html"
    json = "json"


class RenderFormat(str, Enum):
    terminal = "terminal"
    walkthrough = "walkthrough"
    step = "step"
    markdown = "markdown"
    html = "html"


class Mode(str, Enum):
    meta = "meta"
    real = "real"


class DType(str, Enum):
    bf16 = "bf16"
    fp32 = "fp32"


MIN_TEMPERATURE = 1e-6  # below it (0 aside), logits / temperature can pass float32's largest value in Meta's sampler


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"llama-trace: error: {message}", err=True)
    raise typer.Exit(code)


def version_callback(value: bool) -> None:
    if value:
        from .run import version

        typer.echo(f"llama-trace {version()}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True, help="Show the version and exit."),
) -> None:
    """Trace Llama 3.2 Vision stage by stage."""


def _console(path: Optional[Path] = None):
    from rich.console import Console

    no_color = bool(os.environ.get("NO_COLOR")) or not sys.stdout.isatty()
    return Console(no_color=no_color, highlight=False, soft_wrap=False)


@contextlib.contextmanager
def _loading_progress(active: bool):
    """A rich progress bar on stderr while checkpoint weights load, when stderr is a terminal;
    yields the callback (elsewhere the bar would only leave a blank line)."""
    if not active or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("loading weights"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("load", total=None)

        def update(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _check_target(fmt: str, output: Optional[Path], force: bool, stage: Optional[str] = None, depth: int = DEFAULT_DEPTH) -> None:
    """Where the chosen format writes (a page needs -o, step mode is interactive, files are
    checked, a page's pictures too), and the options that shape it."""
    if output is not None:
        _check_output(output, force)
    if fmt == "markdown" and output is None:
        fail("--format markdown writes a page and its pictures: give the page path with -o, e.g. -o page.md")
    if fmt == "markdown" and output is not None:
        from tracer.log import is_special_file

        if is_special_file(output):
            fail(f"-o {output} is not a regular file, and a Markdown page writes its pictures beside it; give the page a file path (or use --format html)")
    if fmt == "markdown" and not force:
        from .regenerate import prompt_file_path

        folder = output.resolve().parent  # the page's pictures, {stem}.{what}.png, and its prompt file
        taken = sorted([*folder.glob(f"{output.stem}.*.png"), *folder.glob(Path(prompt_file_path(output.name)).name)])
        if taken:
            fail(f"{taken[0]} exists (a file this page writes beside it); pass --force to overwrite it")
    if fmt == "step" and output is not None:
        fail("--format step is interactive; leave out -o")
    if stage is not None:
        from .catalog import stage_index

        if fmt == "json":
            fail("--stage chooses what a view shows; the json log always holds every stage (render it with --stage later)")
        if not any(sid.startswith(stage) for sid in stage_index()):
            tops = sorted({sid.split(".")[0] for sid in stage_index()})
            fail(f"no stage id starts with {stage!r}; they start with {', '.join(tops)} (e.g. --stage vision)")
    if depth < 0:
        fail(f"--depth must be 0 or more (got {depth})")
    if fmt == "json" and depth != DEFAULT_DEPTH:
        fail("--depth chooses how much of the module tree a view shows; the json log always holds every module (render it with --depth later)")


_SUFFIX_FORMATS = {".jsonl": "json", ".json": "json", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}
_FILE_KINDS = {"json": "a JSON log", "markdown": "a Markdown page", "html": "an HTML page"}


def _format_for(output: Optional[Path], fmt: Optional[Enum], formats: type[Enum], command: str) -> Enum:
    """The format to write: `fmt` where given, else the one the -o file's suffix names
    (trace.jsonl: json; page.md: markdown), else terminal. Refused: a suffix naming a format
    the command lacks (diff -o d.html), or another one than --format (--format json -o j.md)."""
    named = _SUFFIX_FORMATS.get(output.suffix.lower()) if output is not None else None
    if named is not None and named not in formats.__members__:
        fail(f"-o {output}: `llama-trace {command}` does not write {_FILE_KINDS[named]}; name the file {_suffixes(formats)}")
    if fmt is not None and named is not None and fmt.value != named:
        fail(f"-o {output} names {_FILE_KINDS[named]} but --format is {fmt.value}; leave --format out, or name the file for it")
    return fmt or formats(named or "terminal")


def _suffixes(formats: type[Enum]) -> str:
    """The -o suffixes a command's formats take, for an error: ".md, .html or .txt"."""
    names = [suffix for suffix, name in _SUFFIX_FORMATS.items() if name in formats.__members__ and suffix in (".jsonl", ".md", ".html")]
    return ", ".join(names) + " or .txt (terminal text)"


def _stdout_if_dash(output: Optional[Path]) -> Optional[Path]:
    """`-o -` means standard output, as in most tools."""
    return None if output is not None and str(output) == "-" else output


def _check_view_output(output: Optional[Path], logs: tuple[Path, ...]) -> None:
    """-o of a command that reads logs and writes a view of them (render, diff): not one of the
    logs it reads, --force or not (`_format_for` refuses a name like a log's)."""
    if output is not None and any(output.resolve() == log.resolve() for log in logs):
        fail(f"-o {output} is a log this command reads; choose another -o path")


def _check_output(path: Path, force: bool) -> None:
    from tracer.log import is_special_file

    if path.is_dir():
        fail(f"{path} is a folder; give a file name with -o")
    if is_special_file(path):  # a FIFO, /dev/null, a terminal: written through, nothing to overwrite
        if not os.access(path, os.W_OK):
            fail(f"cannot write to {path}; choose another -o path")
        return
    target = path.resolve()  # through a symlink: its target is the file written
    if not target.parent.exists():
        fail(f"folder {target.parent} does not exist; create it or choose another -o path")
    if not os.access(target.parent, os.W_OK):
        fail(f"cannot write to {target.parent}; choose another -o path")
    if target.exists() and not force:
        fail(f"{path} exists; pass --force to overwrite it")


def _write(path: Path, text: str) -> None:
    """`text` into `path` (`tracer.log.atomic_write_text`), or a one-line error."""
    from tracer.log import atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as err:
        fail(f"cannot write {path}: {err.strerror or err}; choose another -o path", code=1)


def _path(text: str) -> Path:
    """A path option's value, as typer would give it, but refusing an empty one (typer turns ""
    into the current folder)."""
    if not text:
        raise typer.BadParameter("the path is empty; give a file name")
    return Path(text)


_path.__name__ = "path"  # what --help shows as the type: <path>, as for a plain Path


@app.command()  # walkthroughs/regenerate.py writes this command back from a log, its defaults left out: keep them in step
def run(
    image: Optional[Path] = typer.Option(None, "--image", parser=_path, help="Image file (default: the bundled 1000x500 sample)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help=f"Text that follows the image (default: {DEFAULT_PROMPT!r})."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", parser=_path, help="Read the prompt from this UTF-8 text file, or from standard input with - (long or multi-line prompts)."),
    model: Optional[ModelName] = typer.Option(None, "--model", help="Model preset (default 11b-instruct; with --checkpoint, the checkpoint's own)."),
    mode: Optional[Mode] = typer.Option(None, "--mode", help="meta: shapes only, no weights (default for 11b/90b); real: random weights, real arithmetic (default for tiny)."),
    ops: bool = typer.Option(False, "--ops", help="Also record every torch function call (view, matmul, softmax …); the walkthroughs and pages show each in the module tree under the call it ran in (--depth for deeper levels)."),
    no_values: bool = typer.Option(False, "--no-values", help="With real weights, skip the value summaries (min, max, mean, std, NaN/Inf): shapes only, the cheapest trace."),
    fmt: Optional[Format] = typer.Option(None, "--format", help="terminal: stage summary; walkthrough: annotated, stage by stage; step: the walkthrough one stage per screen (n/space next, p back, g jump, q quit, ? help); markdown: a deep-dive page with pictures (needs -o); html: the page as one offline HTML file for a projector (j/k move); json: the JSON Lines event log (default: from the -o file's suffix, .jsonl or .json, .md, .html; else terminal)."),
    stage: Optional[str] = typer.Option(None, "--stage", help="Only stages whose id starts with this, e.g. vision or text.cross_attention (in the terminal: the walkthrough; markdown and html: a page of those stages); with --format step, the stage to start at."),
    depth: int = typer.Option(DEFAULT_DEPTH, "--depth", help="Levels of the module tree to show under each stage."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", parser=_path, help="Write to this file instead of stdout."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    no_timing: bool = typer.Option(False, "--no-timing", help="Leave timings out, so identical inputs give byte-identical logs."),
    dtype: DType = typer.Option(DType(DEFAULT_DTYPE), "--dtype", help="bf16 reproduces Meta's arithmetic; fp32 for exact comparisons."),
    device: str = typer.Option(DEFAULT_DEVICE, "--device", help="cpu, cuda or cuda:N, for real mode (meta mode needs no device)."),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help="Context length: the positions of the KV cache (M) and, unless --max-new-tokens ends the text sooner, of the masks (T), as Meta's Llama.build max_seq_len (default: the model config's max_seq_len)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Generate this many tokens, tracing every decode step (default: the prefill and its next token)."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy (default); above 0, top-p sampling as Meta's generate."),
    top_p: float = typer.Option(DEFAULT_TOP_P, "--top-p", help="Nucleus size for sampling."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights (tiny) and of sampling."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", parser=_path, help="A Meta (params.json + consolidated*.pth) or Hugging Face (config.json + *.safetensors) Llama 3.2 Vision folder: real weights, real values, generated text."),
    layout: Optional[str] = typer.Option(None, "--layout", help="chat or completion prompt layout (default: chat for instruct models)."),
    allow_special: bool = typer.Option(False, "--allow-special", help="Read special-token strings in the prompt (<|eot_id|> …) as control tokens, not as plain text."),
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks."),
) -> None:
    """Run the model under the tracer and print a stage-by-stage summary (or write the log)."""
    from model import CheckpointError, ConfigError
    from model.tokenizer import TokenizerError

    from .inputs import InputError, read_prompt_file
    from .run import RunError
    from .run import run as do_run

    _start_up_done()

    output = _stdout_if_dash(output)
    fmt = _format_for(output, fmt, Format, "run")
    _check_target(fmt.value, output, force, stage, depth)
    if prompt is not None and prompt_file is not None:
        fail("pass the prompt either with --prompt or with --prompt-file, not both")
    if prompt_file is not None:
        try:
            prompt = read_prompt_file(prompt_file)
        except InputError as err:
            fail(str(err))
    prompt = DEFAULT_PROMPT if prompt is None else prompt
    if not prompt.strip():
        fail(f"the prompt is empty; pass some text with {'--prompt-file' if prompt_file is not None else '--prompt'}")
    if max_new_tokens is not None and max_new_tokens < 1:
        fail(f"--max-new-tokens must be at least 1 (got {max_new_tokens})")
    if not (math.isfinite(temperature) and temperature >= 0):
        fail(f"--temperature must be a finite number >= 0 (got {temperature}); 0 is greedy")
    if 0 < temperature < MIN_TEMPERATURE:  # logits / temperature would overflow float32 in Meta's sampler
        fail(f"--temperature {temperature} is too small to sample with (logits / temperature overflow): use 0 for greedy,"
             f" which it would match anyway, or at least {MIN_TEMPERATURE:g}")
    if not -(2**63) <= seed < 2**64:
        fail(f"--seed must fit in 64 bits, from -2**63 to 2**64 - 1 (got {seed})")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        fail(f"--top-p must be in (0, 1] (got {top_p})")
    if checkpoint is not None and model is not None:
        fail("--checkpoint brings its own model (its config); leave out --model")
    if checkpoint is not None and mode is Mode.meta:
        fail("--checkpoint loads real weights; leave out --mode meta")
    model = model or ModelName.b11_instruct
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", device):
        fail(f"unknown --device {device!r}; use cpu, cuda or cuda:N (N a GPU's index)")
    if device.startswith("cuda"):
        import torch

        from .run import default_mode

        if checkpoint is None and (mode.value if mode else default_mode(model.value)) == "meta":
            fail(f"--device is for real arithmetic, and {model.value} runs in meta mode (no device, no weights): add --mode real, or leave out --device")
        if not torch.cuda.is_available():
            fail("--device cuda: no CUDA GPU is visible here; use --device cpu")
        if ":" in device and int(device[5:]) >= torch.cuda.device_count():
            fail(f"--device {device}: this machine shows {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    if layout not in (None, "chat", "completion"):
        fail(f"unknown --layout {layout!r}; use chat or completion")
    try:
        with _loading_progress(checkpoint is not None) as progress:
            result = do_run(
                image, prompt, model.value, mode.value if mode else None, ops, not no_timing, device=device, dtype=dtype.value,
                seed=seed, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, allow_special=allow_special,
                checkpoint=checkpoint, layout=layout, progress=progress, values=not no_values, max_seq_len=max_seq_len,
            )
    except (RunError, InputError, CheckpointError, ConfigError, TokenizerError) as err:
        fail(str(err))
    except Exception as err:
        if debug:
            raise
        fail(f"internal error: {err.__class__.__name__}: {err} (run again with --debug for the traceback)", code=1)
    for note in result.header["inputs"].get("notes", []):
        typer.echo(f"llama-trace: note: {note}", err=True)
    _emit(result.header, result.trace, result.summary, fmt, output, stage, depth, result.image)
    if result.trace.error is not None:
        err = result.trace.error
        src = err.get("src", {})
        fail(f"the forward failed in stage {err.get('stage')} at {src.get('file')}:{src.get('line')}: {err['type']}: {err['message']}", code=1)


def _emit(header, trace, summary, fmt: Format, output: Optional[Path], stage=None, depth=DEFAULT_DEPTH, image=None) -> None:
    from tracer.log import build_lines, load_lines

    lines = build_lines(trace, header, summary)
    if fmt is Format.json:
        text = "\n".join(lines) + "\n"
        if output is None:
            sys.stdout.write(text)
        else:
            _write(output, text)
            typer.echo(f"wrote {output} ({len(trace.events)} events)")  # as for a page: the user sees where it went
        return
    head, events, closing = load_lines(lines)  # render exactly what a saved log would give
    _render(head, events, closing, fmt.value, output, stage, depth, image)


def _render(header, events, summary, fmt: str, output: Optional[Path], stage=None, depth=DEFAULT_DEPTH, image=None) -> None:
    from rich.console import Console

    from .summary import render_summary
    from .terminal import render_walkthrough

    if fmt == "markdown":
        from .markdown import render_markdown, write_files

        from .summary import plural

        files = render_markdown(header, events, summary, output, image=image, depth=depth, stage=stage)
        try:
            write_files(files)
        except OSError as err:
            fail(f"cannot write {err.filename or output}: {err.strerror or err}; choose another -o path", code=1)
        typer.echo(f"wrote {output} and {plural(len(files) - 1, 'file')} beside it ({', '.join(p.name for p in files if p != output)})")
        return
    if fmt == "html":
        from .html import render_html

        text = render_html(header, events, summary, image=image, depth=depth, name=str(output) if output else "page.html", stage=stage)
        if output is None:
            sys.stdout.write(text)
        else:
            _write(output, text)
            typer.echo(f"wrote {output}")
        return
    if fmt == "step":
        from .step import step_through

        step_through(header, events, summary, _console(), start_stage=stage, depth=depth)
        return
    walkthrough = fmt == "walkthrough" or stage is not None

    def draw(console):
        if walkthrough:
            render_walkthrough(header, events, summary, console, stage=stage, depth=depth)
        else:
            render_summary(header, events, summary, console)

    if output is None:
        draw(_console())
        return
    console = Console(record=True, no_color=True, width=100, file=open(os.devnull, "w"))
    draw(console)
    _write(output, console.export_text())
    typer.echo(f"wrote {output}")


@app.command()
def render(
    log: Path = typer.Argument(..., parser=_path, help="A JSON Lines log written by `llama-trace run --format json`."),
    fmt: Optional[RenderFormat] = typer.Option(None, "--format", help="terminal: stage summary; walkthrough: annotated, stage by stage; step: the walkthrough one stage per screen; markdown: a deep-dive page with pictures (needs -o); html: the page as one offline HTML file (default: from the -o file's suffix, .md or .html; else terminal)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", parser=_path, help="Write to this file instead of stdout."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    stage: Optional[str] = typer.Option(None, "--stage", help="Only stages whose id starts with this (the walkthrough in the terminal; a page of those stages in markdown and html)."),
    depth: int = typer.Option(DEFAULT_DEPTH, "--depth", help="Levels of the module tree to show under each stage."),
    image: Optional[Path] = typer.Option(None, "--image", parser=_path, help="The traced image, for a page's pictures, where it is no longer at the path the log names (its pixels must be the ones traced)."),
) -> None:
    """Show a saved log: a stage summary, the annotated walkthrough, or a Markdown page."""
    from tracer.log import LogError

    from .inputs import InputError
    from .log_check import load_run_log
    from .run import RunError, image_for_log

    output = _stdout_if_dash(output)
    fmt = _format_for(output, fmt, RenderFormat, "render")
    if image is not None and fmt.value not in ("markdown", "html"):
        fail("--image gives a page's pictures their image; it is for --format markdown or html")
    _check_view_output(output, (log,))
    _check_target(fmt.value, output, force, stage, depth)
    try:
        header, events, summary = load_run_log(log)
        picture, note = image_for_log(header, image) if fmt.value in ("markdown", "html") else (None, None)
    except (LogError, InputError, RunError) as err:
        fail(str(err))
    if note:
        typer.echo(f"llama-trace: note: {note}", err=True)
    _render(header, events, summary, fmt.value, output, stage, depth, picture)


class DiffFormat(str, Enum):
    terminal = "terminal"
    markdown = "markdown"


@app.command()
def diff(
    log_a: Path = typer.Argument(..., parser=_path, metavar="A", help="A JSON Lines log (`llama-trace run --format json`)."),
    log_b: Path = typer.Argument(..., parser=_path, metavar="B", help="The log to compare it with."),
    fmt: Optional[DiffFormat] = typer.Option(None, "--format", help="terminal: rich tables (plain when piped); markdown: a table per section (default: markdown for an -o file ending .md, else terminal)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", parser=_path, help="Write to this file instead of stdout."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
) -> None:
    """Compare two logs: config, symbols, each stage's output shape (A → B, by shape letter), params, FLOPs, events."""
    from tracer.log import LogError

    from .diff import TEXT_WIDTH, Log, compare, render_markdown, render_terminal, render_text
    from .log_check import load_run_log
    from .summary import visible

    output = _stdout_if_dash(output)
    fmt = _format_for(output, fmt, DiffFormat, "diff")
    _check_view_output(output, (log_a, log_b))
    if output is not None:
        _check_output(output, force)
    logs = []
    for path in (log_a, log_b):
        try:
            logs.append(Log(visible(path.name), *load_run_log(path)))  # a label: no control characters raw
        except LogError as err:
            fail(str(err))
    result = compare(*logs)
    if fmt is DiffFormat.markdown:
        text = render_markdown(result)
    elif output is None and sys.stdout.isatty():
        render_terminal(result, _console())
        return
    else:  # piped or to a file: plain text at a fixed width (piped: the COLUMNS asked for, where one is set)
        columns = os.environ.get("COLUMNS", "") if output is None else ""
        text = render_text(result, width=int(columns) if columns.isdigit() and int(columns) >= 60 else TEXT_WIDTH)
    if output is None:
        sys.stdout.write(text)
    else:
        _write(output, text)
        typer.echo(f"wrote {output}")  # as run and render say


@app.command()
def quiz(
    log: Optional[Path] = typer.Option(None, "--log", parser=_path, help="Ask about this saved log (default: trace --model now)."),
    model: Optional[ModelName] = typer.Option(None, "--model", help="Trace this preset (default 11b-instruct) with the bundled image."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the question choice and order (default: a random one, printed)."),
    n_questions: int = typer.Option(5, "--questions", help="How many questions."),
    answers: Optional[Path] = typer.Option(None, "--answers", parser=_path, help="Read one answer per line from this file (or from standard input with -) instead of asking (for scripts); the last line printed is `score: X/N`."),
) -> None:
    """Quiz: given a stage's inputs, the symbol table and its code line, give its output shape."""
    import random

    from tracer.log import LogError, build_lines, load_lines

    from .quiz import QuizError, run_quiz

    if log is not None and model is not None:
        fail("give either --log or --model, not both")
    if n_questions < 1:
        fail(f"--questions must be at least 1 (got {n_questions})")
    if answers is not None:
        from .inputs import InputError, read_text_file

        try:
            answer_lines = read_text_file(answers, "answers file", "--answers").splitlines()
        except InputError as err:
            fail(str(err))
    if log is not None:
        from .log_check import load_run_log

        try:
            header, events, summary = load_run_log(log)
        except LogError as err:
            fail(str(err))
    else:
        from .run import RunError
        from .run import run as do_run

        try:
            result = do_run(None, preset=(model or ModelName.b11_instruct).value, timing=False)
        except RunError as err:
            fail(str(err))
        header, events, summary = load_lines(build_lines(result.trace, result.header, result.summary))
    if seed is None:
        seed = random.SystemRandom().randrange(10_000)
    if answers is not None:
        source, typed = iter(answer_lines), False
    else:
        def typed_answers():
            while True:
                try:
                    yield typer.prompt("  your answer (q to stop)", default="", show_default=False)
                except (typer.Abort, EOFError):
                    return

        source, typed = typed_answers(), True
    try:
        run_quiz(header, events, summary, n_questions, seed, source, _wrapping_echo(), typed=typed)
    except QuizError as err:
        fail(str(err))


def _wrapping_echo():
    """typer.echo; on a terminal, lines longer than it wrapped at spaces and indented as they began
    (a projector's 60 columns; a word, code or a shape, is never split). A pipe or a file gets the
    lines whole, for graders' scripts."""
    import shutil
    import textwrap

    if not sys.stdout.isatty():
        return typer.echo
    width = max(shutil.get_terminal_size().columns, 40)

    def echo(line: str) -> None:
        if len(line) <= width:
            typer.echo(line)
            return
        indent = " " * (len(line) - len(line.lstrip(" ")) + 2)  # continuation lines: under the text, two deeper
        typer.echo(textwrap.fill(line, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False))
    return echo


_ONE_SHOT = False  # set by the console entry point: this process runs one command, then exits


def _start_up_done() -> None:
    """In a one-command process, once the heavy imports are in, move everything they created
    (torch alone: about 170,000 objects) out of the garbage collector's reach. Otherwise the
    first full collection walks them all, about 0.1 s on a 2-core machine, mid-run."""
    if _ONE_SHOT:
        gc.freeze()


def _click_exceptions():
    """The click exceptions typer raises: from its own copy of click (typer 0.26 on), else click's."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _replace_unencodable() -> None:
    """Where standard output or error cannot encode every character (PYTHONIOENCODING=ascii, a
    Latin-1 terminal), write what it can and a ? for the rest (the stage tables' · and ×), not a
    UnicodeEncodeError. Files written with -o are UTF-8 whatever the terminal."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", "replace") == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")


def cli() -> None:
    """The `llama-trace` console script: usage errors in one line, and output that could not be
    written (a full disk, a closed pipe) as a failure."""
    global _ONE_SHOT
    _ONE_SHOT = True
    _replace_unencodable()
    errors = _click_exceptions()
    no_args = getattr(errors, "NoArgsIsHelpError", ())  # click 8.2 on; before, click printed the help itself
    try:
        code = app(standalone_mode=False, prog_name="llama-trace")
        sys.stdout.flush()  # here, not at exit, so a failed write still reaches the exit code
    except no_args as err:
        typer.echo(err.ctx.get_help())
        code = 0
    except errors.UsageError as err:
        where = err.ctx.command_path if err.ctx else "llama-trace"
        typer.echo(f"llama-trace: error: {err.format_message()} (see {where} --help)", err=True)
        code = err.exit_code
    except errors.ClickException as err:
        typer.echo(f"llama-trace: error: {err.format_message()}", err=True)
        code = err.exit_code
    except typer.Abort:
        code = 1
    except OSError as err:  # writing to standard output failed
        if err.filename is not None:  # a file's, not standard output's: an error --debug let through, traceback and all
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere at exit
        if err.errno != errno.EPIPE:  # a closed pipe (`| head`) is the reader's choice, not an error to report
            typer.echo(f"llama-trace: error: cannot write the output: {err.strerror or err}", err=True)
        code = 1
    sys.exit(code or 0)


if __name__ == "__main__":
    cli()
