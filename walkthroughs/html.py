"""The deep-dive page as one self-contained HTML file, for a browser or a projector.

The content is the Markdown page's (`render_markdown`), converted here (only the subset that
page uses: headings, paragraphs, tables, lists, fenced code, images, inline code, bold, italics,
links), with:

- every stage a collapsible `<details>` section; the mermaid chart becomes a linked list of groups;
- the pictures inline as `data:image/png;base64,...`;
- keyboard navigation: j / → / n next stage, k / ← / p previous, e expand all, c collapse all, ? keys;
- nothing external: no scripts, styles, fonts or images from the network; links that lead out of
  the page (source files, GitHub) become plain text, so the file works offline and by itself.

Same inputs give the same bytes.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from urllib.parse import unquote

from PIL import Image

from .defaults import DEFAULT_DEPTH
from .markdown import MD_SPECIALS, anchor, render_markdown
from .pictures import png_bytes
from .source_excerpt import PROJECT_ROOT

# A fixed page path: the Markdown's relative links depend on it, and the output must not depend on the cwd.
PAGE = PROJECT_ROOT / "walkthroughs" / "examples" / "page.md"

CSS = """
:root { --fg: #111; --bg: #fff; --dim: #444; --accent: #0b4fa8; --code-bg: #f2f2f2; --hl: #ffe14d; --line: #222; }
* { box-sizing: border-box; }
html { font-size: 22px; }
body { margin: 0 auto; padding: 1rem 2rem 4rem; max-width: 80rem; color: var(--fg); background: var(--bg);
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; line-height: 1.5; }
h1 { font-size: 2.1rem; line-height: 1.2; margin: 0.5rem 0 1rem; }
h2 { font-size: 1.6rem; margin: 0; display: inline; }
h3 { font-size: 1.15rem; margin: 0.2rem 0; }
section > h2 { display: block; margin: 1.5rem 0 0.5rem; }
a { color: var(--accent); text-decoration: underline; text-underline-offset: 0.15em; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.9em; }
:not(pre) > code { background: var(--code-bg); padding: 0.05em 0.3em; border-radius: 0.2em; }
pre { background: var(--code-bg); border: 2px solid #bbb; padding: 0.6rem 0.8rem; overflow-x: auto; line-height: 1.4; white-space: pre-wrap; overflow-wrap: anywhere; }
pre .ln { color: #666; display: inline-block; min-width: 3.2em; user-select: none; }
pre .hl { background: var(--hl); display: block; font-weight: 700; }
pre .row { display: block; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 2px solid #999; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #e4e4e4; }
img { max-width: 100%; height: auto; border: 2px solid #999; image-rendering: pixelated; background: #fff; }
figure { margin: 0.8rem 0; }
details.stage { border: 2px solid #999; border-left: 0.5rem solid #999; border-radius: 0.3rem; margin: 0.6rem 0; padding: 0 1rem; }
details.stage[open] { border-left-color: var(--accent); padding-bottom: 0.6rem; }
details.stage > summary { cursor: pointer; padding: 0.6rem 0; list-style-position: outside; }
details.stage > summary:focus { outline: 4px solid var(--accent); outline-offset: 2px; }
details.stage.current { border-color: var(--accent); }
.facts { color: var(--dim); }
.flow { display: flex; flex-wrap: wrap; gap: 0.6rem; }
.flow .group { border: 2px solid #999; border-radius: 0.3rem; padding: 0.3rem 0.8rem; flex: 1 1 16rem; }
.flow ol { margin: 0.2rem 0; padding-left: 2.2rem; font-size: 0.85rem; }
.ref { font-weight: 600; }
#keys { position: fixed; right: 0.6rem; bottom: 0.6rem; background: #111; color: #fff; padding: 0.3rem 0.7rem;
  border-radius: 0.3rem; font-size: 0.8rem; opacity: 0.92; }
#keys[hidden] { display: none; }
@media print { #keys { display: none; } details.stage { break-inside: avoid-page; } }
"""

SCRIPT = """
(function () {
  var stages = Array.prototype.slice.call(document.querySelectorAll("details.stage"));
  var keys = document.getElementById("keys");
  var pos = document.getElementById("pos");
  var cur = -1;
  function mark(i) {
    if (cur >= 0 && stages[cur]) { stages[cur].classList.remove("current"); }
    cur = i;
    stages[i].classList.add("current");
    if (pos) { pos.textContent = "stage " + (i + 1) + "/" + stages.length; }
  }
  function go(i) {
    if (!stages.length) { return; }
    i = Math.max(0, Math.min(stages.length - 1, i));
    if (cur >= 0 && cur !== i) { stages[cur].open = false; }
    stages[i].open = true;
    mark(i);
    stages[i].scrollIntoView({ block: "start" });
    var s = stages[i].querySelector("summary");
    if (s && s.focus) { s.focus({ preventScroll: true }); }
  }
  function all(open) { stages.forEach(function (d) { d.open = open; }); }
  stages.forEach(function (d, i) {
    d.addEventListener("toggle", function () { if (d.open) { mark(i); } });
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) { return; }
    var k = ev.key;
    if (k === "j" || k === "n" || k === "ArrowRight") { go(cur + 1); }
    else if (k === "k" || k === "p" || k === "ArrowLeft") { go(cur < 0 ? 0 : cur - 1); }
    else if (k === "e") { all(true); }
    else if (k === "c") { all(false); }
    else if (k === "?") { if (keys) { keys.hidden = !keys.hidden; } }
    else { return; }
    ev.preventDefault();
  });
  function fromHash() {
    var id = decodeURIComponent(location.hash.slice(1));
    for (var i = 0; i < stages.length; i++) { if (stages[i].id === id) { go(i); return; } }
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
"""

_INLINE = re.compile(
    rf"\\(?P<escaped>{MD_SPECIALS})"  # markdown.md_text's escapes
    r"|!\[(?P<ialt>[^\]]*)\]\((?P<isrc>[^)\s]+)\)"
    r"|\[(?P<label>(?:`[^`]*`|[^\]`])*)\]\((?P<href>[^)\s]+)\)"
    r"|(?P<fence>`+)(?P<code>.+?)(?<!`)(?P=fence)(?!`)"  # markdown.md_code's longer fences too
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|(?<![\w*])\*(?P<em>[^*\s](?:[^*]*[^*\s])?)\*(?![\w*])"
)


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def inline(text: str, images: dict[str, str] | None = None) -> str:
    """Markdown inline syntax -> HTML. Links out of the page become text; images become data: URIs."""
    out, last = [], 0
    for m in _INLINE.finditer(text):
        out.append(esc(text[last:m.start()]))
        last = m.end()
        if m.group("escaped") is not None:
            out.append(esc(m.group("escaped")))
        elif m.group("isrc") is not None:
            src = (images or {}).get(unquote(m.group("isrc")))  # markdown.py quotes the file name
            out.append(f'<img alt="{esc(m.group("ialt"))}" src="{src}">' if src else esc(m.group("ialt")))
        elif m.group("href") is not None:
            label, href = inline(m.group("label"), images), m.group("href")
            out.append(f'<a href="{esc(href)}">{label}</a>' if href.startswith("#") else f'<span class="ref">{label}</span>')
        elif m.group("code") is not None:
            code = m.group("code")
            code = code[1:-1] if len(m.group("fence")) > 1 and code.startswith(" ") and code.endswith(" ") and code.strip() else code
            out.append(f"<code>{esc(code)}</code>")
        elif m.group("bold") is not None:
            out.append(f"<strong>{inline(m.group('bold'), images)}</strong>")
        else:
            out.append(f"<em>{inline(m.group('em'), images)}</em>")
    out.append(esc(text[last:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def _table(lines: list[str], images) -> list[str]:
    head = _cells(lines[0])
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{inline(c, images)}</th>" for c in head) + "</tr></thead>", "<tbody>"]
    for line in lines[2:]:
        out.append("<tr>" + "".join(f"<td>{inline(c, images)}</td>" for c in _cells(line)) + "</tr>")
    return out + ["</tbody>", "</table>"]


def _list(lines: list[str], images) -> list[str]:
    """Nested lists by two-space indentation; `1.` items make an ordered list."""
    out: list[str] = []
    stack: list[str] = []
    for line in lines:
        indent = (len(line) - len(line.lstrip(" "))) // 2
        item = line.strip()
        ordered = re.match(r"^(\d+)\. (.*)$", item)
        tag, text = ("ol", ordered.group(2)) if ordered else ("ul", item[2:])
        while len(stack) > indent + 1:
            out.append(f"</li></{stack.pop()}>")
        if len(stack) < indent + 1:
            while len(stack) < indent + 1:
                out.append(f"<{tag}><li>")
                stack.append(tag)
        else:
            out.append("</li><li>")
        out.append(inline(text, images))
    while stack:
        out.append(f"</li></{stack.pop()}>")
    return ["".join(out)]


def _code(lang: str, body: list[str], first_line: int | None) -> list[str]:
    if lang == "python" and body and all(line[:1] in (">", " ") for line in body):
        hl = next((k for k, line in enumerate(body) if line.startswith(">")), None)
        start = first_line - hl if first_line is not None and hl is not None else None
        rows = []
        for k, line in enumerate(body):
            number = f'<span class="ln">{start + k}</span>' if start is not None else ""
            cls = "hl" if k == hl else "row"
            rows.append(f'<span class="{cls}">{number}{esc(line[2:])}</span>')
        return [f'<pre class="python"><code>{"".join(rows)}</code></pre>']
    return [f'<pre><code>{esc(chr(10).join(body))}</code></pre>']


def _flow(body: list[str]) -> list[str]:
    """The mermaid flow chart as linked lists, one per group (no chart library offline)."""
    out = ['<div class="flow">']
    open_group = False
    for line in body:
        line = line.strip()
        group = re.match(r'^subgraph \w+\["(.*)"\]$', line)
        node = re.match(r'^s(\d+)\["(\d+)\. (.*)"\]$', line)
        turn = re.match(r"^s\d+ -\.->\|in turn\| s(\d+)$", line)  # markdown.mermaid's edge back
        if turn and out[-1].endswith("</li>"):  # right after this stage's own item
            out[-1] = out[-1][: -len("</li>")] + f" <small>(in turn with {turn.group(1)})</small></li>"
        elif group:
            if open_group:
                out.append("</ol></div>")
            out.append(f'<div class="group"><h3>{esc(group.group(1))}</h3><ol start="{{start}}">')
            open_group = True
        elif node:
            i, title = int(node.group(2)), node.group(3)
            if out[-1].endswith('start="{start}">'):
                out[-1] = out[-1].replace("{start}", str(i))
            out.append(f'<li><a href="#{esc(anchor(i, title))}">{esc(title)}</a></li>')
    if open_group:
        out.append("</ol></div>")
    out.append("</div>")
    return out


def markdown_to_html(text: str, images: dict[str, str] | None = None) -> tuple[str, str]:
    """(title, body HTML) for the subset of Markdown that `render_markdown` writes."""
    lines = text.split("\n")
    title = ""
    out: list[str] = []
    section: str | None = None  # "details" or "section"
    last_src_line: int | None = None
    i = 0

    def close():
        nonlocal section
        if section == "details":
            out.append("</div></details>")
        elif section == "section":
            out.append("</section>")
        section = None

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("# "):
            title = line[2:].strip()
            out.append(f"<h1>{inline(title, images)}</h1>")
            i += 1
            continue
        if line.startswith("## "):
            close()
            heading = line[3:].strip()
            stage = re.match(r"^(\d+)\. (.*)$", heading)
            if stage:
                sid = anchor(int(stage.group(1)), stage.group(2))
                out.append(f'<details class="stage" id="{esc(sid)}"><summary><h2>{inline(heading, images)}</h2></summary><div class="body">')
                section = "details"
            else:
                sid = re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")
                out.append(f'<section id="{esc(sid)}"><h2>{inline(heading, images)}</h2>')
                section = "section"
            i += 1
            continue
        if line.startswith("```"):
            lang = line[3:].strip()
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            body = lines[i + 1:j]
            out += _flow(body) if lang == "mermaid" else _code(lang, body, last_src_line)
            i = j + 1
            continue
        block = []
        while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "```")):
            block.append(lines[i])
            i += 1
        if block[0].startswith("|") and len(block) > 1 and set(block[1].replace("|", "").strip()) <= set("-: "):
            out += _table(block, images)
        elif all(re.match(r"^\s*(- |\d+\. )", b) for b in block):
            out += _list(block, images)
        elif len(block) == 1 and re.fullmatch(r"!\[[^\]]*\]\([^)\s]+\)", block[0].strip()):
            out.append(f"<figure>{inline(block[0].strip(), images)}</figure>")
        else:
            src = re.fullmatch(r"\[`[^`]+:(\d+)`\]\([^)]*\)", block[0].strip()) if len(block) == 1 else None
            if src:
                last_src_line = int(src.group(1))
            cls = ' class="facts"' if block[0].startswith("stage `") else ""
            out.append(f"<p{cls}>" + "<br>\n".join(inline(b, images) for b in block) + "</p>")
    close()
    return title, "\n".join(out)


def data_uri(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def render_html(header: dict, events: list[dict], summary: dict, image: Image.Image | None = None, depth: int = DEFAULT_DEPTH,
                name: str = "page.html", stage: str | None = None) -> str:
    """The whole page as one HTML string: no network, pictures inline, stages collapsible. `name`
    is the file it goes to, as the user gave it, for the command that regenerates it; `stage` as for `render_markdown`."""
    files = render_markdown(header, events, summary, PAGE, image=image, depth=depth, regenerate_as=("html", name), stage=stage)
    text = files[PAGE]
    images = {Path(path).name: data_uri(pic) for path, pic in files.items() if isinstance(pic, Image.Image)}
    title, body = markdown_to_html(text, images)
    n = sum(1 for _ in re.finditer(r'<details class="stage"', body))
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        body,
        f'<div id="keys"><span id="pos">{n} stages</span> · j/→ next · k/← back · e expand all · c collapse · ? hide</div>',
        f"<script>{SCRIPT}</script>",
        "</body>",
        "</html>",
        "",
    ])
