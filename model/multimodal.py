"""The whole model: images -> vision tokens -> xattn caches and masks; tokens -> logits.

Mirrors `CrossAttentionTransformer` in Meta's llama_models/llama3/multimodal/model.py:
`compute_vision_tokens_masks` runs once per prompt, `forward` once per decoding step.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from .args import ModelArgs
from .image_transform import VariableSizeImageTransform
from .text_model import CrossAttentionTransformerText
from .vision_encoder import CrossAttentionTransformerVision


def _stack_images(images: list[list[torch.Tensor]], max_num_chunks: int, image_res: int, max_num_images: int, dtype: torch.dtype):
    """Chunks of every image into one zero-filled [B, I, C, 3, R, R] tensor, and the real chunk counts.
    Empty slots stay 0.0, which in normalised space is mid-grey, not black."""
    out = torch.zeros(len(images), max_num_images, max_num_chunks, 3, image_res, image_res, dtype=dtype)  # [B, I, C, 3, R, R]
    num_chunks = []
    for b, sample in enumerate(images):
        for i, chunks in enumerate(sample):
            out[b, i, : chunks.shape[0]] = chunks
        num_chunks.append([chunks.shape[0] for chunks in sample])
    return out, num_chunks


def _pad_masks(all_masks: list[list[list[int]]], all_num_chunks: list[list[int]], total_len: int, max_num_chunks: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, T, I, C]: 0 where text position t may see chunk c of image i, finfo.min elsewhere.
    Unlike Meta's version, the callers' mask lists are left untouched."""
    max_num_media = max(len(m) for m in all_masks)
    out = torch.full((len(all_masks), total_len, max_num_media, max_num_chunks), torch.finfo(dtype).min, dtype=dtype)
    for b, (masks, num_chunks) in enumerate(zip(all_masks, all_num_chunks)):
        for i, (mask, n_chunks) in enumerate(zip(masks, num_chunks)):
            if len(mask) == 2:
                start, end = mask[0], min(mask[1], total_len)
                end = total_len if end == -1 else end
                out[b, start:end, i, :n_chunks] = 0.0
    return out


def _get_full_row_masked_out_mask(attn_bias: torch.Tensor, negative_inf_value: float) -> torch.Tensor:
    """[B, 1, T, V] -> [B, 1, T, 1]: 1 for text rows that see at least one vision key, else 0."""
    return (attn_bias != negative_inf_value).any(dim=-1).type_as(attn_bias)[..., None]


def _get_xattn_mask(cross_attention_masks: torch.Tensor, num_vision_tokens: int, device, dtype: torch.dtype):
    """Expand the per-chunk mask to every vision token: [B, T, I, C] -> [B, 1, T, I*C*N]."""
    bsz, ntext, _, _ = cross_attention_masks.shape
    masks = cross_attention_masks.repeat_interleave(num_vision_tokens, dim=3)  # [B, T, I, C*N]
    masks = masks.view(bsz, ntext, -1).unsqueeze(1)  # [B, 1, T, V]
    full_text_row_masked_out_mask = _get_full_row_masked_out_mask(masks, torch.finfo(masks.dtype).min)  # [B, 1, T, V] -> [B, 1, T, 1]
    masks = masks * full_text_row_masked_out_mask  # rows that see nothing become all (-)0: uniform attention, zeroed later
    return masks.to(device=device, dtype=dtype), full_text_row_masked_out_mask.to(device=device)


class CrossAttentionTransformer(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.params = args
        self.model_dim = args.dim
        self.max_num_chunks = args.vision_max_num_chunks
        self.vision_model = CrossAttentionTransformerVision(args)
        self.text_model = CrossAttentionTransformerText(args)

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype. Meta sets it as torch's default dtype, so preprocessing runs in it too."""
        return self.text_model.output.weight.dtype

    def image_transform(self, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
        return VariableSizeImageTransform(self.params.vision_chunk_size, self.dtype)(image, self.max_num_chunks)

    def setup_cache(self, max_batch_size: int, device, dtype: torch.dtype) -> None:
        self.text_model.setup_cache(max_batch_size, device, dtype)

    def compute_vision_tokens_masks(
        self,
        batch_images: list[list[Image.Image]],
        batch_masks: list[list[list[int]]],
        total_len: int,
        device,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (xattn_caches [X, 2, B, H, V, Dh], cross_attention_masks [B, 1, T, V],
        full_text_row_masked_out_mask [B, 1, T, 1])."""
        assert len(batch_images) == len(batch_masks), "one mask list per sample"
        args, bsz = self.params, len(batch_images)
        max_num_images = max(len(row) for row in batch_images)

        if max_num_images == 0:
            num_chunks = [[self.max_num_chunks] for _ in batch_images]
            shape = (bsz, 0, self.max_num_chunks, args.vision_num_tokens, self.model_dim)  # [B, 0, C, N, D]
            vision_tokens = torch.zeros(shape, dtype=self.dtype, device=device)
        else:
            transformed = [[self.image_transform(im) for im in row] for row in batch_images]  # per image: [c, 3, R, R], (rows, cols)
            aspect_ratios = torch.ones(bsz, max_num_images, 2, dtype=torch.int64)  # [B, I, 2] (rows, cols); padding slots (1, 1)
            for b, row in enumerate(transformed):
                for i, (_, ar) in enumerate(row):
                    aspect_ratios[b, i] = torch.tensor(ar)
            chunks = [[x[0] for x in row] for row in transformed]
            stacked_images, num_chunks = _stack_images(chunks, self.max_num_chunks, args.vision_chunk_size, max_num_images, self.dtype)
            vision_tokens = self.vision_model(stacked_images.to(device), aspect_ratios.to(device))  # [B, I, C, N, D]

        bsz, nimg, nchunk, ntok, dim = vision_tokens.shape
        flat = vision_tokens.view(bsz, -1, dim)  # [B, V, D]
        xattn_caches = torch.stack([layer.compute_xattn_kv_cache(flat) for layer in self.text_model.cross_attention_layers])  # [X, 2, B, H, V, Dh]
        padded_masks = _pad_masks(batch_masks, num_chunks, total_len, self.max_num_chunks, self.dtype)  # [B, T, I, C]
        cross_attention_masks, full_text_row_masked_out_mask = _get_xattn_mask(padded_masks, ntok, device, self.dtype)  # [B, T, I, C] -> [B, 1, T, V], [B, 1, T, 1]
        return xattn_caches, cross_attention_masks, full_text_row_masked_out_mask

    def forward(
        self,
        position_ids: torch.Tensor,
        tokens: torch.Tensor,
        cross_attention_masks: torch.Tensor,
        full_text_row_masked_out_mask: torch.Tensor,
        xattn_caches: torch.Tensor,
        text_only_inference: bool = False,
    ) -> torch.Tensor:
        """One step: the tokens at `position_ids` -> logits [B, S, K]."""
        h = self.text_model.get_partially_trainable_embedding(tokens[:, position_ids])  # [B, S, D]
        return self.text_model(  # [B, S, K]; xattn_caches [X, 2, B, H, V, Dh]
            position_ids=position_ids,
            h=h,
            xattn_mask=cross_attention_masks[:, :, position_ids],  # [B, 1, S, V]
            full_text_row_masked_out_mask=full_text_row_masked_out_mask[:, :, position_ids],  # [B, 1, S, 1]
            xattn_caches=xattn_caches,
            text_only_inference=text_only_inference,
        )
