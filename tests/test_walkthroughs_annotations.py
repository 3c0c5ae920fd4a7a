"""The stage prose is data, every number in it comes from the trace, and none is stale."""

import re

import pytest
from logs import logged

from walkthroughs.annotations import annotate, fill, load_annotations, load_phrases
from walkthroughs.catalog import load_catalog
from walkthroughs.context import all_stage_contexts

PRESETS = ("11b-instruct", "90b-instruct", "tiny")
ALLOWED_NUMBERS = {"0", "1", "2", "8"}
# identifiers and names that contain digits without being sizes
IDENTIFIER = re.compile(r"`[^`]*`|\b(?:bf16|fp16|fp32|fp64|int64|int8|sm90|ln_[12]|w[123]|c_fc|3\.2|Llama ?3(?:\.\d)?|#\d+|[A-Za-z]+\d+[A-Za-z0-9_]*)\b")
PLACEHOLDER = re.compile(r"\{[^{}]+\}")


@pytest.fixture(scope="module")
def contexts():
    out = {}
    for preset in PRESETS:
        header, events, summary, _ = logged(preset)
        out[preset] = {row["stage"]: ctx for row, ctx in all_stage_contexts(header, events, summary)}
    return out


def test_every_stage_has_prose():
    notes = load_annotations()
    for stage in load_catalog():
        assert stage.id in notes, f"no annotation for {stage.id}"
        assert notes[stage.id].get("what", "").strip(), f"{stage.id}: empty 'what'"
    assert set(notes) <= {s.id for s in load_catalog()}, "annotations for unknown stages"


def test_no_hand_typed_numbers():
    notes = {**load_annotations(), **{f"phrase {name}": {"what": text} for name, text in load_phrases().items()}}
    for stage_id, note in notes.items():
        texts = [note.get("what", ""), note.get("why", ""), note.get("hf", "")] + list(note.get("gotchas", []))
        for text in texts:
            bare = IDENTIFIER.sub(" ", PLACEHOLDER.sub(" ", text))
            numbers = set(re.findall(r"\d+(?:\.\d+)?", bare)) - ALLOWED_NUMBERS
            assert not numbers, f"{stage_id}: hand-typed number(s) {sorted(numbers)} in {text!r}"


def test_templates_resolve_for_every_model(contexts):
    for preset, by_stage in contexts.items():
        for stage_id, ctx in by_stage.items():
            annotate(stage_id, ctx)  # raises TemplateError naming the missing placeholder


def test_prose_follows_the_model(contexts):
    def text(preset, stage):
        note = annotate(stage, contexts[preset][stage])
        return " ".join([note.what, note.why, *note.gotchas, note.hf])

    projection = {p: text(p, "vision.projection") for p in PRESETS}
    assert "4096" in projection["11b-instruct"] and "8192" in projection["90b-instruct"] and "64" in projection["tiny"]
    assert "8192" not in projection["11b-instruct"] and "4096" not in projection["90b-instruct"]
    xattn = {p: text(p, "text.cross_attention") for p in PRESETS}
    assert "20" in xattn["90b-instruct"] and "20" not in xattn["11b-instruct"]
    pad = {p: text(p, "vision.pad8") for p in PRESETS}
    assert "1601" in pad["11b-instruct"] and "65" in pad["tiny"]


def test_a_count_of_one_takes_the_singular():
    text = fill("`{a}` chunks, `{b}` empty slots, all `{c}` empty slots", {"a": 1, "b": 1, "c": 3}, "test")
    assert text == "`1` chunk, `1` empty slot, all `3` empty slots"


def _names_in(source: str) -> list[str]:
    """'MllamaVisionModel.forward (F.pad) + multi_modal_projector' -> the names to look for, each
    part of a dotted one (parts joined by + or /)."""
    return [name for part in re.split(r" \+ | / ", re.sub(r"\(.*?\)", "", source)) for name in part.strip().split(".")]


def test_every_meta_and_hf_reference_names_code_that_exists():
    """Each stage's "where Meta / HF does this" points at a file of the installed packages that
    defines or uses the named function, class or attribute (a split_to_tiles once pointed at a
    file that does not hold it)."""
    import pathlib

    import llama_models
    import transformers

    roots = {"meta": pathlib.Path(llama_models.__file__).parent, "hf": pathlib.Path(transformers.__file__).parent}
    wrong = []
    for stage in load_catalog():
        for side, ref in (("meta", stage.meta), ("hf", stage.hf)):
            if ".py: " not in ref:  # none, or another library's class by name ("torchvision ToTensor")
                continue
            file, _, names = ref.partition(": ")
            path = roots[side] / file if (roots[side] / file).exists() else roots[side] / "models" / file
            if not path.is_file():
                wrong.append(f"{stage.id}: {side} file {file} not found")
                continue
            text = path.read_text(encoding="utf-8")
            wrong += [f"{stage.id}: {name} not in {file}" for name in _names_in(names) if not re.search(rf"\b{re.escape(name)}\b", text)]
    assert not wrong, wrong


def test_the_rope_prose_follows_the_config():
    """Llama3's frequency scaling is described only where the config turns it on (a params.json
    without `use_scaled_rope` turns it off)."""
    from logs import with_value

    header, events, summary, _ = logged("tiny")
    for scaled in (True, False):
        h = with_value(header, scaled, "model", "config", "use_scaled_rope")
        ctx = {row["stage"]: c for row, c in all_stage_contexts(h, events, summary)}
        gotchas = " ".join(annotate("text.self_attention", ctx["text.self_attention"]).gotchas)
        assert ("divides each frequency" in gotchas) == scaled and ("turns Llama3's frequency scaling off" in gotchas) == (not scaled)
