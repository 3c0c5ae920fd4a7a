"""Test helper: turn our model's config and weights into a Hugging Face `transformers` Mllama model.

Our parameter names are Meta's consolidated-checkpoint keys, so this is the job of HF's
`convert_mllama_weights_to_hf.py` (transformers @ 39f542c), redone from the mapping in the spec
(§4.2) for a single unsharded state dict of any size, the `tiny` preset included:

- self-attention q/k weights are permuted from Meta's interleaved RoPE pairs to HF's rotate_half
  halves (`_permute_for_rope`); cross-attention q/k are not (no RoPE there);
- the tile tables ([T, T, 1, W] and the gated [T, T, N, W]) are precomputed per aspect-ratio id,
  [1 + len(supported_aspect_ratios), T * tokens * W], row 0 (padding id) all zeros;
- the patch Linear [W, 3*p*p] becomes a Conv2d weight [W, 3, p, p] (Unfold order is (c, kh, kw));
- `tok_embeddings` and `learnable_embedding` are concatenated into one `embed_tokens` table;
- the two text layer lists are merged: cross-attention block j goes to merged index x(j) =
  range(freq - 1, n_layers + n_xattn, freq + 1)[j] with freq = ceil(n_layers / n_xattn), and
  self-attention layer i to the i-th remaining index s(i).

Key layouts. HF's converter writes the hub layout (`language_model.model.*`, `language_model.lm_head`,
`vision_model.*`, `multi_modal_projector.*`). transformers >= 5 re-roots the model
(`MllamaForConditionalGeneration.model.{vision_model, language_model, multi_modal_projector}` and a
top-level `lm_head`, where `model.language_model` is the bare `MllamaTextModel`) and renames hub
checkpoints on load (`conversion_mapping.py`, "mllama"). `meta_to_hf_state_dict` returns the keys of
the *installed* model's `state_dict()` by default (`layout="installed"`), or the converter's hub keys
(`layout="hub"`).
"""

from __future__ import annotations

import math
import re

import torch
from transformers import MllamaConfig
from transformers.models.mllama.configuration_mllama import MllamaTextConfig, MllamaVisionConfig

from model.args import ModelArgs

# Meta's fixed special ids (spec §1.3, §4.1).
BOS_ID = 128000
EOS_ID = 128001
PAD_ID = 128004
IMAGE_TOKEN_INDEX = 128256  # <|image|> in the model input (learnable_embedding[0])
HF_MAX_POSITION_EMBEDDINGS = 131072


def supported_aspect_ratios(max_num_tiles: int) -> list[list[int]]:
    """HF's `get_all_supported_aspect_ratios` order: outer loop over the first entry, inner over the second.
    The entries are used as (rows, cols) everywhere that matters (the converter indexes the tile table
    `[:rows, :cols]`, the image processor looks up `(num_tiles_height, num_tiles_width)`)."""
    return [[a, b] for a in range(1, max_num_tiles + 1) for b in range(1, max_num_tiles + 1) if a * b <= max_num_tiles]


def aspect_ratio_id(rows: int, cols: int, max_num_tiles: int) -> int:
    """1-based index of (rows, cols) in `supported_aspect_ratios`; 0 is HF's padding id."""
    return supported_aspect_ratios(max_num_tiles).index([rows, cols]) + 1


def cross_attention_layer_indices(args: ModelArgs) -> list[int]:
    """x(j): merged-list index of cross-attention block j (11B: [3, 8, 13, ..., 38])."""
    n_x = args.vision_num_cross_attention_layers
    freq = math.ceil(args.n_layers / n_x)
    return list(range(freq - 1, args.n_layers + n_x, freq + 1))


def self_attention_layer_indices(args: ModelArgs) -> list[int]:
    """s(i): merged-list index of self-attention layer i."""
    xs = set(cross_attention_layer_indices(args))
    return [k for k in range(args.n_layers + args.vision_num_cross_attention_layers) if k not in xs]


def _check_schedule(args: ModelArgs) -> None:
    """HF's merged order is only the same computation as Meta's if block j runs right before text
    layer fusion_schedule[j], i.e. x(j) == fusion_schedule[j] + j and there are n_xattn of them."""
    xs = cross_attention_layer_indices(args)
    meta = [layer + j for j, layer in enumerate(args.fusion_schedule)]
    if xs != meta:
        raise ValueError(f"HF cross_attention_layers {xs} do not reproduce Meta's fusion schedule {args.fusion_schedule}")


