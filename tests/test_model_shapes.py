"""Full-size 11B and 90B forwards on the meta device: exact shapes from spec §2, no weights."""

import pytest
import torch
from PIL import Image

from model import ChatFormat, build_model, get_preset


def prompt_of_20_tokens(tokenizer, image):
    text = "The quick brown fox jumps over the lazy dog and then it keeps on running far away today"
    inp = ChatFormat(tokenizer).encode_content([image, text])
    assert len(inp.tokens) == 20, len(inp.tokens)
    return inp


@pytest.mark.parametrize("preset, dim, n_xattn, heads", [("11b-instruct", 4096, 8, 32), ("90b-instruct", 8192, 20, 64)])
def test_full_size_meta_forward_shapes(tokenizer, preset, dim, n_xattn, heads):
    args = get_preset(preset)
    model = build_model(args, device="meta")
    inp = prompt_of_20_tokens(tokenizer, Image.new("RGB", (800, 600)))
    T = 512
    chunks, ar = model.image_transform(inp.vision.images[0])
    assert chunks.shape == (4, 3, 560, 560) and ar == (2, 2)

    tokens = torch.full((1, T), tokenizer.pad_id)
    tokens[0, :20] = torch.tensor(inp.tokens)
    with torch.no_grad():
        caches, xattn_mask, row_mask = model.compute_vision_tokens_masks([inp.vision.images], [inp.vision.mask], T, "meta")
        logits = model(torch.arange(0, 20), tokens.to("meta"), xattn_mask, row_mask, caches)
    assert caches.shape == (n_xattn, 2, 1, heads, 6404, 128) and caches.dtype == torch.bfloat16
    assert xattn_mask.shape == (1, 1, 512, 6404) and row_mask.shape == (1, 1, 512, 1)
    assert logits.shape == (1, 20, 128256) and logits.dtype == torch.float32
    assert logits.device.type == "meta"


def test_vision_tokens_shape_11b_instruct_and_448_base():
    for preset, n in [("11b-instruct", 1601), ("11b", 1025)]:
        args = get_preset(preset)
        model = build_model(args, device="meta")
        R = args.vision_chunk_size
        images = torch.zeros(1, 1, 4, 3, R, R, device="meta", dtype=torch.bfloat16)
        ar = torch.tensor([[[2, 2]]], device="meta")
        with torch.no_grad():
            assert model.vision_model.vision_encoder(images, ar).shape == (1, 1, 4, n, 7680)
            assert model.vision_model(images, ar).shape == (1, 1, 4, n, 4096)


def test_decode_step_shapes_on_meta(tokenizer):
    model = build_model(get_preset("11b-instruct"), device="meta")
    inp = prompt_of_20_tokens(tokenizer, Image.new("RGB", (800, 600)))
    tokens = torch.zeros(1, 512, dtype=torch.long, device="meta")
    with torch.no_grad():
        caches, xattn_mask, row_mask = model.compute_vision_tokens_masks([inp.vision.images], [inp.vision.mask], 512, "meta")
        logits = model(torch.tensor([20], device="meta"), tokens, xattn_mask, row_mask, caches)
    assert logits.shape == (1, 1, 128256)
