"""check_log: a loaded log has what the renderers read, or a one-line LogError says what it lacks."""

import io
import re

import pytest
from logs import lines_of, with_value, without
from rich.console import Console

from tracer.log import LogError, load_lines
from walkthroughs.context import all_stage_contexts
from walkthroughs.diff import Log, compare
from walkthroughs.log_check import check_log
from walkthroughs.markdown import render_markdown
from walkthroughs.quiz import questions
from walkthroughs.run import image_for_log
from walkthroughs.step import render_stage
from walkthroughs.summary import render_summary, stage_rows
from walkthroughs.terminal import render_walkthrough


def render_everything(header, events, summary, tmp_path):
    """Each renderer's reading of the header (the walkthrough of one stage: all of them read the same events)."""
    console = Console(width=100, no_color=True, file=io.StringIO())
    render_summary(header, events, summary, console)
    render_walkthrough(header, events, summary, console, stage="sampling")
    render_stage(header, events, summary, console, all_stage_contexts(header, events, summary), 0)
    render_markdown(header, events, summary, tmp_path / "page.md", image=image_for_log(header)[0])
    questions(header, events, summary, 3, seed=0)
    compare(Log("a", header, events, summary), Log("b", header, events, summary))


def test_check_log_accepts_real_logs(tiny_log, log_11b):
    check_log(*tiny_log[:2])
    check_log(*log_11b[:2])


def test_a_header_without_a_model_is_a_log_error_not_a_key_error(tmp_path):
    header, events, summary = load_lines(['{"type":"header","schema":1}', '{"type":"summary","events":0}'], "minimal.jsonl")
    with pytest.raises(LogError, match=r"^minimal.jsonl: the header has no 'model' object; .*llama-trace run --format json -o FILE`$"):
        check_log(header, events, "minimal.jsonl")
    with pytest.raises(KeyError):  # what the renderers do without the check
        render_everything(header, events, summary, tmp_path)


def test_shapes_that_are_not_lists_stop_at_loading(tiny_log):
    header, events, summary, _ = tiny_log
    lines = [re.sub(r'"shape":\[[^\]]*\]', '"shape":"abc"', line) for line in lines_of(header, events, summary)]
    with pytest.raises(LogError, match=r"^t.jsonl:\d+: event \d+: (in|out)puts\[0\] 'shape' must be a list of integers \(found \"abc\"\)"):
        load_lines(lines, "t.jsonl")


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
        (lambda h: with_value(h, "other", "tool"), "the header says another tool wrote it (found \"other\")"),
        (lambda h: without(h, "model", "config", "max_seq_len"), "the model config's 'max_seq_len' must be a non-negative integer (it is missing)"),
        (lambda h: with_value(h, "abc", "generation"), "the header's 'generation' must be an object (found \"abc\")"),
        (lambda h: with_value(h, "0.6", "generation", "temperature"), "the header's generation 'temperature' must be a number or null (found \"0.6\")"),
        (lambda h: with_value(h, "abc", "inputs", "image", "pixels_sha256"), "the header's input 'image' must be an object with a 'size' of [width, height] and, where it has one, a 'pixels_sha256' of 64 hex digits"),
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
                loaded, events, summary = load_lines(lines_of(changed, events, summary))
                check_log(loaded, events)
            except LogError:
                continue
            render_everything(loaded, events, summary, tmp_path)


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
