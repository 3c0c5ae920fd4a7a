"""Sanity tests of the Meta-reference harness itself (tests/meta_reference.py)."""

import sys

import pytest
import torch
from PIL import Image

import meta_reference as mr
from model.args import PRESETS

TINY = PRESETS["tiny"]


def _random_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=gen)
    return Image.frombytes("RGB", (width, height), bytes(pixels.flatten().tolist()))


def test_stand_ins_import_and_leave_sys_modules_clean():
    had_tv, had_fs = "torchvision" in sys.modules, "fairscale" in sys.modules
    with mr.stand_in_modules():
        import fairscale.nn.model_parallel.initialize as fs_init
        import torchvision.transforms as tv
        from fairscale.nn.model_parallel.layers import ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding
        from torchvision.transforms import functional as F

        assert fs_init.get_model_parallel_world_size() == 1
        assert fs_init.get_model_parallel_rank() == 0
        assert fs_init.get_model_parallel_group() is None
        assert tv.InterpolationMode.BILINEAR is F.InterpolationMode.BILINEAR
        col = ColumnParallelLinear(3, 5, bias=False, gather_output=False, init_method=lambda x: x)
        row = RowParallelLinear(5, 3, bias=True, input_is_parallel=True, init_method=lambda x: x)
        emb = VocabParallelEmbedding(7, 3, init_method=lambda x: x)
        assert isinstance(col, torch.nn.Linear) and col.bias is None and col.weight.shape == (5, 3)
        assert isinstance(row, torch.nn.Linear) and row.weight.shape == (3, 5) and torch.all(row.bias == 0)
        assert isinstance(emb, torch.nn.Embedding) and emb.weight.shape == (7, 3)
        with mr.meta_default_dtype(torch.bfloat16):
            assert ColumnParallelLinear(3, 5).weight.dtype == torch.bfloat16
    assert ("torchvision" in sys.modules) == had_tv and ("fairscale" in sys.modules) == had_fs
    mods = mr.meta_modules()
    assert mods.model.reduce_from_tensor_model_parallel_region is mr._identity
    assert mods.model.gather_from_tensor_model_parallel_region is mr._identity


def test_torchvision_stand_in_semantics():
    img = _random_rgb(5, 4)
    raw = torch.tensor(list(img.tobytes()), dtype=torch.uint8).view(4, 5, 3)
    with mr.meta_default_dtype(torch.bfloat16):
        t = mr.ToTensor()(img)
        assert t.dtype == torch.bfloat16 and t.shape == (3, 4, 5)
        assert torch.equal(t, raw.permute(2, 0, 1).to(torch.bfloat16).div(255))
        mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
        expected = (t.clone() - torch.tensor(mean, dtype=torch.bfloat16).view(-1, 1, 1)) / torch.tensor(
            std, dtype=torch.bfloat16).view(-1, 1, 1)
        out = mr.Normalize(mean, std, inplace=True)(t)
        assert out is t and torch.equal(out, expected)
    assert mr.resize(img, (4, 5), interpolation=mr.InterpolationMode.BILINEAR) is img
    assert mr.resize(img, [8, 10], interpolation=mr.InterpolationMode.BILINEAR).tobytes() == img.resize(
        (10, 8), Image.BILINEAR).tobytes()


def test_tiny_build_state_dict_and_dtype_restored():
    before = torch.get_default_dtype()
    model = mr.build_meta_model(TINY)
    assert torch.get_default_dtype() == before
    sd = model.state_dict()
    w = TINY.vision_width
    assert sd["vision_model.vision_encoder.conv1._linear.weight"].shape == (w, 3 * 14 * 14)
    assert sd["text_model.learnable_embedding.weight"].shape == (8, TINY.dim)
    n_taps = len(TINY.vision_return_intermediate)
    assert sd["vision_model.vision_projection.weight"].shape == (TINY.dim, (n_taps + 1) * w)
    assert sd["vision_model.vision_encoder.gated_positional_embedding"].shape == (4, 4, TINY.vision_num_tokens, w)
    enc = "vision_model.vision_encoder."
    n_local = sum(k.startswith(enc + "transformer.resblocks.") and k.endswith("attn.wq.weight") for k in sd)
    n_global = sum(k.startswith(enc + "global_transformer.resblocks.") and k.endswith("attn.wq.weight") for k in sd)
    assert (n_local, n_global) == (TINY.vision_layers, TINY.vision_global_layers)
    assert model.vision_model.vision_encoder.return_intermediate == list(TINY.vision_return_intermediate)
    assert model.text_model.fusion_schedule == TINY.fusion_schedule
    assert all(v.dtype == torch.float32 for v in sd.values())
    # Meta's own VisionEncoder name is back in place after the build
    assert mr.meta_modules().model.VisionEncoder.__name__ == "VisionEncoder"


