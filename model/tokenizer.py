"""The Llama 3 tokenizer: tiktoken BPE over Meta's `tokenizer.model`, plus 256 special tokens.

Mirrors llama_models/llama3/tokenizer.py. The BPE file is read from the installed
`llama-models` wheel (it ships `llama3/tokenizer.model`); nothing is downloaded.
"""

from __future__ import annotations

import binascii
import functools
import importlib.util
from pathlib import Path

import tiktoken

NUM_BASE_TOKENS = 128000
NUM_RESERVED_SPECIAL_TOKENS = 256
# The regex Llama 3 splits text with before BPE (same as Meta's Tokenizer.pat_str).
PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NAMED_SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
]
# tiktoken panics on very long runs without whitespace; Meta splits them first.
MAX_ENCODE_CHARS = 400_000
MAX_NO_WHITESPACE_CHARS = 25_000


class TokenizerError(ValueError):
    """The tokenizer model file is missing or unreadable."""


def default_model_path() -> Path:
    """Path of `llama3/tokenizer.model` inside the installed llama-models wheel (not imported)."""
    spec = importlib.util.find_spec("llama_models")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError("the llama-models package is not installed; run: pip install llama-models==0.3.0")
    return Path(list(spec.submodule_search_locations)[0]) / "llama3" / "tokenizer.model"


def load_bpe_file(path: Path) -> dict[bytes, int]:
    """Each line is `base64(token) rank`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TokenizerError(f"cannot read tokenizer model {path}: {err}") from None
    fields = text.split()  # [token, rank, token, rank, ...]
    if len(fields) % 2:
        raise TokenizerError(f"tokenizer model {path} is malformed: expected `base64-token rank` on every line")
    try:
        return {binascii.a2b_base64(token): int(rank) for token, rank in zip(fields[0::2], fields[1::2])}
    except (binascii.Error, ValueError) as err:
        raise TokenizerError(f"tokenizer model {path} is malformed: {err}") from None


def split_long_runs(text: str, max_run: int):
    """Yield pieces of `text` with no run of whitespace or non-whitespace longer than `max_run`."""
    start, run, in_space = 0, 0, text[:1].isspace()
    for i, ch in enumerate(text):
        if ch.isspace() != in_space:
            run, in_space = 1, ch.isspace()
        else:
            run += 1
            if run > max_run:
                yield text[start:i]
                start, run = i, 1
    yield text[start:]


class Tokenizer:
    def __init__(self, model_path: Path | None = None) -> None:
        path = Path(model_path) if model_path else default_model_path()
        ranks = load_bpe_file(path)
        names = NAMED_SPECIAL_TOKENS + [
            f"<|reserved_special_token_{2 + i}|>" for i in range(NUM_RESERVED_SPECIAL_TOKENS - len(NAMED_SPECIAL_TOKENS))
        ]
        self.special_tokens = {name: len(ranks) + i for i, name in enumerate(names)}
        self.model = tiktoken.Encoding(name=path.name, pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=self.special_tokens)
        self.n_words = len(ranks) + len(names)
        self.bos_id = self.special_tokens["<|begin_of_text|>"]
        self.eos_id = self.special_tokens["<|end_of_text|>"]
        self.eot_id = self.special_tokens["<|eot_id|>"]
        self.eom_id = self.special_tokens["<|eom_id|>"]
        self.pad_id = self.special_tokens["<|finetune_right_pad_id|>"]
        self.image_id = self.special_tokens["<|image|>"]
        self.stop_tokens = [self.eos_id, self.eom_id, self.eot_id]

    def encode(self, text: str, *, bos: bool, eos: bool, allow_special: bool = False) -> list[int]:
        """Special-token strings in `text` are plain text unless `allow_special` (as in Meta's default)."""
        allowed = "all" if allow_special else set()
        ids: list[int] = []
        for i in range(0, len(text), MAX_ENCODE_CHARS):
            for piece in split_long_runs(text[i : i + MAX_ENCODE_CHARS], MAX_NO_WHITESPACE_CHARS):
                ids.extend(self.model.encode(piece, allowed_special=allowed, disallowed_special=()))
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids: list[int]) -> str:
        return self.model.decode(list(ids))


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> Tokenizer:
    return Tokenizer()
