"""Choosing the next token from the logits, as Meta's Llama3.generate does (llama3/generation.py)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch


def sample_top_p(probs: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Nucleus sampling: keep the smallest set of tokens whose probability mass exceeds p."""
    probs_sort, probs_idx = torch.sort(probs, dim=-1, descending=True)  # [B, K]
    probs_sum = torch.cumsum(probs_sort, dim=-1)  # [B, K]
    probs_sort[probs_sum - probs_sort > p] = 0.0
    probs_sort.div_(probs_sort.sum(dim=-1, keepdim=True))
    next_token = torch.multinomial(probs_sort, num_samples=1, generator=generator)  # [B, 1]
    return torch.gather(probs_idx, -1, next_token)  # [B, 1]


def select_next_token(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 0.9, generator: torch.Generator | None = None) -> torch.Tensor:
    """Last-position logits [B, K] -> next token ids [B]: argmax when temperature is 0 (greedy)."""
    if temperature > 0:
        probs = torch.softmax(logits / temperature, dim=-1)  # [B, K]
        return sample_top_p(probs, top_p, generator).reshape(-1)  # [B]
    return torch.argmax(logits, dim=-1)  # [B]


def _no_marker(name: str, **info):
    return contextlib.nullcontext()


@dataclass
class Step:
    """One forward step of the decoding loop."""

    index: int  # 0 for the prefill, then 1, 2, …
    positions: tuple[int, int]  # [prev_pos, cur_pos): the positions this step feeds
    next_token: torch.Tensor  # [B]
    logits: torch.Tensor  # [B, S, K] fp32
    finished: bool


@torch.no_grad()
def generate(
    model,
    inp,
    pad_id: int,
    stop_tokens: list[int],
    max_gen_len: int | None = None,
    temperature: float = 0.0,
    top_p: float = 0.9,
    seed: int | None = None,
    device="cpu",
    marker: Callable = _no_marker,
    max_steps: int | None = None,
) -> Iterator[Step]:
    """Meta's decoding loop (Llama3.generate) for one prompt: the vision tokens and masks once,
    a prefill over the whole prompt, then one position per step until a stop token or the
    length limit (or after `max_steps` steps: Meta's loop has no such cap, but a trace of the
    prefill alone should not need a full cache's worth of steps). `marker(name, **info)` may wrap each step in a context (the tracer's phases);
    the model computes the same either way. On `meta` tensors the loop runs for its shapes only:
    no token value is read, so it runs to the length limit."""
    params = model.params
    if max_gen_len is None or max_gen_len == 0 or max_gen_len >= params.max_seq_len:
        max_gen_len = params.max_seq_len - 1
    n = len(inp.tokens)
    total_len = min(max_gen_len + n, params.max_seq_len)
    tokens = torch.full((1, total_len), pad_id, dtype=torch.long)  # [B, T]
    tokens[0, :n] = torch.tensor(inp.tokens, dtype=torch.long)
    tokens = tokens.to(device)
    images = [inp.vision.images] if inp.vision is not None else [[]]
    masks = [inp.vision.mask] if inp.vision is not None else [[]]
    xattn_caches, cross_attention_masks, full_text_row_masked_out_mask = model.compute_vision_tokens_masks(  # [X, 2, B, H, V, Dh], [B, 1, T, V], [B, 1, T, 1]
        images, masks, total_len, device
    )
    text_only = inp.vision is None
    values = tokens.device.type != "meta"
    generator = torch.Generator(device=tokens.device).manual_seed(seed) if (seed is not None and values) else None
    stop = torch.tensor(stop_tokens, device=tokens.device)

    prev_pos = 0
    for index, cur_pos in enumerate(range(n, total_len)):
        with marker("prefill" if index == 0 else "decode", step=index, positions=[prev_pos, cur_pos]):
            position_ids = torch.arange(prev_pos, cur_pos, dtype=torch.long, device=tokens.device)  # [S]
            logits = model(position_ids, tokens, cross_attention_masks, full_text_row_masked_out_mask, xattn_caches, text_only)  # [B, S, K]; tokens [B, T], masks [B, 1, T, V] and [B, 1, T, 1], xattn_caches [X, 2, B, H, V, Dh]
            next_token = select_next_token(logits[:, -1], temperature, top_p, generator)  # [B]
        tokens[:, cur_pos] = next_token
        finished = values and bool(torch.isin(next_token, stop).all())
        last = finished or cur_pos + 1 == total_len or (max_steps is not None and index + 1 >= max_steps)
        yield Step(index, (prev_pos, cur_pos), next_token, logits, last)
        if last:
            return
        prev_pos = cur_pos
