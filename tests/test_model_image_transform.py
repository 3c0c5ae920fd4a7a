import pytest
import torch
from PIL import Image

from model.image_transform import (
    VariableSizeImageTransform,
    find_supported_resolutions,
    get_best_fit,
    normalize,
    resize_without_distortion,
    split_to_chunks,
    to_tensor,
)


def test_supported_resolutions_in_meta_order():
    assert find_supported_resolutions(4, 560) == [
        (560, 2240), (1120, 1120), (560, 560), (2240, 560), (560, 1680), (1680, 560), (560, 1120), (1120, 560)
    ]


def test_800x600_gets_a_2x2_canvas():
    res = find_supported_resolutions(4, 560)
    assert get_best_fit((800, 600), res, torch.bfloat16) == (1120, 1120)
    chunks, ar = VariableSizeImageTransform(560)(Image.new("RGB", (800, 600)), 4)
    assert chunks.shape == (4, 3, 560, 560) and ar == (2, 2)


@pytest.mark.parametrize(
    "size, bf16_ar, fp32_ar",
    [((561, 561), (1, 1), (2, 2)), ((1121, 500), (1, 2), (1, 3))],
)
def test_canvas_choice_depends_on_dtype(size, bf16_ar, fp32_ar):
    image = Image.new("RGB", size, (10, 20, 30))
    assert VariableSizeImageTransform(560, torch.bfloat16)(image, 4)[1] == bf16_ar
    assert VariableSizeImageTransform(560, torch.float32)(image, 4)[1] == fp32_ar


def test_small_images_are_not_blown_up_past_one_chunk():
    image = Image.new("RGB", (100, 50))
    assert resize_without_distortion(image, (560, 560), max_upscaling_size=560).size == (560, 280)
    assert resize_without_distortion(Image.new("RGB", (800, 600)), (1120, 1120), 560).size == (800, 600)


def test_padding_is_black_bottom_right_and_normalised_like_clip():
    image = Image.new("RGB", (800, 600), (255, 255, 255))
    chunks, _ = VariableSizeImageTransform(560, torch.float32)(image, 4)
    top_left, bottom_right = chunks[0], chunks[3]
    white = (1 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor([0.26862954, 0.26130258, 0.27577711])
    black = -torch.tensor([0.48145466, 0.4578275, 0.40821073]) / torch.tensor([0.26862954, 0.26130258, 0.27577711])
    assert torch.allclose(top_left[:, 0, 0], white)
    assert torch.allclose(bottom_right[:, -1, -1], black)
    assert torch.allclose(chunks[1][:, 0, 300], black)  # x = 560 + 300 > 800: padding


def test_bf16_normalisation_of_black_matches_reference_measurement():
    black = normalize(to_tensor(Image.new("RGB", (2, 2)), torch.bfloat16))[:, 0, 0].float()
    assert torch.allclose(black, torch.tensor([-1.789, -1.750, -1.484]), atol=2e-3)


def test_chunks_are_row_major():
    image = torch.arange(2 * 4, dtype=torch.float32).view(1, 2, 4).repeat_interleave(2, 1).repeat_interleave(2, 2)
    chunks = split_to_chunks(image.expand(3, -1, -1).contiguous(), ncw=2, nch=2)  # 4x8 image, 2x2 chunks of 2x4
    assert [c[0, 0, 0].item() for c in chunks] == [0, 2, 4, 6]
