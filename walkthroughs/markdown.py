"""The deep-dive page: Markdown with pictures, every number from the trace.

Renders on GitHub as is: relative links to the code and the PNGs, a mermaid flow chart, no HTML.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote

from PIL import Image

from model import SHAPE_LETTERS, SHAPE_PRODUCTS

from . import pictures
from .annotations import annotate
from .catalog import stage_index, title_of
from .context import all_stage_contexts, run_context
from .defaults import DEFAULT_DEPTH
from .header import RANDOM_TEXT, mode_label, random_weights
from .regenerate import needs_prompt_file, prompt_file_path, prompt_file_text, regenerate_command
from .source_excerpt import PROJECT_ROOT, excerpt
from .summary import display_path, fmt_count, fmt_item, nonfinite_line, phase_label, plural, stats_parts, table_items, taking_turns, visible
from .tree import build_tree, walk

GROUPS = [
    ("prompt", "Prompt"), ("setup", "Caches"), ("vision.inputs", "Vision inputs"), ("image", "Image transform"),
    ("vision", "Vision model"), ("xattn", "Cross-attention caches"), ("masks", "Masks"), ("text", "Text decoder"),
    ("sampling", "Next token"),
]


def _group(stage_id: str) -> str:
    best = max((g for g, _ in GROUPS if stage_id == g or stage_id.startswith(g + ".")), key=len, default=stage_id)
    return best


def anchor(i: int, title: str) -> str:
    text = f"{i}. {title}".lower()
    keep = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return keep.replace(" ", "-")


META_REPO = "https://github.com/meta-llama/llama-models/blob/main/models/"
HF_REPO = "https://github.com/huggingface/transformers/blob/main/src/transformers/"


def reference_link(ref: str, repo: str) -> str:
    """`llama3/multimodal/model.py: Name` -> a link to the file, the name beside it."""
    path, sep, name = ref.partition(": ")
    if not sep or not path.endswith(".py") or " " in path:
        return f"`{ref}`"
    url = repo + ("models/" + path if path.startswith("mllama/") else path)
    return f"[`{path}`]({url}) `{name}`"


def md_escape_cell(text: str) -> str:
    """Text for a table cell: | escaped, and on one line (see `md_one_line`)."""
    return md_one_line(text.replace("|", "\\|"))


def md_one_line(text: str) -> str:
    """A table row must stay on one line: each line break in `text` (a multi-line prompt) shown as ↵."""
    return re.sub(r"\r\n|\r|\n", "↵ ", text)


MD_SPECIALS = r"[\\`*_\[\]!<>&~|]"  # what md_text escapes; html.inline reads the escapes back
_MD_SPECIAL = re.compile(f"({MD_SPECIALS})")


def md_text(text: str) -> str:
    """The user's text (a prompt, generated text, a file name) as Markdown that shows it as it is:
    the inline specials backslash-escaped, | included (so it may also stand in a table cell)."""
    return _MD_SPECIAL.sub(r"\\\1", visible(text))


def md_code(text: str) -> str:
    """text as a code span, whatever backticks it holds: a fence one longer than its longest run."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{'`' * (longest + 1)}{pad}{text}{pad}{'`' * (longest + 1)}"


def mermaid(rows: list[tuple[dict, dict]], catalog: dict, events: list[dict]) -> list[str]:
    """The stages as a flowchart in order of first appearance; a dotted edge back where two
    stages take turns (`taking_turns`)."""
    turns = taking_turns(rows, events)
    lines = ["```mermaid", "flowchart TD"]
    current = None
    prev = None
    for i, (row, _) in enumerate(rows, 1):
        group = _group(row["stage"])
        if group != current:
            if current is not None:
                lines.append("  end")
            label = dict(GROUPS).get(group, group)
            lines.append(f'  subgraph g{i}["{label}"]')
            current = group
        title = title_of(row["stage"], catalog).replace('"', "'")
        lines.append(f'    s{i}["{i}. {title}"]')
        if prev is not None:
            lines.append(f"    s{prev} --> s{i}")
            if i - 1 in turns:
                lines.append(f"    s{i} -.->|in turn| s{prev}")
        prev = i
    lines += ["  end", "```"]
    return lines


