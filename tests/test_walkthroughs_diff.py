"""`llama-trace diff`: two logs compared stage by stage, checked against golden files in tests/golden/.

Regenerate the golden files after an intended change with

    LLAMA_TRACE_REGEN=1 pytest tests/test_walkthroughs_diff.py
"""

import json
import os
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from tracer.log import build_lines, load_log
from walkthroughs.cli import app
from walkthroughs.diff import Log, compare, compare_shapes
from walkthroughs.defaults import DEFAULT_PROMPT
from walkthroughs.run import run

GOLDEN = Path(__file__).with_name("golden")
REGEN = os.environ.get("LLAMA_TRACE_REGEN") == "1"
LONG_PROMPT = "Describe this image in one sentence, then name every color you can see in it."
ODD_PROMPT = "What is this?\nAnswer | briefly, <b>bold</b> `code` *not*."  # two lines, a pipe, HTML, Markdown
runner = CliRunner()


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """Meta-mode logs, each written once: the name is what the diff shows as its label."""
    folder = tmp_path_factory.mktemp("diff")
    square = folder / "square.png"
    Image.new("RGB", (1000, 1000), (120, 60, 30)).save(square)
    runs = {
        "11b-instruct.jsonl": dict(image_path=None, prompt=DEFAULT_PROMPT, preset="11b-instruct"),  # the bundled 1000x500 image
        "90b-instruct.jsonl": dict(image_path=None, prompt=DEFAULT_PROMPT, preset="90b-instruct"),
        "square.jsonl": dict(image_path=square, prompt=DEFAULT_PROMPT, preset="11b-instruct"),
        "long-prompt.jsonl": dict(image_path=None, prompt=LONG_PROMPT, preset="11b-instruct"),
        "odd-prompt.jsonl": dict(image_path=None, prompt=ODD_PROMPT, preset="11b-instruct"),
    }
    paths = {}
    for name, kw in runs.items():
        result = run(kw["image_path"], kw["prompt"], preset=kw["preset"], timing=False)
        path = paths[name] = folder / name
        path.write_text("\n".join(build_lines(result.trace, result.header, result.summary)) + "\n", encoding="utf-8")
    return paths


CASES = {
    "11b_vs_90b": ("11b-instruct.jsonl", "90b-instruct.jsonl"),
    "wide_vs_square": ("11b-instruct.jsonl", "square.jsonl"),
    "short_vs_long_prompt": ("11b-instruct.jsonl", "long-prompt.jsonl"),
}


