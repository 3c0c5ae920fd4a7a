"""Load a Llama 3.2 Vision checkpoint folder into our model: Meta's consolidated layout or Hugging Face's.

    load_checkpoint(folder, device, dtype, progress) -> (model, args, tokenizer.model path or None)

Layouts (found by the files in the folder):

- **Meta**: `params.json` + `consolidated.pth` (or `consolidated.00.pth`), or the model-parallel shards
  `consolidated.00.pth` ... `consolidated.NN.pth` (90B: 8), merged here. Our parameter names *are* Meta's
  keys, so only the shards need work: fairscale's ColumnParallelLinear and VocabParallelEmbedding split dim 0,
  RowParallelLinear splits dim 1 (its bias is whole), everything else is replicated (`model_parallel_dim`).
  Tokenizer: `tokenizer.model`.
- **Hugging Face**: `config.json` + `model.safetensors`, or `model-*.safetensors` listed in
  `model.safetensors.index.json`. The tensors are mapped back to Meta's names (spec §4.2 read backwards):
  q/k of the *self*-attention layers un-permuted from rotate_half halves to interleaved pairs, `embed_tokens`
  split into `tok_embeddings` + `learnable_embedding`, the per-aspect-ratio tile tables folded back into
  Meta's [T, T, tokens, W] tables, the Conv2d patch weight flattened to the Linear Meta uses, and the merged
  layer list split into self-attention layers and cross-attention blocks. Both key layouts are read: the hub
  one (`language_model.model.*`, `language_model.lm_head`, `vision_model.*`, `multi_modal_projector.*`; also
  what transformers 5 `save_pretrained` writes) and the re-rooted one of transformers 4.52-4.5x
  `save_pretrained` (`model.language_model.*`, `lm_head`, `model.vision_model.*`, `model.multi_modal_projector.*`).
  Tokenizer: `original/tokenizer.model` (HF's `tokenizer.json` is not read).

The config always comes from the checkpoint (`params.json` via `from_params_json`; `config.json` via
`args_from_hf_config`). The model is built on the `meta` device and each parameter is replaced by the
checkpoint's tensor, converted to `dtype` and moved to `device` one at a time: `.pth` files are memory-mapped
(`torch.load(..., weights_only=True, mmap=True)`: a pickle that would run code is refused, never executed) and
safetensors are read tensor by tensor, so peak host memory stays near the size of the weights.
Every problem is a `CheckpointError` with a one-line message: what is wrong, and what to do.
"""

from __future__ import annotations

import json
import mmap
import math
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .args import (LARGEST, PARAMS_JSON_OPTIONAL, PARAMS_JSON_REQUIRED, ConfigError, ModelArgs, UnsupportedCheckpoint, from_params,
                   is_positive_int, is_positive_number, read_json_object)
from . import rope
from .build import build_model
from .multimodal import CrossAttentionTransformer

Progress = Callable[[int, int, str], None]  # (bytes done, bytes in all, tensor name)

# dtypes a checkpoint's weights may have; they are converted to the requested dtype on load
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
_SAFETENSORS_FLOAT = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}
_SAFETENSORS_ITEMSIZE = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
                         "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_MAX_LISTED = 5  # names listed in an error message before "(+N more)"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message says what is wrong and what to do."""


