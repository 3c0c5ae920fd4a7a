"""Test helper: write tiny checkpoints in Meta's and Hugging Face's layouts (no downloads).

    meta_params(args)                                   -> params.json dict (Meta's keys only)
    write_meta_checkpoint(folder, args, sd, shards=1)   params.json + consolidated.pth / .NN.pth shards
    split_model_parallel(sd, n)                         fairscale's split of a full state dict into n shards
    write_hf_checkpoint(folder, args, sd, ...)          transformers' own save_pretrained (hub key layout)
    write_hf_rerooted_checkpoint(folder, args, sd)      config.json + model.safetensors with the
                                                        `model.language_model.*` / `lm_head` keys of
                                                        transformers 4.52-4.5x save_pretrained
    write_malicious_pth(path, marker)                   a torch zip file whose pickle would create `marker`
    truncate(path, keep)                                cut a file to its first `keep` bytes (or a fraction)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from model.args import PARAMS_JSON_OPTIONAL, PARAMS_JSON_REQUIRED, ModelArgs
from model.checkpoint import model_parallel_dim


def copy_tokenizer(path: Path) -> None:
    """The Llama 3 tokenizer.model that llama-models ships, as a checkpoint's own (a run checks
    that it reads, and that it holds the model's vocab_size tokens)."""
    import shutil

    from model.tokenizer import default_model_path

    path.parent.mkdir(exist_ok=True)
    shutil.copy(default_model_path(), path)


def meta_params(args: ModelArgs) -> dict:
    """What Meta's params.json holds for `args` (text sizes and the vision keys Meta reads)."""
    return {key: getattr(args, key) for key in (*PARAMS_JSON_REQUIRED, *PARAMS_JSON_OPTIONAL)}


def vision_fields(args: ModelArgs) -> dict:
    """The ModelArgs fields params.json cannot express (Meta hard-codes its vision encoder)."""
    return {k: v for k, v in args.to_dict().items() if k.startswith("vision_") and k not in PARAMS_JSON_OPTIONAL
            and k not in PARAMS_JSON_REQUIRED}


def vision_fields_for_params(args: ModelArgs) -> dict:
    """The params.json extension keys (model/args.py: PARAMS_JSON_EXTENSION) for `args`."""
    from model.args import PARAMS_JSON_EXTENSION

    data = args.to_dict()
    return {k: data[k] for k in PARAMS_JSON_EXTENSION}


def split_model_parallel(sd: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    """fairscale's layout at world size n: Column/Vocab-parallel tensors cut along dim 0, Row-parallel along
    dim 1 (contiguous blocks, rank r holds block r), everything else copied to every shard."""
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    for key, value in sd.items():
        dim = model_parallel_dim(key)
        parts = torch.chunk(value, n, dim=dim) if dim is not None else [value] * n
        assert len(parts) == n and all(p.shape == parts[0].shape for p in parts), key
        for shard, part in zip(shards, parts):
            shard[key] = part.clone()
    return shards


def write_meta_checkpoint(folder: Path, args: ModelArgs, sd: dict[str, torch.Tensor], shards: int = 1,
                          single_name: str = "consolidated.00.pth", tokenizer: bool = True,
                          with_vision_fields: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    params = {**meta_params(args), **(vision_fields_for_params(args) if with_vision_fields else {})}
    (folder / "params.json").write_text(json.dumps(params))
    sd = {k: v.detach().clone() for k, v in sd.items()}
    if shards == 1:
        torch.save(sd, folder / single_name)
    else:
        for i, shard in enumerate(split_model_parallel(sd, shards)):
            torch.save(shard, folder / f"consolidated.{i:02d}.pth")
    if tokenizer:
        copy_tokenizer(folder / "tokenizer.model")
    return folder


def write_hf_checkpoint(folder: Path, args: ModelArgs, sd: dict[str, torch.Tensor], max_shard_size=None,
                        tokenizer: bool = True) -> Path:
    """Convert with tests/hf_convert.py, load into transformers' MllamaForConditionalGeneration, and let
    transformers write the folder (config.json, model.safetensors or shards + index)."""
    import hf_convert as hc

    model = hc.build_hf_model(args, sd, dtype=torch.float32)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(folder, **kwargs)
    if tokenizer:
        copy_tokenizer(folder / "original" / "tokenizer.model")
    return folder


def write_hf_rerooted_checkpoint(folder: Path, args: ModelArgs, sd: dict[str, torch.Tensor]) -> Path:
    import hf_convert as hc
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    hc.hf_config_from_args(args).save_pretrained(folder)
    save_file(hc.meta_to_hf_state_dict(args, sd, layout="installed"), str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


class _RunsCode:
    """Unpickling this calls exec(): what a malicious checkpoint does. Here it would only create `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def write_malicious_pth(path: Path, marker: Path) -> Path:
    """A real torch zip checkpoint whose pickle holds a code-running object next to an ordinary tensor."""
    torch.save({"text_model.norm.weight": torch.ones(4), "payload": _RunsCode(marker)}, path)
    return path


def truncate(path: Path, keep: int | float) -> Path:
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:n])
    return path
