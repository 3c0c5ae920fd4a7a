"""Walkthrough renderers: Markdown pages with pictures, the rich terminal view, determinism."""

import copy
import json
import re

import pytest
from PIL import Image
from rich.console import Console

from tracer.log import LogError, build_lines, load_lines
from walkthroughs.catalog import stage_index
from walkthroughs.context import all_stage_contexts
from walkthroughs.log_check import check_log
from walkthroughs.diff import Log, compare
from walkthroughs.examples_build import PRESETS, example_files
from walkthroughs.markdown import render_markdown, write_files
from walkthroughs.pictures import png_bytes
from walkthroughs.quiz import questions
from walkthroughs.run import image_for_log, run
from walkthroughs.step import render_stage
from walkthroughs.summary import fmt_count, render_summary, stage_rows, text_widths
from walkthroughs.terminal import render_walkthrough


def logged(preset, prompt="Describe this image in one sentence.", image=None):
    result = run(image, prompt, preset=preset, timing=False)
    return (*load_lines(build_lines(result.trace, result.header, result.summary)), result.image)


@pytest.fixture(scope="module")
def tiny_log():
    return logged("tiny")


@pytest.fixture(scope="module")
def page_11b(tmp_path_factory):
    header, events, summary, image = logged("11b-instruct")
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


def test_every_picture_link_exists_and_is_a_png(page_11b):
    page, _, _, _ = page_11b
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text())
    assert len(links) == 4
    for link in links:
        target = page.parent / link
        assert target.is_file() and not link.startswith("/")
        with Image.open(target) as im:
            assert im.format == "PNG"


def test_code_links_point_at_our_source(page_11b):
    page, _, _, _ = page_11b
    for link, line in re.findall(r"\]\(([^)#]+\.py)#L(\d+)\)", page.read_text()):
        source = (page.parent / link).resolve()
        assert source.is_file() and int(line) <= len(source.read_text().splitlines())


def test_markdown_and_pictures_are_byte_identical_across_runs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        out.mkdir()
        header, events, summary, image = logged("tiny")
        write_files(render_markdown(header, events, summary, out / "page.md", image=image))
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for p in a.iterdir():
        assert p.read_bytes() == (b / p.name).read_bytes(), p.name


def test_terminal_walkthrough_fits_100_columns_without_colour(tiny_log):
    header, events, summary, _ = tiny_log
    console = Console(width=100, no_color=True, record=True, force_terminal=False, file=open("/dev/null", "w"))
    render_walkthrough(header, events, summary, console)
    text = console.export_text()
    assert "\x1b[" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    for stage in ("vision.pad8", "vision.local_layers", "text.cross_attention", "sampling"):
        assert f"({stage}" in text
    assert "resblocks.0-7 ×8" in text  # repeated layers folded, first shown


def test_stage_filter_and_depth(tiny_log):
    header, events, summary, _ = tiny_log
    console = Console(width=100, no_color=True, record=True, file=open("/dev/null", "w"))
    render_walkthrough(header, events, summary, console, stage="vision.global", depth=1)
    text = console.export_text()
    assert "(vision.global_layers" in text and "(vision.local_layers" not in text
    assert "resblocks.0-1 ×2" in text and "attn (ImageAttention)" not in text


def test_real_values_are_shown(tiny_log):
    header, events, summary, _ = tiny_log
    console = Console(width=140, no_color=True, record=True, file=open("/dev/null", "w"))
    render_walkthrough(header, events, summary, console, stage="text.logits")
    text = console.export_text()
    assert "range [" in text and "μ=" in text


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
# check_log: a loaded log has what the renderers read, or a one-line LogError says what it lacks


def render_everything(header, events, summary, tmp_path):
    """Each renderer's reading of the header (the walkthrough of one stage: all of them read the same events)."""
    console = Console(width=100, no_color=True, file=open("/dev/null", "w"))
    render_summary(header, events, summary, console)
    render_walkthrough(header, events, summary, console, stage="sampling")
    render_stage(header, events, summary, console, all_stage_contexts(header, events, summary), 0)
    render_markdown(header, events, summary, tmp_path / "page.md", image=image_for_log(header))
    questions(header, events, summary, 3, seed=0)
    compare(Log("a", header, events, summary), Log("b", header, events, summary))


def test_check_log_accepts_real_logs(tiny_log, page_11b):
    check_log(*tiny_log[:2])
    _, header, events, _ = page_11b
    check_log(header, events)