def _listed(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" (+{len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _gist(err: BaseException, limit: int = 200) -> str:
    """An error's message on one line, cut at a word and marked "…" past `limit` characters."""
    text = _one_line(err) or type(err).__name__
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


# =====================================================================================================
# Layout detection
# =====================================================================================================

META_PARAMS, META_TOKENIZER = "params.json", "tokenizer.model"
HF_CONFIG, HF_SINGLE, HF_INDEX, HF_TOKENIZER = "config.json", "model.safetensors", "model.safetensors.index.json", "original/tokenizer.model"
_CONSOLIDATED = re.compile(r"consolidated(?:\.(\d+))?\.pth")
_EXPECTED = ("expected Meta's params.json + consolidated*.pth or Hugging Face's config.json + "
             "model.safetensors / model-*.safetensors with model.safetensors.index.json")


@dataclass(frozen=True)
class Layout:
    kind: str  # "meta" or "hf"
    folder: Path
    config: Path  # params.json or config.json
    weights: tuple[Path, ...]  # Meta: shard files in order; HF: model.safetensors or the index json
    tokenizer: Path | None
    also_hf: bool = False  # a Meta layout whose folder holds a Hugging Face one as well (not read)


def detect_layout(path: str | Path) -> Layout:
    """Which checkpoint layout `path` holds. A folder with both complete layouts is read as Meta's."""
    folder = Path(path).expanduser()
    try:
        layout = _detect_layout(folder)
    except PermissionError as err:  # from listing the folder, or from looking at a file in it
        raise _permission_denied(Path(err.filename) if err.filename else folder) from None
    tokenizers = [layout.folder / name for name in (META_TOKENIZER, HF_TOKENIZER)]  # read as absent when not files
    for file in (layout.config, *layout.weights, *tokenizers):
        if _broken_link(file):
            raise CheckpointError(f"{file} is a broken symbolic link (to {os.readlink(file)}); point it at the file, or copy the file in")
        if file.is_dir():
            raise CheckpointError(f"{file} is a folder, not a file; {_EXPECTED}")
    return layout


def _broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _detect_layout(folder: Path) -> Layout:
    if not folder.exists():
        raise CheckpointError(f"checkpoint folder {folder} does not exist; pass the folder that holds the weights")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is a file, not a checkpoint folder; pass the folder that holds it ({_EXPECTED})")
    names = {p.name for p in folder.iterdir()}
    pths = sorted(n for n in names if n.startswith("consolidated") and n.endswith(".pth"))
    safetensors = sorted(n for n in names if n.endswith(".safetensors"))

    if META_PARAMS in names and pths:
        tok = folder / META_TOKENIZER
        also_hf = HF_CONFIG in names and (HF_INDEX in names or HF_SINGLE in names)
        return Layout("meta", folder, folder / META_PARAMS, _meta_shard_files(folder, pths), tok if tok.is_file() else None, also_hf)
    if HF_CONFIG in names and (HF_INDEX in names or HF_SINGLE in names or safetensors):
        if HF_INDEX in names:
            weights = (folder / HF_INDEX,)
        elif HF_SINGLE in names:
            weights = (folder / HF_SINGLE,)
        else:
            raise CheckpointError(f"{folder} has sharded safetensors ({_listed(safetensors)}) but no {HF_INDEX}; "
                                  "download the index file too")
        tok = next((folder / t for t in (HF_TOKENIZER, META_TOKENIZER) if (folder / t).is_file()), None)
        return Layout("hf", folder, folder / HF_CONFIG, weights, tok)

    if not names:
        raise CheckpointError(f"checkpoint folder {folder} is empty; {_EXPECTED}")
    if META_PARAMS in names:
        raise CheckpointError(f"{folder} has {META_PARAMS} but no consolidated*.pth weights; download them into the same folder")
    if pths:
        raise CheckpointError(f"{folder} has {_listed(pths)} but no {META_PARAMS}; put Meta's params.json beside the weights")
    if HF_CONFIG in names:
        other = sorted(n for n in names if n.endswith((".bin", ".pt", ".ckpt", ".gguf")))
        hint = f" ({_listed(other)} are not read: convert them to safetensors)" if other else ""
        raise CheckpointError(f"{folder} has {HF_CONFIG} but no model.safetensors or model-*.safetensors{hint}; download the weights")
    if safetensors:
        raise CheckpointError(f"{folder} has {_listed(safetensors)} but no {HF_CONFIG}; put the model's config.json beside the weights")
    raise CheckpointError(f"no checkpoint found in {folder} (it holds {_listed(sorted(names))}); {_EXPECTED}")


def _meta_shard_files(folder: Path, names: list[str]) -> tuple[Path, ...]:
    numbered, plain = {}, []
    for name in names:
        m = _CONSOLIDATED.fullmatch(name)
        if not m:
            raise CheckpointError(f"{folder / name}: unexpected weight file name; Meta names them consolidated.pth or consolidated.00.pth, .01, ...")
        if m[1] is None:
            plain.append(name)
        else:
            numbered[int(m[1])] = name
    if plain and numbered:
        raise CheckpointError(f"{folder} holds both consolidated.pth and {_listed(sorted(numbered.values()))}; keep one set of weights")
    if plain:
        return (folder / plain[0],)
    gaps = [f"consolidated.{i:02d}.pth" for i in range(max(numbered)) if i not in numbered]
    if gaps:
        raise CheckpointError(f"{folder}: model-parallel shard(s) {_listed(gaps)} missing (here: {_listed(sorted(numbered.values()))}); "
                              "copy every shard of the checkpoint")
    return tuple(folder / numbered[i] for i in range(len(numbered)))


# =====================================================================================================
# Configs
# =====================================================================================================


def _read_json(path: Path) -> dict:
    try:
        return read_json_object(path)
    except PermissionError:
        raise _permission_denied(path) from None
    except ConfigError as err:
        raise CheckpointError(f"{err}; re-download it") from None


def _permission_denied(path: Path) -> CheckpointError:
    """A file or folder of the checkpoint this user may not read: not a damaged download."""
    return CheckpointError(f"{path}: permission denied; give this user read access to the checkpoint's folder and files")


def args_from_params_json(path: Path, **runtime) -> ModelArgs:
    """Meta's params.json -> ModelArgs (strict, through `model.args.from_params`), refusing text-only Llama files."""
    data = _read_json(path)
    if not any(k.startswith("vision_") for k in data) and "dim" in data:
        raise CheckpointError(f"{path}: not a Llama 3.2 Vision checkpoint (a text-only Llama params.json: no vision_* keys); "
                              "use an 11B/90B Vision checkpoint")
    try:
        return from_params(data, str(path), name=path.parent.resolve().name or "checkpoint", **runtime)  # `.` names its folder too
    except UnsupportedCheckpoint as err:
        raise CheckpointError(str(err)) from None
    except (ConfigError, TypeError, ZeroDivisionError) as err:
        message = _one_line(err)
        if "unknown key" in message:
            message += f" (keys Meta's params.json may hold: {', '.join((*PARAMS_JSON_REQUIRED, *PARAMS_JSON_OPTIONAL))})"
        raise CheckpointError(f"{message}; fix {path.name} or re-download it") from None


# Keys every transformers PretrainedConfig writes (4.4x and 5.x) that do not change the network.
_HF_GENERIC_KEYS = frozenset("""
_name_or_path _attn_implementation_autoset _commit_hash add_cross_attention architectures bad_words_ids
begin_suppress_tokens bos_token_id chunk_size_feed_forward cross_attention_hidden_size decoder_start_token_id
diversity_penalty do_sample dtype early_stopping encoder_no_repeat_ngram_size eos_token_id
exponential_decay_length_penalty finetuning_task forced_bos_token_id forced_eos_token_id id2label
initializer_range is_decoder is_encoder_decoder label2id length_penalty max_length min_length
no_repeat_ngram_size num_beam_groups num_beams num_return_sequences output_attentions output_hidden_states
output_scores pad_token_id prefix problem_type pruned_heads remove_invalid_values repetition_penalty return_dict
return_dict_in_generate sep_token_id suppress_tokens task_specific_params temperature tf_legacy_loss
tie_encoder_decoder tokenizer_class top_k top_p torch_dtype torchscript transformers_version typical_p
use_bfloat16 use_cache
""".split())
_HF_TOP_KEYS = frozenset({"model_type", "text_config", "vision_config", "image_token_index", "tie_word_embeddings"})
_HF_TEXT_KEYS = frozenset({
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "intermediate_size", "rms_norm_eps", "cross_attention_layers", "rope_theta", "rope_scaling", "rope_parameters",
    "max_position_embeddings", "hidden_act", "dropout", "tie_word_embeddings", "head_dim",
})
_HF_TEXT_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "intermediate_size", "rms_norm_eps", "cross_attention_layers")
_HF_VISION_KEYS = frozenset({
    "model_type", "hidden_size", "num_hidden_layers", "num_global_layers", "attention_heads", "num_attention_heads",
    "image_size", "patch_size", "max_num_tiles", "intermediate_size", "intermediate_layers_indices",
    "vision_output_dim", "supported_aspect_ratios", "norm_eps", "hidden_act", "num_channels", "tie_word_embeddings",
})
_HF_VISION_REQUIRED = ("hidden_size", "num_hidden_layers", "num_global_layers", "image_size", "patch_size",
                       "max_num_tiles", "intermediate_size", "intermediate_layers_indices", "supported_aspect_ratios")
# Meta's apply_scaling constants (model/rope.py); HF's "llama3" rope must use exactly these.
_LLAMA3_ROPE = {"factor": float(rope.SCALE_FACTOR), "low_freq_factor": float(rope.LOW_FREQ_FACTOR),
                "high_freq_factor": float(rope.HIGH_FREQ_FACTOR), "original_max_position_embeddings": rope.OLD_CONTEXT_LEN}
_N_LEARNABLE = 8  # HF appends 8 rows to embed_tokens (Meta: max(model-parallel world size, 8))


def supported_aspect_ratios(max_num_tiles: int) -> list[list[int]]:
    """Every (rows, cols) with rows * cols <= max_num_tiles, in HF's order (aspect-ratio id = index + 1)."""
    return [[a, b] for a in range(1, max_num_tiles + 1) for b in range(1, max_num_tiles + 1) if a * b <= max_num_tiles]


def _ffn_dim(dim: int, multiplier: float | None, multiple_of: int) -> int:
    return ModelArgs(dim=dim, n_heads=1, n_kv_heads=1, multiple_of=multiple_of, ffn_dim_multiplier=multiplier).ffn_hidden_dim


def _ffn_fields(dim: int, hidden: int) -> tuple[float | None, int]:
    """(ffn_dim_multiplier, multiple_of) for which Meta's FeedForward sizing gives `hidden`: Meta's own
    values when they fit (11B: 1.3 / 1024, 90B: 1.3 / 4096), else multiple_of = hidden (same F either way)."""
    for multiplier, multiple_of in ((1.3, 4096), (1.3, 1024), (None, 256), (1.3, 256)):  # 90B fits 1024 too
        if _ffn_dim(dim, multiplier, multiple_of) == hidden:
            return multiplier, multiple_of
    base = int(2 * 4 * dim / 3)
    if 0 < base <= hidden:
        return None, hidden
    multiplier = hidden / base
    if _ffn_dim(dim, multiplier, hidden) == hidden:
        return multiplier, hidden
    raise CheckpointError(f"intermediate_size {hidden} cannot come from Meta's FeedForward sizing for dim {dim}")


