"""The vision encoder: patches -> 32 local layers -> 8 gated global layers -> features of width 7680.

Mirrors `VisionEncoder` and its parts in Meta's llama_models/llama3/multimodal/model.py and
encoder_utils.py, with the same parameter names. Meta loops over the aspect ratios in Python;
here the per-image tile lookups are gathers driven by `ar` on the model's device, so the
same code runs on `meta` tensors (no Python branch reads a tensor value).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .args import ModelArgs


class Conv2dPatch(nn.Module):
    """Patch embedding as Meta computes it: cut 14x14 patches, flatten each to (channel, row, col)
    order, then a bias-free Linear. Meta cuts with nn.Unfold; the views below pick the same
    pixels in the same order (no arithmetic), and also run on `meta` tensors."""

    def __init__(self, in_channels: int, out_channels: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self._linear = nn.Linear(in_channels * patch_size * patch_size, out_channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        bsz, ch = x.shape[:2]
        x = x.unfold(2, p, p).unfold(3, p, p)  # [BIC, 3, R/14, R/14, 14, 14]
        x = x.permute(0, 2, 3, 1, 4, 5).reshape(bsz, -1, ch * p * p)  # [BIC, P, 3*14*14]
        return self._linear(x)  # [BIC, P, W]


class SplitBiasLinear(nn.Linear):
    """A Linear whose bias is added as its own op, after the matmul (Meta adds c_proj's bias
    after the model-parallel all-reduce, so it is never fused; in bf16 that rounds differently)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight) + self.bias


class ImageFeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(dim, hidden_dim, bias=True)
        self.c_proj = SplitBiasLinear(hidden_dim, dim, bias=True)
        self.non_linearity = nn.GELU()  # exact erf GELU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.non_linearity(self.c_fc(x)))  # [BI, C*N8, Fv] -> [BI, C*N8, W]


class ImageAttention(nn.Module):
    """Plain multi-head attention over all chunks of an image; every head has its own K/V."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bs, slen, _ = x.shape
        xq, xk, xv = self.wq(x), self.wk(x), self.wv(x)  # [BI, C*N8, W] each
        xq = xq.view(bs, slen, self.n_heads, self.head_dim).transpose(1, 2)  # [BI, Hv, C*N8, Dhv]
        xk = xk.view(bs, slen, self.n_heads, self.head_dim).transpose(1, 2)  # [BI, Hv, C*N8, Dhv]
        xv = xv.view(bs, slen, self.n_heads, self.head_dim).transpose(1, 2)  # [BI, Hv, C*N8, Dhv]
        out = F.scaled_dot_product_attention(xq, xk, xv, attn_mask=mask)  # [BI, Hv, C*N8, Dhv]
        out = out.transpose(1, 2).contiguous().reshape(bs, slen, -1)  # [BI, C*N8, W]
        return self.wo(out)  # [BI, C*N8, W]


class ImageTransformerBlock(nn.Module):
    """Pre-norm block; the global (gated) blocks scale each branch by tanh of a learned scalar."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: float, gated: bool = False) -> None:
        super().__init__()
        self.attn = ImageAttention(dim, n_heads)
        self.ln_1 = nn.LayerNorm(dim)
        self.mlp = ImageFeedForward(dim, int(mlp_ratio * dim))
        self.ln_2 = nn.LayerNorm(dim)
        self.gated = gated
        if gated:
            self.gate_attn = nn.Parameter(torch.zeros(1))
            self.gate_ffn = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attn = self.attn(self.ln_1(x), mask=mask)  # [BI, C*N8, W]
        x = x + (self.gate_attn.tanh() * attn if self.gated else attn)
        ffn = self.mlp(self.ln_2(x))  # [BI, C*N8, W]
        return x + (self.gate_ffn.tanh() * ffn if self.gated else ffn)


class ImageTransformer(nn.Module):
    def __init__(self, dim: int, layers: int, n_heads: int, mlp_ratio: float, gated: bool = False) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ImageTransformerBlock(dim, n_heads, mlp_ratio, gated) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, return_intermediate: tuple[int, ...] = ()):
        taps = []
        for idx, block in enumerate(self.resblocks):
            if idx in return_intermediate:
                taps.append(x)  # the input of block idx, i.e. the output of block idx - 1
            x = block(x, mask=mask)  # [BI, C*N8, W]
        if return_intermediate:
            return x, torch.stack(taps, dim=-1)  # [BI, C*N8, W], [BI, C*N8, W, L]
        return x


