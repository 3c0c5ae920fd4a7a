"""Describe what flows through a traced call: tensors (shape, dtype, device), scalars, images.

Nothing here keeps a tensor alive: a description holds plain Python values, plus (for real
tensors) a small pending statistics tensor that no longer references the original.
"""

from __future__ import annotations

import torch
from torch.utils import _pytree as pytree

MAX_INLINE_LIST = 16  # longer lists of scalars are summarised by their length


def leaves_with_paths(tree, prefix: str = "") -> list[tuple[str, object]]:
    """Flatten nested args/outputs into (key path, leaf) pairs: `[0]`, `['logits']`, `[1][0]`.
    Plain tuples, lists and dicts are walked directly (fast); other containers go through pytree."""
    if isinstance(tree, torch.Tensor) or tree is None or isinstance(tree, (int, float, str, bool)):
        return [(prefix, tree)]
    if type(tree) in (tuple, list):
        out = []
        for i, item in enumerate(tree):
            out.extend(leaves_with_paths(item, f"{prefix}[{i}]"))
        return out
    if type(tree) is dict:
        out = []
        for key, item in tree.items():
            out.extend(leaves_with_paths(item, f"{prefix}[{key!r}]"))
        return out
    flat, _ = pytree.tree_flatten_with_path(tree)
    return [(prefix + pytree.keystr(path), leaf) for path, leaf in flat]


def describe_leaf(leaf) -> dict | None:
    """A JSON-ready description of one leaf, or None for leaves not worth recording."""
    if isinstance(leaf, torch.Tensor):
        return {
            "shape": list(leaf.shape),
            "dtype": str(leaf.dtype).removeprefix("torch."),
            "device": leaf.device.type,
        }
    if isinstance(leaf, bool) or leaf is None:
        return {"value": leaf}
    if isinstance(leaf, (int, float, str)):
        return {"value": leaf if not isinstance(leaf, str) or len(leaf) <= 200 else leaf[:200] + "…"}
    if isinstance(leaf, torch.dtype):
        return {"value": str(leaf).removeprefix("torch.")}
    if isinstance(leaf, torch.device):
        return {"value": leaf.type}
    size = getattr(leaf, "size", None)
    mode = getattr(leaf, "mode", None)
    if isinstance(size, tuple) and isinstance(mode, str):  # a PIL image, without importing PIL here
        return {"image": {"size": list(size), "mode": mode}}
    return {"type": type(leaf).__name__}


def describe(tree, prefix: str = "") -> list[dict]:
    """Describe every leaf of `tree`; lists of plain ints (token ids, masks) are kept whole when short."""
    out = []
    for path, leaf in leaves_with_paths(tree):
        info = describe_leaf(leaf)
        if info is not None:
            out.append({"path": prefix + path, **info})
    return compact_int_lists(out)


def compact_int_lists(items: list[dict]) -> list[dict]:
    """Fold runs of scalar leaves that share a parent path (e.g. token ids) into one list entry."""
    folded: list[dict] = []
    for item in items:
        parent, _, last = item["path"].rpartition("[")
        prev = folded[-1] if folded else None
        if (
            "value" in item and isinstance(item["value"], int) and not isinstance(item["value"], bool)
            and prev is not None and prev.get("_parent") == parent and last.rstrip("]").isdigit()
        ):
            prev["values"].append(item["value"])
            continue
        if "value" in item and isinstance(item["value"], int) and not isinstance(item["value"], bool) and last.rstrip("]").isdigit():
            folded.append({"path": parent or "", "_parent": parent, "values": [item["value"]]})
            continue
        folded.append(item)
    for item in folded:
        if "_parent" in item:
            del item["_parent"]
            if len(item["values"]) > MAX_INLINE_LIST:
                item["length"] = len(item["values"])
                item["values"] = item["values"][:MAX_INLINE_LIST]
    return folded


def tensor_leaves(tree) -> list[tuple[str, torch.Tensor]]:
    return [(p, x) for p, x in leaves_with_paths(tree) if isinstance(x, torch.Tensor)]


STAT_NAMES = ("min", "max", "mean", "std", "nan", "inf")


@torch.no_grad()
def pending_stats(x: torch.Tensor) -> torch.Tensor | None:
    """[6] float32 on x's device: min, max, mean, std, NaN count, Inf count. No host sync here:
    the values are read once, for all events together, when the trace ends."""
    if x.device.type == "meta" or x.numel() == 0 or x.is_complex():
        return None
    xf = x.detach()
    if not xf.is_floating_point():
        xf = xf.float()
    lo, hi = torch.aminmax(xf)
    std, mean = torch.std_mean(xf, correction=0)  # accumulates in fp32 even for bf16 input
    nan = torch.isnan(xf).sum()
    inf = torch.isinf(xf).sum()
    return torch.stack([lo.float(), hi.float(), mean.float(), std.float(), nan.float(), inf.float()])


def resolve_stats(pending: list[tuple[dict, torch.Tensor]]) -> None:
    """Move every pending statistic to the host in one transfer and write it into its description."""
    if not pending:
        return
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(pending):
        by_device.setdefault(t.device, []).append(i)
    for idx in by_device.values():
        values = torch.stack([pending[i][1] for i in idx]).cpu().tolist()  # one sync per device
        for i, row in zip(idx, values):
            target = pending[i][0]
            stats = {k: round_sig(v) for k, v in zip(STAT_NAMES[:4], row[:4])}
            stats["nan"], stats["inf"] = int(row[4]), int(row[5])
            target["stats"] = stats


def round_sig(v: float, digits: int = 6) -> float | str:
    if v != v:
        return "nan"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return float(f"{v:.{digits}g}")
