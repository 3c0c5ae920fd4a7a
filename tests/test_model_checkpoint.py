"""`model.checkpoint.load_checkpoint`: Meta and Hugging Face layouts written here (tests/checkpoints.py),
loaded back and compared with the model they came from; every refusal is a one-line CheckpointError."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from PIL import Image
from torch import nn

import checkpoints as ck
from model import PRESETS, build_model
from model.checkpoint import CheckpointError, args_from_hf_config, load_checkpoint, model_parallel_dim

TINY = PRESETS["tiny"]
MICRO = TINY.replace(name="micro", vocab_size=512)  # small files for the error cases
TOTAL_LEN = 64
IMAGE_ID = TINY.vocab_size  # <|image|> in the model input: learnable_embedding[0]
CHAT_IDS = [128000, 128006, 882, 128007, 271, IMAGE_ID, 3923, 374, 304, 420, 2217, 30, 128009, 128006, 78191, 128007, 271]
TILE_TABLES = ("vision_model.vision_encoder.gated_positional_embedding",
               "vision_model.vision_encoder.pre_tile_pos_embed.embedding",
               "vision_model.vision_encoder.post_tile_pos_embed.embedding")


def _image() -> Image.Image:
    gen = torch.Generator().manual_seed(3)
    pixels = torch.randint(0, 256, (900, 300, 3), dtype=torch.uint8, generator=gen)
    return Image.frombytes("RGB", (300, 900), pixels.numpy().tobytes())  # 3x1 tiles: the tile tables matter


def logits(model, ids=CHAT_IDS) -> torch.Tensor:
    """Prefill logits [S, K] of a chat prompt with one image (rows before the image are masked out)."""
    tokens = torch.full((1, TOTAL_LEN), 128004, dtype=torch.long)
    tokens[0, : len(ids)] = torch.tensor(ids)
    with torch.no_grad():
        caches, masks, row_mask = model.compute_vision_tokens_masks([[_image()]], [[[ids.index(IMAGE_ID), -1]]], TOTAL_LEN, "cpu")
        return model.forward(torch.arange(len(ids)), tokens, masks, row_mask, caches)[0]


@pytest.fixture(scope="module")
def tiny():
    model = build_model(TINY, device="cpu", dtype=torch.float32, seed=0)
    return model, {k: v.clone() for k, v in model.state_dict().items()}, logits(model)


@pytest.fixture(scope="module")
def micro_sd():
    return build_model(MICRO, device="cpu", dtype=torch.float32, seed=1).state_dict()


@pytest.fixture(scope="module")
def hf_folder(tiny, tmp_path_factory):
    return ck.write_hf_checkpoint(tmp_path_factory.mktemp("hf"), TINY, tiny[1])


def load_meta(folder, args=TINY, **kw):
    """Meta's params.json cannot describe the tiny vision encoder: its fields come from `args_override`."""
    return load_checkpoint(folder, dtype=kw.pop("dtype", torch.float32), args_override=ck.vision_fields(args), **kw)


def assert_same_model(loaded, sd, skip=()):
    got = loaded.state_dict()
    assert set(got) == set(sd)
    for key, value in sd.items():
        if key not in skip:
            assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


def assert_tile_tables_match(loaded, sd):
    """HF keeps only the tiles some aspect ratio uses ((r, c) with (r+1)*(c+1) <= 4); the rest come back 0."""
    got = loaded.state_dict()
    for key in TILE_TABLES:
        t = sd[key].shape[0]
        for r in range(t):
            for c in range(t):
                expected = sd[key][r, c] if (r + 1) * (c + 1) <= TINY.vision_max_num_tiles else torch.zeros_like(sd[key][r, c])
                assert torch.equal(got[key][r, c], expected), (key, r, c)


# ------------------------------------------------------------------------------------------------
# Meta layout


