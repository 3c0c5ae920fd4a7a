"""Describe what flows through a traced call: tensors (shape, dtype, device), scalars, images.

Nothing here keeps a tensor alive: a description holds plain Python values; value statistics
(`ValueStats`) are queued as small device tensors (copies, for small outputs) and read back once.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import weakref

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
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        out = []
        for f in dataclasses.fields(tree):
            out.extend(leaves_with_paths(getattr(tree, f.name), f"{prefix}.{f.name}"))
        return out
    flat, _ = pytree.tree_flatten_with_path(tree)
    return [(prefix + pytree.keystr(path), leaf) for path, leaf in flat]


_DTYPE_NAMES: dict[torch.dtype, str] = {}


def dtype_name(dtype: torch.dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


def device_type(x: torch.Tensor) -> str:
    """`x.device.type`, without building a device object for the usual two."""
    return "cpu" if x.is_cpu else "meta" if x.is_meta else x.device.type


def tensor_item(path: str, x: torch.Tensor) -> dict:
    """A tensor leaf's description: where it sits in the call, its shape, dtype and device."""
    return {"path": path, "shape": list(x.shape), "dtype": dtype_name(x.dtype), "device": device_type(x)}


def describe_leaf(leaf) -> dict | None:
    """A JSON-ready description of a leaf that is not a tensor (see `tensor_item`), or None for
    leaves not worth recording."""
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


_KEY_PATHS: dict[tuple[str, object], str] = {}


def _key_path(prefix: str, key) -> str:
    """`prefix[key!r]`, remembered: the same few argument names come back at every call."""
    try:
        return _KEY_PATHS[prefix, key]
    except KeyError:
        path = _KEY_PATHS[prefix, key] = f"{prefix}[{key!r}]"
        return path
    except TypeError:  # an unhashable key
        return f"{prefix}[{key!r}]"


def describe_with_tensors(tree, prefix: str = "") -> tuple[list[dict], list[tuple[dict, torch.Tensor]]]:
    """Describe every leaf of `tree` (lists of plain ints, e.g. token ids, kept whole when short),
    and pair each tensor leaf with its description, in one walk."""
    if isinstance(tree, torch.Tensor):  # the common cases first: one tensor, or named tensors
        item = tensor_item(prefix, tree)
        return [item], [(item, tree)]
    if type(tree) is dict:  # a module's named inputs: usually all tensors
        out, tensors = [], []
        for key, x in tree.items():
            if not isinstance(x, torch.Tensor):
                break
            item = tensor_item(_key_path(prefix, key), x)
            out.append(item)
            tensors.append((item, x))
        else:
            return out, tensors
    out, tensors = [], []
    for path, leaf in leaves_with_paths(tree, prefix):
        if isinstance(leaf, torch.Tensor):
            item = tensor_item(path, leaf)
            tensors.append((item, leaf))
            out.append(item)
            continue
        info = describe_leaf(leaf)
        if info is not None:
            out.append({"path": path, **info})
    return compact_int_lists(out), tensors


def describe_call(args: tuple, kwargs: dict, names: list[str]) -> tuple[list[dict], list[tuple[dict, torch.Tensor]]]:
    """A call's inputs, named by the callee's parameters (`arg{i}` past them): what
    `describe_with_tensors` gives for the dict of them, built directly when all are tensors
    (a module's usual call, on the tracer's hottest path)."""
    items, tensors = [], []
    for i, x in enumerate(args):
        if not isinstance(x, torch.Tensor):
            break
        item = tensor_item(_key_path("", names[i]) if i < len(names) else f"['arg{i}']", x)
        items.append(item)
        tensors.append((item, x))
    else:
        for key, x in kwargs.items():
            if not isinstance(x, torch.Tensor):
                break
            item = tensor_item(_key_path("", key), x)
            items.append(item)
            tensors.append((item, x))
        else:
            return items, tensors
    return describe_with_tensors(named_args(args, kwargs, names))


def named_args(args: tuple, kwargs: dict, names: list[str]) -> dict:
    """Positional arguments named by the callee's parameters (`arg{i}` past them), then kwargs."""
    named = {(names[i] if i < len(names) else f"arg{i}"): a for i, a in enumerate(args)}
    named.update(kwargs)
    return named


