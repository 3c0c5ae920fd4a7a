"""The text decoder: embeddings, self-attention layers with cross-attention blocks fused in
front of some of them, final norm and fp32 logits (Meta's CrossAttentionTransformerText)."""

from __future__ import annotations

import torch
from torch import nn

from .args import ModelArgs
from .cross_attention import CrossAttentionTransformerBlock
from .rope import precompute_freqs_cis
from .text_layers import RMSNorm, TransformerBlock


class CrossAttentionTransformerText(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.vocab_size = args.vocab_size
        self.num_frozen_embeddings = args.vocab_size
        self.fusion_schedule = args.fusion_schedule  # text layers preceded by a cross-attention block
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.learnable_embedding = nn.Embedding(args.n_learnable_embeddings, args.dim)  # <|image|> and spares
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(args.n_layers))
        self.cross_attention_layers = nn.ModuleList(
            CrossAttentionTransformerBlock(args, layer_id=args.n_layers + j) for j in range(len(self.fusion_schedule))
        )
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.cache_is_setup = False

    def get_partially_trainable_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Ids below the vocabulary size read `tok_embeddings`; ids from it on read `learnable_embedding`.
        Both lookups run for every token and 0/1 masks pick one, so no branch depends on the ids."""
        frozen = x < self.num_frozen_embeddings  # [B, S]
        x_orig = torch.clamp(x, max=self.num_frozen_embeddings - 1)  # [B, S]
        x_new = torch.clamp(x, min=self.num_frozen_embeddings) - self.num_frozen_embeddings  # [B, S]
        mask_orig = frozen.unsqueeze(-1)  # [B, S, 1]
        mask_new = (~frozen).unsqueeze(-1)  # [B, S, 1]
        h_orig = self.tok_embeddings(x_orig)  # [B, S, D]
        h_new = self.learnable_embedding(x_new).type_as(h_orig)  # [B, S, D]
        return h_orig * mask_orig.type_as(h_orig) + h_new * mask_new.type_as(h_new)

    def setup_cache(self, max_batch_size: int, device, dtype: torch.dtype) -> None:
        """KV caches of every layer, the causal mask over the full cache and the RoPE table."""
        M = self.args.max_seq_len
        causal = torch.ones(M, M, dtype=torch.bool, device=device).tril_()[None, None]  # [1, 1, M, M] (Meta: tril into a new tensor; in place, the same values at half the peak memory)
        self.register_buffer("mask_cache", causal, persistent=False)
        for layer in self.layers:
            layer.setup_cache(max_batch_size, device, dtype)
        head_dim, args = self.args.head_dim, self.args
        # [2M, Dh/2], computed on the run's device as Meta's is (built under its default device): a GPU's pow
        # and sin/cos may round another way than the CPU's. A meta run's is made on the CPU and moved:
        # torch's meta kernels for these ops would import sympy (seconds).
        where = "cpu" if torch.device(device).type == "meta" else device
        self.freqs_cis = precompute_freqs_cis(head_dim, 2 * M, args.rope_theta, args.use_scaled_rope, device=where).to(device)
        self.cache_is_setup = True

    def forward(
        self,
        position_ids: torch.Tensor,
        h: torch.Tensor,
        xattn_mask: torch.Tensor,
        full_text_row_masked_out_mask: torch.Tensor,
        xattn_caches: torch.Tensor,
        text_only_inference: bool = False,
    ) -> torch.Tensor:
        assert self.cache_is_setup, "call setup_cache() before forward()"
        mask = self.mask_cache.index_select(2, position_ids)  # [1, 1, S, M] bool, True = may attend
        freqs_cis = self.freqs_cis.index_select(0, position_ids)  # [S, Dh/2]
        for i, layer in enumerate(self.layers):
            if i in self.fusion_schedule and not text_only_inference:
                j = self.fusion_schedule.index(i)
                h = self.cross_attention_layers[j](  # [B, S, D]; xattn_caches[j] [2, B, H, V, Dh]
                    h,
                    xattn_mask=xattn_mask,
                    full_text_row_masked_out_mask=full_text_row_masked_out_mask,
                    xattn_cache=xattn_caches[j],
                )
            h = layer(h, mask=mask, freqs_cis=freqs_cis, position_ids=position_ids)  # [B, S, D]; mask [1, 1, S, M], freqs_cis [S, Dh/2]
        h = self.norm(h)  # [B, S, D]
        return self.output(h).float()  # [B, S, K] fp32
