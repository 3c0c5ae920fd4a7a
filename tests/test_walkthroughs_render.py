"""Walkthrough renderers: Markdown pages with pictures, the rich terminal view, determinism."""

import io
import re
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from logs import logged, with_value
from model import SHAPE_LETTERS
from walkthroughs.catalog import stage_index
from walkthroughs.context import all_stage_contexts
from walkthroughs.examples_build import PRESETS, example_files
from walkthroughs.markdown import render_markdown, shape_table, write_files
from walkthroughs.pictures import png_bytes
from walkthroughs.source_excerpt import PROJECT_ROOT
from walkthroughs.summary import fmt_count, fmt_item, fmt_shape, plural, render_summary, stage_rows, stage_title, stats_parts, text_widths
from walkthroughs.step import render_stage
from walkthroughs.terminal import render_walkthrough
from walkthroughs.terminal import shape_table as terminal_shape_table


@pytest.fixture(scope="module")
def page_11b(tmp_path_factory, log_11b):
    header, events, summary, image = log_11b
    page = tmp_path_factory.mktemp("page") / "deep-dive.md"
    files = render_markdown(header, events, summary, page, image=image)
    write_files(files)
    return page, header, events, files


def test_page_has_a_section_for_every_stage_in_the_trace(page_11b):
    page, _, events, _ = page_11b
    text = page.read_text()
    stages = []
    for e in events:
        if e.get("stage") and e["kind"] != "op" and e["stage"] not in stages:
            stages.append(e["stage"])
    catalog = stage_index()
    for sid in stages:
        assert f"stage `{sid}`" in text, sid
        assert f". {catalog[sid].title}" in text
    assert text.count("\n## ") >= len(stages)
    assert "```mermaid" in text and "<" not in text.replace("<|", "").replace("->", "")  # no raw HTML


def test_the_legend_explains_every_letter_the_page_uses(page_11b):
    """The page's legend is the project's one key: each shape letter of the run (Hc and Wc
    included, which an older legend left out) with its meaning, T told apart from M."""
    page, header, _, _ = page_11b
    legend = next(line for line in page.read_text().splitlines() if line.startswith("Shape letters:"))
    letters = [name for name in header["symbols"] if re.fullmatch(r"[A-Z][A-Za-z0-9]*", name)]
    assert set(letters) <= set(SHAPE_LETTERS) and {"Hc", "Wc", "T", "M"} <= set(letters)
    for letter in letters:
        assert f" {letter} {SHAPE_LETTERS[letter]};" in f" {legend}", letter
    assert "at most M" in SHAPE_LETTERS["T"]


def test_the_flowchart_shows_the_decoder_layers_taking_turns(page_11b, tmp_path):
    """Cross-attention runs between self-attention layers, not after them all: the only dotted
    edges back in the chart join those two stages, once for the prefill and once for the decode
    steps (whose stages all repeat from step to step, which is not taking turns)."""
    catalog = stage_index()
    turn = (catalog["text.cross_attention"].title, catalog["text.self_attention"].title)
    header, events, summary, image = logged("tiny", max_new_tokens=3)
    decoding = files_text(render_markdown(header, events, summary, tmp_path / "p.md", image=image))
    for text, times in ((page_11b[0].read_text(), 1), (decoding, 2)):
        titles = dict(re.findall(r'    (s\d+)\["\d+\. ([^"]+)"\]', text))
        back = re.findall(r"    (s\d+) -\.->\|in turn\| (s\d+)", text)
        assert [(titles[a], titles[b]) for a, b in back] == [turn] * times


def files_text(files: dict) -> str:
    return next(text for path, text in files.items() if path.suffix == ".md")


def test_every_picture_link_exists_and_is_a_png(page_11b):
    page, _, _, _ = page_11b
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text())
    assert len(links) == 4
    for link in links:
        target = page.parent / link
        assert target.is_file() and not link.startswith("/")
        with Image.open(target) as im:
            assert im.format == "PNG"


