"""Parity of our model with Hugging Face `transformers` Mllama (the installed version), fp32, `tiny` preset.

Our weights (seeded random, every gate open) are converted with `tests/hf_convert.py` (the mapping of
HF's `convert_mllama_weights_to_hf.py`, spec §4.2) and loaded strictly into `MllamaForConditionalGeneration`.

What these tests pin down:

1. Vision: our `vision_model` (encoder + projection) equals HF `vision_model` + `multi_modal_projector`
   on the same pixels, for square / wide / tall / tiny / larger-than-canvas images.
   HF >= 5 collects the vision encoder's `hidden_states` *after* each layer (no input entry), so its
   `intermediate_layers_indices=[3, 7, 15, 23, 30]` picks the outputs of layers 3, 7, ... where Meta (and
   we, and HF up to the spec's commit befb7955) take the *inputs* of those layers. The comparison shifts
   HF's indices by one when the installed HF behaves like that; `test_hf_vision_intermediate_taps` documents
   the off-by-one itself.
2. Text path (spec §4.3.1, transformers issue #39379): HF does not zero the cross-attention output of text
   rows that see no image (rows before `<|image|>`); Meta multiplies it by `full_text_row_masked_out_mask`.
   Right after the first cross-attention layer, rows < p differ and rows >= p agree. In the logits *every*
   row differs, because the causal self-attention layers after it mix the changed rows < p into rows >= p.
   Zeroing HF's cross-attention output on those rows (the upstream fix) makes all logits agree, and with the
   image token at position 0 (no masked rows) the unpatched models agree too.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from PIL import Image

import hf_convert as hc
from model import PRESETS, build_model
from model.multimodal import _stack_images

TINY = PRESETS["tiny"]
TOL = 1e-4
IMAGE_ID = hc.IMAGE_TOKEN_INDEX
# Chat layout (spec §2: p = 5): BOS, user header, <|image|>, some text, <|eot_id|>, assistant header.
CHAT_IDS = [128000, 128006, 882, 128007, 271, IMAGE_ID, 3923, 374, 304, 420, 2217, 30, 128009, 128006, 78191, 128007, 271]
TOTAL_LEN = 64


def _random_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=gen)
    return Image.frombytes("RGB", (width, height), pixels.numpy().tobytes())


@pytest.fixture(scope="module")
def ours():
    return build_model(TINY, device="cpu", dtype=torch.float32, seed=0)


@pytest.fixture(scope="module")
def hf(ours):
    return hc.build_hf_model(TINY, ours.state_dict(), dtype=torch.float32, attn_implementation="eager")


def _hf_hidden_states_are_layer_outputs(hf) -> bool:
    """True if the installed HF vision encoder returns one hidden state per layer, taken after it
    (transformers 5.x); False if it returns the input first and then every layer's output (<= 4.5x)."""
    vm = hf.model.vision_model
    n = len(vm.transformer.layers)
    with torch.no_grad():
        out = vm.transformer(torch.randn(1, 8, vm.hidden_size, generator=torch.Generator().manual_seed(0)))
    if len(out.hidden_states) == n + 1:
        return False
    assert len(out.hidden_states) == n, len(out.hidden_states)
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    return True


@contextlib.contextmanager
def _meta_taps(hf):
    """Point HF's intermediate-layer indices at the tensors Meta taps (the inputs of blocks 3, 7, ...)."""
    vm = hf.model.vision_model
    saved = list(vm.intermediate_layers_indices)
    if _hf_hidden_states_are_layer_outputs(hf):
        assert min(saved) >= 1, "Meta tap 0 (the encoder input) has no HF hidden state"
        vm.intermediate_layers_indices = [i - 1 for i in saved]
    try:
        yield
    finally:
        vm.intermediate_layers_indices = saved


