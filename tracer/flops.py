"""Forward FLOPs of the functions that dominate a transformer, from shapes alone.

Counted at the torch-function level (no dispatch mode, so nothing extra runs on `meta`),
with the conventions of torch.utils.flop_counter: a multiply-add is 2 FLOPs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _linear(args, kwargs, out):
    x, weight = args[0], (args[1] if len(args) > 1 else kwargs["weight"])
    return 2 * x.numel() * weight.shape[0]


def _matmul(args, kwargs, out):
    a = args[0]
    return 2 * out.numel() * a.shape[-1] if isinstance(out, torch.Tensor) and a.dim() > 0 else 0


def _sdpa(args, kwargs, out):
    q, k = args[0], args[1]
    v = args[2] if len(args) > 2 else kwargs["value"]
    batch = math.prod(q.shape[:-2])
    return 2 * batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


def _conv(args, kwargs, out):
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    return 2 * out.numel() * math.prod(weight.shape[1:])


FORMULAS = {
    F.linear: _linear,
    torch.matmul: _matmul,
    torch.mm: _matmul,
    torch.bmm: _matmul,
    torch.Tensor.matmul: _matmul,
    torch.Tensor.__matmul__: _matmul,
    torch.Tensor.mm: _matmul,
    torch.Tensor.bmm: _matmul,
    F.scaled_dot_product_attention: _sdpa,
    F.conv1d: _conv,
    F.conv2d: _conv,
    F.conv3d: _conv,
}


# Where the counted functions live, for patching when no function mode is active.
PATCH_TARGETS = [
    (F, "linear"), (F, "scaled_dot_product_attention"), (F, "conv1d"), (F, "conv2d"), (F, "conv3d"),
    (torch, "matmul"), (torch, "mm"), (torch, "bmm"),
    (torch.Tensor, "matmul"), (torch.Tensor, "__matmul__"), (torch.Tensor, "mm"), (torch.Tensor, "bmm"),
]


def count(func, args, kwargs, out) -> int:
    formula = FORMULAS.get(func)
    if formula is None:
        return 0
    try:
        return int(formula(args, kwargs or {}, out))
    except (IndexError, KeyError, AttributeError, TypeError):
        return 0
