import json
import re

import pytest

from model.args import PRESETS, ConfigError, ModelArgs, from_params_json, get_preset


def test_11b_and_90b_derived_sizes_match_meta():
    a11, a90 = PRESETS["11b-instruct"], PRESETS["90b-instruct"]
    assert a11.ffn_hidden_dim == 14336 and a90.ffn_hidden_dim == 28672
    assert a11.fusion_schedule == [3, 7, 11, 15, 19, 23, 27, 31]
    assert a90.fusion_schedule == list(range(3, 80, 4))
    assert (a11.head_dim, a11.n_rep, a90.n_rep) == (128, 4, 8)
    assert (a11.vision_num_tokens, a11.vision_num_pad, a11.vision_input_dim) == (1601, 7, 7680)


def test_chunk_size_differs_between_11b_base_and_instruct():
    assert PRESETS["11b"].vision_chunk_size == 448 and PRESETS["11b"].vision_num_tokens == 1025
    assert PRESETS["11b-instruct"].vision_chunk_size == 560
    assert PRESETS["90b"].vision_chunk_size == PRESETS["90b-instruct"].vision_chunk_size == 560


def test_tiny_keeps_every_stage():
    tiny = PRESETS["tiny"]
    assert tiny.vocab_size == 128256
    assert tiny.vision_global_layers > 0 and len(tiny.vision_return_intermediate) == 5
    assert len(tiny.fusion_schedule) >= 1 and tiny.n_rep > 1
    assert tiny.vision_max_num_chunks == 4


def test_configs_are_frozen():
    with pytest.raises(Exception):
        PRESETS["tiny"].dim = 3


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ConfigError, match="choose one of"):
        get_preset("13b")


META_11B_PARAMS = {
    "dim": 4096, "ffn_dim_multiplier": 1.3, "multiple_of": 1024, "n_heads": 32, "n_kv_heads": 8,
    "n_layers": 32, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": True,
    "vision_chunk_size": 560, "vision_max_num_chunks": 4, "vocab_size": 128256,
    "vision_num_cross_attention_layers": 8,
}


def test_params_json_reads_meta_layout(tmp_path):
    path = tmp_path / "params.json"
    path.write_text(json.dumps(META_11B_PARAMS))
    args = from_params_json(path)
    assert args.ffn_hidden_dim == 14336 and args.vision_chunk_size == 560
    assert args == PRESETS["11b-instruct"]  # names aside, the same model


def test_params_json_chunk_size_comes_from_the_file(tmp_path):
    path = tmp_path / "params.json"
    path.write_text(json.dumps({**META_11B_PARAMS, "vision_chunk_size": 448}))
    assert from_params_json(path).vision_num_tokens == 1025


@pytest.mark.parametrize(
    "change, message",
    [({"rope_scaling": 8}, "unknown key"), ({"dim": None}, "missing key")],
)
def test_params_json_is_strict(tmp_path, change, message):
    data = {**META_11B_PARAMS, **change}
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / "params.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message):
        from_params_json(path)


@pytest.mark.parametrize(
    "key, value, message",
    [("norm_eps", "NaN", "norm_eps=nan must be a finite number above zero"),  # JSON's NaN and Infinity parse
     ("rope_theta", "Infinity", "rope_theta=inf must be a finite number"),
     ("norm_eps", '"1e-5"', "norm_eps='1e-5' must be a finite number"),
     ("n_layers", "8.0", "n_layers=8.0 must be a positive integer"),
     ("n_layers", '"8"', "n_layers='8' must be a positive integer"),
     ("n_heads", "0", "n_heads=0 must be a positive integer"),
     ("dim", "true", "dim=True must be a positive integer"),
     ("ffn_dim_multiplier", "-1.3", "ffn_dim_multiplier=-1.3 must be a finite number above zero \\(or null\\)"),
     ("use_scaled_rope", '"yes"', "use_scaled_rope='yes' must be true or false")],
)
def test_params_json_values_of_the_wrong_kind_are_named_with_the_file(tmp_path, key, value, message):
    path = tmp_path / "params.json"
    path.write_text(json.dumps(META_11B_PARAMS).replace(f'"{key}": {json.dumps(META_11B_PARAMS[key])}', f'"{key}": {value}'))
    with pytest.raises(ConfigError, match=f"^{path}: .*{message}"):
        from_params_json(path)


