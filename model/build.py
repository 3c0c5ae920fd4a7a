"""Build a model on a device in a dtype, with no weights (`meta`) or seeded random weights."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .args import ModelArgs
from .multimodal import CrossAttentionTransformer

GATE_NAMES = ("gate", "gate_attn", "gate_ffn", "gate_ffwd", "gated_positional_embedding_gate")


@torch.no_grad()
def init_random_weights(model: torch.nn.Module, seed: int) -> None:
    """Deterministic random weights that keep activations in a sane range and open every gate
    (Meta initialises the gates at 0, which would hide the cross-attention and tile paths)."""
    gens: dict[torch.device, torch.Generator] = {}
    for name, param in sorted(model.named_parameters()):
        if param.device not in gens:  # values are drawn where the parameter lives
            gens[param.device] = torch.Generator(device=param.device).manual_seed(seed)
        gen, kw = gens[param.device], {"device": param.device}
        leaf = name.rsplit(".", 1)[-1]
        shape = param.shape
        if leaf in GATE_NAMES:
            value = torch.rand(shape, generator=gen, **kw) * 0.6 + 0.2  # tanh(gate) in about (0.2, 0.66)
        elif "norm" in name or ".ln_" in name:
            value = (1 + 0.1 * torch.randn(shape, generator=gen, **kw)) if leaf == "weight" else 0.1 * torch.randn(shape, generator=gen, **kw)
        elif "embedding" in name and param.dim() >= 2 and "tok_" not in name and "learnable" not in name:
            value = torch.randn(shape, generator=gen, **kw) * shape[-1] ** -0.5  # position / tile tables
        elif leaf == "class_embedding":
            value = torch.randn(shape, generator=gen, **kw) * shape[-1] ** -0.5
        elif param.dim() >= 2 and ("tok_embeddings" in name or "learnable_embedding" in name):
            value = torch.randn(shape, generator=gen, **kw)
        elif param.dim() >= 2:
            value = torch.randn(shape, generator=gen, **kw) * shape[-1] ** -0.5  # Linear [out, in]
        else:
            value = 0.02 * torch.randn(shape, generator=gen, **kw)  # biases
        param.copy_(value.to(param.dtype))


@contextlib.contextmanager
def _skip_init():
    """Construct modules without their default random init (it is overwritten anyway, and on the
    meta device torch's Python random kernels would pull in torch._dynamo: seconds of imports)."""
    saved = {name: getattr(nn.init, name) for name in ("kaiming_uniform_", "uniform_", "normal_", "trunc_normal_")}
    try:
        for name in saved:
            setattr(nn.init, name, lambda tensor, *a, **k: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """torch's default dtype set to `dtype` for the block, and always restored."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def build_model(
    args: ModelArgs,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    seed: int | None = 0,
    max_batch_size: int | None = None,
    setup_cache: bool = True,
) -> CrossAttentionTransformer:
    """`device="meta"` gives exact shapes and dtypes with no memory and no arithmetic.
    Elsewhere the weights are seeded random unless `seed` is None (then load a checkpoint)."""
    device = torch.device(device)
    if device.type == "meta" or seed is None:
        with torch.device("meta"), _skip_init(), default_dtype(dtype):  # born in `dtype`: no .to() walk over the tree
            model = CrossAttentionTransformer(args)
        if seed is None and device.type != "meta":
            model = model.to_empty(device=device)
    elif device.type == "cpu":
        with torch.device("cpu"), _skip_init():
            model = CrossAttentionTransformer(args)
        init_random_weights(model, seed)
        model = model.to(dtype=dtype)
    else:  # an accelerator: allocate there and draw the random weights there (11B: no 42 GB detour)
        with torch.device("meta"), _skip_init():
            model = CrossAttentionTransformer(args)
        model = model.to_empty(device=device).to(dtype)
        init_random_weights(model, seed)
    if setup_cache:
        model.setup_cache(max_batch_size or args.max_batch_size, device, dtype)
    return model.eval()