def test_picture_links_hold_for_a_page_name_with_spaces(tiny_log, tmp_path):
    """A link target may not contain a space: "my page.canvas.png" is written my%20page…, so
    Markdown viewers show the pictures, and the HTML page still embeds all of them."""
    from urllib.parse import unquote

    from walkthroughs.html import render_html

    header, events, summary, image = tiny_log
    page = tmp_path / "my page (v2).md"
    write_files(render_markdown(header, events, summary, page, image=image))
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text())  # CommonMark's plain link destination
    assert len(links) == 4 and all((tmp_path / unquote(link)).is_file() for link in links)
    assert render_html(header, events, summary, image=image, name="my page.html").count('src="data:image/png;base64,') == 4


def test_code_links_point_at_our_source(page_11b):
    # a page inside the project (the examples) links each code excerpt to its line
    page = PROJECT_ROOT / "walkthroughs" / "examples" / "11b-instruct.md"  # kept current by test_committed_example_pages_do_not_drift
    links = re.findall(r"\]\(([^)#]+\.py)#L(\d+)\)", page.read_text())
    assert len(links) > 30
    for link, line in links:
        source = (page.parent / link).resolve()
        assert source.is_file() and int(line) <= len(source.read_text().splitlines())
    # one written elsewhere names the file and line without a link into this installation
    text = page_11b[0].read_text()
    assert "`model/args.py`" in text and not re.search(r"\]\((\.\./)+[^)]*\.py", text)


def test_tables_show_short_int_lists_and_count_what_they_leave_out(page_11b):
    text = page_11b[0].read_text()
    assert "| in | `canvas` | `(1120, 560)` |" in text  # the chosen canvas, where it once said "2 ints"
    assert "| out | `[7]` | `(1120, 560)` |" in text  # all 8 canvas candidates, the chosen one last
    event = {"inputs": [], "outputs": [{"path": f"[{i}]", "values": [i, i]} for i in range(10)]}
    assert shape_table(event)[-1] == "| out | … 2 more | | |"  # a longer list says what it leaves out
    assert fmt_item({"path": "", "values": [1120, 560]}) == "(1120, 560)"
    assert fmt_item({"path": "", "values": list(range(16)), "length": 18}) == "18 ints"
    assert fmt_shape({"path": "", "values": [1120, 560]}) == "2 ints"  # a stage's summary row: maybe not the output that matters


def test_a_page_of_some_stages(tiny_log, tmp_path):
    header, events, summary, image = tiny_log
    files = render_markdown(header, events, summary, tmp_path / "p.md", image=image, stage="vision.encoder_mask")
    text = files[tmp_path / "p.md"]
    sections = re.findall(r"^## (\d+)\. (.*)$", text, re.MULTILINE)
    assert [title for _, title in sections] == ["Encoder attention mask"] and int(sections[0][0]) > 1  # numbered as in the whole run
    assert sorted(p.name for p in files if p.suffix == ".png") == ["p.encoder_mask.png"]  # only its own picture
    assert f"--stage vision.encoder_mask --format markdown -o {tmp_path / 'p.md'}" in text  # the path as given


