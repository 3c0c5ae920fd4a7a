"""Shapes on the `meta` device from torch's C++ kernels, without its Python fallbacks.

`import torch` registers Python meta kernels for several hundred aten ops, over the C++ ones
those ops already have. They exist for symbolic shapes, which a meta forward never uses, and
the first one that runs imports sympy and torch._dynamo (seconds, before one shape is known).
`use_native_meta_kernels()` hands each op back to its C++ meta kernel, or to its C++ composite,
and keeps a Python kernel only where neither exists. For the few ops whose C++ path would still
reach such a Python kernel in this model's forward (layer norm, softmax, where, index_select),
it registers plain shape rules below. The result is the same: a test compares whole meta logs
made with and without it. It is process-wide and idempotent; on a torch without the private
registry it does nothing, and meta runs stay correct, only slower.
"""

from __future__ import annotations

import torch

_LIBRARY: torch.library.Library | None = None
_C_PATHS = ("Meta", "CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional")


def native_layer_norm(x, normalized_shape, weight, bias, eps):
    axis = x.dim() - len(normalized_shape)
    stats_shape = list(x.shape[:axis]) + [1] * len(normalized_shape)  # mean and rstd keep the normalised dims as 1
    stats_dtype = torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype
    mean = x.new_empty(stats_shape, dtype=stats_dtype)  # mean and rstd stay internal: F.layer_norm returns only the output
    return torch.empty_like(x, memory_format=torch.contiguous_format), mean, torch.empty_like(mean)


def _safe_softmax(x, dim, dtype=None):
    return torch.empty_like(x, dtype=dtype or x.dtype, memory_format=torch.contiguous_format)


def where_self(condition, x, other):
    shape = torch.broadcast_tensors(condition, x, other)[0].shape  # views only: C++ meta kernels
    return x.new_empty(shape, dtype=torch.result_type(x, other))


def index_select(x, dim, index):
    shape = list(x.shape)
    if shape:
        shape[dim] = index.numel()
    return x.new_empty(shape)


SHAPE_RULES = {
    "native_layer_norm": native_layer_norm,
    "_safe_softmax": _safe_softmax,
    "where.self": where_self,
    "index_select": index_select,
}


def use_native_meta_kernels() -> bool:
    """Route meta-device ops to C++ kernels (see the module docstring). True when active."""
    global _LIBRARY
    if _LIBRARY is not None:
        return True
    registry = getattr(torch._meta_registrations, "_meta_lib_dont_use_me_use_register_meta", None)
    if registry is None:
        return False
    from torch._decomp import global_decomposition_table

    python_kernels: dict = {}
    for kind in ("meta", "post_autograd", "pre_autograd"):  # torch's own order of precedence
        for op, fn in global_decomposition_table[kind].items():
            python_kernels.setdefault(op, fn)
    registry._destroy()
    library = torch.library.Library("aten", "IMPL", "Meta")
    for op, fn in python_kernels.items():
        if not isinstance(op, torch._ops.OpOverload) or not op.name().startswith("aten::") or op.is_view:
            continue
        name = op.name()
        if name.removeprefix("aten::") in SHAPE_RULES:
            continue
        if torch._C._dispatch_has_kernel_for_dispatch_key(name, "CompositeImplicitAutograd"):
            continue
        if not any(torch._C._dispatch_has_kernel_for_dispatch_key(name, key) for key in _C_PATHS):
            library.impl(op, fn)  # no C++ way to run it on meta: keep torch's Python kernel
    for name, rule in SHAPE_RULES.items():
        library.impl(name, rule)
    _LIBRARY = library
    return True