def compact_int_lists(items: list[dict]) -> list[dict]:
    """Fold runs of scalar leaves that share a parent path (e.g. token ids) into one list entry."""
    if not any("value" in item and type(item["value"]) is int for item in items):
        return items
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
            folded.append({"path": parent or "", "_parent": parent, "_first": item["path"], "values": [item["value"]]})
            continue
        folded.append(item)
    for i, item in enumerate(folded):
        if "_parent" in item:
            del item["_parent"]
            first = item.pop("_first")
            if len(item["values"]) == 1:  # a lone int in a tuple, e.g. (x, npad): keep it a value
                folded[i] = {"path": first, "value": item["values"][0]}
                continue
            if len(item["values"]) > MAX_INLINE_LIST:
                item["length"] = len(item["values"])
                item["values"] = item["values"][:MAX_INLINE_LIST]
    return folded


SMALL = 1 << 18  # tensors up to this many elements are copied and summarised in batches
BATCH_BYTES = 256 << 20  # summarise the copies once they hold this much
# Large tensors on these devices go through `fused_stats` when Triton is installed. The tests add
# "cpu" to run its kernels in Triton's interpreter; the benchmarks empty it for ATen alone.
FUSED_DEVICES = ("cuda",)
FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@functools.cache
def _fused():
    """`tracer.fused_stats`, or None where Triton is missing (imported on first use: only CUDA
    tensors need it)."""
    try:
        from . import fused_stats
    except ImportError:
        return None
    return fused_stats


def _raw_moments(rows: torch.Tensor, counts: bool = True) -> torch.Tensor:
    """[k, n] -> [k, 6] float32 per row: min, max, sum, sqrt(sum of squares), NaN count, Inf count.

    Read in the tensor's own dtype and accumulated in fp32, so nothing is copied: min/max in
    one pass, the sum and the norm in one each (mean and std follow on the host). Counting
    NaN/Inf costs two more passes; with `counts=False` those columns stay 0 for the caller to
    fill in only for rows whose min/max are not finite.
    """
    k = rows.shape[0]
    if k == 1:  # whole-tensor reductions beat dim=1 ones over one long row
        flat = rows[0]
        lo, hi = torch.aminmax(flat)
        cols = [lo[None], hi[None], torch.sum(flat, dtype=torch.float32)[None], torch.linalg.vector_norm(flat, dtype=torch.float32)[None]]
        if counts:
            cols += [torch.isnan(flat).sum()[None], torch.isinf(flat).sum()[None]]
    else:
        cols = [rows.amin(dim=1), rows.amax(dim=1), torch.sum(rows, dim=1, dtype=torch.float32),
                torch.linalg.vector_norm(rows, dim=1, dtype=torch.float32)]
        if counts:
            cols += [torch.isnan(rows).sum(dim=1), torch.isinf(rows).sum(dim=1)]
    if not counts:
        cols += [torch.zeros_like(cols[2])] * 2
    return torch.stack([c.float() for c in cols], dim=1)


def summary_from_raw(row: list[float], n: int) -> dict:
    lo, hi, total, norm, nan, inf = row
    if nan:  # one convention for both paths: ATen's min/max propagate NaN, the fused kernel's skip it
        lo = hi = float("nan")
    mean = total / n
    var = max(norm * norm / n - mean * mean, 0.0) if math.isfinite(norm) else float("nan")
    stats = {"min": round_sig(lo), "max": round_sig(hi), "mean": round_sig(mean), "std": round_sig(math.sqrt(var) if var == var else var)}
    stats["nan"], stats["inf"] = int(nan), int(inf)
    return stats


