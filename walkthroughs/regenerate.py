"""The `llama-trace run` command that repeats a logged run, for the pages to print.

Built from the log's header: the model or checkpoint, and every option whose value differs from
what `run` would choose by itself (image, prompt, mode, layout, dtype, device, context length,
generation and sampling, ops, values, timing). The defaults it leaves out are `llama-trace run`'s
(walkthroughs/defaults.py).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from model import PRESETS, ModelArgs, get_preset

from .defaults import DEFAULT_DEPTH, DEFAULT_DEVICE, DEFAULT_DTYPE, DEFAULT_PROMPT, DEFAULT_TOP_P
from .header import from_checkpoint, values_summarised
from .summary import visible
from .run import default_layout, default_mode

LONGEST_INLINE_PROMPT = 200  # characters; a longer prompt (or one with line breaks or control characters) is read from a file


def needs_prompt_file(header: dict) -> bool:
    """Whether the command must read the log's prompt from a file: a long one, or one a command
    line cannot hold (line breaks, control characters)."""
    prompt = header.get("inputs", {}).get("prompt", DEFAULT_PROMPT)
    return prompt != DEFAULT_PROMPT and (len(prompt) > LONGEST_INLINE_PROMPT or "\n" in prompt or visible(prompt) != prompt)


def prompt_file_path(page: str) -> str:
    """The prompt file written beside a page, as the user named the page: docs/a.md -> docs/a.prompt.txt."""
    return str(Path(page).with_name(f"{Path(page).stem}.prompt.txt"))


def prompt_file_text(prompt: str) -> str | None:
    """The prompt file's text, which `--prompt-file` reads back as exactly `prompt` (it drops one
    final newline and a BOM); None where no file can (a prompt ending in a carriage return or
    starting with a BOM)."""
    return None if prompt.endswith("\r") or prompt.startswith("\ufeff") else prompt + "\n"


def regenerate_command(header: dict, output: str, fmt: str = "markdown", depth: int = DEFAULT_DEPTH,
                       stage: str | None = None, prompt_file: str | None = None) -> tuple[str, str | None]:
    """(command, note): the command writes the page again, in `fmt`, to `output` (the path as the
    user gave it, like the log's image path: both relative to where the run started), with the module
    trees `depth` deep and only the stages `stage` starts (all by default); the note, where there is one, says what the command needs that the log
    cannot give (a checkpoint folder an old log does not name, a long prompt's file, unless the
    page writes it as `prompt_file`)."""
    model, inputs = header.get("model", {}), header.get("inputs", {})
    gen = header.get("generation") or {}
    checkpoint = model.get("checkpoint")
    preset = model.get("preset", "")
    args = ["llama-trace", "run"]
    notes = []
    if from_checkpoint(header):
        args += ["--checkpoint", checkpoint or "DIR"]
        if checkpoint is None:
            notes.append("DIR: the checkpoint folder (a log written before the path was recorded does not name it)")
        default = {"max_seq_len": ModelArgs().max_seq_len, "mode": "real", "layout": None}
    elif preset in PRESETS:
        args += ["--model", preset]
        default = {"max_seq_len": get_preset(preset).max_seq_len, "mode": default_mode(preset),
                   "layout": default_layout(preset)}
    else:  # a log from another llama-trace, or edited
        args += ["--model", preset]
        notes.append(f"this llama-trace has no preset {preset!r}")
        default = {"max_seq_len": None, "mode": None, "layout": None}
    image = (inputs.get("image") or {}).get("file")
    if image and image != "bundled":
        args += ["--image", image]
    if any(path != Path(path).name and not Path(path).is_absolute() for path in (output, image if image != "bundled" else None) if path):
        notes.append("paths relative to the folder the run started in")
    prompt = inputs.get("prompt", DEFAULT_PROMPT)
    if needs_prompt_file(header):
        args += ["--prompt-file", prompt_file or "prompt.txt"]
        if prompt_file is None:
            notes.append("prompt.txt: the prompt of this page, as a UTF-8 text file")
    elif prompt != DEFAULT_PROMPT:
        args += ["--prompt", prompt]
    if inputs.get("allow_special"):
        args.append("--allow-special")
    if header.get("mode") != default["mode"]:
        args += ["--mode", header.get("mode")]
    if inputs.get("layout") and inputs.get("layout") != default["layout"]:
        args += ["--layout", inputs["layout"]]
    if header.get("dtype", DEFAULT_DTYPE) != DEFAULT_DTYPE:
        args += ["--dtype", header["dtype"]]
    if header.get("device") not in (None, DEFAULT_DEVICE, "meta"):
        args += ["--device", header["device"]]
    max_seq_len = (model.get("config") or {}).get("max_seq_len")
    if max_seq_len is not None and max_seq_len != default["max_seq_len"]:
        args += ["--max-seq-len", str(max_seq_len)]
    if gen.get("max_new_tokens"):
        args += ["--max-new-tokens", str(gen["max_new_tokens"])]
    if gen.get("temperature"):
        args += ["--temperature", str(gen["temperature"])]
        if gen.get("top_p") != DEFAULT_TOP_P:
            args += ["--top-p", str(gen.get("top_p"))]
    if gen.get("seed"):
        args += ["--seed", str(gen["seed"])]
    if header.get("ops"):
        args.append("--ops")
    if header.get("mode") == "real" and not values_summarised(header):
        args.append("--no-values")
    if header.get("timing") is False:
        args.append("--no-timing")
    if stage is not None:
        args += ["--stage", stage]
    if depth != DEFAULT_DEPTH:
        args += ["--depth", str(depth)]
    args += ["--format", fmt, "-o", output]
    return " ".join(shell_quote(a) for a in args), "; ".join(notes) or None


def shell_quote(arg: str) -> str:
    """`arg` for a shell command line: as `shlex.quote` gives it, or, where it holds control
    characters (a file name with an escape in it), in bash's $'...' form with them as \\xNN
    (\\uNNNN past ASCII) escapes, so the command both shows them and still names the same file."""
    if visible(arg) == arg:
        return shlex.quote(arg)
    escaped = arg.replace("\\", "\\\\").replace("'", "\\'")
    return "$'" + "".join(c if visible(c) == c else (f"\\x{ord(c):02x}" if ord(c) < 0x80 else f"\\u{ord(c):04x}") for c in escaped) + "'"