def shape_table(event: dict) -> list[str]:
    real = any("stats" in o for o in event.get("outputs", []))
    head = "| | name | shape | dtype |" + (" values |" if real else "")
    lines = [head, "|---|---|---|---|" + ("---|" if real else "")]
    for side, items in (("in", event.get("inputs", [])), ("out", event.get("outputs", []))):
        shown, hidden = table_items(items)
        for item in shown:
            cells = [side, md_code(display_path(item["path"])), md_code(fmt_item(item)), item.get("dtype", "")]
            if real:
                line, flags = stats_parts(item)
                cells.append(" ".join([line, *(f"**{flag}**" for flag in flags)]) if line else "")
            lines.append("| " + " | ".join(md_escape_cell(c) for c in cells) + " |")
        if hidden:
            lines.append(f"| {side} | … {hidden} more | | |" + (" |" if real else ""))
    return lines


def heading(row: dict, catalog: dict) -> str:
    """A stage's section title; the decode steps' sections say so, apart from the prefill's."""
    return title_of(row["stage"], catalog) + (" (decode steps)" if row["phase"] == "decode" else "")


def source_ref(file: str, page_dir: Path, line: int | None = None) -> str:
    """`file:line` of our source, as a link from a page inside the project (the examples), else as
    plain text: a link from elsewhere would point into this installation and break once the page
    is shared, and the page's bytes would depend on the folder it went to."""
    text = f"`{file}:{line}`" if line is not None else f"`{file}`"
    if not page_dir.resolve().is_relative_to(PROJECT_ROOT):
        return text
    link = Path(os.path.relpath(PROJECT_ROOT / file, page_dir)).as_posix() + (f"#L{line}" if line is not None else "")
    return f"[{text}]({link})"


def code_block(src: dict | None, page_dir: Path) -> list[str]:
    found = excerpt(src)
    if not found:
        return []
    lines, start, hl = found
    body = [f"{'>' if start + k == hl else ' '} {line}" for k, line in enumerate(lines)]
    return [source_ref(src["file"], page_dir, src["line"]), "", "```python", *body, "```"]


def tree_lines(events: list[dict], event: dict, depth: int) -> list[str]:
    node = build_tree(events, event["seq"])
    if not node.children or depth <= 0:  # as the terminal's trees
        return []
    out = []
    for level, n in walk(node, depth):
        out.append(f"{'  ' * level}- `{n.label}`")
    return out


def shape_key() -> str:
    """The project's shape letters with their meanings, as one sentence for a page's legend."""
    return "; ".join([*(f"{letter} {meaning}" for letter, meaning in SHAPE_LETTERS.items()), SHAPE_PRODUCTS])


