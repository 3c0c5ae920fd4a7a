"""The workshop guide matches what the code generates from real traces (regenerate: python -m walkthroughs.workshop)."""

import re

import pytest

from walkthroughs.workshop import PRESETS, WORKSHOP, render_workshop, trace_facts


@pytest.fixture(scope="module")
def facts():
    return {p: trace_facts(p) for p in PRESETS}


@pytest.fixture(scope="module")
def guide(facts):
    return render_workshop(facts["11b-instruct"], facts["tiny"])


def test_committed_guide_has_not_drifted(guide):
    assert WORKSHOP.is_file(), "run python -m walkthroughs.workshop"
    assert WORKSHOP.read_text(encoding="utf-8") == guide, "WORKSHOP.md is stale: run python -m walkthroughs.workshop"


def test_guide_covers_the_commands_and_an_hour(guide):
    for command in ("llama-trace run", "--format walkthrough --stage", "--format markdown", "quiz", "--answers",
                    "llama-trace diff", "--format step", "--format html"):
        assert command in guide, command
    starts = re.findall(r"^\| (\d):(\d\d)–(\d):(\d\d) \|", guide, flags=re.M)
    minutes = [(int(a) * 60 + int(b), int(c) * 60 + int(d)) for a, b, c, d in starts]
    assert minutes[0][0] == 0 and minutes[-1][1] == 60
    assert all(prev[1] == cur[0] for prev, cur in zip(minutes, minutes[1:]))  # back to back


def test_numbers_come_from_the_traces(guide, facts):
    big, tiny = facts["11b-instruct"], facts["tiny"]
    assert f"{big['n_stages']} stages, {big['n_events']} events" in guide
    assert f"N = {big['N']} tokens, padded to N8 = {big['N8']}" in guide
    assert big["shapes"]["vision.projection"] in guide and big["shapes"]["xattn.cache"] in guide
    assert f"| D, text width | {big['D']} | {tiny['D']} |" in guide
    assert f"{big['canvas_w']}x{big['canvas_h']} canvas" in guide
