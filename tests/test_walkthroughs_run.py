"""The traced Llama run: stages in order, spec §2 shapes, symbolic labels, determinism."""

import json
from pathlib import Path

import jsonschema
import pytest
from PIL import Image

from tracer.log import build_lines
from walkthroughs.catalog import load_catalog
from walkthroughs.run import run

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "tracer" / "schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
PROMPT_18 = "The quick brown fox jumps over the lazy dog and then it keeps on running far away today"


@pytest.fixture(scope="module")
def image_800x600(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "800x600.png"
    Image.new("RGB", (800, 600), (90, 140, 200)).save(path)
    return path


@pytest.fixture(scope="module")
def run_11b(image_800x600):
    return run(image_800x600, PROMPT_18, preset="11b", timing=False)


def first(events, **where):
    return next(e for e in events if all(e.get(k) == v for k, v in where.items()))


def out_shape(event, i=0):
    return [o for o in event["outputs"] if "shape" in o][i]


def all_items(events):
    """(event, item) for every input and output item of every event."""
    return [(e, item) for e in events for item in e["inputs"] + e.get("outputs", [])]


def test_spec_section_2_shapes_for_800x600_and_20_tokens(image_800x600):
    # 11B-Instruct, completion prompt of 20 tokens: the concrete example of the spec.
    result = run(image_800x600, PROMPT_18, preset="11b-instruct", timing=False)
    events = result.trace.events
    assert result.header["inputs"]["layout"] == "chat"
    stacked = out_shape(first(events, stage="vision.stack"))
    assert stacked["shape"] == [1, 1, 4, 3, 560, 560]
    vision = out_shape(first(events, stage="vision.model", kind="module"))
    assert vision["shape"] == [1, 1, 4, 1601, 4096] and vision["sym"] == ["B", "I", "C", "N", "D"]
    assert out_shape(first(events, stage="vision.encoder", kind="module"))["shape"] == [1, 1, 4, 1601, 7680]
    mask = out_shape(first(events, stage="vision.encoder_mask"))
    assert mask["shape"] == [1, 1, 6432, 6432]
    local = first(events, stage="vision.local_layers", kind="module")
    assert [o["shape"] for o in local["outputs"]] == [[1, 6432, 1280], [1, 6432, 1280, 5]]
    caches = out_shape(first(events, stage="vision.inputs"))  # the run's own call line names the shapes
    assert caches["shape"] == [8, 2, 1, 32, 6404, 128]
    xmask = out_shape(first(events, stage="vision.inputs"), 1)
    assert xmask["shape"] == [1, 1, 512, 6404] and xmask["sym"] == ["B", "1", "T", "V"]
    assert caches["sym"] == ["X", "2", "B", "H", "V", "Dh"]
    taps = local["outputs"][1]
    assert taps["sym"] == ["BI", "C*N8", "W", "L"]
    logits = out_shape(first(events, stage="text.logits"))
    n = result.summary["prompt_tokens"]
    assert logits["shape"] == [1, n, 128256] and logits["sym"] == ["B", "S", "K"]
    assert first(events, kind="phase", path="prefill")["info"] == {"step": 0, "positions": [0, n]}


@pytest.mark.parametrize("preset", ["11b-instruct", "90b-instruct"])
def test_coinciding_sizes_keep_their_own_letters(preset):
    # On the 90B, RoPE's Dh/2 = 64 frequency pairs equal the H = 64 heads: freqs_cis was once guessed [S, H].
    events = run(None, "Hi", preset=preset, timing=False).trace.events
    items = all_items(events)
    freqs = [item["sym"] for e, item in items if item["path"] == "['freqs_cis']"]
    assert freqs and all(sym == ["S", "Dh/2"] for sym in freqs)
    caches = [item["sym"] for e, item in items if item["path"] == "['xattn_cache']"]
    assert caches and all(sym == ["2", "B", "H", "V", "Dh"] for sym in caches)
    q_norms = [item["sym"] for e, item in items if e["path"].endswith("attention.q_norm") and item["path"] == ""]
    assert q_norms and all(sym == ["B", "S", "H", "Dh"] for sym in q_norms)
    norms = [item["sym"] for e, item in items if e["path"].endswith((".attention_norm", ".ffn_norm")) and item["path"] == ""]
    assert norms and all(sym == ["B", "S", "D"] for sym in norms)  # the cross-attention blocks' too: B, not a bare 1


def test_cache_length_m_and_text_length_t_are_told_apart():
    # with tokens to generate, the text (T: tokens, masks) is shorter than the cache (M = max_seq_len)
    result = run(None, "Hi", preset="tiny", timing=False, max_new_tokens=2)
    T, M = result.header["symbols"]["T"], result.header["symbols"]["M"]
    assert T < M == result.header["model"]["config"]["max_seq_len"]
    items = all_items(result.trace.events)
    masks = [item for e, item in items if e["name"] == "Attention" and item["path"] == "['mask']"]
    assert masks and all(m["shape"][-1] == M and m["sym"] == ["1", "1", "S", "M"] for m in masks)
    xmasks = [item for e, item in items if e["path"] == "" and item["path"] == "['cross_attention_masks']"]
    assert xmasks and all(m["shape"][2] == T and m["sym"] == ["B", "1", "T", "V"] for m in xmasks)


def test_11b_base_uses_448_chunks(run_11b):
    events = run_11b.trace.events
    assert run_11b.header["inputs"]["layout"] == "completion"
    assert run_11b.header["inputs"]["token_ids"][:2] == [128000, 128256]
    assert len(run_11b.header["inputs"]["token_ids"]) == 20
    vision = out_shape(first(events, stage="vision.model", kind="module"))
    assert vision["shape"] == [1, 1, 4, 1025, 4096]
    logits = out_shape(first(events, stage="text.logits"))
    assert logits["shape"] == [1, 20, 128256]


def test_every_catalog_stage_appears_in_order(run_11b):
    seen = []
    for e in run_11b.trace.events:
        if e.get("stage") and e["stage"] not in seen:
            seen.append(e["stage"])
    catalog = [s.id for s in load_catalog()]
    assert set(seen) == set(catalog)
    # the image transform runs inside vision.inputs, so order is checked per phase of the pipeline
    assert seen.index("prompt") < seen.index("vision.inputs") < seen.index("text.embeddings") < seen.index("sampling")
    assert seen.index("image.canvas") < seen.index("image.resize") < seen.index("image.pad") < seen.index("image.chunks")
    assert seen.index("vision.patch_embed") < seen.index("vision.pad8") < seen.index("vision.local_layers") < seen.index("vision.global_layers") < seen.index("vision.unpad8")


def test_stages_nest_stage_module_op(run_11b):
    events = run_11b.trace.events
    by_seq = {e["seq"]: e for e in events}
    block = first(events, path="text_model.cross_attention_layers.0")
    assert block["stage"] == "text.cross_attention" and block["phase"] == "prefill"
    parent = by_seq[block["parent"]]
    assert parent["path"] == "text_model"
    children = [e for e in events if e["parent"] == block["seq"]]
    assert {c["path"] for c in children} >= {"text_model.cross_attention_layers.0.attention"}


def test_log_is_schema_valid_and_deterministic(image_800x600, run_11b):
    lines = build_lines(run_11b.trace, run_11b.header, run_11b.summary)
    for line in lines:
        VALIDATOR.validate(json.loads(line))
    again = run(image_800x600, PROMPT_18, preset="11b", timing=False)
    assert lines == build_lines(again.trace, again.header, again.summary)


def test_meta_mode_transforms_the_real_image(run_11b):
    events = run_11b.trace.events
    canvas = first(events, path="get_best_fit")
    assert canvas["outputs"][0]["values"] == [896, 896]
    normalize = first(events, stage="image.normalize")
    assert normalize["outputs"][0]["device"] == "cpu" and "stats" in normalize["outputs"][0]


def test_real_mode_refuses_a_model_that_cannot_fit_in_memory(monkeypatch):
    from walkthroughs import run as run_module

    monkeypatch.setattr(run_module, "available_memory", lambda: 8 * 2**30)
    with pytest.raises(run_module.RunError, match=r"this run needs about 25 GiB \(19.8 GiB of weights, .*\) and 8.0 GiB is free: use meta mode"):
        run(None, "What is this?", preset="11b", mode="real", timing=False)
    # the causal mask [1, 1, M, M] alone is M² bytes: 16 GiB at M = 131072, whatever the weights
    with pytest.raises(run_module.RunError, match=r"16.3 GiB of caches and masks for M = 131072 positions\) and 8.0 GiB is free: lower --max-seq-len$"):
        run(None, "What is this?", preset="tiny", max_seq_len=131072, timing=False)


def test_a_checkpoint_run_is_checked_for_memory_too(monkeypatch):
    import torch

    from model import get_preset
    from walkthroughs import run as run_module

    monkeypatch.setattr(run_module, "available_memory", lambda: 8 * 2**30)
    with pytest.raises(run_module.RunError, match=r"19.8 GiB of weights, .*: use a machine with more memory, or --device cuda$"):
        run_module.check_memory(get_preset("11b"), torch.bfloat16, checkpoint=True)
    run_module.check_memory(get_preset("tiny"), torch.bfloat16, checkpoint=True)  # fits


def test_instruct_checkpoints_are_told_by_their_path(tmp_path):
    from walkthroughs.run import instruct_checkpoint

    snapshot = tmp_path / "hub" / "models--meta-llama--Llama-3.2-11B-Vision-Instruct" / "snapshots" / "0123abcd"
    (snapshot / "original").mkdir(parents=True)  # Meta's files inside the Hugging Face repository
    base = tmp_path / "Llama3.2-11B-Vision-Instructions"
    base.mkdir()
    (tmp_path / "Llama3.2-11B-Vision-Instruct").symlink_to(base)  # a link's own name counts
    assert instruct_checkpoint(snapshot) and instruct_checkpoint(snapshot / "original")
    assert instruct_checkpoint(tmp_path / "Llama3.2-11B-Vision-Instruct")
    assert not instruct_checkpoint(base)  # "Instructions" is not "Instruct"


def test_a_generation_longer_than_the_context_gets_a_note():
    from model import get_preset

    words = "one two three four five six seven eight nine ten " * 47  # about 470 tokens
    result = run(None, words, preset="tiny", timing=False, values=False, max_new_tokens=100)
    n, limit = result.summary["prompt_tokens"], get_preset("tiny").max_seq_len
    assert result.summary["steps"] == limit - n
    assert f"--max-new-tokens 100: the context here is {limit} tokens (max_seq_len), so at most {limit - n} follow" in " ".join(result.header["inputs"]["notes"])


def test_tiny_real_mode_has_values_and_a_next_token():
    result = run(None, "What is this?", preset="tiny", timing=False)
    assert result.header["mode"] == "real"
    logits = out_shape(first(result.trace.events, stage="text.logits"))
    assert logits["stats"]["nan"] == 0 and logits["stats"]["std"] > 0
    assert 0 <= result.summary["next_token"]["id"] < 128256
    assert len(result.summary["top5"]) == 5


def test_top_p_without_sampling_gets_a_note():
    noted = run(None, preset="tiny", timing=False, top_p=0.5).header["inputs"]["notes"]
    assert "--top-p 0.5: greedy decoding (--temperature 0) takes the most likely token; top-p sampling needs --temperature above 0" in noted
    assert not any("--top-p" in n for n in run(None, preset="tiny", timing=False, top_p=0.5, temperature=0.7).header["inputs"]["notes"])
    noted = run(None, preset="11b-instruct", timing=False, top_p=0.5).header["inputs"]["notes"]
    assert any(n.startswith("--top-p: meta mode computes shapes only") for n in noted)


def test_sampling_and_no_values_in_meta_mode_get_a_note_that_they_change_nothing():
    noted = run(None, preset="11b-instruct", timing=False, temperature=0.7, max_new_tokens=1).header["inputs"]["notes"]
    assert any(n.startswith("--temperature: meta mode computes shapes only") for n in noted)
    noted = run(None, preset="11b-instruct", timing=False, values=False, temperature=0.7).header["inputs"]["notes"]
    assert any(n.startswith("--temperature and --no-values: meta mode computes shapes only") for n in noted)
    assert not any("meta mode" in n for n in run(None, preset="tiny", timing=False, temperature=0.7, max_new_tokens=1).header["inputs"]["notes"])
