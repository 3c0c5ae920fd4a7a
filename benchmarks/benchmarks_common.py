"""Inputs shared by the GPU scripts: one 800x600 image (2x2 tiles) and a 24-token chat prompt."""

import torch
from PIL import Image

# Chat layout, 24 tokens: BOS, user header, <|image|> (128256 in the model input), 14 text tokens,
# <|eot_id|>, and the start of the assistant header.
PROMPT_IDS = (
    [128000, 128006, 882, 128007, 271, 128256]
    + [3923, 374, 304, 420, 2217, 30, 17855, 433, 304, 832, 11914, 13, 5321, 0]
    + [128009, 128006, 78191, 128007]
)

VISION_MASK = [[5, -1]]  # the <|image|> token at position 5 is seen by every later token
PAD_ID = 128004


def noise_image() -> Image.Image:
    return Image.effect_noise((800, 600), 64).convert("RGB")  # 800x600 -> 2x2 tiles


def prompt_tokens(max_seq_len: int, device) -> tuple[torch.Tensor, int]:
    """PROMPT_IDS padded to the model's max_seq_len: (tokens [1, T], prompt length n)."""
    n = len(PROMPT_IDS)
    tokens = torch.full((1, max_seq_len), PAD_ID, dtype=torch.long)  # [B, T]
    tokens[0, :n] = torch.tensor(PROMPT_IDS)
    return tokens.to(device), n