def tile_lookup(ar: torch.Tensor, num_chunks: int, num_tiles: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each image and chunk slot k: (row, col) of its tile in a [rows, cols] grid, and whether
    the slot holds a real tile (k < rows * cols). Tiles are numbered row-major, as Meta's reshape does."""
    k = torch.arange(num_chunks, device=ar.device)  # [C]
    rows, cols = ar[:, 0:1], ar[:, 1:2]  # [BI, 1] each
    valid = k < rows * cols  # [BI, C]
    row = torch.div(k, cols, rounding_mode="floor").clamp(max=num_tiles - 1)  # [BI, C]
    col = torch.remainder(k, cols)  # [BI, C]
    return row, col, valid


class TilePositionEmbedding(nn.Module):
    """One learned vector per (tile row, tile col), added to every token of that tile, tanh-gated."""

    def __init__(self, num_tiles: int, width: int) -> None:
        super().__init__()
        self.num_tiles = num_tiles
        self.embedding = nn.Parameter(torch.empty(num_tiles, num_tiles, 1, width))  # [tiles, tiles, 1, W]
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, ar: torch.Tensor) -> torch.Tensor:
        row, col, valid = tile_lookup(ar, x.shape[1], self.num_tiles)
        embed = self.embedding[row, col] * valid[..., None, None]  # [BI, C, 1, W]; empty slots get 0
        return x + embed.to(x.dtype) * self.gate.tanh()  # [BI, C, tokens, W]