def _diff_text(logs, tmp_path, case, fmt):
    a, b = CASES[case]
    out = tmp_path / f"{case}.{fmt}"
    result = runner.invoke(app, ["diff", str(logs[a]), str(logs[b]), "--format", fmt, "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out.read_text(encoding="utf-8")


@pytest.mark.parametrize("fmt, ext", [("terminal", "txt"), ("markdown", "md")])
@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(logs, tmp_path, case, fmt, ext):
    text = _diff_text(logs, tmp_path, case, fmt)
    golden = GOLDEN / f"diff_{case}.{ext}"
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}: run with LLAMA_TRACE_REGEN=1 to write it"
    assert text == golden.read_text(encoding="utf-8"), f"{golden.name} differs; if intended, regenerate with LLAMA_TRACE_REGEN=1"


def _load(logs, name):
    return Log(name, *load_log(logs[name]))


def _by_stage(diff):
    return {(s.phase, s.stage): s for s in diff.stages}


def test_11b_vs_90b_explains_by_symbol(logs):
    d = compare(_load(logs, "11b-instruct.jsonl"), _load(logs, "90b-instruct.jsonl"))
    assert {k for k, _, _ in d.symbols} >= {"D", "H", "X", "F"}
    assert {k for k, _, _ in d.config} >= {"dim", "n_layers", "n_heads", "vision_num_cross_attention_layers"}
    stages = _by_stage(d)
    assert stages[("prefill", "text.embeddings")].changes == ["D: 4096 → 8192"]
    assert "X: 8 → 20" in stages[(None, "vision.inputs")].changes and "H: 32 → 64" in stages[(None, "vision.inputs")].changes
    # the vision encoder is the same in both: unchanged up to the projection into D
    for (phase, stage), s in stages.items():
        if stage.startswith("vision.") and stage not in ("vision.inputs", "vision.model", "vision.projection"):
            assert s.status == "same", (stage, s.changes)
    assert "C*N8" in stages[(None, "vision.local_layers")].unchanged
    assert all(s.status not in ("added", "removed") for s in d.stages)


def test_wide_vs_square_changes_the_canvas_not_the_vision_tokens(logs):
    d = compare(_load(logs, "11b-instruct.jsonl"), _load(logs, "square.jsonl"))
    runs = {k: (x, y) for k, x, y in d.runs}
    assert runs["canvas"] == ("1120x560", "1120x1120")
    assert runs["chunks (rows x cols)"] == ("2 (1 x 2)", "4 (2 x 2)")
    stages = _by_stage(d)
    assert stages[(None, "image.chunks")].changes == ["chunks: 2 → 4"]
    assert stages[(None, "image.to_tensor")].changes == ["Hc: 560 → 1120"]
    for stage in ("vision.model", "vision.projection", "vision.local_layers", "xattn.cache"):
        assert stages[(None, stage)].status == "same"
    assert d.config == []


def test_prompt_length_changes_s(logs):
    d = compare(_load(logs, "11b-instruct.jsonl"), _load(logs, "long-prompt.jsonl"))
    assert [k for k, _, _ in d.symbols] == ["S"]
    stages = _by_stage(d)
    assert stages[("prefill", "text.logits")].changes == ["S: 18 → 28"]
    assert stages[(None, "vision.model")].status == "same"


def test_added_and_removed_stages_and_unlabelled_dims(logs):
    a = _load(logs, "11b-instruct.jsonl")
    b = _load(logs, "11b-instruct.jsonl")
    b.rows = [r for r in b.rows if r["stage"] != "vision.pad8"] + [{**b.rows[-1], "phase": "decode"}]
    d = compare(a, b)
    status = {(s.phase, s.stage): s.status for s in d.stages}
    assert status[(None, "vision.pad8")] == "removed" and status[("decode", "sampling")] == "added"
    changes, _ = compare_shapes(a, b, {"shape": [1, 18]}, {"shape": [1, 99]})
    assert changes == ["dim 1: 18 → 99 (no letter)"]
    changes, _ = compare_shapes(a, b, {"shape": [1, 18]}, {"shape": [1, 18, 2]})
    assert changes == ["rank 2 → 3"]


def test_piped_output_is_plain_and_errors_are_one_line(logs, tmp_path):
    result = runner.invoke(app, ["diff", str(logs["11b-instruct.jsonl"]), str(logs["long-prompt.jsonl"])], catch_exceptions=False)
    assert result.exit_code == 0 and "S: 18 → 28" in result.stdout and "\x1b[" not in result.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    result = runner.invoke(app, ["diff", str(bad), str(logs["11b-instruct.jsonl"])])
    assert result.exit_code == 2 and "llama-trace: error:" in result.output and len(result.output.strip().splitlines()) == 1
    out = tmp_path / "exists.md"
    out.write_text("x")
    result = runner.invoke(app, ["diff", str(logs["11b-instruct.jsonl"]), str(logs["11b-instruct.jsonl"]), "-o", str(out)])
    assert result.exit_code == 2 and "--force" in result.output


def test_piped_text_takes_the_columns_asked_for(logs, tmp_path, monkeypatch):
    a, b = (logs[name] for name in CASES["11b_vs_90b"])
    monkeypatch.setenv("COLUMNS", "80")
    result = runner.invoke(app, ["diff", str(a), str(b)])
    assert result.exit_code == 0 and max(len(line) for line in result.stdout.splitlines()) <= 80
    written = _diff_text(logs, tmp_path, "11b_vs_90b", "terminal")  # a file keeps the golden files' fixed width
    assert max(len(line) for line in written.splitlines()) > 80


def test_a_prompt_with_line_breaks_pipes_and_html_is_one_escaped_cell_of_the_markdown_diff(logs, tmp_path):
    out = tmp_path / "odd.md"
    result = runner.invoke(app, ["diff", str(logs["odd-prompt.jsonl"]), str(logs["11b-instruct.jsonl"]), "--format", "markdown", "-o", str(out)])
    assert result.exit_code == 0, result.output
    row = next(line for line in out.read_text(encoding="utf-8").splitlines() if line.startswith("| prompt |"))
    assert "What is this?↵ Answer \\| briefly, \\<b\\>bold\\</b\\> \\`code\\` \\*not\\*." in row and row.endswith("| differs |")


def test_runs_that_differ_in_weights_sampling_and_options_say_so():
    """Two tiny runs with the same shapes but other weights (the seed), sampling, ops and
    results: the runs table names each difference (it once called them identical)."""
    from logs import logged

    greedy = Log("a", *logged("tiny")[:3])
    sampled = Log("b", *logged("tiny", seed=2, temperature=0.8, max_new_tokens=3, ops=True)[:3])
    runs = {k: (x, y) for k, x, y in compare(greedy, sampled).runs}
    assert runs["weights"] == ("random, seed 0", "random, seed 2")
    assert runs["generation"] == ("prefill only (picks the next token)", "top-p 0.9 at temperature 0.8, seed 2, up to 3 tokens")
    assert runs["traced"] == ("modules, value summaries", "modules, torch ops, value summaries")
    assert runs["next token"][0] != runs["next token"][1] and runs["generated"][1].startswith("3 tokens: ")


def test_images_of_the_same_name_and_size_are_told_apart_by_their_pixels():
    from logs import logged

    header, events, summary = logged("tiny")[:3]
    other = json.loads(json.dumps(header))
    other["inputs"]["image"]["pixels_sha256"] = "f" * 64
    runs = {k: (x, y) for k, x, y in compare(Log("a", header, events, summary), Log("b", other, events, summary)).runs}
    digest = header["inputs"]["image"]["pixels_sha256"]
    assert runs["image"] == (f"sample.png (bundled) 1000x500 RGB, pixels {digest[:12]}…", "sample.png (bundled) 1000x500 RGB, pixels ffffffffffff…")
    runs = {k: (x, y) for k, x, y in compare(Log("a", header, events, summary), Log("b", header, events, summary)).runs}
    assert runs["image"] == ("sample.png (bundled) 1000x500 RGB",) * 2