def test_bf16_build_restores_default_dtype():
    model = mr.build_meta_model(TINY, dtype=torch.bfloat16)
    assert torch.get_default_dtype() == torch.float32
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.text_model.layers[0].attention.key_cache.dtype == torch.bfloat16


def test_tiny_end_to_end_fp32():
    torch.manual_seed(0)
    model = mr.randomize_meta_params_(mr.build_meta_model(TINY), seed=0)
    img = _random_rgb(300, 200)
    total_len = 32
    tokens = torch.full((1, total_len), 128004, dtype=torch.long)
    tokens[0, :20] = torch.tensor([128000, 128256] + list(range(1000, 1018)))
    with mr.meta_default_dtype(torch.float32), torch.no_grad():
        xattn_caches, xattn_masks, row_mask = model.compute_vision_tokens_masks(
            [[img]], [[[1, -1]]], total_len=total_len, device="cpu")
        logits = model.forward(
            position_ids=torch.arange(0, 20), tokens=tokens, cross_attention_masks=xattn_masks,
            full_text_row_masked_out_mask=row_mask, xattn_caches=xattn_caches)
    n_kv = 4 * TINY.vision_num_tokens  # one image, max_num_chunks padded to 4
    assert xattn_caches.shape == (2, 2, 1, TINY.n_heads, n_kv, TINY.head_dim)
    assert xattn_masks.shape == (1, 1, total_len, n_kv)
    assert row_mask.shape == (1, 1, total_len, 1)
    assert row_mask[0, 0, :, 0].tolist() == [0.0] + [1.0] * (total_len - 1)
    assert logits.shape == (1, 20, 128256) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("size, bf16_ar, fp32_ar", [((561, 561), (1, 1), (2, 2)), ((1121, 500), (1, 2), (1, 3))])
def test_canvas_choice_depends_on_default_dtype(size, bf16_ar, fp32_ar):
    args = PRESETS["11b-instruct"]  # 560-px chunks, as in the spec's §3.1 examples
    img = _random_rgb(*size)
    chunks16, ar16 = mr.meta_image_transform(args, img, torch.bfloat16)
    chunks32, ar32 = mr.meta_image_transform(args, img, torch.float32)
    assert (ar16, ar32) == (bf16_ar, fp32_ar)
    assert chunks16.dtype == torch.bfloat16 and chunks32.dtype == torch.float32
    assert chunks16.shape == (bf16_ar[0] * bf16_ar[1], 3, 560, 560)
    assert chunks32.shape == (fp32_ar[0] * fp32_ar[1], 3, 560, 560)
    assert torch.get_default_dtype() == torch.float32


def test_chat_format_and_vision_mask():
    fmt = mr.meta_chat_format()
    assert fmt.vision_token == 128011
    assert mr.create_vision_mask([128000, 128011, 5, 6], 128011) == [[1, -1]]
    assert mr.create_vision_mask([128011, 128011, 5, 128011, 7], 128011) == [[0, 3], [1, 3], [3, 5]]


def test_real_size_build_is_unpatched_on_meta_device():
    model = mr.build_meta_model(PRESETS["11b-instruct"], dtype=torch.bfloat16, device="meta")
    assert torch.get_default_dtype() == torch.float32
    vision = model.vision_model
    assert vision.vision_input_dim == 7680 and vision.patch_size == 14
    assert vision.vision_encoder.return_intermediate == [3, 7, 15, 23, 30]
    sd = model.state_dict()
    assert sd["vision_model.vision_projection.weight"].shape == (4096, 7680)
    assert sd["vision_model.vision_encoder.positional_embedding"].shape == (1601, 1280)
    assert sd["text_model.layers.0.feed_forward.w1.weight"].shape == (14336, 4096)
    assert len(sd) == 907 and next(model.parameters()).device.type == "meta"
