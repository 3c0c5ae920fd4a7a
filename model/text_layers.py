"""Text decoder building blocks: RMSNorm, SwiGLU feed-forward, GQA self-attention with a KV cache.

Mirrors RMSNorm (llama3/model.py) and Attention, FeedForward, TransformerBlock
(llama3/multimodal/model.py), with the same parameter names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .args import ModelArgs
from .rope import apply_rotary_emb


class RMSNorm(nn.Module):
    """Normalise in fp32, cast back, then scale by the weight in the model dtype."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # [B, S, F] -> [B, S, D]


class Attention(nn.Module):
    """Grouped-query self-attention. K/V go into a cache of the full max_seq_len, which every
    step attends over with a causal mask (slots not yet written are masked)."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = args.n_heads, args.n_kv_heads
        self.n_rep, self.head_dim = args.n_rep, args.head_dim
        self.max_seq_len = args.max_seq_len
        self.wq = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)

    def setup_cache(self, max_batch_size: int, device, dtype: torch.dtype) -> None:
        shape = (max_batch_size, self.max_seq_len, self.n_kv_heads, self.head_dim)  # [B, M, Hkv, Dh]
        self.register_buffer("key_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("value_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, freqs_cis: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        bs, slen, _ = x.shape
        xq = self.wq(x).view(bs, slen, self.n_heads, self.head_dim)  # [B, S, D] -> [B, S, H*Dh] -> [B, S, H, Dh]
        xk = self.wk(x).view(bs, slen, self.n_kv_heads, self.head_dim)  # [B, S, D] -> [B, S, Hkv*Dh] -> [B, S, Hkv, Dh]
        xv = self.wv(x).view(bs, slen, self.n_kv_heads, self.head_dim)  # [B, S, D] -> [B, S, Hkv*Dh] -> [B, S, Hkv, Dh]
        xq, xk = apply_rotary_emb(xq, xk, freqs_cis)  # [B, S, H, Dh], [B, S, Hkv, Dh]

        self.key_cache[:bs, position_ids] = xk
        self.value_cache[:bs, position_ids] = xv
        keys = self.key_cache[:bs].transpose(1, 2).repeat_interleave(self.n_rep, dim=1)  # [B, H, M, Dh]
        values = self.value_cache[:bs].transpose(1, 2).repeat_interleave(self.n_rep, dim=1)  # [B, H, M, Dh]

        out = F.scaled_dot_product_attention(xq.transpose(1, 2), keys, values, attn_mask=mask)  # [B, H, S, Dh]
        out = out.transpose(1, 2).contiguous().reshape(bs, slen, -1)  # [B, S, H*Dh]
        return self.wo(out)  # [B, S, D]


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.ffn_hidden_dim)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def setup_cache(self, max_batch_size: int, device, dtype: torch.dtype) -> None:
        self.attention.setup_cache(max_batch_size, device, dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, freqs_cis: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        h = self.attention(self.attention_norm(x), mask=mask, freqs_cis=freqs_cis, position_ids=position_ids) + x  # [B, S, D]; mask [1, 1, S, M], freqs_cis [S, Dh/2]
        return h + self.feed_forward(self.ffn_norm(h))  # [B, S, D]
