"""Choosing the next token from the logits, as Meta's Llama3.generate does (llama3/generation.py)."""

from __future__ import annotations

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