def hf_config_from_args(args: ModelArgs) -> MllamaConfig:
    """An `MllamaConfig` describing the same network as `args` (what the HF converter writes)."""
    _check_schedule(args)
    if args.vision_max_num_chunks != args.vision_max_num_tiles:
        # HF has one `max_num_tiles` for both the chunk count and the tile tables.
        raise ValueError("HF Mllama needs vision_max_num_chunks == vision_max_num_tiles")
    if args.n_learnable_embeddings != 8:
        raise ValueError("HF Mllama hard-codes 8 extra embedding rows")
    if args.use_scaled_rope:
        rope = {
            "rope_type": "llama3",
            "rope_theta": float(args.rope_theta),
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
    else:
        rope = {"rope_type": "default", "rope_theta": float(args.rope_theta)}
    vision = MllamaVisionConfig(
        hidden_size=args.vision_width,
        hidden_act="gelu",
        num_hidden_layers=args.vision_layers,
        num_global_layers=args.vision_global_layers,
        attention_heads=args.vision_heads,
        num_channels=3,
        intermediate_size=int(args.vision_mlp_ratio * args.vision_width),
        vision_output_dim=args.vision_input_dim,
        image_size=args.vision_chunk_size,
        patch_size=args.vision_patch_size,
        norm_eps=1e-5,
        max_num_tiles=args.vision_max_num_tiles,
        intermediate_layers_indices=list(args.vision_return_intermediate),
        supported_aspect_ratios=supported_aspect_ratios(args.vision_max_num_chunks),
    )
    text = MllamaTextConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.dim,
        hidden_act="silu",
        num_hidden_layers=args.n_layers + args.vision_num_cross_attention_layers,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_kv_heads,
        intermediate_size=args.ffn_hidden_dim,
        rope_parameters=rope,  # transformers 5 name; the converter passes rope_theta= / rope_scaling= (same dict)
        rms_norm_eps=args.norm_eps,
        max_position_embeddings=HF_MAX_POSITION_EMBEDDINGS,
        cross_attention_layers=cross_attention_layer_indices(args),
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        tie_word_embeddings=False,
    )
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN_INDEX)


