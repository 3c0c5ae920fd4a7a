"""Prompt -> token ids and the vision mask, as Meta's llama_models/llama3/chat_format.py builds them.

Two layouts:
- completion (`encode_content`): `<|begin_of_text|><|image|>text…`, image token at position 1;
- chat (`encode_dialog_prompt`): a user turn holding the image and text, then the assistant header,
  image token at position 5.
`<|image|>` (128011) is rewritten to 128256 in the model input: one past the frozen vocabulary,
so the embedding picks row 0 of `learnable_embedding`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from .tokenizer import Tokenizer

IMAGE_INPUT_ID = 128256  # first learnable-embedding row


@dataclass
class VisionInput:
    mask: list[list[int]]  # per image: [first text position that sees it, end (exclusive) or -1 = to the end]
    images: list[Image.Image]


@dataclass
class LLMInput:
    tokens: list[int]
    vision: VisionInput | None = None


@dataclass
class Message:
    role: str  # "user" | "system" | "assistant" | "tool" (its header reads "ipython", as in Meta's)
    content: list = field(default_factory=list)  # str or PIL images, in order
    # Every turn closes with <|eot_id|>: Meta's RawMessage can also close an assistant turn with
    # <|eom_id|> (a tool call awaiting its result), which this prompt-only format leaves out.


def create_vision_mask(tokens: list[int], vision_token: int) -> list[list[int]]:
    """Which text positions attend to which image (Meta's create_vision_mask, same semantics)."""
    locations = [i for i, t in enumerate(tokens) if t == vision_token]
    if not locations:
        return []
    if len(locations) == 1:
        return [[locations[0], -1]]  # one image: visible to all later text
    masks = [[a, b] for a, b in zip(locations[:-1], locations[1:])]
    masks.append([locations[-1], len(tokens)])
    # Consecutive image tokens all stay visible until the next text span ends.
    end = masks[-1][1]
    for mask in reversed(masks):
        if mask[0] == mask[1] - 1:
            mask[1] = end
        end = mask[1]
    return masks


class ChatFormat:
    def __init__(self, tokenizer: Tokenizer, allow_special: bool = False) -> None:
        self.tokenizer = tokenizer
        self.allow_special = allow_special
        self.vision_token = tokenizer.image_id

    def _encode_header(self, role: str) -> list[int]:
        special = self.tokenizer.special_tokens
        return (
            [special["<|start_header_id|>"]]
            + self.tokenizer.encode("ipython" if role == "tool" else role, bos=False, eos=False)
            + [special["<|end_header_id|>"]]
            + self.tokenizer.encode("\n\n", bos=False, eos=False)
        )

    def _encode_content(self, content: list, bos: bool = False) -> tuple[list[int], list[Image.Image]]:
        tokens: list[int] = []
        images: list[Image.Image] = []
        for item in content:
            if isinstance(item, str):
                tokens += self.tokenizer.encode(item, bos=bos, eos=False, allow_special=self.allow_special)
            else:  # an image: BOS still comes first when this opens the sequence
                tokens += [self.tokenizer.bos_id] * bos + [self.vision_token]
                images.append(item.convert("RGB"))
            bos = False
        return tokens, images

    def _model_input(self, tokens: list[int], images: list[Image.Image]) -> LLMInput:
        vision = VisionInput(create_vision_mask(tokens, self.vision_token), images) if images else None
        return LLMInput([IMAGE_INPUT_ID if t == self.vision_token else t for t in tokens], vision)

    def encode_content(self, content: list) -> LLMInput:
        """Completion layout for base models."""
        return self._model_input(*self._encode_content(content, bos=True))

    def encode_dialog_prompt(self, messages: list[Message]) -> LLMInput:
        """Chat layout for instruct models, ending with an open assistant header."""
        tokens, images = [self.tokenizer.bos_id], []
        for message in messages:
            body, imgs = self._encode_content(message.content)
            tokens += self._encode_header(message.role) + body + [self.tokenizer.eot_id]
            images += imgs
        tokens += self._encode_header("assistant")
        return self._model_input(tokens, images)