def test_markdown_and_pictures_are_byte_identical_across_runs(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        out.mkdir()
        monkeypatch.chdir(out)  # the same -o, as a user would give it, in two folders
        header, events, summary, image = logged("tiny")  # a run of its own each time
        write_files(render_markdown(header, events, summary, Path("page.md"), image=image))
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for p in a.iterdir():
        assert p.read_bytes() == (b / p.name).read_bytes(), p.name


def test_terminal_walkthrough_fits_100_columns_without_colour(tiny_log):
    header, events, summary, _ = tiny_log
    console = Console(width=100, no_color=True, record=True, force_terminal=False, file=io.StringIO())
    render_walkthrough(header, events, summary, console)
    text = console.export_text()
    assert "\x1b[" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    for stage in ("vision.pad8", "vision.local_layers", "text.cross_attention", "sampling"):
        assert f"({stage}" in text
    assert "resblocks.0-7 ×8" in text  # repeated layers folded, first shown
    resize = next(line for line in text.splitlines() if line.startswith("The image is resized"))
    assert re.search(r"\d+×\d+ becomes \d+×\d+", resize) and "`" not in resize  # the prose's code spans, without backticks


def test_stage_filter_and_depth(tiny_log):
    header, events, summary, _ = tiny_log
    console = Console(width=100, no_color=True, record=True, file=io.StringIO())
    render_walkthrough(header, events, summary, console, stage="vision.global", depth=1)
    text = console.export_text()
    assert "(vision.global_layers" in text and "(vision.local_layers" not in text
    assert "resblocks.0-1 ×2" in text and "attn (ImageAttention)" not in text


def test_real_values_are_shown(tiny_log):
    header, events, summary, _ = tiny_log
    console = Console(width=140, no_color=True, record=True, file=io.StringIO())
    render_walkthrough(header, events, summary, console, stage="text.logits")
    text = console.export_text()
    assert "range [" in text and "μ=" in text


def test_a_nan_range_is_printed_and_flagged_and_an_integer_range_reads_as_integers(tiny_log):
    header, events, summary, _ = tiny_log
    logits = next(e for e in events if e.get("stage") == "text.logits" and e["kind"] == "module")
    sick = with_value(logits, {"min": "nan", "max": "nan", "mean": "nan", "std": "nan", "nan": 3, "inf": 1}, "outputs", 0, "stats")
    ids = {"path": "", "shape": [1], "dtype": "int64", "stats": {"min": 108929.0, "max": 108929.0, "mean": 108929.0, "std": 0.0, "nan": 0, "inf": 0}}
    console = Console(width=160, no_color=True, record=True, file=io.StringIO())
    console.print(terminal_shape_table(sick))
    text = console.export_text()
    assert "range [nan, nan] μ=nan σ=nan NaN×3 Inf×1" in text  # not taken for rich markup
    assert "range [nan, nan] μ=nan σ=nan **NaN×3** **Inf×1** |" in "\n".join(shape_table(sick))
    assert stats_parts(ids) == ("range [108929, 108929] μ=108929.0 σ=0.0", [])


@pytest.mark.parametrize("field", ["dtype", "device", "stage", "src file", "module path"])
def test_markup_in_a_log_field_is_shown_as_text_not_taken_for_rich_markup(tiny_log, field):
    header, events, summary, _ = tiny_log
    odd = "x[/]y[bold]"  # "[/]" taken as markup closes a tag that is not open: rich raises
    first = next(i for i, e in enumerate(events) if e["kind"] == "module" and e.get("src") and e.get("stage"))
    if field in ("dtype", "device"):
        header = with_value(header, odd, field)
    else:
        where = {"stage": ("stage",), "src file": ("src", "file"), "module path": ("path",)}[field]
        events = [*events[:first], with_value(events[first], odd, *where), *events[first + 1:]]
    shows = {render_summary: ("dtype", "device", "stage"), render_walkthrough: ("dtype", "stage", "src file", "module path")}
    for draw, fields in shows.items():
        console = Console(width=160, no_color=True, record=True, file=io.StringIO())
        draw(header, events, summary, console)
        assert (odd in console.export_text()) == (field in fields)


def test_control_characters_in_a_log_reach_no_view_raw(tmp_path):
    """An escape sequence or a bell in a prompt or the image's file name (a prompt file may hold
    any bytes) is shown as its escape, never sent to the terminal or written into a page, where
    it would recolour the terminal or corrupt the file."""
    raw = "Two\x1b[31mred\x1b[0m\x07bell\rover"
    header, events, summary, image = logged("tiny", prompt=raw)
    header = with_value(header, "photo\x1b[2J.png", "inputs", "image", "path")
    header = with_value(header, "checkpoint ck\x1b[2J", "model", "preset")  # a checkpoint run's preset names its folder
    texts = []
    def step_screen(header, events, summary, console):
        render_stage(header, events, summary, console, all_stage_contexts(header, events, summary), 0)

    for draw in (render_summary, render_walkthrough, step_screen):
        console = Console(width=160, no_color=True, record=True, file=io.StringIO())
        draw(header, events, summary, console)
        texts.append(console.export_text())
    texts.append(files_text(render_markdown(header, events, summary, tmp_path / "p.md", image=image)))
    for text in texts:
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", text)
    assert "Two\\x1b[31mred" in texts[1] and "photo\\x1b[2J.png" in texts[0]


def test_a_prompt_with_line_breaks_keeps_every_table_row_of_the_page_on_one_line(tmp_path):
    header, events, summary, image = logged("11b-instruct", prompt="What is this?\nAnswer | briefly.")
    files = render_markdown(header, events, summary, tmp_path / "page.md", image=image)
    text = files[tmp_path / "page.md"]
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert all(line.endswith("|") for line in rows)  # a broken row leaves its tail on a line of its own
    assert any("What is this?↵ Answer \\| briefly." in line for line in rows)


@pytest.mark.parametrize("preset", PRESETS)
def test_committed_example_pages_do_not_drift(preset):
    files = example_files(preset)
    for path, content in files.items():
        assert path.is_file(), f"{path} is missing: run python -m walkthroughs.examples_build"
        if isinstance(content, str):
            assert path.read_text() == content, f"{path.name} drifted from the code: run python -m walkthroughs.examples_build"
        else:
            assert png_bytes(content) == path.read_bytes(), f"{path.name} drifted from the code: run python -m walkthroughs.examples_build"


# ---------------------------------------------------------------------------------------------
# the stage summary table on narrow consoles


def timed(tiny_log):
    """The tiny log with timings as large as they get (seconds per stage on a slow machine)."""
    header, events, summary, _ = tiny_log
    return {**header, "timing": True}, [{**e, "time_ms": 12345.6} for e in events], summary


@pytest.mark.parametrize("width", [60, 80, 100, 120])
def test_summary_table_fits_the_console_and_keeps_every_number(tiny_log, width):
    header, events, summary = timed(tiny_log)
    console = Console(width=width, no_color=True, record=True, file=io.StringIO())
    render_summary(header, events, summary, console)
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= width
    assert any(line.rstrip().endswith(" ms") for line in lines)  # the header of the last column, whole
    rows = {line.split()[0]: line for line in lines if re.match(r"^ *\d+ ", line)}
    for i, row in enumerate(stage_rows(events), 1):
        numbers = [fmt_count(row["params"]) if row["params"] else "", fmt_count(row["flops"]) if row["flops"] else "", f"{row['time_ms']:.1f}"]
        line = rows[str(i)].rstrip()
        assert line.endswith(f" {numbers[-1]}"), (width, line)  # the ms, whole, at the end of the row's first line
        for number in filter(None, numbers):
            assert f" {number} " in line + " ", (width, number, line)


@pytest.mark.parametrize("width", [100, 120])
def test_summary_table_keeps_stage_names_whole_on_wide_consoles(tiny_log, width):
    header, events, summary = timed(tiny_log)
    console = Console(width=width, no_color=True, record=True, file=io.StringIO())
    render_summary(header, events, summary, console)
    text = console.export_text()
    for row in stage_rows(events):
        assert re.search(rf"^ *\d+ +{re.escape(row['stage'])}( ×\d+)? ", text, re.M), row["stage"]


def test_text_widths_give_the_text_columns_what_the_numbers_leave():
    # 6 columns, numbers 19 wide, stage ids up to 22 (24 with " ×N")
    assert text_widths(120, 19, 6, 22, 24) == (None, None)  # room for both at their widest: rich decides
    assert text_widths(80, 19, 6, 22, 24) == (24, 25)  # padding collapses: 25 of output beside whole stage cells
    assert text_widths(70, 19, 6, 22, 24) == (22, 17)  # the output wraps first, beside whole stage ids
    assert text_widths(60, 19, 6, 22, 24) == (19, 10)  # then the stage ids fold
    assert sum(text_widths(60, 19, 6, 22, 24)) + 19 + 2 * 6 == 60


def test_plural_counts_nouns():
    assert [plural(n, "token") for n in (0, 1, 2)] == ["0 tokens", "1 token", "2 tokens"]


def test_stage_title_of_a_stage_outside_the_catalog_is_its_id():
    catalog = stage_index()
    known = next(iter(catalog))
    assert stage_title({"stage": known, "phase": "prefill"}, [], catalog) == (catalog[known].title, f"{known} · prefill")
    assert stage_title({"stage": "custom.block", "phase": None}, [], catalog) == ("custom.block", "custom.block")


def test_the_cross_attention_picture_shows_the_mask_the_model_uses():
    """Cell by cell, the picture's colour is what Meta's mask holds after the row mask: rows
    before the image token are all zeros (they attend to every key, empty slots too, and are
    erased later), not blocked, as an older picture drew them."""
    import torch

    from model.multimodal import _get_xattn_mask, _pad_masks
    from walkthroughs import pictures

    n_text, image_pos, chunks, max_chunks = 9, 3, 2, 4
    per_chunk = _pad_masks([[[image_pos, -1]]], [[chunks]], n_text, max_chunks, torch.float32)  # [B, T, I, C]
    masks, rows = _get_xattn_mask(per_chunk, 1, "cpu", torch.float32)  # one token per chunk: [1, 1, T, C], [1, 1, T, 1]
    picture = pictures.xattn_mask_picture(n_text, image_pos, chunks, max_chunks, cell=12, chunk_w=60)
    for t in range(n_text):
        for c in range(max_chunks):
            expected = pictures.ERASED if rows[0, 0, t, 0] == 0 else pictures.ATTEND if masks[0, 0, t, c] == 0 else pictures.BLOCKED
            assert picture.getpixel((40 + c * 60 + 30, 24 + t * 12 + 5)) == expected, (t, c)


def test_an_image_that_fills_every_slot_gets_no_words_about_padding_or_empty_slots(tmp_path):
    """A 224x224 image on tiny fills its 2 x 2 canvas and all four slots: the page says so,
    where it once spoke of 'all 0 empty slots' and a black pad that is not there."""
    Image.new("RGB", (224, 224), (200, 30, 30)).save(tmp_path / "square.png")
    header, events, summary, image = logged("tiny", image=tmp_path / "square.png")
    text = files_text(render_markdown(header, events, summary, tmp_path / "p.md", image=image))
    assert "which it fills: no padding" in text and "padded bottom-right" not in text
    assert "all `0` empty slots" not in text and "every token of the empty slots" not in text
    Image.new("RGB", (300, 100), (200, 30, 30)).save(tmp_path / "wide.png")  # 224x75 on a 224x112 canvas, 2 of 4 slots
    header, events, summary, image = logged("tiny", image=tmp_path / "wide.png")
    wide = files_text(render_markdown(header, events, summary, tmp_path / "q.md", image=image))
    assert "and to every token of the empty slots" in wide and "padded bottom-right with black" in wide


def test_a_log_with_ops_shows_them_in_the_module_trees(tiny_log, tmp_path):
    """--ops records every torch op; the views' module trees show each under the call it ran in
    (the ops once reached only the JSON log)."""
    header, events, summary, image = logged("tiny", ops=True)
    console = Console(width=200, no_color=True, record=True, file=io.StringIO())
    render_walkthrough(header, events, summary, console, stage="text.self_attention", depth=9)
    text = console.export_text()
    assert "├── wq (Linear) → [B, S, D]" in text and "│   │   └── torch.nn.functional.linear (op) → [B, S, D]" in text
    assert "torch.view_as_complex (op) → [B, S, H, Dh/2]" in text
    page = files_text(render_markdown(header, events, summary, tmp_path / "p.md", image=image, depth=9))
    assert "- `torch.nn.functional.linear (op) → [B, S, D]`" in page
    console = Console(width=200, no_color=True, record=True, file=io.StringIO())
    render_walkthrough(header, events, summary, console, stage="vision.local_layers", depth=9)
    layers = console.export_text()
    assert "(op, identical signature)" not in layers and "(op)" in layers  # an op is no layer: never folded
    header, events, summary, image = tiny_log  # no ops recorded: none shown
    assert "(op)" not in files_text(render_markdown(header, events, summary, tmp_path / "q.md", image=image, depth=9))


def test_folded_layers_say_when_other_calls_ran_between_them(tmp_path):
    """The decoder's 8 self-attention layers fold into one line listed before the cross-attention
    blocks, though those ran between them: the folded lines say they took turns. At --depth 0 a
    page shows no trees, as the terminal does."""
    header, events, summary, image = logged("tiny", ops=True)
    console = Console(width=200, no_color=True, record=True, file=io.StringIO())
    render_walkthrough(header, events, summary, console, stage="text.decoder", depth=1)
    text = console.export_text()
    assert "layers.0-7 ×8 (TransformerBlock, identical signature, in turn with other calls)" in text
    assert "cross_attention_layers.0-1 ×2 (CrossAttentionTransformerBlock, identical signature, in turn with other calls)" in text
    assert "resblocks.0-7 ×8 (ImageTransformerBlock, identical signature) →" in files_text(
        render_markdown(header, events, summary, tmp_path / "p.md", image=image))  # back to back: no turns
    assert "Calls inside it:" not in files_text(render_markdown(header, events, summary, tmp_path / "q.md", image=image, depth=0))