def _vision_inputs(ours, pil: Image.Image):
    """Our transform -> the same pixels for both models, plus our (rows, cols) and HF's ids/mask."""
    chunks, (rows, cols) = ours.image_transform(pil)  # [c, 3, R, R]
    stacked, num_chunks = _stack_images([[chunks]], TINY.vision_max_num_chunks, TINY.vision_chunk_size, 1, torch.float32)
    assert num_chunks == [[rows * cols]]
    ar = torch.tensor([[[rows, cols]]])  # [B, I, 2]
    ar_ids = torch.tensor([[hc.aspect_ratio_id(rows, cols, TINY.vision_max_num_tiles)]])  # [B, I]
    ar_mask = torch.zeros(1, 1, TINY.vision_max_num_tiles, dtype=torch.long)  # [B, I, C]
    ar_mask[0, 0, : rows * cols] = 1
    return stacked, ar, ar_ids, ar_mask, (rows, cols)


# ------------------------------------------------------------------------------------------------
# conversion


def test_config_for_real_presets():
    for name, n_total, xattn, ffn in [
        ("11b-instruct", 40, [3, 8, 13, 18, 23, 28, 33, 38], 14336),
        ("90b", 100, list(range(3, 100, 5)), 28672),
    ]:
        cfg = hc.hf_config_from_args(PRESETS[name])
        t, v = cfg.text_config, cfg.vision_config
        assert t.num_hidden_layers == n_total and t.cross_attention_layers == xattn and t.intermediate_size == ffn
        assert t.rope_parameters["rope_type"] == "llama3" and t.rope_parameters["rope_theta"] == 500000.0
        assert (t.vocab_size, t.pad_token_id, cfg.image_token_index) == (128256, 128004, 128256)
        assert v.supported_aspect_ratios == [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]
        assert (v.hidden_size, v.attention_heads, v.num_hidden_layers, v.num_global_layers) == (1280, 16, 32, 8)
        assert (v.intermediate_size, v.vision_output_dim, v.image_size) == (5120, 7680, 560)
        assert v.intermediate_layers_indices == [3, 7, 15, 23, 30]
    cfg = hc.hf_config_from_args(TINY)
    assert cfg.text_config.cross_attention_layers == [3, 8]  # Meta: blocks before text layers [3, 7]
    assert hc.self_attention_layer_indices(TINY) == [0, 1, 2, 4, 5, 6, 7, 9]


def test_state_dict_layouts(ours, hf, tmp_path):
    from safetensors.torch import save_file
    from transformers import MllamaForConditionalGeneration

    installed = hc.meta_to_hf_state_dict(TINY, ours.state_dict())
    hf_sd = hf.state_dict()
    assert set(installed) == set(hf_sd)
    assert all(installed[k].shape == hf_sd[k].shape for k in installed)
    emb = installed["model.language_model.embed_tokens.weight"]
    assert emb.shape == (128264, TINY.dim)
    assert torch.equal(emb[128256:], ours.text_model.learnable_embedding.weight)
    for key in ("model.vision_model.gated_positional_embedding.tile_embedding.weight",
                "model.vision_model.pre_tile_positional_embedding.embedding.weight"):
        assert installed[key].shape[0] == 9 and not installed[key][0].any()  # row 0: padding id, zeros

    # The converter's (hub) names load through transformers' own key renaming to the same tensors.
    hub = hc.meta_to_hf_state_dict(TINY, ours.state_dict(), layout="hub")
    assert "language_model.lm_head.weight" in hub and "vision_model.patch_embedding.weight" in hub
    hc.hf_config_from_args(TINY).save_pretrained(tmp_path)
    save_file(hub, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    reloaded = MllamaForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32).state_dict()
    assert set(reloaded) == set(installed)
    assert all(torch.equal(reloaded[k], installed[k]) for k in installed)


# ------------------------------------------------------------------------------------------------
# vision