@pytest.mark.parametrize("filename", ["consolidated.00.pth", "consolidated.pth"])
def test_meta_layout_bit_identical(tiny, tmp_path, filename):
    model, sd, want = tiny
    ck.write_meta_checkpoint(tmp_path, TINY, sd, single_name=filename)
    calls = []
    loaded, args, tokenizer = load_meta(tmp_path, progress=lambda done, total, name: calls.append((done, total, name)))
    assert args == TINY and args.name == tmp_path.name
    assert tokenizer == tmp_path / "tokenizer.model"
    assert_same_model(loaded, sd)
    assert torch.equal(logits(loaded), want)
    assert not any(p.requires_grad is False for p in loaded.parameters()) and not loaded.training
    # progress: starts at 0, grows, ends at the total = the weights' bytes, one call per tensor
    total = sum(v.numel() * v.element_size() for v in sd.values())
    assert calls[0] == (0, total, "") and calls[-1][:2] == (total, total)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls) and len(calls) == len(sd) + 1


def test_meta_layout_in_torchs_old_format_loads_without_mmap(tiny, tmp_path):
    # torch.save(..., _use_new_zipfile_serialization=False): mmap refuses it ("re-download it", it said)
    _, sd, want = tiny
    ck.write_meta_checkpoint(tmp_path, TINY, sd, tokenizer=False)
    torch.save(sd, tmp_path / "consolidated.00.pth", _use_new_zipfile_serialization=False)
    loaded, _, _ = load_meta(tmp_path)
    assert_same_model(loaded, sd)
    assert torch.equal(logits(loaded), want)


def test_caches_are_left_to_the_caller_when_asked(tiny, tmp_path):
    _, sd, _ = tiny
    ck.write_meta_checkpoint(tmp_path, TINY, sd, tokenizer=False)
    loaded, _, _ = load_meta(tmp_path, setup_cache=False)
    buffers = {name.rsplit(".", 1)[-1] for name, _ in loaded.named_buffers()}
    assert not buffers & {"key_cache", "value_cache", "mask_cache"}


def test_meta_layout_converts_dtype(tiny, tmp_path):
    model, sd, _ = tiny
    ck.write_meta_checkpoint(tmp_path, TINY, sd, tokenizer=False)
    loaded, _, tokenizer = load_meta(tmp_path, dtype=torch.bfloat16, max_seq_len=128)
    assert tokenizer is None
    assert loaded.params.max_seq_len == 128 and loaded.text_model.mask_cache.shape[-1] == 128
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    assert_same_model(loaded, {k: v.to(torch.bfloat16) for k, v in sd.items()})  # = build_model(..., bf16, seed=0)
    assert loaded.text_model.layers[0].attention.key_cache.dtype == torch.bfloat16


def test_meta_derived_rope_table_is_ignored(micro_sd, tmp_path):
    ck.write_meta_checkpoint(tmp_path, MICRO, {**micro_sd, "text_model.rope.freqs": torch.randn(8)})
    loaded, _, _ = load_meta(tmp_path, MICRO)
    assert_same_model(loaded, micro_sd)