def expand_num_tokens_to_mult8(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Append zero tokens so each chunk has a multiple of 8. Meta pads 8 - n % 8: a full 8 if n % 8 == 0."""
    npad = 8 - x.shape[-2] % 8
    zeros = torch.zeros(x.shape[0], x.shape[1], npad, x.shape[-1], dtype=x.dtype, device=x.device)
    return torch.cat([x, zeros], dim=-2), npad  # [BI, C, N8, W]


def contract_num_tokens_from_mult8(x: torch.Tensor, npad: int) -> torch.Tensor:
    return x[:, :, :-npad]  # [BI, C, N8, *] -> [BI, C, N, *]


def build_encoder_attention_mask(ar: torch.Tensor, num_chunks: int, ntok: int, npad: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask [BI, 1, C*N8, C*N8]: finfo.min only where query AND key are padding.

    This is Meta's (m @ m.T) * min with m = 1 on padding: real tokens still attend to the pad
    tokens and to empty chunks; pad tokens see only real keys. (HF builds the same mask.)
    """
    chunk_is_pad = ~tile_lookup(ar, num_chunks, num_chunks)[2]  # [BI, C]
    token_is_pad = torch.arange(ntok + npad, device=ar.device) >= ntok  # [N8]
    m = (chunk_is_pad[:, :, None] | token_is_pad).to(dtype).flatten(1)  # [BI, C*N8], 1 = padding
    mask = m[:, :, None] * m[:, None, :] * torch.finfo(dtype).min  # [BI, C*N8, C*N8]
    return mask[:, None]  # [BI, 1, C*N8, C*N8]


class VisionEncoder(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        width, grid, tiles = args.vision_width, args.vision_grid, args.vision_max_num_tiles
        self.return_intermediate = tuple(args.vision_return_intermediate)
        self.conv1 = Conv2dPatch(3, width, args.vision_patch_size)
        # Weights are filled by a checkpoint or by build.init_random_weights.
        self.class_embedding = nn.Parameter(torch.empty(width))  # [W]
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, width))  # [N, W]
        self.ln_post = nn.LayerNorm(width)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = ImageTransformer(width, args.vision_layers, args.vision_heads, args.vision_mlp_ratio)
        self.global_transformer = ImageTransformer(
            width, args.vision_global_layers, args.vision_heads, args.vision_mlp_ratio, gated=True
        )
        self.pre_tile_pos_embed = TilePositionEmbedding(tiles, width)
        self.post_tile_pos_embed = TilePositionEmbedding(tiles, width)
        self.gated_positional_embedding = nn.Parameter(torch.empty(tiles, tiles, grid * grid + 1, width))  # [tiles, tiles, N, W]
        self.gated_positional_embedding_gate = nn.Parameter(torch.zeros(1))

    def apply_class_embedding(self, x: torch.Tensor) -> torch.Tensor:
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
        return torch.cat([cls, x], dim=1)  # [BIC, P, W] -> [BIC, N, W]; the class token comes first

    def apply_positional_embedding(self, x: torch.Tensor, ar: torch.Tensor) -> torch.Tensor:
        """Shared grid embedding weighted by 1 - tanh(g), plus a per-tile embedding weighted by tanh(g)."""
        gate = self.gated_positional_embedding_gate.tanh()
        x = x + self.positional_embedding * (1 - gate)  # all chunks, empty ones too
        row, col, valid = tile_lookup(ar, x.shape[1], self.gated_positional_embedding.shape[0])
        tile_embed = self.gated_positional_embedding[row, col] * valid[..., None, None]  # [BI, C, N, W]
        return x + tile_embed * gate

    def forward(self, images: torch.Tensor, ar: torch.Tensor) -> torch.Tensor:
        bsz, n_img, n_chunks, n_ch, h, w = images.shape
        ar = ar.reshape(bsz * n_img, 2)  # [BI, 2] (rows, cols)

        x = self.conv1(images.reshape(bsz * n_img * n_chunks, n_ch, h, w))  # [BIC, P, W]
        _, ntok, dim = x.shape
        x = x.reshape(bsz * n_img, n_chunks, ntok, dim)  # [BI, C, P, W]
        x = self.pre_tile_pos_embed(x, ar)  # [BI, C, P, W]
        x = x.reshape(bsz * n_img * n_chunks, ntok, dim)  # [BIC, P, W]
        x = self.apply_class_embedding(x)  # [BIC, N, W]
        ntok += 1
        x = x.reshape(bsz * n_img, n_chunks, ntok, dim)  # [BI, C, N, W]
        x = self.apply_positional_embedding(x, ar)  # [BI, C, N, W]
        x = self.ln_pre(x)  # [BI, C, N, W]

        x, npad = expand_num_tokens_to_mult8(x)  # [BI, C, N8, W]
        mask = build_encoder_attention_mask(ar, n_chunks, ntok, npad, x.dtype)  # [BI, 1, C*N8, C*N8]
        x = x.view(bsz * n_img, -1, dim)  # [BI, C*N8, W]
        x, int_x = self.transformer(x, mask=mask, return_intermediate=self.return_intermediate)  # [BI, C*N8, W], [BI, C*N8, W, L]

        x = self.ln_post(x)  # [BI, C*N8, W]
        x = x.reshape(bsz * n_img, n_chunks, ntok + npad, dim)  # [BI, C, N8, W]
        x = self.post_tile_pos_embed(x, ar)  # [BI, C, N8, W]
        x = x.reshape(bsz * n_img, n_chunks * (ntok + npad), dim)  # [BI, C*N8, W]
        x = self.global_transformer(x, mask=mask)  # [BI, C*N8, W]
        x = x.reshape(bsz * n_img, n_chunks, ntok + npad, dim)  # [BI, C, N8, W]
        x = contract_num_tokens_from_mult8(x, npad)  # [BI, C, N, W]
        x = x.reshape(bsz, n_img, n_chunks, ntok, dim)  # [B, I, C, N, W]

        # Taps were stacked on the last dim, so feature c*L + l is channel c of tap l (interleaved).
        int_x = int_x.reshape(bsz * n_img, n_chunks, ntok + npad, -1)  # [BI, C, N8, W*L]
        int_x = contract_num_tokens_from_mult8(int_x, npad)  # [BI, C, N, W*L]
        int_x = int_x.reshape(bsz, n_img, n_chunks, ntok, -1)  # [B, I, C, N, W*L]
        return torch.cat([x, int_x], dim=-1)  # [B, I, C, N, W*(L+1)]


class CrossAttentionTransformerVision(nn.Module):
    """Vision encoder plus the projection of its 7680-wide features into the text width D."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.image_res = args.vision_chunk_size
        self.max_num_chunks = args.vision_max_num_chunks
        self.patch_size = args.vision_patch_size
        self.vision_input_dim = args.vision_input_dim
        self.vision_encoder = VisionEncoder(args)
        self.vision_projection = nn.Linear(args.vision_input_dim, args.dim, bias=True)

    def forward(self, images: torch.Tensor, aspect_ratios: torch.Tensor) -> torch.Tensor:
        dtype = self.vision_projection.weight.dtype
        vision_tokens = self.vision_encoder(images.to(dtype), aspect_ratios)  # [B, I, C, N, W*(L+1)]
        return self.vision_projection(vision_tokens)  # [B, I, C, N, D]
