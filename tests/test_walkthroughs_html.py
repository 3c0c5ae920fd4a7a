"""The self-contained HTML page: nothing external, every stage, pictures inline, same bytes twice,
and (where a chromium binary is found) a headless browser that loads it without console errors."""

import html
import re
import shutil
import subprocess

import pytest
from PIL import Image

from logs import logged
from walkthroughs.catalog import stage_index
from walkthroughs.html import inline, markdown_to_html, render_html
from walkthroughs.regenerate import regenerate_command
from walkthroughs.summary import stage_rows

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install -y chromium) for the browser test")


@pytest.fixture(scope="module")
def page(tiny_log):
    header, events, summary, image = tiny_log
    return render_html(header, events, summary, image=image)


def test_nothing_external(page):
    assert "http" not in page
    for attr, value in re.findall(r'\b(src|href|action|poster|data)\s*=\s*"([^"]*)"', page):
        assert value.startswith("#") or value.startswith("data:image/png;base64,"), (attr, value[:60])
    assert "url(" not in page and "@import" not in page and "@font-face" not in page
    assert "<link" not in page and not re.search(r"<script[^>]*\bsrc=", page) and "<iframe" not in page


def test_every_stage_is_a_collapsible_section(page, tiny_log):
    _, events, _, _ = tiny_log
    rows = stage_rows(events)
    catalog = stage_index()
    details = re.findall(r'<details class="stage" id="([^"]+)"><summary><h2>(\d+)\. ', page)
    assert [int(n) for _, n in details] == list(range(1, len(rows) + 1))
    assert len({i for i, _ in details}) == len(rows)  # unique ids
    for row in rows:
        assert f"stage <code>{row['stage']}</code>" in page
        assert catalog[row["stage"]].title.replace("&", "&amp;").replace("'", "&#x27;") in page
    for anchor in re.findall(r'href="#([^"]+)"', page):  # contents and flow links land on a stage
        assert f'id="{anchor}"' in page, anchor
    assert page.count("<details") == page.count("</details>") == len(rows)


def test_the_flow_says_which_stages_take_turns(page):
    """The chart's dotted edge back (cross-attention between self-attention layers) survives as
    words on the HTML page's flow list."""
    items = re.findall(r"<li>(.*?)</li>", page.split('<div class="flow">')[1].split("</div>\n</div>")[0])
    turns = [item for item in items if "in turn with" in item]
    assert len(turns) == 1 and "Gated cross-attention layers" in turns[0]


def test_pictures_are_inline_pngs(page):
    import base64
    import io

    uris = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == 4
    for data in uris:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG" and im.size[0] > 10


def test_same_inputs_same_bytes(page, tiny_log):
    header, events, summary, image = tiny_log
    assert render_html(header, events, summary, image=image) == page
    without = render_html(header, events, summary)  # no image: the masks are still drawn
    assert without.count("data:image/png") == 2 and "http" not in without


def test_projector_styles_and_keys(page):
    assert "font-size: 22px" in page and "<script>" in page
    for key in ('"j"', '"k"', '"ArrowRight"', '"ArrowLeft"'):
        assert key in page


def test_inline_subset():
    assert inline("a `x<y` **b** *c* [`f.py`](../f.py#L3) [go](#2-x)") == (
        'a <code>x&lt;y</code> <strong>b</strong> <em>c</em> <span class="ref"><code>f.py</code></span> <a href="#2-x">go</a>'
    )
    assert inline("`[start, end]` and C*N8 and 2 * 3") == "<code>[start, end]</code> and C*N8 and 2 * 3"
    title, body = markdown_to_html("# T\n\n| a | b |\n|---|---|\n| `x \\| y` | 2 |\n\n- one\n  - two\n")
    assert title == "T" and "<td><code>x | y</code></td>" in body and "<ul><li>one<ul><li>two</li></ul></li></ul>" in body


def _chromium(*args, cwd):
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
                           "--window-size=1280,900", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Uncaught" in line or "ERROR:CONSOLE" in line or ":CONSOLE" in line]


@needs_chromium
def test_chromium_loads_it_without_errors_and_draws_something(page, tmp_path):
    html = tmp_path / "page.html"
    html.write_text(page, encoding="utf-8")
    shot = tmp_path / "out.png"
    done = _chromium(f"--screenshot={shot}", html.as_uri(), cwd=tmp_path)
    assert not _console_errors(done.stderr), _console_errors(done.stderr)
    assert shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as im:
        colours = im.convert("RGB").getcolors(1 << 20)
        assert colours is None or len(colours) > 50  # text, tables, the flow: far from blank


@needs_chromium
def test_chromium_keyboard_navigation_opens_stages(page, tmp_path):
    probe = """<script>
    function press(k) { document.dispatchEvent(new KeyboardEvent("keydown", {key: k, bubbles: true})); }
    press("j"); press("j"); press("ArrowRight"); press("k");
    var open = Array.prototype.filter.call(document.querySelectorAll("details.stage"), function (d) { return d.open; });
    document.body.setAttribute("data-open", open.map(function (d) { return d.id; }).join(","));
    document.body.setAttribute("data-pos", document.getElementById("pos").textContent);
    press("e");
    document.body.setAttribute("data-all", String(document.querySelectorAll("details.stage[open]").length));
    </script></body>"""
    html = tmp_path / "probe.html"
    html.write_text(page.replace("</body>", probe), encoding="utf-8")
    done = _chromium("--dump-dom", html.as_uri(), cwd=tmp_path)
    assert not _console_errors(done.stderr), _console_errors(done.stderr)
    body = re.search(r"<body([^>]*)>", done.stdout).group(1)
    n = page.count('<details class="stage"')
    assert 'data-open="2-' in body and "," not in re.search(r'data-open="([^"]*)"', body).group(1)
    assert f'data-pos="stage 2/{n}"' in body and f'data-all="{n}"' in body


def test_the_users_text_is_shown_as_typed_not_as_markdown():
    prompt = "a `pipe` *star* _under_ [link](x) <b> & ~~s~~ | \\"
    header, events, summary, _ = logged("tiny", prompt, max_new_tokens=1)
    page = render_html(header, events, summary, name="p.html")
    row = re.search(r"<td>prompt</td><td>(.*?)</td>", page)[1]
    assert row.startswith(html.escape(repr(prompt)) + " → ")  # as typed: no <code>, <em>, link, entity or strike
    command, _ = regenerate_command(header, "p.html", "html")
    assert f"regenerate it with <code>{html.escape(command)}</code>" in page  # whole, backticks and all
    assert "(random weights: the text means nothing)" in page