def render_markdown(header: dict, events: list[dict], summary: dict, page: Path, image: Image.Image | None = None, depth: int = DEFAULT_DEPTH,
                    regenerate_as: tuple[str, str] | None = None, stage: str | None = None) -> dict[Path, object]:
    """The page text, its pictures and, where its regenerate command needs one, its prompt file:
    {path: str | PIL image}. Nothing is written here. The page
    says how to regenerate it: as `regenerate_as` = (format, path as the user gave it), by default
    (markdown, `page`). With
    `stage`, only the stages whose id starts with it get a section (numbered as in the whole run)."""
    page = Path(page)
    page_dir = page.parent
    stem = page.stem
    catalog = stage_index()
    rows = all_stage_contexts(header, events, summary)
    ctx = run_context(header, events, summary)
    files: dict[Path, object] = {}
    model = header["model"]
    inputs = header["inputs"]
    img = inputs.get("image") or {}

    fmt, name = regenerate_as or ("markdown", str(page))
    prompt_text = prompt_file_text(inputs.get("prompt", "")) if fmt == "markdown" and needs_prompt_file(header) else None
    prompt_file = None
    if prompt_text is not None:  # written beside the page, for its regenerate command
        files[Path(prompt_file_path(str(page)))] = prompt_text
        prompt_file = prompt_file_path(name)
    command, note = regenerate_command(header, name, fmt, depth, stage, prompt_file)
    out = [f"# Llama 3.2 Vision {md_text(model['preset'])}, traced stage by stage", ""]
    alarm = nonfinite_line(events)
    if alarm:
        out += [f"> **Warning:** {md_text(alarm)}.", ""]
    out += [
        f"Every shape, count and number on this page comes from one `llama-trace` run of the "
        f"{md_text(model['preset'])} configuration in **{mode_label(header)}** ({header['dtype']}); "
        f"regenerate it with {md_code(visible(command))}" + (f" ({md_text(note)})." if note else "."),
        "",
        "| input | value |",
        "|---|---|",
        f"| image | {md_text(str(img.get('path')))}, {ctx['image_w']}x{ctx['image_h']} {img.get('mode')} |",
        f"| canvas and chunks | {ctx['canvas_w']}x{ctx['canvas_h']}: {ctx['rows']} x {ctx['cols']} chunks of {ctx['R']} px, {plural(ctx['empty_chunks'], 'empty slot')} of {ctx['max_chunks']} |",
        f"| prompt | {md_text(repr(inputs.get('prompt')))} → {ctx['prompt_tokens']} tokens ({ctx['layout']} layout, image token at position {ctx['image_pos']}) |",
        f"| model | {md_text(model['preset'])}: D={ctx['D']}, {ctx['n_layers']} text layers + {ctx['n_xattn']} cross-attention layers, vision W={ctx['W']} with {ctx['vision_layers']} + {ctx['global_layers']} layers |",
        f"| cost | {ctx['total_flops']} FLOPs in matmuls and attention; the image side takes {ctx['vision_flops_share']} (the encoder and projection {ctx['encoder_flops_share']}) |",
        f"| versions | llama-trace {header['versions']['llama-trace']}, torch {header['versions']['torch']}, config {model['config_hash']} |",
        "",
        f"Shape letters: {shape_key()} (see {source_ref('model/args.py', page_dir)}).",
        "",
        "## The flow",
        "",
        *mermaid(rows, catalog, events),
        "",
        "## Contents",
        "",
    ]
    sections = [(i, row, sctx) for i, (row, sctx) in enumerate(rows, 1) if stage is None or row["stage"].startswith(stage)]
    for i, row, _ in sections:
        title = heading(row, catalog)
        out.append(f"{i}. [{title}](#{anchor(i, title)})")
    out.append("")

    placed = {"image.pad": ["canvas"], "image.chunks": ["chunks"], "vision.encoder_mask": ["encoder_mask"], "masks.expand": ["xattn_mask"]}
    shown = {f"{stem}.{key}.png" for _, row, _ in sections for key in placed.get(row["stage"], [])}
    pics = {name: pic for name, pic in _pictures(header, events, summary, ctx, stem, image).items() if name in shown}
    files.update({page_dir / name: pic for name, (pic, _) in pics.items()})

    for i, row, sctx in sections:
        sid = row["stage"]
        info = catalog.get(sid)
        title = heading(row, catalog)
        note = annotate(sid, sctx)
        e = row["first"]
        out += [f"## {i}. {title}", ""]
        facts = [f"stage `{sid}`"] + ([f"phase: {phase_label(row['phase'], events)}"] if row["phase"] else [])
        facts.append(plural(row["calls"], "call"))
        if row["params"]:
            facts.append(f"{fmt_count(row['params'])} parameters")
        if row["flops"]:
            facts.append(f"{fmt_count(row['flops'])} FLOPs ({sctx['flops_share']} of the run)")
        out += [" · ".join(facts), ""]
        if note.what:
            out += [note.what, ""]
        if note.why:
            out += [f"*Why:* {note.why}", ""]
        if note.gotchas:
            out += ["Watch out:", ""] + [f"- {g}" for g in note.gotchas] + [""]
        if note.hf:
            out += [f"*Hugging Face:* {note.hf}", ""]
        for key in placed.get(sid, []):
            name = f"{stem}.{key}.png"
            if name in pics:
                out += [f"![{pics[name][1]}]({quote(name)})", "", f"*{pics[name][1]}*", ""]  # a link: "my page.canvas.png" as my%20page…
        out += shape_table(e) + [""]
        out += code_block(e.get("src"), page_dir) + [""]
        tree = tree_lines(events, e, depth)
        if tree:
            out += ["Calls inside it:", ""] + tree + [""]
        if info and (info.meta or info.hf):
            out += [f"Meta's reference: {reference_link(info.meta, META_REPO)} · Hugging Face: {reference_link(info.hf, HF_REPO)}", ""]
    if "next_token" in summary:
        nt = summary["next_token"]
        out += ["## Result", "", f"Next token after the prefill: `{nt['id']}` {md_text(repr(nt['text']))}", ""]
        if "generated" in summary:
            g = summary["generated"]
            meaning = RANDOM_TEXT if random_weights(header) else ""
            out += [f"Generated {plural(len(g['ids']), 'token')}, stopped at {g['stopped']}: {md_text(repr(g['text']))}{meaning}", ""]
        if summary.get("top5"):
            out += ["The five likeliest next tokens after the prefill:", "", "| id | text | logit |", "|---|---|---|"] + [f"| {t['id']} | {md_text(repr(t['text']))} | {t['logit']} |" for t in summary["top5"]] + [""]
    files[page] = "\n".join(out).rstrip() + "\n"
    return files