def _permute_for_rope(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[H*Dh, D] with rows (head, pair, re/im) -> rows (head, re/im, pair): interleaved -> rotate_half."""
    out_dim, in_dim = w.shape
    return w.reshape(n_heads, out_dim // n_heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def _precompute_tile_table(table: torch.Tensor, max_num_tiles: int) -> torch.Tensor:
    """[T, T, tokens, W] -> [1 + n_ratios, T * tokens * W]: row id holds the tiles of that aspect ratio
    in row-major order, then zeros; row 0 (padding) is all zeros."""
    t, _, ntok, width = table.shape
    ratios = supported_aspect_ratios(max_num_tiles)
    out = torch.zeros(len(ratios) + 1, t, ntok, width, dtype=table.dtype)
    for i, (rows, cols) in enumerate(ratios):
        out[i + 1, : rows * cols] = table[:rows, :cols].reshape(rows * cols, ntok, width)
    return out.flatten(1)


# Meta suffix (after the layer prefix) -> HF suffix. Exact matches on whole names.
_SELF_LAYER = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
}
_CROSS_LAYER = {
    "attention.wq.weight": "cross_attn.q_proj.weight",
    "attention.wk.weight": "cross_attn.k_proj.weight",
    "attention.wv.weight": "cross_attn.v_proj.weight",
    "attention.wo.weight": "cross_attn.o_proj.weight",
    "attention.q_norm.weight": "cross_attn.q_norm.weight",
    "attention.k_norm.weight": "cross_attn.k_norm.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "gate_attn": "cross_attn_attn_gate",
    "gate_ffwd": "cross_attn_mlp_gate",
}
_VISION_BLOCK = {
    "attn.wq.weight": "self_attn.q_proj.weight",
    "attn.wk.weight": "self_attn.k_proj.weight",
    "attn.wv.weight": "self_attn.v_proj.weight",
    "attn.wo.weight": "self_attn.o_proj.weight",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
    "ln_1.weight": "input_layernorm.weight",
    "ln_1.bias": "input_layernorm.bias",
    "ln_2.weight": "post_attention_layernorm.weight",
    "ln_2.bias": "post_attention_layernorm.bias",
    "gate_attn": "gate_attn",
    "gate_ffn": "gate_ffn",
}
_VISION_SIMPLE = {
    "class_embedding": "class_embedding",
    "positional_embedding": "gated_positional_embedding.embedding",
    "gated_positional_embedding_gate": "gated_positional_embedding.gate",
    "pre_tile_pos_embed.gate": "pre_tile_positional_embedding.gate",
    "post_tile_pos_embed.gate": "post_tile_positional_embedding.gate",
    "ln_pre.weight": "layernorm_pre.weight",
    "ln_pre.bias": "layernorm_pre.bias",
    "ln_post.weight": "layernorm_post.weight",
    "ln_post.bias": "layernorm_post.bias",
}

# Hub (converter) prefix -> installed transformers-5 prefix; order matters (lm_head before the rest).
_HUB_TO_INSTALLED = (
    ("language_model.lm_head.", "lm_head."),
    ("language_model.model.", "model.language_model."),
    ("vision_model.", "model.vision_model."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
)


def hub_to_installed_key(key: str) -> str:
    for old, new in _HUB_TO_INSTALLED:
        if key.startswith(old):
            return new + key[len(old):]
    raise KeyError(key)


def meta_to_hf_state_dict(args: ModelArgs, sd: dict[str, torch.Tensor], layout: str = "installed") -> dict[str, torch.Tensor]:
    """Meta-named state dict (ours) -> HF Mllama state dict. Every input key must be used exactly once."""
    if layout not in ("installed", "hub"):
        raise ValueError(f"layout must be 'installed' or 'hub', not {layout!r}")
    _check_schedule(args)
    xs, ss = cross_attention_layer_indices(args), self_attention_layer_indices(args)
    p, tiles = args.vision_patch_size, args.vision_max_num_tiles
    out: dict[str, torch.Tensor] = {}
    unused = []

    def put(key: str, value: torch.Tensor) -> None:
        assert key not in out, f"duplicate HF key {key}"
        out[key] = value.detach().clone().contiguous()

    for key, w in sd.items():
        if m := re.fullmatch(r"text_model\.layers\.(\d+)\.(.+)", key):
            i, rest = int(m[1]), m[2]
            if rest not in _SELF_LAYER:
                unused.append(key)
                continue
            if rest == "attention.wq.weight":
                w = _permute_for_rope(w, args.n_heads)
            elif rest == "attention.wk.weight":
                w = _permute_for_rope(w, args.n_kv_heads)
            put(f"language_model.model.layers.{ss[i]}.{_SELF_LAYER[rest]}", w)
        elif m := re.fullmatch(r"text_model\.cross_attention_layers\.(\d+)\.(.+)", key):
            j, rest = int(m[1]), m[2]
            if rest not in _CROSS_LAYER:
                unused.append(key)
                continue
            if rest in ("gate_attn", "gate_ffwd"):
                w = w.reshape(1)
            put(f"language_model.model.layers.{xs[j]}.{_CROSS_LAYER[rest]}", w)  # no RoPE permutation
        elif key == "text_model.tok_embeddings.weight":
            put("language_model.model.embed_tokens.weight", torch.cat([w, sd["text_model.learnable_embedding.weight"]], 0))
        elif key == "text_model.learnable_embedding.weight":
            continue  # concatenated above
        elif key == "text_model.norm.weight":
            put("language_model.model.norm.weight", w)
        elif key == "text_model.output.weight":
            put("language_model.lm_head.weight", w)
        elif key in ("vision_model.vision_projection.weight", "vision_model.vision_projection.bias"):
            put("multi_modal_projector." + key.rsplit(".", 1)[1], w)
        elif m := re.fullmatch(r"vision_model\.vision_encoder\.(transformer|global_transformer)\.resblocks\.(\d+)\.(.+)", key):
            if m[3] not in _VISION_BLOCK:
                unused.append(key)
                continue
            put(f"vision_model.{m[1]}.layers.{m[2]}.{_VISION_BLOCK[m[3]]}", w)
        elif key.startswith("vision_model.vision_encoder."):
            rest = key[len("vision_model.vision_encoder."):]
            if rest == "conv1._linear.weight":
                put("vision_model.patch_embedding.weight", w.reshape(w.shape[0], 3, p, p))
            elif rest == "gated_positional_embedding":
                put("vision_model.gated_positional_embedding.tile_embedding.weight", _precompute_tile_table(w, tiles))
            elif rest in ("pre_tile_pos_embed.embedding", "post_tile_pos_embed.embedding"):
                which = rest.split("_", 1)[0]  # pre / post
                put(f"vision_model.{which}_tile_positional_embedding.embedding.weight", _precompute_tile_table(w, tiles))
            elif rest in _VISION_SIMPLE:
                w = w.reshape(1) if rest.endswith("gate") else w
                put(f"vision_model.{_VISION_SIMPLE[rest]}", w)
            else:
                unused.append(key)
        else:
            unused.append(key)
    if unused:
        raise KeyError(f"no HF mapping for: {unused}")
    if layout == "installed":
        out = {hub_to_installed_key(k): v for k, v in out.items()}
    return out


def build_hf_model(args: ModelArgs, our_state_dict: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32, attn_implementation: str = "eager"):
    """`MllamaForConditionalGeneration` holding our weights (strict load: no missing or extra keys)."""
    from transformers import MllamaForConditionalGeneration

    config = hf_config_from_args(args)
    config._attn_implementation = attn_implementation
    config.text_config._attn_implementation = attn_implementation
    config.vision_config._attn_implementation = attn_implementation
    model = MllamaForConditionalGeneration(config)  # random init on the CPU; every parameter is then overwritten
    hf_sd = meta_to_hf_state_dict(args, our_state_dict, layout="installed")
    model.load_state_dict(hf_sd, strict=True)
    model.to(dtype)
    return model.eval()