def _rope_fields(text: dict, where: str) -> tuple[float, bool]:
    """(rope_theta, use_scaled_rope) from transformers 5 `rope_parameters` or 4.x `rope_theta` + `rope_scaling`."""
    params = text.get("rope_parameters")
    if params is None:
        params = dict(text.get("rope_scaling") or {"rope_type": "default"})
        if "rope_theta" not in text:
            raise CheckpointError(f"{where}: text_config has neither rope_parameters nor rope_theta; re-download config.json")
        params["rope_theta"] = text["rope_theta"]
    if not isinstance(params, dict) or "rope_theta" not in params:
        raise CheckpointError(f"{where}: text_config.rope_parameters must be an object with rope_theta; got {params!r}")
    if "rope_parameters" in text and "rope_theta" in text and text["rope_theta"] != params["rope_theta"]:
        raise CheckpointError(f"{where}: text_config.rope_theta {text['rope_theta']!r} differs from rope_parameters.rope_theta "
                              f"{params['rope_theta']!r}; keep one of them")
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return float(params["rope_theta"]), False
    if kind == "llama3":
        wrong = {k: params.get(k) for k, v in _LLAMA3_ROPE.items() if params.get(k) != v}
        if wrong:
            raise CheckpointError(f"{where}: llama3 rope scaling {wrong} differs from Meta's {_LLAMA3_ROPE}, which this model hard-codes")
        return float(params["rope_theta"]), True
    raise CheckpointError(f"{where}: rope_type {kind!r} is not supported (Llama 3.2 Vision uses 'llama3')")


def _check_keys(section: dict, known: frozenset, required: tuple, name: str, where: str) -> None:
    unknown = sorted(set(section) - known - _HF_GENERIC_KEYS)
    if unknown:
        raise CheckpointError(f"{where}: unknown {name} key(s) {_listed(unknown)}; this loader reads Mllama configs only "
                              "and does not know what they would change")
    missing = [k for k in required if k not in section]
    if missing:
        raise CheckpointError(f"{where}: {name} is missing key(s) {_listed(missing)} (an Mllama config.json has them); re-download it")


_HF_POSITIVE_INTS = frozenset({
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
    "num_global_layers", "attention_heads", "image_size", "patch_size", "max_num_tiles", "vision_output_dim", "head_dim",
})


# model.args.LARGEST by the config.json names (checked before the sizes are worked with: the aspect
# ratios of max_num_tiles alone take minutes past a few thousand); the feed-forward widths from
# the largest dim and multiplier there.
_HF_LARGEST = {
    "text_config": {"hidden_size": LARGEST["dim"], "num_hidden_layers": 2 * LARGEST["n_layers"], "num_attention_heads": LARGEST["n_heads"],
                    "num_key_value_heads": LARGEST["n_kv_heads"], "vocab_size": LARGEST["vocab_size"],
                    "intermediate_size": int(LARGEST["dim"] * LARGEST["ffn_dim_multiplier"])},
    "vision_config": {"hidden_size": LARGEST["vision_width"], "num_hidden_layers": LARGEST["vision_layers"],
                      "num_global_layers": LARGEST["vision_global_layers"], "attention_heads": LARGEST["vision_heads"],
                      "num_attention_heads": LARGEST["vision_heads"], "image_size": LARGEST["vision_chunk_size"],
                      "patch_size": LARGEST["vision_patch_size"], "max_num_tiles": LARGEST["vision_max_num_tiles"],
                      "intermediate_size": int(LARGEST["vision_width"] * LARGEST["vision_mlp_ratio"])},
}