def test_a_header_without_a_model_is_a_log_error_not_a_key_error(tmp_path):
    header, events, summary = load_lines(['{"type":"header","schema":1}', '{"type":"summary","events":0}'], "minimal.jsonl")
    with pytest.raises(LogError, match=r"^minimal.jsonl: the header has no 'model' object; .*llama-trace run --format json -o FILE`$"):
        check_log(header, events, "minimal.jsonl")
    with pytest.raises(KeyError):  # what the renderers do without the check
        render_everything(header, events, summary, tmp_path)


def test_shapes_that_are_not_lists_stop_at_loading(tiny_log):
    header, events, summary, _ = tiny_log
    lines = [re.sub(r'"shape":\[[^\]]*\]', '"shape":"abc"', line) for line in build_lines_of(header, events, summary)]
    with pytest.raises(LogError, match=r"^t.jsonl:\d+: event \d+: (in|out)puts\[0\] 'shape' must be a list of integers \(found \"abc\"\)"):
        load_lines(lines, "t.jsonl")


def build_lines_of(header, events, summary) -> list[str]:
    """The log's lines as llama-trace writes them (no spaces after separators)."""
    return [json.dumps(r, separators=(",", ":")) for r in (header, *({"type": "event", **e} for e in events), summary)]


def without(record: dict, *where):
    """A deep copy of record with record[where[0]]…[where[-1]] removed."""
    record = copy.deepcopy(record)
    inner = record
    for key in where[:-1]:
        inner = inner[key]
    del inner[where[-1]]
    return record


def with_value(record: dict, value, *where):
    record = copy.deepcopy(record)
    inner = record
    for key in where[:-1]:
        inner = inner[key]
    inner[where[-1]] = value
    return record


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda h: without(h, "model"), "the header has no 'model' object"),
        (lambda h: without(h, "model", "preset"), "the header's 'model' needs a 'preset' name and a 'config_hash'"),
        (lambda h: without(h, "model", "config"), "the header's 'model' has no 'config' object"),
        (lambda h: without(h, "model", "config", "vision_chunk_size"), "the model config's 'vision_chunk_size' must be a positive integer (it is missing)"),
        (lambda h: with_value(h, 0, "model", "config", "n_kv_heads"), "the model config's 'n_kv_heads' must be a positive integer (found 0)"),
        (lambda h: with_value(h, "32", "model", "config", "n_layers"), "the model config's 'n_layers' must be a non-negative integer (found \"32\")"),
        (lambda h: with_value(h, None, "model", "config", "rope_theta"), "the model config's 'rope_theta' must be a number (found null)"),
        (lambda h: with_value(h, "3,7", "model", "config", "vision_return_intermediate"), "the model config's 'vision_return_intermediate' must be a list of layer numbers"),
        (lambda h: without(h, "inputs"), "the header has no 'inputs' object"),
        (lambda h: with_value(h, [1000], "inputs", "image", "size"), "the header's input 'image' must be an object with a 'size' of [width, height]"),
        (lambda h: with_value(h, [5, -1], "inputs", "vision_mask"), "the header's input 'vision_mask' must be a list of [start, end] pairs"),
        (lambda h: with_value(h, 18, "inputs", "token_ids"), "the header's input 'token_ids' must be a list (found 18)"),
        (lambda h: without(h, "mode"), "the header's 'mode' must be a string (it is missing)"),
        (lambda h: with_value(h, 16, "dtype"), "the header's 'dtype' must be a string (found 16)"),
        (lambda h: without(h, "versions", "torch"), "the header's 'versions' must name the llama-trace and torch versions"),
        (lambda h: without(h, "symbols", "N8"), "the header's 'symbols' lack N8"),
    ],
)
def test_check_log_names_what_the_header_lacks(tiny_log, change, message):
    header, events, _, _ = tiny_log
    with pytest.raises(LogError, match="^t.jsonl: " + re.escape(message)) as info:
        check_log(change(header), events, "t.jsonl")
    assert "\n" not in str(info.value) and str(info.value).endswith("`llama-trace run --format json -o FILE`")


