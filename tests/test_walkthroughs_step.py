"""Step mode: one stage per screen, driven by keys (an iterator here, a pseudo-terminal below)."""

import os
import re
import sys
from pathlib import Path

import pytest
from rich.console import Console

from logs import lines_of
from walkthroughs.step import LineKeys, find_stage, step_through
from walkthroughs.summary import stage_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stage_ids(tiny_log):
    return [r["stage"] for r in stage_rows(tiny_log[1])]


def drive(log, keys, **kw):
    console = Console(record=True, width=100, no_color=True, file=open(os.devnull, "w"))
    shown = step_through(*log[:3], console, keys=iter(keys), **kw)
    return shown, console.export_text()


def screens(text):
    return re.findall(r"^stage (\d+)/(\d+): ", text, flags=re.M)


def test_next_back_and_quit_show_the_screens_in_order(tiny_log, stage_ids):
    shown, text = drive(tiny_log, ["n", " ", "\n", "p", "b", "q"])
    assert shown == [stage_ids[i] for i in (0, 1, 2, 3, 2, 1)]
    n = str(len(stage_ids))
    assert screens(text) == [(str(i), n) for i in (1, 2, 3, 4, 3, 2)]
    assert f"[stage 2/{n}]" in text.splitlines()[-2] and text.rstrip().endswith("bye.")


def test_d_hides_the_code_and_modules_for_short_screens(tiny_log):
    _, full = drive(tiny_log, ["q"], start_stage="vision.local_layers")
    _, short = drive(tiny_log, ["d", "q"], start_stage="vision.local_layers")
    last = re.split(r"^stage \d+/\d+: ", short, flags=re.M)[-1]  # the screen shown again after d
    assert "╭─" in full and "╭─" not in last and "[BI, C*N8, W]" in last  # the code panel gone, the shapes kept
    assert "code and modules hidden: d shows them again." in short


def test_jump_by_id_number_and_prefix(tiny_log, stage_ids):
    shown, _ = drive(tiny_log, ["g", "vision.model", "g", "3", "g text.cross", "g", "nope", "q"])
    assert shown == ["prompt", "vision.model", stage_ids[2], "text.cross_attention"]
    _, text = drive(tiny_log, ["g", "nope", "q"])
    assert "no stage 'nope'" in text


def test_edges_help_unknown_keys_and_start_stage(tiny_log, stage_ids):
    shown, text = drive(tiny_log, ["p", "?", "x", "q"])
    assert shown == ["prompt"]
    assert "already at the first stage" in text and "keys:" in text and "unknown key 'x'" in text
    shown, text = drive(tiny_log, ["n", "n", "p", "q"], start_stage=str(len(stage_ids)))
    assert shown == [stage_ids[-1], stage_ids[-2]]
    assert "end of the walkthrough" in text
    shown, _ = drive(tiny_log, [], start_stage="xattn.cache")  # keys run out: quit
    assert shown == ["xattn.cache"]


def test_a_screen_holds_exactly_one_stage(tiny_log, stage_ids):
    _, text = drive(tiny_log, ["g", "image.pad", "q"])
    second = text.split("\nstage 8/")[1]
    assert "(image.pad" in second and "(image.resize" not in second and "(image.to_tensor" not in second
    assert "walkthroughs/" in second or "model/" in second  # its source panel


def test_line_keys_read_one_key_per_line(tmp_path):
    import io

    keys = LineKeys(io.StringIO("n\n\ng 5\nq\n"))
    assert list(keys) == ["n", "\n", "g 5", "q"]


def test_find_stage(tiny_log):
    from walkthroughs.context import all_stage_contexts

    rows = all_stage_contexts(*tiny_log[:3])
    assert find_stage(rows, "1") == 0 and find_stage(rows, "0") is None and find_stage(rows, "999") is None
    assert rows[find_stage(rows, "vision")][0]["stage"].startswith("vision")
    assert rows[find_stage(rows, "prompt")][0]["stage"] == "prompt"  # exact id before prefix
    assert rows[find_stage(rows, "unpad")][0]["stage"] == "vision.unpad8"  # WORKSHOP.md's hint: part of an id
    assert rows[find_stage(rows, "VISION.LN")][0]["stage"] == "vision.ln_pre"  # letter case aside
    assert find_stage(rows, "nosuchstage") is None


SCRIPT = """
import sys
from rich.console import Console
from tracer.log import load_log
from walkthroughs.step import step_through
header, events, summary = load_log(sys.argv[1])
step_through(header, events, summary, Console(width=100, no_color=True, highlight=False))
"""


def test_single_keys_in_a_pseudo_terminal(tiny_log, tmp_path):
    pexpect = pytest.importorskip("pexpect", reason="pip install pexpect (the test extras) for the terminal test")
    log = tmp_path / "tiny.jsonl"
    log.write_text("\n".join(lines_of(*tiny_log[:3])) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "TERM": "xterm"}
    child = pexpect.spawn(sys.executable, ["-c", SCRIPT, str(log)], cwd=str(ROOT), env=env, encoding="utf-8",
                          timeout=30, dimensions=(40, 100))
    try:
        child.expect(r"\[stage 1/\d+\]")
        child.send("n")  # one key, no enter: cbreak mode
        child.expect(r"stage 2/\d+: ")
        child.expect(r"\[stage 2/\d+\]")
        child.send("p")
        child.expect(r"stage 1/\d+: ")
        child.expect(r"\[stage 1/\d+\]")
        child.send("q")
        child.expect("bye.")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
