"""Gated cross-attention from text to vision tokens (Meta's CrossAttention and
CrossAttentionTransformerBlock). No RoPE; q and k get an RMSNorm over the head width;
K/V are computed once per image (the xattn cache) and already repeated to all query heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .args import ModelArgs
from .text_layers import FeedForward, RMSNorm


class CrossAttention(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = args.n_heads, args.n_kv_heads
        self.n_rep, self.head_dim = args.n_rep, args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)
        self.q_norm = RMSNorm(args.head_dim, eps=args.norm_eps)
        self.k_norm = RMSNorm(args.head_dim, eps=args.norm_eps)

    def compute_xattn_kv_cache(self, xattn_tokens: torch.Tensor) -> torch.Tensor:
        """Vision tokens [B, V, D] -> stacked K and V [2, B, H, V, Dh]."""
        bsz, seqlen_y, _ = xattn_tokens.shape
        xk = self.wk(xattn_tokens).view(bsz, seqlen_y, self.n_kv_heads, self.head_dim)  # [B, V, D] -> [B, V, Hkv*Dh] -> [B, V, Hkv, Dh]
        xv = self.wv(xattn_tokens).view(bsz, seqlen_y, self.n_kv_heads, self.head_dim)  # [B, V, D] -> [B, V, Hkv*Dh] -> [B, V, Hkv, Dh]
        xk = xk.transpose(1, 2).repeat_interleave(self.n_rep, dim=1)  # [B, H, V, Dh]
        xv = xv.transpose(1, 2).repeat_interleave(self.n_rep, dim=1)  # [B, H, V, Dh]
        xk = self.k_norm(xk)  # [B, H, V, Dh]: normalised after the repeat; V is not normalised
        return torch.stack([xk, xv])  # [2, B, H, V, Dh]

    def forward(self, x: torch.Tensor, xattn_mask: torch.Tensor, full_text_row_masked_out_mask: torch.Tensor, xattn_cache: torch.Tensor) -> torch.Tensor:
        bsz, seqlen, _ = x.shape
        xq = self.wq(x).view(bsz, seqlen, self.n_heads, self.head_dim)  # [B, S, D] -> [B, S, H*Dh] -> [B, S, H, Dh]
        xq = self.q_norm(xq).transpose(1, 2)  # [B, S, H, Dh] -> [B, H, S, Dh]
        xk, xv = xattn_cache  # [B, H, V, Dh] each
        out = F.scaled_dot_product_attention(xq, xk, xv, attn_mask=xattn_mask)  # [B, H, S, Dh]
        out = out * full_text_row_masked_out_mask  # zero the text rows that see no image
        out = out.transpose(1, 2).contiguous().reshape(bsz, seqlen, -1)  # [B, S, H*Dh]
        return self.wo(out)  # [B, S, D]


class CrossAttentionTransformerBlock(nn.Module):
    """h = x + tanh(gate_attn) * xattn(x); out = h + tanh(gate_ffwd) * row_mask * ffn(h)."""

    def __init__(self, args: ModelArgs, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.attention = CrossAttention(args)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.gate_attn = nn.Parameter(torch.zeros(1))
        self.feed_forward = FeedForward(args.dim, args.ffn_hidden_dim)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.gate_ffwd = nn.Parameter(torch.zeros(1))

    def compute_xattn_kv_cache(self, xattn_tokens: torch.Tensor) -> torch.Tensor:
        return self.attention.compute_xattn_kv_cache(xattn_tokens)  # [2, B, H, V, Dh]

    def forward(self, x: torch.Tensor, xattn_mask: torch.Tensor, full_text_row_masked_out_mask: torch.Tensor, xattn_cache: torch.Tensor) -> torch.Tensor:
        attn = self.attention(  # [B, S, D]; xattn_cache [2, B, H, V, Dh]
            self.attention_norm(x),  # [B, S, D]
            xattn_mask=xattn_mask,
            full_text_row_masked_out_mask=full_text_row_masked_out_mask,
            xattn_cache=xattn_cache,
        )
        h = x + self.gate_attn.tanh() * attn  # [B, S, D]
        ffn = full_text_row_masked_out_mask[:, 0] * self.feed_forward(self.ffn_norm(h))  # [B, S, 1] * [B, S, D]
        return h + self.gate_ffwd.tanh() * ffn  # [B, S, D]
