"""Model configuration: one frozen dataclass, named presets, strict `params.json` parsing.

Field names follow Meta's `ModelArgs` (llama_models/llama3/args.py) and the keys of
Meta's `params.json`, so a reader can hold the two side by side. Meta hard-codes the
vision encoder's sizes inside `CrossAttentionTransformerVision`; here they are fields
(`vision_*`) so the `tiny` preset can shrink them while keeping every stage.

Shape letters: `SHAPE_LETTERS` and `SHAPE_PRODUCTS` below are the project's one key to the
letters that code comments, logs and walkthroughs write (the pages print them as their legend).
T <= M: as in Meta's `generate`, T = min(prompt + tokens to generate, max_seq_len).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path


SHAPE_LETTERS = {  # letter -> what it counts
    "B": "batch size", "I": "images per sample", "C": "chunks (tiles) per image", "R": "chunk size in pixels",
    "Hc": "canvas height in pixels", "Wc": "canvas width in pixels",
    "P": "patches per chunk", "N": "tokens per chunk, P + 1 (the class token)", "N8": "N padded to a multiple of 8",
    "W": "vision width", "Hv": "vision attention heads", "Dhv": "vision head width", "Fv": "vision feed-forward width",
    "L": "intermediate taps", "V": "vision keys, I*C*N",
    "D": "text model width", "H": "text attention heads", "Hkv": "key/value heads", "Dh": "text head width",
    "F": "text feed-forward width", "X": "cross-attention layers", "K": "vocabulary size",
    "T": "text positions: the prompt plus the tokens to generate, at most M",
    "M": "cache length (max_seq_len: the KV caches, the causal mask)", "S": "tokens in this step",
}
SHAPE_PRODUCTS = "products are written out (C*N8, Dh/2), or run together where Meta folds dims into one (BI = B*I, BIC = B*I*C)"


class ConfigError(ValueError):
    """A configuration file or preset name that cannot be used."""


class UnsupportedCheckpoint(ConfigError):
    """A params.json of weights this tool does not run (quantized, LoRA): fixing or downloading the
    file again would not help, and the message says what to use instead."""


@dataclass(frozen=True)
class ModelArgs:
    # text decoder: the keys of Meta's params.json
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int = 8
    vocab_size: int = 128256
    multiple_of: int = 1024
    ffn_dim_multiplier: float | None = 1.3
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    use_scaled_rope: bool = True
    vision_chunk_size: int = 560
    vision_max_num_chunks: int = 4
    vision_num_cross_attention_layers: int = 8
    # run-time sizes (Meta passes these to Llama3.build, not in params.json)
    max_seq_len: int = 512
    max_batch_size: int = 1
    # vision encoder: hard-coded in Meta's CrossAttentionTransformerVision / VisionEncoder
    vision_width: int = 1280
    vision_layers: int = 32
    vision_heads: int = 16
    vision_global_layers: int = 8
    vision_patch_size: int = 14
    vision_max_num_tiles: int = 4
    vision_mlp_ratio: float = 4.0
    vision_return_intermediate: tuple[int, ...] = (3, 7, 15, 23, 30)
    # rows of `learnable_embedding` (Meta: max(model-parallel world size, 8))
    n_learnable_embeddings: int = 8
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            problem = _field_problem(f.type, value)
            if problem:
                raise ConfigError(f"invalid model config {self.name!r}: {f.name}={value!r} {problem}")
        for name, largest in LARGEST.items():
            if (getattr(self, name) or 0) > largest:
                raise ConfigError(f"invalid model config {self.name!r}: {name}={getattr(self, name)} is past {largest}, the"
                                  " largest this tool builds (far past any Llama): is it a typo?")
        checks = [
            (self.dim % self.n_heads == 0, "dim must be divisible by n_heads"),
            (self.n_heads % self.n_kv_heads == 0, "n_heads must be divisible by n_kv_heads"),
            (self.vision_width % self.vision_heads == 0, "vision_width must be divisible by vision_heads"),
            (self.vision_chunk_size % self.vision_patch_size == 0, "vision_chunk_size must be a multiple of vision_patch_size"),
            (0 < self.vision_num_cross_attention_layers <= self.n_layers, "vision_num_cross_attention_layers must be in 1..n_layers"),
            (all(0 <= i < self.vision_layers for i in self.vision_return_intermediate), "vision_return_intermediate indices must be < vision_layers"),
            # Meta adds tile tables of vision_max_num_tiles rows to all C chunks of an image (and
            # hard-codes 4 tiles): any other chunk count fails in its vision encoder.
            (self.vision_max_num_chunks == self.vision_max_num_tiles,
             f"vision_max_num_chunks must equal vision_max_num_tiles ({self.vision_max_num_tiles}): Meta's tile tables cover every chunk"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid model config {self.name!r}: {message}")

    # --- derived sizes -------------------------------------------------------------------
    @property
    def head_dim(self) -> int:  # Dh
        return self.dim // self.n_heads

    @property
    def n_rep(self) -> int:  # query heads served by one key/value head
        return self.n_heads // self.n_kv_heads

    @property
    def ffn_hidden_dim(self) -> int:  # F, as FeedForward.__init__ computes it from 4 * dim
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    @property
    def vision_grid(self) -> int:  # patches along one side of a chunk
        return self.vision_chunk_size // self.vision_patch_size

    @property
    def vision_num_patches(self) -> int:  # P
        return self.vision_grid ** 2

    @property
    def vision_num_tokens(self) -> int:  # N = P + 1 (class token)
        return self.vision_num_patches + 1

    @property
    def vision_num_pad(self) -> int:  # Meta pads 8 - N % 8 tokens: 8, not 0, when N % 8 == 0
        return 8 - self.vision_num_tokens % 8

    @property
    def vision_input_dim(self) -> int:  # (L + 1) * W: final features + intermediate taps
        return (len(self.vision_return_intermediate) + 1) * self.vision_width

    @property
    def fusion_schedule(self) -> list[int]:
        """Text layers that get a cross-attention block in front of them (Meta's _init_fusion_schedule)."""
        layers = list(range(self.n_layers))
        k = math.ceil(len(layers) / self.vision_num_cross_attention_layers)
        return layers[::-1][::k][: self.vision_num_cross_attention_layers][::-1]

    def replace(self, **changes) -> "ModelArgs":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["vision_return_intermediate"] = list(self.vision_return_intermediate)
        return out

    @classmethod
    def from_dict(cls, data: dict, name: str = "custom") -> "ModelArgs":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        values = dict(data)
        if isinstance(values.get("vision_return_intermediate"), list):
            values["vision_return_intermediate"] = tuple(values["vision_return_intermediate"])
        values.setdefault("name", name)
        try:
            return cls(**values)
        except TypeError as err:
            raise ConfigError(str(err)) from None


def is_positive_int(value) -> bool:
    """A size as a config may give it: an int above zero (not a bool, not 8.0 or "8")."""
    return type(value) is int and value > 0


def is_positive_number(value) -> bool:
    """An epsilon, a base or a ratio: an int or float, finite, above zero (not NaN, not "1e-5")."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


# Upper bounds on the sizes, far past any Llama (the 405B: dim 16384, 126 layers, 128 heads), so
# that a typo is named before it builds a million layers or a tensor whose byte count overflows.
LARGEST = {
    "dim": 1 << 18, "vision_width": 1 << 18, "multiple_of": 1 << 18,
    "n_layers": 1024, "vision_layers": 1024, "vision_global_layers": 1024, "vision_num_cross_attention_layers": 1024,
    "n_heads": 1 << 12, "n_kv_heads": 1 << 12, "vision_heads": 1 << 12,
    "vocab_size": 1 << 22, "vision_chunk_size": 1 << 13, "vision_patch_size": 1 << 13, "vision_max_num_chunks": 64,
    "vision_max_num_tiles": 64, "n_learnable_embeddings": 1 << 12, "max_batch_size": 1 << 10,
    "ffn_dim_multiplier": 64.0, "vision_mlp_ratio": 64.0,  # the feed-forward widths they make (11B: 1.3, 4.0)
}


def _field_problem(kind: str, value) -> str | None:
    """What is wrong with `value` for a field annotated `kind` ("int", "float | None", ...), or
    None: every size is a positive integer, every float a finite number above zero (a JSON
    config may say NaN, Infinity, 8.0 or "8")."""
    if kind == "int" and not is_positive_int(value):
        return "must be a positive integer"
    if kind.startswith("float") and not (value is None and "None" in kind or is_positive_number(value)):
        return "must be a finite number above zero" + (" (or null)" if "None" in kind else "")
    if kind == "bool" and not isinstance(value, bool):
        return "must be true or false"
    if kind.startswith("tuple[int") and not (isinstance(value, tuple) and all(type(v) is int for v in value)):
        return "must be a list of integers"
    return None


# Keys Meta's params.json may hold, and the defaults Meta's ModelArgs gives the optional ones.
PARAMS_JSON_REQUIRED = ("dim", "n_layers", "n_heads", "vocab_size", "vision_chunk_size", "vision_num_cross_attention_layers")
PARAMS_JSON_OPTIONAL = {
    "n_kv_heads": None,
    "multiple_of": 256,
    "ffn_dim_multiplier": None,
    "norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "use_scaled_rope": False,
    "vision_max_num_chunks": 4,
}


# Not in Meta's params.json (Meta hard-codes its vision encoder), but accepted there so that a
# small checkpoint, like the tests' tiny ones, can state its vision sizes.
PARAMS_JSON_EXTENSION = (
    "vision_width", "vision_layers", "vision_heads", "vision_global_layers", "vision_patch_size",
    "vision_max_num_tiles", "vision_mlp_ratio", "vision_return_intermediate", "n_learnable_embeddings",
)


# Keys Meta's ModelArgs reads that describe weights llama-trace does not run: refused by name.
_PARAMS_JSON_UNSUPPORTED = {
    "quantization_args": "a quantized checkpoint; llama-trace runs bf16 or fp32 weights, so use the unquantized download",
    "lora_args": "a checkpoint with LoRA adapters; llama-trace runs plain weights, so use the base download",
}


def _flatten_vision_model(data: dict, path: str) -> dict:
    """Meta's ModelArgs also reads the cross-attention layer count from the nested form
    `"vision_model": {"cross_attention_adapter": {"num_layers": X}}`: that form, as the flat key.
    Stricter than Meta's, deliberately: where Meta ignores other keys under "vision_model" and lets
    the later of two disagreeing forms win, this refuses both."""
    if "vision_model" not in data:
        return data
    nested = data["vision_model"]
    adapter = nested.get("cross_attention_adapter") if isinstance(nested, dict) else None
    if not isinstance(adapter, dict) or set(nested) != {"cross_attention_adapter"} or set(adapter) != {"num_layers"}:
        raise ConfigError(f'{path}: "vision_model" must be {{"cross_attention_adapter": {{"num_layers": X}}}}, as Meta reads it')
    flat = {k: v for k, v in data.items() if k != "vision_model"}
    layers = flat.setdefault("vision_num_cross_attention_layers", adapter["num_layers"])
    if layers != adapter["num_layers"]:
        raise ConfigError(f"{path}: vision_num_cross_attention_layers={layers!r} disagrees with "
                          f"vision_model.cross_attention_adapter.num_layers={adapter['num_layers']!r}; keep one")
    return flat


def read_json_object(path: Path) -> dict:
    """A config file's JSON object; anything else (unreadable, not JSON, not an object) is a
    ConfigError, except a PermissionError: the file is fine, the caller says what to do."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except PermissionError:
        raise  # not the file's fault: the caller says so
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def from_params_json(path: str | Path, **runtime) -> ModelArgs:
    """Read a Meta `params.json` strictly: unknown keys and missing required keys are errors."""
    path = Path(path)
    return from_params(read_json_object(path), str(path), name=path.parent.resolve().name or "checkpoint", **runtime)


def from_params(data: dict, where: str = "params.json", name: str = "checkpoint", **runtime) -> ModelArgs:
    """The checks and defaults of `from_params_json`, for a params.json already read into a dict."""
    path = where
    data = _flatten_vision_model(data, path)
    unsupported = [k for k in _PARAMS_JSON_UNSUPPORTED if k in data]
    if unsupported:
        raise UnsupportedCheckpoint(f"{path}: {'; '.join(f'{k}: {_PARAMS_JSON_UNSUPPORTED[k]}' for k in unsupported)}")
    unknown = sorted(set(data) - set(PARAMS_JSON_REQUIRED) - set(PARAMS_JSON_OPTIONAL) - set(PARAMS_JSON_EXTENSION))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")
    missing = [k for k in PARAMS_JSON_REQUIRED if k not in data]
    if missing:
        raise ConfigError(f"{path}: missing key(s) {', '.join(missing)} (a Llama 3.2 Vision params.json has them)")
    values = {**PARAMS_JSON_OPTIONAL, **data}
    if values["n_kv_heads"] is None:
        values["n_kv_heads"] = values["n_heads"]
    if isinstance(values.get("vision_return_intermediate"), list):
        values["vision_return_intermediate"] = tuple(values["vision_return_intermediate"])
    try:
        return ModelArgs(name=name, **values, **runtime)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{path}: {err}") from None


_11B = dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, multiple_of=1024, vision_num_cross_attention_layers=8)
_90B = dict(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, multiple_of=4096, vision_num_cross_attention_layers=20)

PRESETS: dict[str, ModelArgs] = {
    # Meta's sku_list: the 11B base was trained at 448 px chunks, every other vision SKU at 560.
    "11b": ModelArgs(name="11b", vision_chunk_size=448, **_11B),
    "11b-instruct": ModelArgs(name="11b-instruct", vision_chunk_size=560, **_11B),
    "90b": ModelArgs(name="90b", vision_chunk_size=560, **_90B),
    "90b-instruct": ModelArgs(name="90b-instruct", vision_chunk_size=560, **_90B),
    # Every stage of the real model, at a size a laptop runs with real arithmetic in
    # well under a second; the real vocabulary so the real tokenizer works.
    "tiny": ModelArgs(
        name="tiny",
        dim=64, n_layers=8, n_heads=4, n_kv_heads=2, multiple_of=32,
        vision_num_cross_attention_layers=2, vision_chunk_size=112,
        vision_width=64, vision_layers=8, vision_heads=4, vision_global_layers=2,
        vision_return_intermediate=(1, 3, 5, 6, 7),
    ),
}


def get_preset(name: str) -> ModelArgs:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