@pytest.mark.parametrize(
    "size", [(300, 300), (1000, 400), (300, 900), (20, 20), (1500, 1200)],
    ids=["square-300x300", "wide-1000x400", "tall-300x900", "tiny-20x20", "big-1500x1200"],
)
def test_vision_parity(ours, hf, size):
    stacked, ar, ar_ids, ar_mask, (rows, cols) = _vision_inputs(ours, _random_rgb(*size, seed=sum(size)))
    with torch.no_grad(), _meta_taps(hf):
        mine = ours.vision_model(stacked, ar)  # [B, I, C, N, D]
        feats = hf.model.vision_model(pixel_values=stacked, aspect_ratio_ids=ar_ids, aspect_ratio_mask=ar_mask).last_hidden_state
        theirs = hf.model.multi_modal_projector(feats)  # [B, I, C, N, D]
    assert feats.shape == (1, 1, TINY.vision_max_num_chunks, TINY.vision_num_tokens, TINY.vision_input_dim)
    assert mine.shape == theirs.shape == (1, 1, TINY.vision_max_num_chunks, TINY.vision_num_tokens, TINY.dim)
    diff = (mine - theirs).abs().max().item()
    print(f"vision {size[0]}x{size[1]} -> {rows}x{cols} tiles: max |ours - HF| = {diff:.3e}")
    assert diff <= TOL, f"{size}: {diff}"


def test_hf_vision_intermediate_taps(ours, hf):
    """With the converter's indices the installed HF taps the layer *after* Meta's (see module doc):
    the final-layer slice of the 7680-style features agrees, every tap slice does not."""
    stacked, ar, ar_ids, ar_mask, _ = _vision_inputs(ours, _random_rgb(300, 900, seed=1))
    with torch.no_grad():
        mine = ours.vision_model.vision_encoder(stacked, ar)  # [B, I, C, N, W*(L+1)]
        theirs = hf.model.vision_model(pixel_values=stacked, aspect_ratio_ids=ar_ids, aspect_ratio_mask=ar_mask).last_hidden_state
    w = TINY.vision_width
    final = (mine[..., :w] - theirs[..., :w]).abs().max().item()
    taps = (mine[..., w:] - theirs[..., w:]).abs().max().item()
    print(f"vision taps with converter indices: final slice {final:.3e}, tap slices {taps:.3e}")
    assert final <= TOL
    if _hf_hidden_states_are_layer_outputs(hf):
        assert taps > 1e-2, "HF's taps now match Meta's: the off-by-one shift in _meta_taps is no longer needed"
    else:
        assert taps <= TOL


# ------------------------------------------------------------------------------------------------
# text path


def _run_both(ours, hf, ids: list[int], pil: Image.Image, hf_row_fix: bool = False):
    """Full forward of both models on the same ids and image. Returns (ours, HF) logits [S, K] and the
    outputs [S, D] of the first cross-attention block (ours: cross_attention_layers[0]; HF: merged layer 3)."""
    p, seq = ids.index(IMAGE_ID), len(ids)
    tokens = torch.full((1, TOTAL_LEN), hc.PAD_ID, dtype=torch.long)
    tokens[0, :seq] = torch.tensor(ids)
    stacked, _, ar_ids, ar_mask, (rows, cols) = _vision_inputs(ours, pil)
    xattn_mask = torch.zeros(1, seq, 1, TINY.vision_max_num_chunks, dtype=torch.long)  # [B, S, I, C]
    xattn_mask[0, p:, 0, : rows * cols] = 1
    row_sees_image = (xattn_mask.sum((2, 3)) > 0).to(torch.float32)[..., None]  # [B, S, 1]

    first_x = hc.cross_attention_layer_indices(TINY)[0]
    got = {}

    def keep(name):
        return lambda module, inputs, out: got.__setitem__(name, out[0] if isinstance(out, tuple) else out)

    handles = [
        ours.text_model.cross_attention_layers[0].register_forward_hook(keep("ours")),  # [B, S, D]
        hf.model.language_model.layers[first_x].register_forward_hook(keep("hf")),  # [B, S, D]
    ]
    if hf_row_fix:  # Meta's `out * full_text_row_masked_out_mask` on the attention output (the upstream fix)
        for layer in hf.model.language_model.layers:
            if hasattr(layer, "cross_attn"):
                handles.append(layer.cross_attn.register_forward_hook(lambda m, i, o: (o[0] * row_sees_image, *o[1:])))
    try:
        with torch.no_grad(), _meta_taps(hf):
            caches, masks, row_mask = ours.compute_vision_tokens_masks([[pil]], [[[p, -1]]], TOTAL_LEN, "cpu")
            assert torch.equal(row_mask[0, 0, :seq, 0], row_sees_image[0, :, 0])  # same rows are masked out
            mine = ours.forward(torch.arange(0, seq), tokens, masks, row_mask, caches)[0]  # [S, K]
            theirs = hf(
                input_ids=torch.tensor([ids]), pixel_values=stacked, aspect_ratio_ids=ar_ids,
                aspect_ratio_mask=ar_mask, cross_attention_mask=xattn_mask, use_cache=False,
            ).logits[0]  # [S, K]
    finally:
        for h in handles:
            h.remove()
    return mine, theirs, got["ours"], got["hf"]