def _pictures(header, events, summary, ctx, stem, image) -> dict[str, tuple[Image.Image, str]]:
    pics: dict[str, tuple[Image.Image, str]] = {}
    canvas = (ctx["canvas_w"], ctx["canvas_h"])
    resized = (ctx["resized_w"], ctx["resized_h"])
    if image is not None and canvas[0]:
        pics[f"{stem}.canvas.png"] = (
            pictures.canvas_picture(image, resized, canvas, ctx["rows"], ctx["cols"]),
            f"The {ctx['image_w']}x{ctx['image_h']} image on its {canvas[0]}x{canvas[1]} canvas: {ctx['rows']} x {ctx['cols']} chunks"
            + (", padded bottom-right with black" if resized != canvas else ", which it fills: no padding"),
        )
        pics[f"{stem}.chunks.png"] = (
            pictures.chunks_picture(image, resized, canvas, ctx["rows"], ctx["cols"], ctx["max_chunks"]),
            f"The {ctx['max_chunks']} chunk slots the encoder sees: {plural(ctx['chunks'], 'real chunk')} in row-major order, {ctx['empty_chunks']} empty",
        )
    if ctx.get("chunks"):
        pics[f"{stem}.encoder_mask.png"] = (
            pictures.encoder_mask_picture(ctx["chunks"], ctx["max_chunks"]),
            f"Encoder attention mask over {ctx['max_chunks']} x {ctx['N8']} tokens (not to scale): dark = blocked, only where query and key are both padding",
        )
        pics[f"{stem}.xattn_mask.png"] = (
            pictures.xattn_mask_picture(ctx["prompt_tokens"], ctx["image_pos"], ctx["chunks"], ctx["max_chunks"]),
            f"Cross-attention mask after the row mask: {ctx['prompt_tokens']} prompt rows x {ctx['max_chunks']} chunk blocks of {ctx['N']} vision tokens; "
            f"green = attends, dark = blocked, blue = a row before the image token: all zeros, so it attends to every key, and its output is zeroed later",
        )
    return pics


def write_files(files: dict[Path, object]) -> None:
    """The page and the files beside it, all or none (`tracer.log.atomic_write_files`)."""
    from tracer.log import atomic_write_files

    atomic_write_files({path: pictures.png_bytes(content) if isinstance(content, Image.Image) else content.encode("utf-8")
                        for path, content in files.items()})