"""Rotary position embedding, Llama 3.x style (Meta's llama_models/llama3/model.py).

Pairs are interleaved: dims (2i, 2i+1) form one complex number, rotated in fp32.
"""

from __future__ import annotations

import math

import torch

# Llama 3.1+ long-context scaling (Meta keeps these as locals of `apply_scaling`)
SCALE_FACTOR, LOW_FREQ_FACTOR, HIGH_FREQ_FACTOR, OLD_CONTEXT_LEN = 8, 1, 4, 8192


def apply_scaling(freqs: torch.Tensor) -> torch.Tensor:
    """Slow the low frequencies (wavelengths past OLD_CONTEXT_LEN / LOW_FREQ_FACTOR positions) by
    SCALE_FACTOR, keep the high ones (under OLD_CONTEXT_LEN / HIGH_FREQ_FACTOR), blend between."""
    low_freq_wavelen = OLD_CONTEXT_LEN / LOW_FREQ_FACTOR
    high_freq_wavelen = OLD_CONTEXT_LEN / HIGH_FREQ_FACTOR
    wavelen = 2 * math.pi / freqs
    new_freqs = torch.where(wavelen > low_freq_wavelen, freqs / SCALE_FACTOR, freqs)
    smooth = (OLD_CONTEXT_LEN / wavelen - LOW_FREQ_FACTOR) / (HIGH_FREQ_FACTOR - LOW_FREQ_FACTOR)
    in_band = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(in_band, (1 - smooth) * new_freqs / SCALE_FACTOR + smooth * new_freqs, new_freqs)


def precompute_freqs_cis(dim: int, end: int, theta: float, use_scaled: bool, device=None) -> torch.Tensor:
    """[end, dim/2] complex64: e^(i * position * freq) for every position and frequency."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device)[: dim // 2].float() / dim))  # [Dh/2]
    t = torch.arange(end, device=device, dtype=torch.float32)  # [end]
    if use_scaled:
        freqs = apply_scaling(freqs)
    freqs = torch.outer(t, freqs)  # [end, Dh/2]
    return torch.polar(torch.ones_like(freqs), freqs)  # [end, Dh/2] complex64


def apply_rotary_emb(xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries [B, S, H, Dh] and keys [B, S, Hkv, Dh] by their positions' angles."""
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))  # [B, S, H, Dh/2] complex
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))  # [B, S, Hkv, Dh/2] complex
    freqs = freqs_cis.view(1, xq_.shape[1], 1, xq_.shape[-1])  # [1, S, 1, Dh/2]
    xq_out = torch.view_as_real(xq_ * freqs).flatten(3)  # [B, S, H, Dh]
    xk_out = torch.view_as_real(xk_ * freqs).flatten(3)  # [B, S, Hkv, Dh]
    return xq_out.type_as(xq), xk_out.type_as(xk)