def _row_max(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().amax(-1)  # [S]


def test_text_inputs_identical(ours, hf):
    """The prompt-layout difference (§4.3.2: HF's processor moves a leading <|image|> before BOS) plays no
    part: both models get the same ids, and HF's row 128256 is our learnable_embedding[0]."""
    ids = torch.tensor([CHAT_IDS])
    assert CHAT_IDS.index(IMAGE_ID) == 5 and CHAT_IDS[0] == hc.BOS_ID
    with torch.no_grad():
        mine = ours.text_model.get_partially_trainable_embedding(ids)
        theirs = hf.model.language_model.embed_tokens(ids)
    assert torch.equal(mine, theirs)


def test_text_path_row_mask_difference(ours, hf):
    pil = _random_rgb(300, 900, seed=7)
    p = CHAT_IDS.index(IMAGE_ID)
    mine, theirs, x_mine, x_theirs = _run_both(ours, hf, CHAT_IDS, pil)

    x_rows = _row_max(x_mine[0], x_theirs[0])  # [S]: hidden state after the first cross-attention block
    logit_rows = _row_max(mine, theirs)  # [S]
    print("after 1st xattn block, max |diff| per row:", [f"{v:.1e}" for v in x_rows.tolist()])
    print("logits, max |diff| per row:            ", [f"{v:.1e}" for v in logit_rows.tolist()])
    # At the first cross-attention block: rows before the image differ (HF lets them attend uniformly to all
    # vision keys and keeps tanh(gate_attn) * o_proj(mean V)); rows at/after the image agree.
    assert x_rows[:p].min() > 1e-3
    assert x_rows[p:].max() <= TOL
    # In the logits every row differs: the later causal self-attention layers read rows < p.
    assert logit_rows[:p].min() > 1e-3
    assert logit_rows[p:].min() > 1e-3

    # Zero HF's cross-attention output on rows that see no image (what Meta does): everything agrees.
    fixed, fixed_theirs, _, _ = _run_both(ours, hf, CHAT_IDS, pil, hf_row_fix=True)
    fixed_rows = _row_max(fixed, fixed_theirs)
    print(f"logits with the row mask applied to HF's cross-attention output: max {fixed_rows.max().item():.3e}")
    assert torch.equal(fixed, mine)
    assert fixed_rows.max() <= TOL


def test_text_path_image_first_agrees(ours, hf):
    """With <|image|> at position 0 no row is masked out, so the two models agree without any patch."""
    ids = [IMAGE_ID] + [t for t in CHAT_IDS if t != IMAGE_ID]
    mine, theirs, _, _ = _run_both(ours, hf, ids, _random_rgb(300, 900, seed=7))
    diff = (mine - theirs).abs().max().item()
    print(f"image token at position 0: max |logits diff| = {diff:.3e}")
    assert diff <= TOL
