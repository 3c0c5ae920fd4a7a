"""Image transform: pick a tile canvas, resize without distortion, pad, normalise, cut into chunks.

Mirrors `VariableSizeImageTransform` in Meta's llama_models/llama3/multimodal/image_transform.py.
Meta runs this under `torch.set_default_dtype(torch.bfloat16)`, so the canvas choice and the
normalisation happen in bf16; `dtype` reproduces that explicitly (spec §3.1: a 561x561 image
gets 1 tile in bf16 but 4 in fp32). Sizes are (width, height) unless a name says otherwise.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from PIL import Image

# CLIP's per-channel statistics (Meta's _mean / _std).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def get_factors(n: int) -> set[int]:
    factors = set()
    for i in range(1, int(n**0.5) + 1):
        if n % i == 0:
            factors.update((i, n // i))
    return factors


def find_supported_resolutions(max_num_chunks: int, chunk_size: int) -> list[tuple[int, int]]:
    """Every canvas made of at most `max_num_chunks` chunks, grouped by aspect ratio in Meta's order.

    Meta's docstring calls the pairs (height, width) but `get_best_fit` reads column 0 as the width;
    the set is symmetric, so we simply name them (width, height) as they are used.
    """
    by_ratio: dict[float, list[tuple[int, int]]] = defaultdict(list)
    for n_chunks in range(max_num_chunks, 0, -1):
        for a in sorted(get_factors(n_chunks)):
            by_ratio[a / (n_chunks // a)].append((a, n_chunks // a))
    return [(a * chunk_size, b * chunk_size) for pairs in by_ratio.values() for a, b in pairs]


def get_best_fit(image_size: tuple[int, int], resolutions: list[tuple[int, int]], dtype: torch.dtype) -> tuple[int, int]:
    """The canvas that needs the least upscaling (or, if none fits, the least downscaling).

    The scale factors are divided in `dtype`, as Meta's int64-tensor / int division is under bf16.
    """
    width, height = image_size
    res = torch.tensor(resolutions)  # [canvases, 2] int64, (width, height) each
    scale_w = res[:, 0].to(dtype) / width  # [canvases]
    scale_h = res[:, 1].to(dtype) / height  # [canvases]
    scales = torch.where(scale_w > scale_h, scale_h, scale_w)  # [canvases] the limiting side

    upscaling = scales[scales >= 1]
    selected = upscaling.min() if len(upscaling) > 0 else scales[scales < 1].max()
    candidates = res[scales == selected]  # [ties, 2]
    best = candidates[torch.argmin(candidates[:, 0] * candidates[:, 1])]  # smallest area, first on ties
    return int(best[0]), int(best[1])


def get_max_res_without_distortion(image_size: tuple[int, int], target_size: tuple[int, int]) -> tuple[int, int]:
    width, height = image_size
    target_w, target_h = target_size
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return target_w, min(math.floor(height * scale_w), target_h)
    return min(math.floor(width * scale_h), target_w), target_h


def resize_without_distortion(image: Image.Image, canvas: tuple[int, int], max_upscaling_size: int) -> Image.Image:
    """Resize to fit the canvas, keeping the aspect ratio; never upscale past `max_upscaling_size`."""
    width, height = image.size
    target = (min(max(width, max_upscaling_size), canvas[0]), min(max(height, max_upscaling_size), canvas[1]))
    new_size = get_max_res_without_distortion((width, height), target)
    if new_size == image.size:  # torchvision's resize returns the image untouched here
        return image
    return image.resize(new_size, Image.BILINEAR)  # PIL bilinear, antialiased


def pad(image: Image.Image, canvas: tuple[int, int]) -> Image.Image:
    """Paste the image top-left on a black canvas."""
    padded = Image.new(mode="RGB", size=canvas, color=(0, 0, 0))
    padded.paste(image)
    return padded


def to_tensor(image: Image.Image, dtype: torch.dtype) -> torch.Tensor:
    """PIL RGB -> [3, Hc, Wc] in [0, 1], computed as torchvision's ToTensor does in `dtype`."""
    width, height = image.size
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)  # [H*W*3]
    pixels = pixels.view(height, width, 3).permute(2, 0, 1).contiguous()  # [3, Hc, Wc]
    return pixels.to(dtype).div(255)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """CLIP normalisation in the image's dtype (torchvision Normalize casts mean/std to it)."""
    mean = torch.as_tensor(CLIP_MEAN, dtype=image.dtype).view(-1, 1, 1)  # [3, 1, 1]
    std = torch.as_tensor(CLIP_STD, dtype=image.dtype).view(-1, 1, 1)  # [3, 1, 1]
    return image.sub(mean).div(std)


def split_to_chunks(image: torch.Tensor, ncw: int, nch: int) -> torch.Tensor:
    """[3, Hc, Wc] -> [c, 3, R, R] with c = (Hc/R) * (Wc/R) chunks, tiles in row-major order."""
    channels, height, width = image.shape
    image = image.view(channels, nch, height // nch, ncw, width // ncw)  # [3, Hc/R, R, Wc/R, R]
    image = image.permute(1, 3, 0, 2, 4).contiguous()  # [Hc/R, Wc/R, 3, R, R]
    return image.view(ncw * nch, channels, height // nch, width // ncw)  # [C, 3, R, R]


class VariableSizeImageTransform:
    """Callable image transform: `(chunks [c, 3, R, R], aspect_ratio (rows, cols))`."""

    def __init__(self, size: int, dtype: torch.dtype = torch.bfloat16) -> None:
        self.size = size
        self.dtype = dtype

    def __call__(self, image: Image.Image, max_num_chunks: int) -> tuple[torch.Tensor, tuple[int, int]]:
        resolutions = find_supported_resolutions(max_num_chunks, self.size)
        canvas = get_best_fit(image.size, resolutions, self.dtype)  # (width, height)
        image = resize_without_distortion(image, canvas, max_upscaling_size=self.size)
        image = pad(image, canvas)
        pixels = normalize(to_tensor(image, self.dtype))  # [3, Hc, Wc]
        ncw, nch = canvas[0] // self.size, canvas[1] // self.size
        chunks = split_to_chunks(pixels, ncw, nch)  # [c, 3, R, R]
        return chunks, (nch, ncw)