def test_params_json_nested_cross_attention_count_reads_as_meta_reads_it(tmp_path):
    from tests.meta_reference import meta_modules

    flat = {k: v for k, v in META_11B_PARAMS.items() if k != "vision_num_cross_attention_layers"}
    nested = {**flat, "vision_model": {"cross_attention_adapter": {"num_layers": 8}}}
    path = tmp_path / "params.json"
    path.write_text(json.dumps(nested))
    meta = meta_modules().args.ModelArgs(**nested)
    assert from_params_json(path).vision_num_cross_attention_layers == meta.vision_num_cross_attention_layers == 8
    assert from_params_json(path) == PRESETS["11b-instruct"].replace(max_seq_len=from_params_json(path).max_seq_len)


@pytest.mark.parametrize(
    "change, message",
    [({"vision_model": {"cross_attention_adapter": {"num_layers": 20}}}, "vision_num_cross_attention_layers=8 disagrees with vision_model.cross_attention_adapter.num_layers=20; keep one"),
     ({"vision_model": {"cross_attention_adapter": {"num_layers": 8, "heads": 4}}}, '"vision_model" must be'),
     ({"vision_model": 8}, '"vision_model" must be'),
     ({"quantization_args": {"group_size": 64}}, "quantization_args: a quantized checkpoint; .* use the unquantized download$"),
     ({"lora_args": {"rank": 8}, "quantization_args": {}}, "quantization_args: a quantized checkpoint; .*; lora_args: a checkpoint with LoRA adapters")],
)
def test_params_json_forms_meta_reads_but_we_cannot_run_are_named(tmp_path, change, message):
    path = tmp_path / "params.json"
    path.write_text(json.dumps({**META_11B_PARAMS, **change}))
    with pytest.raises(ConfigError, match=f"^{path}: {message}"):
        from_params_json(path)


@pytest.mark.parametrize("chunks", [1, 2, 3, 8, 16])
def test_chunk_count_must_fill_the_tile_tables_as_in_meta(chunks):
    # Meta adds its 4-row tile tables to every chunk: another count fails in its encoder, and
    # 8 let a 1x8 canvas index past the tables in ours.
    with pytest.raises(ConfigError, match=r"vision_max_num_chunks must equal vision_max_num_tiles \(4\)"):
        PRESETS["tiny"].replace(vision_max_num_chunks=chunks)


@pytest.mark.parametrize("key, value", [("dim", 2**40), ("n_layers", 1_000_000), ("vocab_size", 2**31), ("ffn_dim_multiplier", 1e30)])
def test_sizes_past_any_llama_are_named_before_anything_is_built(tmp_path, key, value):
    # dim 2**40 overflowed torch's storage size while building (a RuntimeError); a million
    # layers took over ten minutes and 19 GB to build on meta before the memory check spoke.
    path = tmp_path / "params.json"
    path.write_text(json.dumps({**META_11B_PARAMS, key: value}))
    with pytest.raises(ConfigError, match=f"^{path}: invalid model config .*: {re.escape(f'{key}={value}')} is past [0-9.]+, the largest this tool builds"):
        from_params_json(path)


def test_text_only_params_json_is_refused(tmp_path):
    text_only = {k: v for k, v in META_11B_PARAMS.items() if not k.startswith("vision")}
    path = tmp_path / "params.json"
    path.write_text(json.dumps(text_only))
    with pytest.raises(ConfigError, match="vision_chunk_size"):
        from_params_json(path)


def test_dict_round_trip_and_unknown_keys():
    tiny = PRESETS["tiny"]
    assert ModelArgs.from_dict(tiny.to_dict()) == tiny
    with pytest.raises(ConfigError, match="unknown config key"):
        ModelArgs.from_dict({"dims": 4})