def _meta_shapes_at_world_size(monkeypatch, args, world_size: int) -> dict[str, tuple]:
    """Parameter shapes of Meta's own model (llama_models 0.3.0) built at a model-parallel world size, with
    fairscale's per-rank shapes: ColumnParallelLinear [out/n, in] (+ bias [out/n]), RowParallelLinear
    [out, in/n] (+ bias [out]), VocabParallelEmbedding [num/n, dim]. Which layer is which is Meta's choice."""
    import meta_reference as mr

    n = world_size

    class Column(nn.Module):
        def __init__(self, in_features, out_features, bias=True, **_):
            super().__init__()
            self.in_features, self.out_features = in_features, out_features  # fairscale keeps the full sizes
            self.weight = nn.Parameter(torch.empty(out_features // n, in_features))
            self.bias = nn.Parameter(torch.empty(out_features // n)) if bias else None

    class Row(nn.Module):
        def __init__(self, in_features, out_features, bias=True, **_):
            super().__init__()
            self.in_features, self.out_features = in_features, out_features
            self.weight = nn.Parameter(torch.empty(out_features, in_features // n))
            self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    class Vocab(nn.Module):
        def __init__(self, num_embeddings, embedding_dim, **_):
            super().__init__()
            self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
            self.weight = nn.Parameter(torch.empty(num_embeddings // n, embedding_dim))

    mm = mr.meta_modules().model
    monkeypatch.setattr(mm.fs_init, "get_model_parallel_world_size", lambda: n)
    stand_ins = {"ColumnParallelLinear": Column, "RowParallelLinear": Row, "VocabParallelEmbedding": Vocab}
    for name, cls in stand_ins.items():
        monkeypatch.setattr(mm, name, cls)  # what Meta's model module builds its layers with
        if hasattr(mr, name):
            monkeypatch.setattr(mr, name, cls)  # build_meta_model re-creates vision_projection for the tiny sizes
    meta_model = mr.build_meta_model(args, dtype=torch.float32, device="meta")
    return {name: tuple(p.shape) for name, p in meta_model.named_parameters()}


def test_model_parallel_split_dims_follow_meta_code(tiny, monkeypatch):
    """`model_parallel_dim` (what the loader concatenates along) agrees with the layers Meta's code builds."""
    _, sd, _ = tiny
    meta_shapes = _meta_shapes_at_world_size(monkeypatch, TINY, 2)
    ours = {k: tuple(v.shape) for k, v in ck.split_model_parallel(sd, 2)[0].items()}
    assert set(meta_shapes) == set(ours)
    assert {k for k in ours if model_parallel_dim(k) is not None}  # something is split
    wrong = {k: (ours[k], meta_shapes[k]) for k in ours if ours[k] != meta_shapes[k]}
    assert not wrong


def test_meta_model_parallel_shards_merge(tiny, tmp_path):
    model, sd, want = tiny
    ck.write_meta_checkpoint(tmp_path, TINY, sd, shards=2)
    loaded, _, _ = load_meta(tmp_path)
    assert_same_model(loaded, sd)
    assert torch.equal(logits(loaded), want)

    # Meta's reshard_mp (llama_models/checkpoint.py) treats these two as replicated: full copies load too
    full = ("vision_model.vision_projection.bias", "text_model.learnable_embedding.weight")
    for i in range(2):
        path = tmp_path / f"consolidated.{i:02d}.pth"
        shard = torch.load(path, weights_only=True)
        torch.save({**shard, **{k: sd[k].clone() for k in full}}, path)
    loaded, _, _ = load_meta(tmp_path)
    assert_same_model(loaded, sd)


# ------------------------------------------------------------------------------------------------
# Hugging Face layout


def test_hf_save_pretrained_layout(tiny, hf_folder):
    model, sd, want = tiny
    loaded, args, tokenizer = load_checkpoint(hf_folder, dtype=torch.float32)
    assert tokenizer == hf_folder / "original" / "tokenizer.model"
    assert args.to_dict() | {"multiple_of": 0, "ffn_dim_multiplier": 0, "name": ""} == TINY.to_dict() | {"multiple_of": 0, "ffn_dim_multiplier": 0, "name": ""}
    assert args.ffn_hidden_dim == TINY.ffn_hidden_dim and args.fusion_schedule == TINY.fusion_schedule
    assert_same_model(loaded, sd, skip=TILE_TABLES)
    assert_tile_tables_match(loaded, sd)
    got = logits(loaded)
    assert (got - want).abs().max().item() <= 1e-5
    assert torch.equal(got, want)  # in fact exact: the conversions only move numbers


def test_hf_rerooted_key_layout(tiny, tmp_path):
    """transformers 4.52-4.5x save_pretrained wrote model.language_model.* / lm_head / model.vision_model.*."""
    model, sd, want = tiny
    ck.write_hf_rerooted_checkpoint(tmp_path, TINY, sd)
    loaded, _, tokenizer = load_checkpoint(tmp_path, dtype=torch.float32)
    assert tokenizer is None
    assert_same_model(loaded, sd, skip=TILE_TABLES)
    assert torch.equal(logits(loaded), want)


def test_hf_sharded_layout_and_index_errors(tiny, hf_folder, tmp_path):
    model, sd, want = tiny
    ck.write_hf_checkpoint(tmp_path, TINY, sd, max_shard_size="4MB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2
    loaded, _, _ = load_checkpoint(tmp_path, dtype=torch.float32)
    unsharded, _, _ = load_checkpoint(hf_folder, dtype=torch.float32)
    assert_same_model(loaded, unsharded.state_dict())

    shards[-1].rename(tmp_path / "aside")
    expect_error(f"shard file(s) {shards[-1].name} listed in model.safetensors.index.json are missing", tmp_path)
    shards[-1].symlink_to(tmp_path / "gone")
    expect_error(f"shard file(s) {shards[-1].name} are broken symbolic links; point them at the files", tmp_path)
    shards[-1].unlink()
    (tmp_path / "aside").rename(shards[-1])
    (tmp_path / "model.safetensors.index.json").unlink()
    expect_error("no model.safetensors.index.json", tmp_path)


def _hub_style(config: dict) -> dict:
    """A transformers-4.45-era config.json: rope_theta + rope_scaling, plus generic PretrainedConfig keys."""
    config = json.loads(json.dumps(config))  # a deep copy
    text = config["text_config"]
    rope = text.pop("rope_parameters")
    text["rope_theta"] = rope.pop("rope_theta")
    text["rope_scaling"] = rope
    generic = {"torch_dtype": "bfloat16", "bad_words_ids": None, "num_beams": 1, "pruned_heads": {}, "use_bfloat16": False}
    vision = {**config["vision_config"], **generic, "tie_word_embeddings": True}
    return {**config, "text_config": {**text, **generic}, "vision_config": vision, "torch_dtype": "bfloat16"}


@pytest.mark.parametrize("preset", ["11b", "11b-instruct", "90b"])
def test_args_from_hf_config_real_sizes(preset):
    """The converter's config for each real model gives back exactly its ModelArgs (Meta's FFN fields included)."""
    import hf_convert as hc

    config = hc.hf_config_from_args(PRESETS[preset]).to_dict()
    config["image_token_index"] = PRESETS[preset].vocab_size
    for variant in (config, _hub_style(config)):
        args = args_from_hf_config(variant)
        assert args == PRESETS[preset]
        assert (args.multiple_of, args.ffn_dim_multiplier) == (PRESETS[preset].multiple_of, 1.3)


# ------------------------------------------------------------------------------------------------
# errors: folders and config files


def test_hf_weights_are_copied_block_by_block_and_own_their_memory(tiny, hf_folder, tmp_path, monkeypatch):
    """Big tensors are copied from the mapped file a block of rows at a time (tiny blocks here, so
    every tensor takes many); the model keeps no view of the file: rewriting it changes nothing."""
    import model.checkpoint as checkpoint

    model, sd, want = tiny
    folder = tmp_path / "hf"
    shutil.copytree(hf_folder, folder)
    monkeypatch.setattr(checkpoint, "COPY_BLOCK_BYTES", 1000)
    loaded, _, _ = load_checkpoint(folder, dtype=torch.float32)
    assert_same_model(loaded, sd, skip=TILE_TABLES)
    for weights in folder.glob("*.safetensors"):
        with open(weights, "r+b") as f:  # overwrite every data byte in place, under the mapping
            header = 8 + int.from_bytes(f.read(8), "little")
            f.seek(header)
            f.write(b"\xff" * (weights.stat().st_size - header))
    assert_same_model(loaded, sd, skip=TILE_TABLES)
    assert torch.equal(logits(loaded), want)


@pytest.fixture
def micro_meta(micro_sd, tmp_path):
    return ck.write_meta_checkpoint(tmp_path / "meta", MICRO, micro_sd)


@pytest.fixture
def micro_hf(micro_sd, tmp_path):
    folder = ck.write_hf_rerooted_checkpoint(tmp_path / "hf", MICRO, micro_sd)
    edit_json(folder / "config.json", lambda c: c.update(image_token_index=MICRO.vocab_size))
    load_checkpoint(folder, dtype=torch.float32)  # loads as written
    return folder


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def expect_error(fragment: str, folder, **kw):
    with pytest.raises(CheckpointError) as info:
        if kw.pop("meta", False):
            load_meta(folder, MICRO, **kw)
        else:
            load_checkpoint(folder, dtype=torch.float32, **kw)
    message = str(info.value)
    assert fragment in message, message
    assert "\n" not in message
    return message


def test_folder_errors(tmp_path, micro_meta):
    expect_error("does not exist", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    expect_error("is empty", tmp_path / "empty")
    expect_error("is a file", micro_meta / "params.json")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hi")
    expect_error("no checkpoint found", tmp_path / "junk")
    (micro_meta / "consolidated.00.pth").rename(micro_meta / "weights.bak")
    expect_error("no consolidated*.pth", micro_meta)
    only_cfg = tmp_path / "cfg"
    only_cfg.mkdir()
    (only_cfg / "config.json").write_text("{}")
    (only_cfg / "pytorch_model.bin").write_bytes(b"")
    expect_error("pytorch_model.bin are not read", only_cfg)


def test_broken_links_folders_and_paths_out_of_the_folder_are_named(micro_meta, micro_hf, tmp_path):
    weights = micro_meta / "consolidated.00.pth"
    weights.rename(tmp_path / "moved.pth")
    weights.symlink_to(tmp_path / "gone.pth")  # it was reported as a truncated or corrupt file
    expect_error(f"{weights} is a broken symbolic link (to {tmp_path / 'gone.pth'}); point it at the file, or copy the file in", micro_meta)
    weights.unlink()
    (tmp_path / "moved.pth").rename(weights)
    (micro_meta / "params.json").rename(tmp_path / "params.json")
    (micro_meta / "params.json").mkdir()  # it was reported as not valid JSON
    expect_error(f"{micro_meta / 'params.json'} is a folder, not a file", micro_meta)
    (micro_hf / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../elsewhere.safetensors"}}))
    expect_error("its weight_map holds '../elsewhere.safetensors' where a file name in its folder goes; re-download the index file", micro_hf)
    (micro_hf / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": 7, "b": "x.safetensors"}}))
    expect_error("its weight_map holds '7' where a file name in its folder goes", micro_hf)  # it failed sorting 7 among names


@pytest.mark.parametrize("section, key, value", [("vision_config", "max_num_tiles", 100_000), ("text_config", "hidden_size", 2**20),
                                                 ("text_config", "intermediate_size", 2**40)])
def test_hf_sizes_past_any_llama_are_named_by_their_config_names(micro_hf, section, key, value):
    # max_num_tiles 100000 listed its aspect ratios for minutes; hidden_size 2**20 was named
    # "dim" in a model config called 'custom', with no file.
    edit_json(micro_hf / "config.json", lambda c: c[section].update({key: value}))
    expect_error(f"config.json: {section}.{key}={value} (past ", micro_hf)


def test_a_broken_tokenizer_link_is_named_not_replaced(micro_meta, tmp_path):
    (micro_meta / "tokenizer.model").unlink()
    (micro_meta / "tokenizer.model").symlink_to(tmp_path / "gone.model")  # it read as "no tokenizer.model"
    expect_error(f"{micro_meta / 'tokenizer.model'} is a broken symbolic link", micro_meta)


def test_a_pth_of_more_than_tensors_names_what_is_not_one(micro_meta, micro_sd):
    torch.save({"model": dict(micro_sd), "step": 5}, micro_meta / "consolidated.00.pth")
    message = expect_error("but 'model' (dict), 'step' (int) are not tensors; a training checkpoint holds the weights under one key",
                           micro_meta, meta=True)
    assert "save that state_dict alone with torch.save" in message
    torch.save({0: torch.zeros(1), **micro_sd}, micro_meta / "consolidated.00.pth")
    expect_error("but its keys include 0, which is not a name; re-save it with torch.save(model.state_dict())", micro_meta, meta=True)


def test_meta_args_are_named_after_the_folder_however_it_is_spelled(micro_meta, monkeypatch):
    from model.checkpoint import read_checkpoint_args

    monkeypatch.chdir(micro_meta)
    assert read_checkpoint_args(".") == read_checkpoint_args(micro_meta)
    assert read_checkpoint_args(".").name == read_checkpoint_args(micro_meta).name == "meta"
    blobs = micro_meta.parent / "blobs"  # a hub cache: params.json links to a blob elsewhere
    blobs.mkdir()
    (micro_meta / "params.json").rename(blobs / "a1b2")
    (micro_meta / "params.json").symlink_to(blobs / "a1b2")
    assert read_checkpoint_args(".").name == "meta"


def test_meta_shard_set_errors(micro_sd, tmp_path):
    ck.write_meta_checkpoint(tmp_path, MICRO, micro_sd, shards=2)
    shutil.copy(tmp_path / "consolidated.01.pth", tmp_path / "consolidated.03.pth")
    expect_error("model-parallel shard(s) consolidated.02.pth missing", tmp_path, meta=True)
    (tmp_path / "consolidated.03.pth").rename(tmp_path / "consolidated.02.pth")
    expect_error("3 shards cannot split n_kv_heads=2", tmp_path, meta=True)
    (tmp_path / "consolidated.02.pth").unlink()
    shard = torch.load(tmp_path / "consolidated.01.pth", weights_only=True)
    shard["text_model.norm.weight"] = shard["text_model.norm.weight"] + 1  # replicated tensors must agree
    torch.save(shard, tmp_path / "consolidated.01.pth")
    expect_error("replicated tensor text_model.norm.weight differs", tmp_path, meta=True)
    shutil.copy(tmp_path / "consolidated.01.pth", tmp_path / "consolidated.pth")
    expect_error("holds both consolidated.pth", tmp_path, meta=True)
    (tmp_path / "consolidated.pth").unlink()
    (tmp_path / "consolidated.01.pth").unlink()  # one shard of two, alone: it looks like a whole checkpoint
    expect_error("1/2 of its expected size along one dimension, as if the weights were split into 2 model-parallel shards with 1 of them here",
                 tmp_path, meta=True)


def test_two_shards_of_four_are_counted_as_two_of_four(micro_sd, tmp_path):
    """The share reduces (2/4 is 1/2); the hint counts the shard files that are there, so it says
    2 of 4, where it once said 1 of 2."""
    ck.write_meta_checkpoint(tmp_path, MICRO, micro_sd, shards=4)
    for name in ("consolidated.02.pth", "consolidated.03.pth"):
        (tmp_path / name).unlink()
    expect_error("1/2 of its expected size along one dimension, as if the weights were split into 4 model-parallel shards with 2 of them here",
                 tmp_path, meta=True)


@pytest.mark.parametrize("change, fragment", [
    (lambda p: p.update(rope_scaling=8), "unknown key(s) rope_scaling"),
    (lambda p: p.pop("dim"), "missing key(s) dim"),
    (lambda p: [p.pop(k) for k in list(p) if k.startswith("vision_")], "not a Llama 3.2 Vision checkpoint"),
])
def test_params_json_errors(micro_meta, change, fragment):
    edit_json(micro_meta / "params.json", change)
    expect_error(fragment, micro_meta, meta=True)


def test_config_files_must_be_json(micro_meta, micro_hf):
    (micro_meta / "params.json").write_text("{not json")
    expect_error("is not valid JSON", micro_meta, meta=True)
    (micro_hf / "config.json").write_text("[1, 2]")
    expect_error("must hold a JSON object", micro_hf)


@pytest.mark.parametrize("change, fragment", [
    (lambda c: c.update(model_type="llama", text_config=None, vision_config=None, hidden_size=64), "not a Llama 3.2 Vision checkpoint"),
    (lambda c: c["text_config"].update(attention_bias=True), "unknown text_config key(s) attention_bias"),
    (lambda c: c["vision_config"].pop("image_size"), "vision_config is missing key(s) image_size"),
    (lambda c: c["text_config"].update(cross_attention_layers=[2, 8]), "Meta's fusion schedule"),
    (lambda c: c["text_config"].update(cross_attention_layers=[]), "not a Llama 3.2 Vision checkpoint"),
    (lambda c: c["text_config"]["rope_parameters"].update(rope_type="yarn"), "rope_type 'yarn'"),
    (lambda c: c["text_config"].update(tie_word_embeddings=True), "tie_word_embeddings must be false"),
    (lambda c: c["vision_config"].update(supported_aspect_ratios=[[1, 1], [2, 2]]), "supported_aspect_ratios"),
    (lambda c: c.update(quantization_config={"quant_method": "bitsandbytes"}), "quantized"),
    (lambda c: c["vision_config"].update(hidden_size="64"), "invalid value(s) hidden_size='64'"),
    (lambda c: c["text_config"].update(rms_norm_eps=float("nan")), "rms_norm_eps=nan; sizes must be positive integers, epsilons finite"),
    (lambda c: c["text_config"]["rope_parameters"].update(rope_theta=float("inf")), "rope_theta=inf must be a finite number above zero"),
    (lambda c: c["text_config"].update(rope_theta=10000.0), "rope_theta 10000.0 differs from rope_parameters.rope_theta"),
])
def test_hf_config_errors(micro_hf, change, fragment):
    edit_json(micro_hf / "config.json", change)
    expect_error(fragment, micro_hf)


# ------------------------------------------------------------------------------------------------
# errors: tensors


def rewrite_meta(folder, change):
    path = folder / "consolidated.00.pth"
    sd = torch.load(path, weights_only=True)
    change(sd)
    torch.save(sd, path)


def test_missing_unexpected_misshaped_tensors(micro_meta, micro_sd):
    names = sorted(k for k in micro_sd if ".layers." in k)[:7]
    rewrite_meta(micro_meta, lambda sd: [sd.pop(k) for k in names])
    message = expect_error("7 missing", micro_meta, meta=True)
    assert names[0] in message and "(+2 more)" in message

    def extra_and_transposed(sd):
        sd.update({k: micro_sd[k] for k in names})
        sd["text_model.extra.weight"] = torch.zeros(3)
        sd["text_model.output.weight"] = sd["text_model.output.weight"].t().contiguous()

    rewrite_meta(micro_meta, extra_and_transposed)
    message = expect_error("1 unexpected: text_model.extra.weight", micro_meta, meta=True)
    assert "1 with the wrong shape: text_model.output.weight [64, 512] (expected [512, 64])" in message


def test_integer_tensors_are_refused(micro_meta, micro_hf):
    rewrite_meta(micro_meta, lambda sd: sd.update({"text_model.norm.weight": torch.ones(MICRO.dim, dtype=torch.int32)}))
    expect_error("text_model.norm.weight (int32)", micro_meta, meta=True)
    from safetensors.torch import load_file, save_file

    path = micro_hf / "model.safetensors"
    hf = load_file(str(path))
    hf["model.language_model.norm.weight"] = hf["model.language_model.norm.weight"].to(torch.int8)
    save_file(hf, str(path))
    expect_error("model.language_model.norm.weight (I8)", micro_hf)


def test_missing_and_unknown_hf_tensors_named_as_in_the_file(micro_hf):
    from safetensors.torch import load_file, save_file

    path = micro_hf / "model.safetensors"
    hf = load_file(str(path))
    del hf["model.language_model.layers.0.self_attn.q_proj.weight"]
    hf["model.some_adapter.weight"] = torch.zeros(2)
    save_file(hf, str(path))
    message = expect_error("1 missing: model.language_model.layers.0.self_attn.q_proj.weight", micro_hf)
    assert "1 unexpected: model.some_adapter.weight" in message


def test_wrong_model_size_in_hf_weights(micro_hf):
    edit_json(micro_hf / "config.json", lambda c: c["text_config"].update(intermediate_size=256))
    message = expect_error("with the wrong shape", micro_hf)
    assert "model.language_model.layers.0.mlp.gate_proj.weight [224, 64] (expected [256, 64])" in message


def test_truncated_safetensors(micro_hf):
    ck.truncate(micro_hf / "model.safetensors", 0.6)
    expect_error("truncated or corrupt", micro_hf)
    ck.truncate(micro_hf / "model.safetensors", 5)  # inside the header
    expect_error("truncated or corrupt", micro_hf)


def test_truncated_pth(micro_meta):
    ck.truncate(micro_meta / "consolidated.00.pth", 0.5)
    expect_error("truncated or corrupt", micro_meta, meta=True)


def test_random_bytes_as_pth_read_as_corrupt_not_as_code(micro_meta):
    """Random bytes stop the safe unpickler too; they are damage, not code (they were called a
    file that would run code)."""
    (micro_meta / "consolidated.00.pth").write_bytes(bytes(range(256)) * 4)
    message = expect_error("cannot read it as a torch checkpoint", micro_meta, meta=True)
    assert "truncated or corrupt" in message and "run code" not in message
    assert re.search(r"the safe loader stopped: \w", message)  # its reason, not an empty one


def test_pth_calling_a_blocked_module_is_called_code(micro_meta):
    """torch words a call into os/sys/posix differently ("whose module posix is blocked"); it is
    still code, never damage."""
    import os

    class System:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"text_model.norm.weight": torch.ones(4), "payload": System()}, micro_meta / "consolidated.00.pth")
    message = expect_error("refused to unpickle: the file would run code", micro_meta, meta=True)
    assert "system" in message and "nothing was executed" in message


def test_pth_that_would_run_code_is_refused_not_run(micro_meta, tmp_path):
    marker = tmp_path / "pwned"
    ck.write_malicious_pth(micro_meta / "consolidated.00.pth", marker)
    message = expect_error("refused to unpickle", micro_meta, meta=True)
    assert "exec" in message and "nothing was executed" in message
    assert not marker.exists()
    # the payload is real: an unguarded torch.load runs it (this only creates the marker file)
    torch.load(micro_meta / "consolidated.00.pth", weights_only=False)
    assert marker.exists()


def test_hf_tile_tables_that_differ_per_aspect_ratio(micro_hf):
    """HF stores a copy of each tile embedding per aspect ratio; Meta one table. Copies that disagree
    (an HF fine-tune) cannot be folded back."""
    from safetensors.torch import load_file, save_file

    path = micro_hf / "model.safetensors"
    hf = load_file(str(path))
    key = "model.vision_model.pre_tile_positional_embedding.embedding.weight"
    hf[key][2, 0] += 1.0  # id 2 = (1, 2): tile (0, 0), which id 1 = (1, 1) also holds
    save_file(hf, str(path))
    expect_error("tile (0, 0) differs between aspect-ratio ids 1 and 2", micro_hf)


def test_bad_arguments(micro_meta):
    expect_error("not a floating-point dtype", micro_meta, meta=True, dtype=torch.int64)
    expect_error("args_override", micro_meta, args_override={"vision_widht": 3})


def test_a_long_torch_error_is_cut_at_a_word():
    from model.checkpoint import _gist

    err = RuntimeError("PytorchStreamReader failed reading zip archive:\nfailed finding central directory. " * 5)
    gist = _gist(err)
    assert len(gist) <= 202 and gist.endswith("directory. PytorchStreamReader failed reading …") and "\n" not in gist
    assert _gist(EOFError()) == "EOFError"
