"""Parity with Meta's own reference code (llama_models 0.3.0) on the same random weights.

Both models get one state dict; every stage is compared: image transform, vision tokens,
xattn caches and masks, prefill logits and a decode step. fp32 must agree within 1e-5
(in practice bit for bit); bf16 runs Meta's bf16 arithmetic, preprocessing included.
"""

import copy

import pytest
import torch
from PIL import Image

import meta_reference as mr
from model import ChatFormat, Message, build_model, get_preset
from model.multimodal import _stack_images

TINY = get_preset("tiny")
T = 64  # total_len for these prompts
SIZES = {"square": (300, 300), "wide": (1000, 400), "tall": (300, 900), "tiny": (20, 20), "big": (1500, 1200), "2x2": (800, 600)}
TOL = {torch.float32: 1e-5, torch.bfloat16: 0.0}


def random_image(size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w, h = size
    pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=gen)
    return Image.frombytes("RGB", (w, h), pixels.numpy().tobytes())


@pytest.fixture(scope="module", params=[torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def models(request):
    dtype = request.param
    ours = build_model(TINY, device="cpu", dtype=dtype, seed=0)
    theirs = mr.build_meta_model(TINY, dtype=dtype)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return dtype, ours, theirs


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item() if a.numel() else 0.0


def run_ours(model, tokens, images, masks, positions):
    with torch.no_grad():
        caches, xmask, rowmask = model.compute_vision_tokens_masks([images], [masks], T, "cpu")
        logits = [model(pos, tokens, xmask, rowmask, caches, text_only_inference=not images) for pos in positions]
    return caches, xmask, rowmask, logits


def run_meta(model, dtype, tokens, images, masks, positions):
    with torch.no_grad(), mr.meta_default_dtype(dtype):
        caches, xmask, rowmask = model.compute_vision_tokens_masks([images], [copy.deepcopy(masks)], T, "cpu")
        logits = [model(pos, tokens, xmask, rowmask, caches, text_only_inference=not images) for pos in positions]
    return caches, xmask, rowmask, logits


def prompt(tokenizer, layout, image):
    fmt = ChatFormat(tokenizer)
    content = ([image] if image is not None else []) + ["What is in this picture? Answer briefly."]
    inp = fmt.encode_dialog_prompt([Message("user", content)]) if layout == "chat" else fmt.encode_content(content)
    tokens = torch.full((1, T), tokenizer.pad_id)
    tokens[0, : len(inp.tokens)] = torch.tensor(inp.tokens)
    vision = inp.vision
    return tokens, len(inp.tokens), (vision.images if vision else []), (vision.mask if vision else [])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", list(SIZES) + ["561", "1121x500"])
def test_image_transform_is_bit_identical(name, dtype):
    size = {"561": (561, 561), "1121x500": (1121, 500)}.get(name) or SIZES[name]
    image = random_image(size)
    ours, ar = build_model(TINY.replace(vision_chunk_size=560), device="meta", dtype=dtype).image_transform(image)
    theirs, their_ar = mr.meta_image_transform(TINY.replace(vision_chunk_size=560), image, dtype)
    assert ar == tuple(their_ar)
    assert ours.dtype == theirs.dtype == dtype
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("name", list(SIZES))
def test_vision_tokens_match(models, name):
    dtype, ours, theirs = models
    chunks, ar = ours.image_transform(random_image(SIZES[name], seed=1))
    stacked, _ = _stack_images([[chunks]], 4, TINY.vision_chunk_size, 1, dtype)
    ar = torch.tensor([[ar]])
    with torch.no_grad():
        a = ours.vision_model(stacked, ar)
        with mr.meta_default_dtype(dtype):
            b = theirs.vision_model(stacked, ar)
    assert a.shape == b.shape == (1, 1, 4, TINY.vision_num_tokens, TINY.dim)
    assert max_diff(a, b) <= TOL[dtype]


@pytest.mark.parametrize("layout, name", [("completion", "2x2"), ("chat", "wide"), ("chat", "tall"), ("completion", "tiny"), ("chat", None)])
def test_prefill_and_decode_logits_match(models, tokenizer, layout, name):
    dtype, ours, theirs = models
    image = random_image(SIZES[name], seed=2) if name else None
    tokens, n, images, masks = prompt(tokenizer, layout, image)
    positions = [torch.arange(0, n), torch.tensor([n])]  # prefill, then one decode step at position n
    tokens[0, n] = 1734  # the "generated" token fed to the decode step
    ours_out, theirs_out = run_ours(ours, tokens, images, masks, positions), run_meta(theirs, dtype, tokens, images, masks, positions)
    for a, b in zip(ours_out[:3], theirs_out[:3]):  # caches, cross-attention mask, row mask
        assert a.shape == b.shape and a.dtype == b.dtype
        assert max_diff(a, b) <= TOL[dtype]
    for a, b in zip(ours_out[3], theirs_out[3]):
        assert a.dtype == b.dtype == torch.float32
        assert max_diff(a, b) <= TOL[dtype]


def test_meta_state_dict_loads_strictly_into_ours():
    theirs = mr.randomize_meta_params_(mr.build_meta_model(TINY), seed=3)
    ours = build_model(TINY, device="cpu", dtype=torch.float32, seed=0)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert all(torch.equal(p, theirs.state_dict()[k]) for k, p in ours.state_dict().items())


@pytest.mark.parametrize("preset", ["11b-instruct", "90b-instruct"])
def test_full_size_parameter_names_and_shapes_equal_meta(preset):
    args = get_preset(preset)
    ours = {k: tuple(v.shape) for k, v in build_model(args, device="meta").state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in mr.build_meta_model(args, dtype=torch.bfloat16, device="meta").state_dict().items()}
    assert ours == theirs