def test_check_log_looks_at_the_events_the_renderers_index(tiny_log):
    header, events, _, _ = tiny_log
    first = {row["stage"]: row["first"] for row in stage_rows(events)}
    cases = [
        (first["prompt"]["seq"], lambda e: with_value(e, None, "path"), "needs a string 'path' and 'name'"),
        (first["vision.model"]["seq"], lambda e: with_value(e, {"total": "1k"}, "params"), "needs a 'params' object with an integer 'total'"),
        (first["image.chunks"]["seq"], lambda e: with_value(e, {"file": "x.py"}, "src"), "needs a 'src' with a 'file', a 'line' and its 'code'"),
        (first["text.logits"]["seq"], lambda e: with_value(e, {"min": 0}, "outputs", 0, "stats"), "outputs[0] needs inf, max, mean, min, nan, std in its 'stats'"),
        (first["image.resize"]["seq"], lambda e: with_value(e, {"size": "big"}, "outputs", 0, "image"), "needs an 'image' with a 'size' of [width, height] and a 'mode'"),
        (first["image.resize"]["seq"], lambda e: without(e, "outputs", 0, "image", "mode"), "needs an 'image' with a 'size' of [width, height] and a 'mode'"),
        (first["image.canvas"]["seq"] + 1, lambda e: with_value(e, None, "outputs", 0, "values"), "outputs[0] needs its 'values' as a list (found null)"),
        (first["vision.model"]["seq"] + 1, lambda e: with_value(e, 16, "outputs", 0, "dtype"), "outputs[0] needs a string 'path' (and 'dtype', if any)"),
        (first["vision.model"]["seq"] + 1, lambda e: with_value(e, [1, "I"], "outputs", 0, "sym"), "outputs[0] needs its 'sym' as a list of letters or nulls"),
        (first["image.chunks"]["seq"], lambda e: with_value(e, [], "outputs"), "(stage image.chunks) needs an output with a shape"),
    ]
    for seq, change, message in cases:
        changed = [change(e) if e["seq"] == seq else e for e in events]
        with pytest.raises(LogError, match=re.escape(message)):
            check_log(header, changed)


@pytest.mark.slow  # about 15 s: 74 of the changed headers pass and render in full
def test_whatever_check_log_lets_through_renders(tiny_log, tmp_path):
    """Every header key removed or given a wrong type: load_lines or check_log stops it, or every renderer copes."""
    header, events, summary, _ = tiny_log

    def keys(record, where=()):
        for key, value in record.items():
            yield (*where, key)
            if isinstance(value, dict) and where[:1] != ("symbols",):
                yield from keys(value, (*where, key))

    for where in keys(header):
        for changed in (without(header, *where), with_value(header, "abc", *where)):
            try:
                loaded, events, summary = load_lines(build_lines_of(changed, events, summary))
                check_log(loaded, events)
            except LogError:
                continue
            render_everything(loaded, events, summary, tmp_path)


# ---------------------------------------------------------------------------------------------
# the stage summary table on narrow consoles


def timed(tiny_log):
    """The tiny log with timings as large as they get (seconds per stage on a slow machine)."""
    header, events, summary, _ = tiny_log
    return {**header, "timing": True}, [{**e, "time_ms": 12345.6} for e in events], summary


@pytest.mark.parametrize("width", [60, 80, 100, 120])
def test_summary_table_fits_the_console_and_keeps_every_number(tiny_log, width):
    header, events, summary = timed(tiny_log)
    console = Console(width=width, no_color=True, record=True, file=open("/dev/null", "w"))
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
    console = Console(width=width, no_color=True, record=True, file=open("/dev/null", "w"))
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


def test_check_log_reads_the_canvas_as_run_context_does(tiny_log):
    header, events, _, _ = tiny_log
    changed = [with_value(e, [1120], "outputs", 0, "values") if e["path"] == "get_best_fit" else e for e in events]
    with pytest.raises(LogError, match=re.escape("(get_best_fit) must give the canvas as [width, height] (found [1120])")):
        check_log(header, changed)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: with_value(s, "18", "prompt_tokens"), "the summary's 'prompt_tokens' must be an integer (found \"18\")"),
        (lambda s: without(s, "next_token", "text"), "the summary's 'next_token' must be an object with an integer 'id' and its 'text'"),
        (lambda s: without(s, "top5", 0, "logit"), "the summary's 'top5' must list tokens with an 'id', a 'text' and a 'logit'"),
        (lambda s: with_value(s, [1, 2], "generated"), "the summary's 'generated' must be an object with 'ids', 'text' and 'stopped' (found [1, 2])"),
    ],
)
def test_check_log_reads_the_summary_when_given(tiny_log, change, message):
    header, events, summary, _ = tiny_log
    check_log(header, events, "t.jsonl", summary=summary)
    with pytest.raises(LogError, match="^t.jsonl: " + re.escape(message)):
        check_log(header, events, "t.jsonl", summary=change(summary))