class ValueStats:
    """Value summaries for many tensors with few kernels and one transfer per device.

    `add(item, x)` queues x's summary for the description `item`. Small tensors are copied
    (flattened, fp32) and summarised together, grouped by size, in a handful of batched
    reductions; large ones get their reductions at once, as small device tensors (on CUDA, with
    Triton, one fused kernel writes them into a row of a device table: `fused_stats`). Nothing is
    read back from an accelerator until `resolve()`, so no event waits on the device (on the
    CPU, where reading costs nothing, a large tensor is counted for NaN/Inf only when its min
    or max is not finite: those two passes are most of its cost); no traced tensor is kept
    alive (only copies of small ones, until the next batch). A tensor seen again (a module
    passing its child's output on) reuses the first summary, matched through a weak reference.
    """

    def __init__(self) -> None:
        self._groups: dict[tuple, list[tuple[dict, torch.Tensor]]] = {}
        self._bytes = 0
        self._done: list[tuple[list[dict], torch.Tensor]] = []
        self._rows: list[torch.Tensor | None] = []  # per summary row: its copy, if NaN/Inf counts are still due
        self._seen: dict[int, tuple[weakref.ref, int, dict]] = {}
        self._aliases: list[tuple[dict, dict]] = []
        self._tables: dict[torch.device, object] = {}  # device -> its current `fused_stats.Table`

    def add(self, item: dict, x: torch.Tensor) -> None:
        n = x.numel()
        if x.is_meta or n == 0 or x.is_complex():
            return
        hit = self._seen.get(id(x))
        if hit is not None and hit[0]() is x and hit[1] == x._version:
            self._aliases.append((item, hit[2]))
            return
        try:
            self._seen[id(x)] = (weakref.ref(x), x._version, item)
        except TypeError:
            pass
        if n > SMALL and x.dtype in FUSED_DTYPES and x.device.type in FUSED_DEVICES and _fused() is not None:
            self._done.append(([item], self._fused_row(x)))
            self._rows.append(None)
            return
        flat = x.detach().reshape(-1)
        if n <= SMALL:  # an fp32 copy: reductions over fp32 rows run several times faster than over bf16
            copy = flat.to(torch.float32, copy=True)
            self._groups.setdefault((x.device, n), []).append((item, copy))
            self._bytes += n * 4
            if self._bytes >= BATCH_BYTES:
                self._flush()
        else:
            row = (flat if flat.is_floating_point() else flat.float())[None]  # [1, n]
            on_cpu = flat.is_cpu  # reading a CPU scalar costs no sync: count NaN/Inf only if min/max say so
            stats = _raw_moments(row, counts=not on_cpu)
            if on_cpu and not torch.isfinite(stats[0, :2]).all():
                stats[0, 4], stats[0, 5] = torch.isnan(flat).sum(), torch.isinf(flat).sum()
            self._done.append(([item], stats))
            self._rows.append(None)

    def _fused_row(self, x: torch.Tensor) -> torch.Tensor:
        """x's moments, queued by the fused kernels into its device's table: the row, [1, 6]."""
        table = self._tables.get(x.device)
        if table is None or table.full:
            table = self._tables[x.device] = _fused().Table(x.device)
        return table.add(x.detach())

    def _flush(self, final: bool = False) -> None:
        """Summarise the queued copies. At the end (`final`) the NaN/Inf counts wait for the
        read-back and are computed only for rows that hold a non-finite value."""
        for entries in self._groups.values():
            rows = torch.stack([copy for _, copy in entries])  # [k, n]
            self._done.append(([item for item, _ in entries], _raw_moments(rows, counts=not final)))
            self._rows.extend(rows.unbind(0) if final else [None] * len(entries))
        self._groups.clear()
        self._bytes = 0

    def resolve(self) -> None:
        """Read every summary back (one transfer per device) into its description."""
        self._flush(final=True)
        by_device: dict[torch.device, list[tuple[list[dict], torch.Tensor, list]]] = {}
        i = 0
        for items, stats in self._done:
            by_device.setdefault(stats.device, []).append((items, stats, self._rows[i : i + len(items)]))
            i += len(items)
        for batches in by_device.values():
            table = torch.cat([stats for _, stats, _ in batches]).cpu().tolist()  # the one sync
            items = [item for batch_items, _, _ in batches for item in batch_items]
            copies = [c for _, _, cs in batches for c in cs]
            for item, row, copy in zip(items, table, copies):
                if copy is not None and not all(math.isfinite(v) for v in row[:2]):
                    row[4], row[5] = int(torch.isnan(copy).sum()), int(torch.isinf(copy).sum())
                item["stats"] = summary_from_raw(row, math.prod(item["shape"]))
        for item, source in self._aliases:
            if "stats" in source:
                item["stats"] = dict(source["stats"])
        self._done.clear()
        self._rows.clear()
        self._aliases.clear()
        self._seen.clear()
        self._tables.clear()


def round_sig(v: float, digits: int = 6) -> float | str:
    if v != v:
        return "nan"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return float(f"{v:.{digits}g}")