def _int_list(value, what: str, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise CheckpointError(f"{where}: {what} must be a list of integers, got {value!r}")
    return value


def args_from_hf_config(config: dict, where: str = HF_CONFIG, name: str = "checkpoint", **runtime) -> ModelArgs:
    """A Hugging Face `MllamaConfig` (config.json as a dict) -> ModelArgs. Strict: unknown keys that could
    change the network, missing keys and values this model cannot express are CheckpointErrors."""
    model_type = config.get("model_type")
    if model_type is not None and model_type != "mllama" or ("text_config" not in config and "hidden_size" in config):
        kind = f"model_type {model_type!r}" if model_type else "no text_config / vision_config"
        if model_type == "llama" or "vision_config" not in config:
            kind += ": a text-only model, with no vision encoder"
        raise CheckpointError(f"{where}: not a Llama 3.2 Vision checkpoint ({kind}); use an Mllama (11B/90B Vision) checkpoint")
    if "quantization_config" in config:
        raise CheckpointError(f"{where}: quantized checkpoints are not supported; use the bf16 weights")
    _check_keys(config, _HF_TOP_KEYS | {"text_config", "vision_config"}, ("text_config", "vision_config"), "top-level", where)
    text, vision = config["text_config"], config["vision_config"]
    if not isinstance(text, dict) or not isinstance(vision, dict):
        raise CheckpointError(f"{where}: text_config and vision_config must be JSON objects")
    _check_keys(text, _HF_TEXT_KEYS, _HF_TEXT_REQUIRED, "text_config", where)
    _check_keys(vision, _HF_VISION_KEYS, _HF_VISION_REQUIRED, "vision_config", where)
    for section, section_name in ((text, "text_config"), (vision, "vision_config")):
        bad = [f"{k}={v!r}" for k, v in section.items() if k in _HF_POSITIVE_INTS and not is_positive_int(v)]
        bad += [f"{k}={v!r}" for k, v in section.items() if k in ("rms_norm_eps", "norm_eps") and not is_positive_number(v)]
        if bad:
            raise CheckpointError(f"{where}: {section_name} has invalid value(s) {_listed(bad)}; "
                                  "sizes must be positive integers, epsilons finite numbers above zero")

    large = [f"{section_name}.{key}={section[key]} (past {largest})" for section, section_name in ((text, "text_config"), (vision, "vision_config"))
             for key, largest in _HF_LARGEST[section_name].items() if section.get(key, 0) > largest]
    if large:
        raise CheckpointError(f"{where}: {_listed(large)}: larger than this tool builds (far past any Llama); is it a typo?")

    fixed = [
        (text.get("model_type", "mllama_text_model") == "mllama_text_model", "text_config.model_type must be 'mllama_text_model'"),
        (vision.get("model_type", "mllama_vision_model") == "mllama_vision_model", "vision_config.model_type must be 'mllama_vision_model'"),
        (text.get("hidden_act", "silu") == "silu", "text_config.hidden_act must be 'silu' (SwiGLU)"),
        (vision.get("hidden_act", "gelu") == "gelu", "vision_config.hidden_act must be 'gelu'"),
        (vision.get("num_channels", 3) == 3, "vision_config.num_channels must be 3"),
        (vision.get("norm_eps", 1e-5) == 1e-5, "vision_config.norm_eps must be 1e-5 (Meta's nn.LayerNorm default)"),
        (not text.get("tie_word_embeddings", False) and not config.get("tie_word_embeddings", False),
         "tie_word_embeddings must be false (Meta keeps a separate output matrix)"),
        (config.get("image_token_index", text["vocab_size"]) == text["vocab_size"],
         "image_token_index must equal vocab_size (the first learnable embedding row)"),
    ]
    for ok, message in fixed:
        if not ok:
            raise CheckpointError(f"{where}: {message}; this model cannot express anything else")

    heads = vision.get("attention_heads", vision.get("num_attention_heads"))
    if heads is None or vision.get("num_attention_heads", heads) != heads:
        raise CheckpointError(f"{where}: vision_config needs one attention_heads value; got {vision.get('attention_heads')!r} / {vision.get('num_attention_heads')!r}")
    xattn = _int_list(text["cross_attention_layers"], "text_config.cross_attention_layers", where)
    if not xattn:
        raise CheckpointError(f"{where}: text_config.cross_attention_layers is empty: not a Llama 3.2 Vision checkpoint")
    taps = _int_list(vision["intermediate_layers_indices"], "vision_config.intermediate_layers_indices", where)
    width, tiles = vision["hidden_size"], vision["max_num_tiles"]
    if "head_dim" in text and text["head_dim"] != text["hidden_size"] // text["num_attention_heads"]:
        raise CheckpointError(f"{where}: text_config.head_dim {text['head_dim']} must be hidden_size / num_attention_heads")
    if vision["intermediate_size"] % width:
        raise CheckpointError(f"{where}: vision_config.intermediate_size {vision['intermediate_size']} must be a multiple of hidden_size {width}")
    ratios = vision["supported_aspect_ratios"]
    if not isinstance(ratios, list) or sorted(map(tuple, ratios)) != sorted(map(tuple, supported_aspect_ratios(tiles))):
        raise CheckpointError(f"{where}: vision_config.supported_aspect_ratios {ratios!r} must list every (rows, cols) "
                              f"with rows*cols <= max_num_tiles={tiles}, as Meta's image transform may pick any of them")
    if "vision_output_dim" in vision and vision["vision_output_dim"] != (len(taps) + 1) * width:
        raise CheckpointError(f"{where}: vision_config.vision_output_dim {vision['vision_output_dim']} must be "
                              f"(len(intermediate_layers_indices) + 1) * hidden_size = {(len(taps) + 1) * width}")

    multiplier, multiple_of = _ffn_fields(text["hidden_size"], text["intermediate_size"])
    rope_theta, scaled = _rope_fields(text, where)
    values = dict(
        dim=text["hidden_size"],
        n_layers=text["num_hidden_layers"] - len(xattn),
        n_heads=text["num_attention_heads"],
        n_kv_heads=text["num_key_value_heads"],
        vocab_size=text["vocab_size"],
        multiple_of=multiple_of,
        ffn_dim_multiplier=multiplier,
        norm_eps=float(text["rms_norm_eps"]),
        rope_theta=rope_theta,
        use_scaled_rope=scaled,
        vision_chunk_size=vision["image_size"],
        vision_max_num_chunks=tiles,  # HF has one number for the chunk count and the tile tables
        vision_num_cross_attention_layers=len(xattn),
        vision_width=width,
        vision_layers=vision["num_hidden_layers"],
        vision_heads=heads,
        vision_global_layers=vision["num_global_layers"],
        vision_patch_size=vision["patch_size"],
        vision_max_num_tiles=tiles,
        vision_mlp_ratio=vision["intermediate_size"] / width,
        vision_return_intermediate=tuple(taps),
        n_learnable_embeddings=_N_LEARNABLE,
    )
    try:
        args = ModelArgs(name=name, **values, **runtime)
    except (ConfigError, TypeError, ZeroDivisionError) as err:
        raise CheckpointError(f"{where}: {_one_line(err)}") from None
    implied = [layer + j for j, layer in enumerate(args.fusion_schedule)]
    if xattn != implied:
        raise CheckpointError(f"{where}: text_config.cross_attention_layers {xattn} are not where Meta's fusion schedule puts "
                              f"{len(xattn)} cross-attention blocks among {args.n_layers} self-attention layers ({implied}); "
                              "this model cannot run that layer order")
    return args


# =====================================================================================================
# Tensor sources: name -> shape, dtype, tensor
# =====================================================================================================


class _Source:
    """Tensors of a checkpoint by name; `get` returns a CPU tensor (optionally only rows `rows`),
    possibly a view of a memory-mapped file, and `release` is called once it has been copied."""

    row_views = False  # True when get(key, rows) is a cheap view, so a big tensor can be copied block by block

    def keys(self) -> list[str]: ...
    def shape(self, key: str) -> tuple[int, ...]: ...
    def dtype_name(self, key: str) -> str: ...
    def is_float(self, key: str) -> bool: ...
    def itemsize(self, key: str) -> int: ...
    def get(self, key: str, rows: slice | None = None) -> torch.Tensor: ...
    def release(self, key: str, rows: slice | None = None) -> None: ...
    def display(self, key: str) -> str:
        return key


def _load_pth(path: Path) -> dict[str, torch.Tensor]:
    try:  # mapped, unless in torch's pre-1.6 format (not a zip file), which only loads whole (more memory, the same tensors)
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        culprit = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module \S+ is blocked)", str(err))
        if culprit:
            raise CheckpointError(f"{path}: refused to unpickle: the file would run code when loaded (it calls {culprit[1]}); "
                                  "nothing was executed. Only tensors are accepted: get the weights from a trusted source") from None
        stop = re.search(r"WeightsUnpickler error:\s*([^\n.]+)", str(err))  # e.g. random bytes: "Unsupported operand 227"
        raise CheckpointError(f"{path}: cannot read it as a torch checkpoint (the safe loader stopped: {stop[1].strip() if stop else 'unreadable'}); "
                              "nothing was executed. The file is truncated or corrupt, or not saved by torch.save: re-download it") from None
    except PermissionError:
        raise _permission_denied(path) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read it as a torch checkpoint ({_gist(err)}); "
                              "the file is truncated or corrupt, or not saved by torch.save: re-download it") from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a flat dict of tensor names to tensors (Meta's consolidated layout), "
                              f"got {type(sd).__name__}; re-save it with torch.save(model.state_dict())")
    names = [repr(k) for k in sd if not isinstance(k, str)]
    if names:
        raise CheckpointError(f"{path}: expected a flat dict of tensor names to tensors (Meta's consolidated layout), but its keys"
                              f" include {_listed(names)}, which {'is' if len(names) == 1 else 'are'} not a name; re-save it with"
                              " torch.save(model.state_dict())")
    odd = [f"{k!r} ({type(v).__name__})" for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise CheckpointError(f"{path}: expected a flat dict of tensor names to tensors (Meta's consolidated layout), but "
                              f"{_listed(odd)} {'is not a tensor' if len(odd) == 1 else 'are not tensors'}; a training checkpoint"
                              " holds the weights under one key: save that state_dict alone with torch.save")
    return sd


def model_parallel_dim(name: str) -> int | None:
    """The dim fairscale splits a Meta parameter along across model-parallel shards (None: replicated).

    Meta's model (llama_models/llama3/multimodal/model.py) uses ColumnParallelLinear (split dim 0, bias
    too) for wq/wk/wv, w1/w3, output, the vision attention q/k/v, c_fc, the patch Linear and
    vision_projection; RowParallelLinear (split dim 1, bias whole) for wo, w2 and c_proj; and
    VocabParallelEmbedding (split dim 0) for tok_embeddings and learnable_embedding. HF's converter
    (convert_mllama_weights_to_hf.py @ 39f542c, run on the 8-shard 90B) concatenates the same set.
    Meta's own `llama_models/checkpoint.py: reshard_mp` agrees except that it copies vision_projection.bias
    and learnable_embedding from shard 0; a checkpoint that really holds full copies of a tensor in every
    shard is read that way too (see `_MetaSource`). Up to 8 shards no head is replicated (text: `if
    world_size > 8`; vision: `if world_size > 16`)."""
    if re.fullmatch(r"text_model\.(tok_embeddings|learnable_embedding|output)\.weight", name):
        return 0
    if re.fullmatch(r"text_model\.(layers|cross_attention_layers)\.\d+\.(attention\.w[qkv]|feed_forward\.w[13])\.weight", name):
        return 0
    if re.fullmatch(r"text_model\.(layers|cross_attention_layers)\.\d+\.(attention\.wo|feed_forward\.w2)\.weight", name):
        return 1
    if re.fullmatch(r"vision_model\.vision_encoder\.(transformer|global_transformer)\.resblocks\.\d+\.(attn\.w[qkv]\.weight|mlp\.c_fc\.(weight|bias))", name):
        return 0
    if re.fullmatch(r"vision_model\.vision_encoder\.(transformer|global_transformer)\.resblocks\.\d+\.(attn\.wo|mlp\.c_proj)\.weight", name):
        return 1
    if name in ("vision_model.vision_encoder.conv1._linear.weight", "vision_model.vision_projection.weight", "vision_model.vision_projection.bias"):
        return 0
    return None


class _MetaSource(_Source):
    """One consolidated file, or model-parallel shards merged on the fly: tensors fairscale splits are
    concatenated along `model_parallel_dim`, replicated ones must be equal in every shard."""

    MAX_SHARDS = 8  # beyond this Meta replicates key/value heads across shards; not merged here

    def __init__(self, files: tuple[Path, ...], args: ModelArgs, expected: dict[str, tuple[int, ...]]) -> None:
        self.files, self.expected = files, expected
        n = len(files)
        if n > self.MAX_SHARDS:
            raise CheckpointError(f"{files[0].parent}: {n} model-parallel shards; only up to {self.MAX_SHARDS} "
                                  "can be merged (more replicate heads); merge them into one consolidated.pth first")
        for what, size in (("n_kv_heads", args.n_kv_heads), ("n_heads", args.n_heads), ("vision_heads", args.vision_heads)):
            if size % n:
                raise CheckpointError(f"{files[0].parent}: {n} shards cannot split {what}={size}; the shards do not belong to params.json")
        self.shards = [_load_pth(f) for f in files]
        first = set(self.shards[0])
        for f, sd in zip(files[1:], self.shards[1:]):
            if set(sd) != first:
                diff = sorted(first.symmetric_difference(sd))
                raise CheckpointError(f"{f}: holds different tensor names than {files[0].name} ({_listed(diff)}); the shards are from different checkpoints")

    def _split_dim(self, key: str) -> int | None:
        """The dim to concatenate along, or None to take the (equal) copies of a replicated tensor."""
        dim = model_parallel_dim(key) if len(self.shards) > 1 else None
        shapes = [tuple(sd[key].shape) for sd in self.shards]
        if dim is not None and len(shapes[0]) > dim and all(s == self.expected.get(key) for s in shapes):
            return None  # full copies in every shard (what Meta's reshard_mp assumes for some tensors)
        return dim

    def keys(self) -> list[str]:
        return list(self.shards[0])

    def shape(self, key: str) -> tuple[int, ...]:
        shapes = [tuple(sd[key].shape) for sd in self.shards]
        dim = self._split_dim(key)
        if dim is None or len(shapes[0]) <= dim:
            return shapes[0] if len(set(shapes)) == 1 else ()  # () never matches a parameter: reported as mis-shaped
        if len({s[:dim] + s[dim + 1:] for s in shapes}) != 1:
            return ()
        return shapes[0][:dim] + (sum(s[dim] for s in shapes),) + shapes[0][dim + 1:]

    def dtype_name(self, key: str) -> str:
        return str(self.shards[0][key].dtype).removeprefix("torch.")

    def is_float(self, key: str) -> bool:
        return all(sd[key].dtype in FLOAT_DTYPES for sd in self.shards)

    def itemsize(self, key: str) -> int:
        return self.shards[0][key].element_size()

    def get(self, key: str, rows: slice | None = None) -> torch.Tensor:
        parts = [sd[key] for sd in self.shards]
        if (dim := self._split_dim(key)) is not None:
            out = torch.cat(parts, dim=dim)
        else:
            for f, p in zip(self.files[1:], parts[1:]):
                if not torch.equal(p, parts[0]):
                    raise CheckpointError(f"{f}: replicated tensor {key} differs from {self.files[0].name}'s, so these shards are not "
                                          "the model-parallel split of a Meta checkpoint; merge them into one consolidated.pth first")
            out = parts[0]
        return out if rows is None else out[rows]


_TORCH_DTYPES = {**_SAFETENSORS_FLOAT, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                 "U8": torch.uint8, "BOOL": torch.bool}


class _SafetensorsFile:
    """One .safetensors file, memory-mapped. `read` returns a view of the file's bytes; the loader
    copies each tensor into the model and then `release`s those bytes, so the mapped pages leave
    this process's memory as loading goes and peak RSS stays near the weights. The mapping is
    private (copy-on-write) and never written. Format: 8-byte little-endian header length, a
    JSON header {name: {dtype, shape, data_offsets}}, then the raw data."""

    def __init__(self, path: Path) -> None:
        self.path = path
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("shorter than a safetensors header")
            n = int.from_bytes(head, "little")
            if n > size - 8 or n > 100 << 20:
                raise ValueError(f"header length {n} does not fit in a {size}-byte file")
            header = json.loads(f.read(n))
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        header.pop("__metadata__", None)
        self.base = 8 + n
        self.meta = header
        for key, info in header.items():
            start, end = info["data_offsets"]
            if self.base + end > size:
                raise ValueError(f"{key} ends at byte {self.base + end} but the file has {size} bytes")

    def keys(self) -> list[str]:
        return list(self.meta)

    def shape(self, key: str) -> list[int]:
        return self.meta[key]["shape"]

    def dtype_name(self, key: str) -> str:
        return self.meta[key]["dtype"]

    def _span(self, key: str, rows: slice | None) -> tuple[int, int, list[int]]:
        """File offsets [start, end) and shape of the tensor, or of its rows `rows`."""
        info = self.meta[key]
        shape = list(info["shape"])
        start, end = info["data_offsets"]
        if rows is not None:  # rows of a row-major tensor are contiguous bytes
            row_bytes = (end - start) // shape[0] if shape and shape[0] else 0
            first, stop, _ = rows.indices(shape[0])
            start, end, shape[0] = start + first * row_bytes, start + stop * row_bytes, stop - first
        return self.base + start, self.base + end, shape

    def read(self, key: str, rows: slice | None = None) -> torch.Tensor:
        """A view of the file (copy it before keeping it)."""
        dtype = _TORCH_DTYPES[self.meta[key]["dtype"]]
        start, end, shape = self._span(key, rows)
        if end == start:
            return torch.empty(shape, dtype=dtype)
        with warnings.catch_warnings():  # the mapping is writable in principle; torch cannot tell
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.frombuffer(self._map, dtype=dtype, count=(end - start) // dtype.itemsize, offset=start)
        return flat.view(shape)

    def release(self, key: str, rows: slice | None = None) -> None:
        """Drop the mapped pages of a tensor already copied (they are re-read if touched again)."""
        start, end, _ = self._span(key, rows)
        page = mmap.PAGESIZE
        first = start // page * page
        if end > first and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED, first, end - first)


class _SafetensorsSource(_Source):
    """model.safetensors, or the shards an index json names; HF key layouts mapped to canonical names:
    `text.` (decoder), `lm_head.`, `vision.` (vision model), `projector.`."""

    PREFIXES = (  # (HF prefix, canonical prefix); the re-rooted transformers >= 4.52 names first
        ("model.language_model.", "text."),
        ("model.vision_model.", "vision."),
        ("model.multi_modal_projector.", "projector."),
        ("language_model.model.", "text."),
        ("language_model.lm_head.", "lm_head."),
        ("lm_head.", "lm_head."),
        ("vision_model.", "vision."),
        ("multi_modal_projector.", "projector."),
    )

    def __init__(self, weights: Path) -> None:
        if weights.name == HF_INDEX:
            index = _read_json(weights)
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{weights}: has no weight_map; re-download the index file")
            outside = [f for f in weight_map.values() if not isinstance(f, str) or Path(f).name != f or f in ("", ".", "..")]
            if outside:
                raise CheckpointError(f"{weights}: its weight_map holds {_listed(map(repr, dict.fromkeys(map(str, outside))))} where"
                                      " a file name in its folder goes; re-download the index file")
            files = sorted(set(weight_map.values()))
            broken = [f for f in files if _broken_link(weights.parent / f)]
            if broken:
                raise CheckpointError(f"{weights.parent}: shard file(s) {_listed(broken)} are broken symbolic links; point them at the"
                                      " files, or copy the files in")
            missing = [f for f in files if not (weights.parent / f).is_file()]
            if missing:
                raise CheckpointError(f"{weights.parent}: shard file(s) {_listed(missing)} listed in {HF_INDEX} are missing; download them")
        else:
            files, weight_map = [weights.name], None

        self.handles: dict[str, Any] = {}
        self.file_of: dict[str, str] = {}  # original key -> file
        for f in files:
            path = weights.parent / f
            try:
                handle = _SafetensorsFile(path)
                keys = handle.keys()
            except PermissionError:
                raise _permission_denied(path) from None
            except Exception as err:  # a truncated header or data, bad JSON, OSError
                raise CheckpointError(f"{path}: not a readable safetensors file ({_one_line(err)}); "
                                      "it is truncated or corrupt: re-download it") from None
            self.handles[f] = handle
            for k in keys:
                if weight_map is None or weight_map.get(k) == f:
                    self.file_of[k] = f
        if weight_map is not None:
            lost = [k for k, f in weight_map.items() if self.file_of.get(k) != f]
            if lost:
                raise CheckpointError(f"{weights}: tensor(s) {_listed(lost)} are not in the files the index names; re-download the checkpoint")

        self.original: dict[str, str] = {}  # canonical -> original key
        self.unknown: list[str] = []
        for key in self.file_of:
            canon = self._canonical(key)
            if canon is None:
                self.unknown.append(key)
            elif canon in self.original:
                raise CheckpointError(f"{weights.parent}: {self.original[canon]} and {key} are the same weight in two key layouts; keep one")
            else:
                self.original[canon] = key

    @classmethod
    def _canonical(cls, key: str) -> str | None:
        for old, new in cls.PREFIXES:
            if key.startswith(old):
                return new + key[len(old):]
        return None

    def _file(self, key: str) -> tuple[_SafetensorsFile, str]:
        original = self.original[key]
        return self.handles[self.file_of[original]], original

    def keys(self) -> list[str]:
        return list(self.original)

    def shape(self, key: str) -> tuple[int, ...]:
        handle, original = self._file(key)
        return tuple(handle.shape(original))

    def dtype_name(self, key: str) -> str:
        handle, original = self._file(key)
        return handle.dtype_name(original)

    def is_float(self, key: str) -> bool:
        return self.dtype_name(key) in _SAFETENSORS_FLOAT

    def itemsize(self, key: str) -> int:
        return _SAFETENSORS_ITEMSIZE.get(self.dtype_name(key), 2)

    def get(self, key: str, rows: slice | None = None) -> torch.Tensor:
        handle, original = self._file(key)
        try:
            return handle.read(original, rows)
        except Exception as err:
            raise CheckpointError(f"{self.file_of[original]}: cannot read {original} ({_one_line(err)}); re-download the file") from None

    row_views = True

    def release(self, key: str, rows: slice | None = None) -> None:
        handle, original = self._file(key)
        handle.release(original, rows)

    def display(self, key: str) -> str:
        """The checkpoint's own name for a canonical key; for a missing one, the name in the layout the file uses."""
        if key in self.original:
            return self.original[key]
        rerooted = any(k.startswith(("model.", "lm_head.")) for k in self.original.values())
        for old, new in self.PREFIXES[:3] + (("lm_head.", "lm_head."),) if rerooted else self.PREFIXES[3:]:
            if key.startswith(new):
                return old + key[len(new):]
        return key


# =====================================================================================================
# Recipes: for each of our parameters, which source tensor and how to convert it
# =====================================================================================================


@dataclass(frozen=True)
class _Recipe:
    key: str  # source tensor
    shape: tuple[int, ...]  # the shape the source tensor must have
    convert: Callable[[torch.Tensor], torch.Tensor] | None = None  # source tensor -> ours
    rows: slice | None = None  # read only these rows of the source


def _meta_recipes(model: nn.Module) -> dict[str, _Recipe]:
    return {name: _Recipe(name, tuple(p.shape)) for name, p in model.named_parameters()}


_META_DERIVED = {"text_model.rope.freqs"}  # a RoPE table some Meta checkpoints carry; recomputed, not loaded

# Meta suffix -> HF suffix, inside a decoder layer (self-attention / cross-attention) or a vision block.
_LAYER_NORMS_AND_MLP = {
    "attention_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight", "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
}
_SELF_LAYER = {
    "attention.wq.weight": "self_attn.q_proj.weight", "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight", "attention.wo.weight": "self_attn.o_proj.weight",
    **_LAYER_NORMS_AND_MLP,
}
_CROSS_LAYER = {
    "attention.wq.weight": "cross_attn.q_proj.weight", "attention.wk.weight": "cross_attn.k_proj.weight",
    "attention.wv.weight": "cross_attn.v_proj.weight", "attention.wo.weight": "cross_attn.o_proj.weight",
    "attention.q_norm.weight": "cross_attn.q_norm.weight", "attention.k_norm.weight": "cross_attn.k_norm.weight",
    **_LAYER_NORMS_AND_MLP,
    "gate_attn": "cross_attn_attn_gate", "gate_ffwd": "cross_attn_mlp_gate",
}
_VISION_BLOCK = {
    "attn.wq.weight": "self_attn.q_proj.weight", "attn.wk.weight": "self_attn.k_proj.weight",
    "attn.wv.weight": "self_attn.v_proj.weight", "attn.wo.weight": "self_attn.o_proj.weight",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
    "ln_1.weight": "input_layernorm.weight", "ln_1.bias": "input_layernorm.bias",
    "ln_2.weight": "post_attention_layernorm.weight", "ln_2.bias": "post_attention_layernorm.bias",
    "gate_attn": "gate_attn", "gate_ffn": "gate_ffn",
}
_VISION_SIMPLE = {
    "class_embedding": "class_embedding", "positional_embedding": "gated_positional_embedding.embedding",
    "gated_positional_embedding_gate": "gated_positional_embedding.gate",
    "pre_tile_pos_embed.gate": "pre_tile_positional_embedding.gate",
    "post_tile_pos_embed.gate": "post_tile_positional_embedding.gate",
    "ln_pre.weight": "layernorm_pre.weight", "ln_pre.bias": "layernorm_pre.bias",
    "ln_post.weight": "layernorm_post.weight", "ln_post.bias": "layernorm_post.bias",
}
_TILE_TABLES = {
    "gated_positional_embedding": "gated_positional_embedding.tile_embedding.weight",
    "pre_tile_pos_embed.embedding": "pre_tile_positional_embedding.embedding.weight",
    "post_tile_pos_embed.embedding": "post_tile_positional_embedding.embedding.weight",
}


def hf_layer_indices(args: ModelArgs) -> tuple[list[int], list[int]]:
    """Merged HF layer index of each cross-attention block j (x(j)) and of each self-attention layer i (s(i)):
    block j runs right before text layer fusion_schedule[j], so it sits at fusion_schedule[j] + j."""
    xs = [layer + j for j, layer in enumerate(args.fusion_schedule)]
    ss = [k for k in range(args.n_layers + len(xs)) if k not in set(xs)]
    return xs, ss


def _unpermute_rope(n_heads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """HF rows (head, re/im, pair) -> Meta rows (head, pair, re/im): rotate_half halves -> interleaved pairs."""
    def convert(w: torch.Tensor) -> torch.Tensor:
        out_dim, in_dim = w.shape
        return w.reshape(n_heads, 2, out_dim // n_heads // 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)
    return convert


def _unflatten_tile_table(ratios: list[list[int]], shape: tuple[int, ...], display: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """HF [1 + n_ratios, T * tokens * W] (row id = 1 + index of (rows, cols) in `ratios`: that ratio's tiles
    in row-major order) -> Meta [T, T, tokens, W]. Entry (r, c) is read from the first ratio that covers it;
    every other ratio covering it must hold the same values. Entries no ratio covers (r * c too large) are
    never read by the model and become zeros."""
    t, _, ntok, width = shape

    def convert(table: torch.Tensor) -> torch.Tensor:
        table = table.reshape(len(ratios) + 1, t, ntok, width)
        out = torch.zeros(shape, dtype=table.dtype)
        for r in range(t):
            for c in range(t):
                found = [(i + 1) for i, (h, w) in enumerate(ratios) if r < h and c < w]
                if not found:
                    continue
                first = table[found[0], r * ratios[found[0] - 1][1] + c]
                for ar_id in found[1:]:
                    if not torch.equal(table[ar_id, r * ratios[ar_id - 1][1] + c], first):
                        raise CheckpointError(
                            f"{display}: tile ({r}, {c}) differs between aspect-ratio ids {found[0]} and {ar_id}; Meta's layout has "
                            "one table shared by all aspect ratios, so these weights (fine-tuned per id?) cannot be loaded")
                out[r, c] = first
        return out
    return convert


def _hf_recipes(model: nn.Module, args: ModelArgs, ratios: list[list[int]], source: _Source) -> dict[str, _Recipe]:
    xs, ss = hf_layer_indices(args)
    p, vocab = args.vision_patch_size, args.vocab_size
    emb_shape = (vocab + args.n_learnable_embeddings, args.dim)
    out: dict[str, _Recipe] = {}
    for name, param in model.named_parameters():
        shape = tuple(param.shape)
        recipe = None
        if m := re.fullmatch(r"text_model\.layers\.(\d+)\.(.+)", name):
            key = f"text.layers.{ss[int(m[1])]}.{_SELF_LAYER[m[2]]}"
            convert = {"attention.wq.weight": _unpermute_rope(args.n_heads), "attention.wk.weight": _unpermute_rope(args.n_kv_heads)}.get(m[2])
            recipe = _Recipe(key, shape, convert)
        elif m := re.fullmatch(r"text_model\.cross_attention_layers\.(\d+)\.(.+)", name):
            recipe = _Recipe(f"text.layers.{xs[int(m[1])]}.{_CROSS_LAYER[m[2]]}", shape)  # no RoPE in cross-attention
        elif name == "text_model.tok_embeddings.weight":
            recipe = _Recipe("text.embed_tokens.weight", emb_shape, rows=slice(0, vocab))
        elif name == "text_model.learnable_embedding.weight":
            recipe = _Recipe("text.embed_tokens.weight", emb_shape, rows=slice(vocab, None))
        elif name == "text_model.norm.weight":
            recipe = _Recipe("text.norm.weight", shape)
        elif name == "text_model.output.weight":
            recipe = _Recipe("lm_head.weight", shape)
        elif m := re.fullmatch(r"vision_model\.vision_projection\.(weight|bias)", name):
            recipe = _Recipe(f"projector.{m[1]}", shape)
        elif m := re.fullmatch(r"vision_model\.vision_encoder\.(transformer|global_transformer)\.resblocks\.(\d+)\.(.+)", name):
            recipe = _Recipe(f"vision.{m[1]}.layers.{m[2]}.{_VISION_BLOCK[m[3]]}", shape)
        elif (rest := name.removeprefix("vision_model.vision_encoder.")) == "conv1._linear.weight":
            recipe = _Recipe("vision.patch_embedding.weight", (shape[0], 3, p, p), lambda w: w.reshape(w.shape[0], -1))
        elif rest in _TILE_TABLES:
            key = f"vision.{_TILE_TABLES[rest]}"
            hf_shape = (len(ratios) + 1, shape[0] * math.prod(shape[2:]))  # [1 + n_ratios, T * tokens * W]
            recipe = _Recipe(key, hf_shape, _unflatten_tile_table(ratios, shape, source.display(key)))
        elif rest in _VISION_SIMPLE:
            recipe = _Recipe(f"vision.{_VISION_SIMPLE[rest]}", shape)
        if recipe is None:  # a parameter the mapping does not know: a bug here, not in the checkpoint
            raise CheckpointError(f"internal: no Hugging Face name for parameter {name}")
        out[name] = recipe
    return out


def _shard_share(pairs: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> Fraction | None:
    """The share r < 1 where every (shape, expected) pair differs in one dimension only, the shape
    holding r of the expected there: m of k model-parallel shards, the others left out. Else None."""
    shares = set()
    for shape, expected in pairs:
        differ = [(a, b) for a, b in zip(shape, expected) if a != b]
        if len(shape) != len(expected) or len(differ) != 1 or not 0 < differ[0][0] < differ[0][1]:
            return None
        shares.add(Fraction(*differ[0]))
    return shares.pop() if len(shares) == 1 else None


def _check_recipes(recipes: dict[str, _Recipe], source: _Source, ignorable: set[str], where: str) -> None:
    """Missing, unexpected, mis-shaped and non-float tensors, all reported in one line."""
    needed = {r.key: r.shape for r in recipes.values()}
    have = set(source.keys())
    missing = [source.display(k) for k in needed if k not in have]
    unexpected = [source.display(k) for k in source.keys() if k not in needed and k not in ignorable]
    unexpected += list(getattr(source, "unknown", []))
    wrong = [(k, tuple(source.shape(k)), tuple(s)) for k, s in needed.items() if k in have and source.shape(k) != s]
    misshaped = [f"{source.display(k)} {list(got)} (expected {list(want)})" for k, got, want in wrong]
    not_float = [f"{source.display(k)} ({source.dtype_name(k)})" for k in needed if k in have and not source.is_float(k)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_listed(unexpected)}")
    if misshaped:
        problems.append(f"{len(misshaped)} with the wrong shape: {_listed(misshaped)}")
        share = _shard_share([(got, want) for _, got, want in wrong])
        if share:
            here = len(getattr(source, "files", ())) or share.numerator  # Meta's shard files, counted; else the share's
            problems.append(f"each of them {share} of its expected size along one dimension, as if the weights were split into "
                            f"{here * share.denominator // share.numerator} model-parallel shards with {here} of them here: "
                            "are shard files missing?")
    if problems:
        raise CheckpointError(f"{where}: the tensors do not fit the model its config describes ({'; '.join(problems)}); "
                              "check that the config file and the weights belong together and are complete")
    if not_float:
        raise CheckpointError(f"{where}: {len(not_float)} tensor(s) are not floating point: {_listed(not_float)}; "
                              "quantized or integer checkpoints are not supported: use the bf16 weights")


# =====================================================================================================
# Loading
# =====================================================================================================


def _set_parameter(modules: dict[str, nn.Module], name: str, value: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = modules[module_name]
    old = module._parameters[leaf]
    module._parameters[leaf] = nn.Parameter(value, requires_grad=old.requires_grad)


def read_checkpoint_args(path: str | Path, **runtime) -> ModelArgs:
    """The config of a checkpoint folder, without reading any weights."""
    layout = detect_layout(path)
    if layout.kind == "meta":
        return args_from_params_json(layout.config, **runtime)
    name = layout.folder.resolve().name or "checkpoint"
    return args_from_hf_config(_read_json(layout.config), where=str(layout.config), name=name, **runtime)


COPY_BLOCK_BYTES = 16 << 20


def _load_tensor(source: _Source, recipe: _Recipe, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The model's own copy of one checkpoint tensor (it never shares memory with a file). A
    tensor read as views of a mapped file is copied a block of rows at a time, each block's
    pages released once copied, so peak memory stays at the weights plus one block."""
    shape = source.shape(recipe.key)
    if recipe.convert is not None or not source.row_views or not shape:
        raw = source.get(recipe.key, recipe.rows)  # may be a view of a memory-mapped file
        value = recipe.convert(raw) if recipe.convert is not None else raw
        in_file = value.untyped_storage().data_ptr() == raw.untyped_storage().data_ptr()  # else conversion made a new tensor
        value = value.to(device=device, dtype=dtype, copy=in_file).contiguous()
        source.release(recipe.key, recipe.rows)
        return value
    first, stop, _ = (recipe.rows or slice(None)).indices(shape[0])
    out = torch.empty((stop - first, *shape[1:]), dtype=dtype, device=device)
    step = max(1, COPY_BLOCK_BYTES // max(1, math.prod(shape[1:]) * source.itemsize(recipe.key)))
    for start in range(first, stop, step):
        block = slice(start, min(start + step, stop))
        out[block.start - first : block.stop - first].copy_(source.get(recipe.key, block))
        source.release(recipe.key, block)
    return out


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    progress: Progress | None = None,
    *,
    max_seq_len: int | None = None,
    max_batch_size: int | None = None,
    args_override: dict | None = None,
    setup_cache: bool = True,
) -> tuple[CrossAttentionTransformer, ModelArgs, Path | None]:
    """Load a Meta or Hugging Face Llama 3.2 Vision checkpoint folder.

    Returns (model in eval mode, with caches set up unless `setup_cache` is off, its ModelArgs, the
    tokenizer.model path or None). A caller that sets the caches up itself turns it off: two sets
    alive at once would double the peak (the causal mask alone is max_seq_len² bytes).
    `progress(done_bytes, total_bytes, tensor_name)` is called after each tensor. `max_seq_len` /
    `max_batch_size` are run-time sizes (the KV cache), not part of the checkpoint. `args_override`
    replaces ModelArgs fields after the config is read; it exists for tests and experiments, because
    Meta's params.json cannot describe a vision encoder other than the one Meta hard-codes."""
    if dtype not in FLOAT_DTYPES:
        raise CheckpointError(f"dtype {dtype} is not a floating-point dtype; use torch.bfloat16, torch.float16 or torch.float32")
    device = torch.device(device)
    layout = detect_layout(path)
    runtime = {k: v for k, v in (("max_seq_len", max_seq_len), ("max_batch_size", max_batch_size)) if v is not None}
    name = layout.folder.resolve().name or "checkpoint"

    if layout.kind == "meta":
        args = args_from_params_json(layout.config, **runtime)
    else:
        hf_config = _read_json(layout.config)
        args = args_from_hf_config(hf_config, where=str(layout.config), name=name, **runtime)
    if args_override:
        try:
            args = ModelArgs.from_dict({**args.to_dict(), **args_override})  # checks names, lists -> tuples
        except (ConfigError, TypeError) as err:
            raise CheckpointError(f"args_override: {_one_line(err)}") from None

    model = build_model(args, device="meta", dtype=dtype, seed=None, setup_cache=False)
    if layout.kind == "meta":
        source: _Source = _MetaSource(layout.weights, args, {n: tuple(p.shape) for n, p in model.named_parameters()})
        recipes, ignorable = _meta_recipes(model), _META_DERIVED
    else:
        source = _SafetensorsSource(layout.weights[0])
        ratios = hf_config["vision_config"]["supported_aspect_ratios"]
        recipes, ignorable = _hf_recipes(model, args, ratios, source), set()
    where = str(layout.weights[0] if len(layout.weights) == 1 else layout.folder)
    _check_recipes(recipes, source, ignorable, where)

    sizes = {n: math.prod(model.get_parameter(n).shape) * source.itemsize(r.key) for n, r in recipes.items()}
    total, done = sum(sizes.values()), 0
    if progress is not None:
        progress(0, total, "")
    modules = dict(model.named_modules())
    with torch.no_grad():
        for param_name, recipe in recipes.items():
            _set_parameter(modules, param_name, _load_tensor(source, recipe, device, dtype))
            done += sizes[param_name]
            if progress is not None:
                progress(done, total, param_name)

    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:  # every parameter has a recipe, so this is a bug here
        raise CheckpointError(f"internal: parameters left without weights: {_listed(left)}")
    if setup_cache:
        model.setup_cache(args.max_batch_size, device, dtype)
    return model.eval(), args, layout.tokenizer
