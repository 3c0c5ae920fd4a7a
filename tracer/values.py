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


_PLAIN = (int, float, bool, str)


def call_record(args: tuple, kwargs: dict, names: list[str]) -> tuple | list[dict]:
    """A call's inputs as `describe_call` will describe them, for the hot path: where every
    argument is a tensor, None or a plain scalar, only what a description needs, as a tuple
    (`describe_record` turns it into items after the run): tensors as (shape, dtype, device),
    scalars as they are. Holds no tensor. Anything else is described at once (a list)."""
    leaves = []
    for x in (*args, *kwargs.values()) if kwargs else args:
        if isinstance(x, torch.Tensor):
            leaves.append((x.shape, x.dtype, x.device))
        elif x is None or type(x) in _PLAIN:
            leaves.append(x)
        else:
            return describe_call(args, kwargs, names)[0]
    return names, len(args), tuple(kwargs), leaves


def describe_record(record: tuple) -> list[dict]:
    """The items `describe_call` would have given for the call that `call_record` recorded: one
    per argument where all are tensors; otherwise through a dict of them, as `named_args` builds
    it (a keyword named like a positional argument takes its place)."""
    names, positional, keys, leaves = record
    named = [((names[i] if i < len(names) else f"arg{i}") if i < positional else keys[i - positional], leaf)
             for i, leaf in enumerate(leaves)]
    if not all(type(leaf) is tuple for leaf in leaves):
        named = list(dict(named).items())
    return [meta_item(_key_path("", name), leaf) if type(leaf) is tuple else {"path": _key_path("", name), **describe_leaf(leaf)}
            for name, leaf in named]


def record_key(record: tuple) -> tuple | None:
    """A `call_record` record as a dict key, equal only where `describe_record` gives the same
    items; None where a float or bool argument could make equal keys describe apart (0.0 and
    -0.0 are equal, so are 1 and True)."""
    names, positional, keys, leaves = record
    for leaf in leaves:
        if type(leaf) is float or type(leaf) is bool:
            return None
    return (id(names), positional, keys, *leaves)  # names: one list per forward, alive while its records are


def meta_item(path: str, meta: tuple) -> dict:
    """`tensor_item` from a tensor's recorded (shape, dtype, device)."""
    shape, dtype, device = meta
    return {"path": path, "shape": list(shape), "dtype": dtype_name(dtype), "device": device.type}


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
WIDE = (torch.float64, torch.int64, torch.int32)  # summarised in float64: fp32 would lose range or exact integers past 2**24
# A batch of same-shape copies is summarised once full: at most ACCELERATOR_BATCH_ROWS rows in
# ACCELERATOR_BATCH_BYTES on an accelerator; on the CPU at most CPU_BATCH_ROWS rows in
# CPU_BATCH_BYTES (kept in `_POOL` and in cache). A summary costs a dozen torch calls however
# few its rows: on the CPU, where a decode step's outputs are a few dozen values each, 1024 rows
# cut a 16-token generation's batch summaries from 64 to 43 (`benchmarks/RESULTS.md`, eighth session).
ACCELERATOR_BATCH_ROWS = 64
ACCELERATOR_BATCH_BYTES = 64 << 20
CPU_BATCH_ROWS = 1024
CPU_BATCH_BYTES = 2 << 20
POOL_BYTES = 64 << 20  # CPU batches kept for the next trace, up to this much
# Large tensors on these devices go through `fused_stats` when Triton is installed. The tests add
# "cpu" to run its kernels in Triton's interpreter; the benchmarks empty it for ATen alone.
FUSED_DEVICES = ("cuda",)
FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# From this many elements on (smaller ones are copied into batches). Fusing from 65536 on, or
# every tensor, made no difference beyond the noise of the whole prefill on an H200, in either
# direction (benchmarks/RESULTS.md, tenth session).
FUSED_MIN = SMALL + 1
CHUNK = 1 << 18  # a large CPU tensor is summarised this many elements at a time (`_chunked_moments`): 1 MiB in fp32, so a chunk's later passes find it in the cache


@functools.cache
def _fused():
    """`tracer.fused_stats`, or None where Triton is missing (imported on first use: only CUDA
    tensors need it)."""
    try:
        from . import fused_stats
    except ImportError:
        return None
    return fused_stats


def _raw_moments(rows: torch.Tensor, scratch: bool = False) -> torch.Tensor:
    """[k, n] -> [k, 6] float64 per row, on the rows' device and without reading anything back
    (on an accelerator a read-back waits for the device): min, max, sum, sum of squared
    deviations from the mean (M2), NaN count, Inf count. All sums run in float64 (an additive
    mask of bf16's lowest value, -3.39e38, overflows an fp32 sum), and counts stay exact past
    2**24. `scratch` rows are the caller's own copies, changed in place. `_cpu_moments` gives
    the same rows on the CPU.

    M2 comes from deviations: the sum gives c, the mean rounded to the rows' dtype; then d = x - c
    gives M2 = sum d² - (sum d)² / n, the corrected two-pass form. It stays exact however far the
    mean lies from zero and however much the sum lost: a sum of squares about zero showed std
    2.96 for a row of 10000 + N(0, 1), and a correction from an fp32 sum alone 0.00080 for
    [10000, 10000.00098, 10000.00098] (float64: 0.00046). (The sum itself stays the direct one:
    n c + sum d was no closer in general, and further off for integers, whose fp32 sums are
    exact.) The deviations are halved before the subtraction, which stays exact (each
    difference still rounds once) and keeps x - c finite for values of both signs near the
    largest float (3e38 and -3e38 showed std nan)."""
    n = rows.shape[1]
    head = torch.stack([rows.amin(dim=1), rows.amax(dim=1)], dim=1).double()  # [k, 2]
    tail = torch.stack([torch.isnan(rows).sum(dim=1), torch.isinf(rows).sum(dim=1)], dim=1).double()  # [k, 2]
    total = rows.sum(dim=1, dtype=torch.float64)  # [k]
    center = (total / n).to(rows.dtype)  # [k]
    half = torch.mul(rows, 0.5, out=rows if scratch else None).sub_(center[:, None] * 0.5)  # [k, n]: (x - c) / 2
    drift = 2 * half.sum(dim=1, dtype=torch.float64)  # [k]
    m2 = 4 * torch.linalg.vector_norm(half, dim=1, dtype=torch.float64).square() - drift.square() / n  # [k]
    return torch.cat([head, torch.stack([total, m2], dim=1), tail], dim=1)  # [k, 6]


def _cpu_moments(rows: torch.Tensor, out: torch.Tensor | None = None) -> list[list[float]]:
    """`_raw_moments` for rows on the CPU, as lists: reading back costs nothing there, so the
    min and max are read first and decide the rest, and the rows are put together in Python (a
    dozen torch calls where the tensor version takes two dozen, about 10 µs each).

    Sums run in fp32 with torch's cascade summation (an fp32 norm or dot product moved the std
    by up to 6e-5 over a million elements) unless a value is large enough to overflow them: then
    in float64, over halved deviations. NaN and Inf are counted only where a min
    or max is not finite (two more passes). The deviations go to `out` (the rows themselves,
    when they are our own copy), or else to a new tensor."""
    k, n = rows.shape
    lo, hi = rows.amin(dim=1).tolist(), rows.amax(dim=1).tolist()  # (`aminmax` along dim 1: 6x slower on 73728-long rows)
    if math.isfinite(sum(lo) + sum(hi)):  # no NaN or Inf anywhere (or sums past float64's range: then counted anyway)
        largest, nan, inf = max(-min(lo), max(hi)), [0] * k, [0] * k
    else:  # counted before the rows change in place; rows with NaN left out of `largest`
        largest = max((abs(v) for v in lo + hi if v == v), default=0.0)
        nan, inf = torch.isnan(rows).sum(dim=1).tolist(), torch.isinf(rows).sum(dim=1).tolist()
    wide = _too_wide_for_fp32(largest, n)
    total = rows.sum(dim=1, dtype=torch.float64 if wide else None)  # [k]
    center = (total / n).to(rows.dtype)  # [k]
    if wide:  # float64 accumulators, over (x - c) / 2: x - c may pass the dtype's largest value
        dev = torch.mul(rows, 0.5, out=out).sub_(center[:, None] * 0.5)  # [k, n]
        drift = (2 * dev.sum(dim=1, dtype=torch.float64)).tolist()
        spread = (4 * torch.linalg.vector_norm(dev, dim=1, dtype=torch.float64).square()).tolist()
    else:
        dev = torch.sub(rows, center[:, None], out=out)  # [k, n]
        drift = dev.sum(dim=1).tolist()
        spread = dev.square_().sum(dim=1).tolist()
    return [[a, b, t, s - d * d / n, p, q]  # M2 from the deviations from c
            for a, b, t, d, s, p, q in zip(lo, hi, total.tolist(), drift, spread, nan, inf)]


def _too_wide_for_fp32(largest: float, n: int) -> bool:
    """Whether n squared deviations of values up to `largest` in magnitude could overflow an fp32
    sum (their deviations reach 2 * largest)."""
    return 4 * largest * largest * n >= 2.0**127


def _chunked_moments(flat: torch.Tensor, dtype: torch.dtype, space: torch.Tensor) -> list[list[float]] | None:
    """`_cpu_moments` of one long row, `flat` [n], a CHUNK at a time, in `dtype`:
    each chunk is read from memory once per sweep, converted into `space` [CHUNK] where it is
    in another dtype, and its other passes find it in the cache (`_cpu_moments` takes the whole
    row through memory seven times). Two sweeps: the min, max and sum, then the deviations from
    the mean (into `space`). The chunks' sums add up in float64. None where the row holds NaN or
    Inf, or values large enough to need `_cpu_moments`' float64 path: the caller takes the
    whole row then."""
    n = flat.numel()
    chunks = flat.split(CHUNK)

    def converted(chunk: torch.Tensor) -> torch.Tensor:
        return chunk if chunk.dtype == dtype else space[: chunk.numel()].copy_(chunk)

    lo, hi, total = math.inf, -math.inf, 0.0
    for chunk in chunks:
        part = converted(chunk)  # [CHUNK]
        low, high = part.amin().item(), part.amax().item()
        if not math.isfinite(low + high):  # NaN or Inf: Python's min and max would not see a NaN
            return None
        lo, hi, total = min(lo, low), max(hi, high), total + part.sum().item()
    if _too_wide_for_fp32(max(-lo, hi), n):
        return None
    center = torch.tensor(total / n, dtype=dtype).item()  # the mean, rounded to `dtype`
    drift = spread = 0.0
    for chunk in chunks:
        dev = torch.sub(converted(chunk), center, out=space[: chunk.numel()])  # [CHUNK]
        drift += dev.sum().item()
        spread += dev.square_().sum().item()
    return [[lo, hi, total, spread - drift * drift / n, 0, 0]]


def summary_from_raw(row: list[float], n: int) -> dict:
    lo, hi, total, m2, nan, inf = row
    if nan:  # one convention for both paths: ATen's min/max propagate NaN, the fused kernel's skip it
        lo = hi = float("nan")
    mean = total / n
    if lo == hi:  # a constant: exact, where fp32 moments left a residue (std 0.0821 for 500s)
        mean, var = lo, (0.0 if math.isfinite(lo) else float("nan"))
    else:
        var = max(m2 / n, 0.0) if math.isfinite(m2) else float("nan")
    return {"min": round_sig(lo), "max": round_sig(hi), "mean": round_sig(mean), "std": round_sig(math.sqrt(var) if var == var else var),
            "nan": int(nan), "inf": int(inf)}


_POOL: dict[tuple, list["_Batch"]] = {}  # (device, shape, row dtype) -> spare CPU batches
_pooled_bytes = 0


class _Batch:
    """Same-shape fp32 copies of small tensors, one row each, waiting to be summarised together
    (float64 copies for the dtypes in `WIDE`).

    On the CPU a summarised batch goes back to `_POOL` for the next tensors of its shape, in
    this trace or a later one: writing into fresh memory costs a page fault every 4 KiB, which
    was most of the price of a copy. Each row is also kept as a view of the tensors' own shape,
    so a copy is one `copy_`."""

    def __init__(self, key: tuple, n: int) -> None:
        global _pooled_bytes
        device, shape, dtype = self.key = key
        on_cpu, size = device.type == "cpu", dtype.itemsize
        rows, budget = (CPU_BATCH_ROWS, CPU_BATCH_BYTES) if on_cpu else (ACCELERATOR_BATCH_ROWS, ACCELERATOR_BATCH_BYTES)
        k = max(1, min(rows, budget // (size * n)))
        self.rows = torch.empty(k, n, device=device, dtype=dtype)  # [k, n]
        self.slots = self.rows.view(k, *shape).unbind(0)  # k views, each shaped like x
        self.items: list[dict] = []
        self.pooled = on_cpu and _pooled_bytes + size * k * n <= POOL_BYTES
        if self.pooled:
            _pooled_bytes += size * k * n

    @staticmethod
    def take(key: tuple, n: int) -> "_Batch":
        try:
            return _POOL[key].pop()
        except (KeyError, IndexError):
            return _Batch(key, n)

    def add(self, item: dict, x: torch.Tensor) -> bool:
        """Copy x into the next row; True once the batch is full."""
        self.slots[len(self.items)].copy_(x)
        self.items.append(item)
        return len(self.items) == len(self.slots)

    def summarise(self) -> tuple[list[dict], torch.Tensor | list]:
        """(items, their moments); the rows are free for reuse afterwards."""
        rows = self.rows[: len(self.items)]  # [k, n]
        done = (self.items, _cpu_moments(rows, out=rows) if rows.is_cpu else _raw_moments(rows, scratch=True))
        self.items = []
        if self.pooled:
            _POOL.setdefault(self.key, []).append(self)
        return done


class ValueStats:
    """Value summaries for many tensors with few kernels and one transfer per device.

    `add(item, x)` queues x's summary for the description `item`. Small tensors are copied into
    batches of their shape (fp32 rows: reductions over fp32 run several times faster than over
    bf16; float64 rows for the dtypes in `WIDE`) and summarised a batch at a time; large ones
    are summarised at once, as small device tensors (on CUDA, with Triton, one fused kernel
    writes them into a row of a device table: `fused_stats`). Nothing is read back from an accelerator until `resolve()`, so no event
    waits on the device; on the CPU, where reading costs nothing, NaN/Inf are counted only
    where a min or max is not finite (those two passes were most of the cost). No traced tensor
    is kept alive: only copies of small ones, until their batch is summarised. A tensor seen
    again (a module passing its child's output on) reuses the first summary, matched through a
    weak reference.
    """

    def __init__(self) -> None:
        self._batches: dict[tuple, _Batch] = {}
        self._done: list[tuple[list[dict], torch.Tensor | list]] = []  # (items, moments: a device tensor, or the CPU's rows)
        self._seen: dict[int, tuple[weakref.ref, int, dict]] = {}
        self._aliases: list[tuple[dict, dict]] = []
        self._tables: dict[torch.device, list[tuple[object, list[dict]]]] = {}  # device -> its `fused_stats.Table`s, each with its rows' items
        self._scratch: dict[torch.dtype, torch.Tensor] = {}  # CPU chunk buffers for large tensors (`_whole`)

    def add(self, item: dict, x: torch.Tensor) -> None:
        n = x.numel()
        if x.is_meta or n == 0 or x.is_complex():
            return
        try:
            version = x._version
        except RuntimeError:  # an inference-mode tensor has no version counter: a repeat is summarised again
            version = None
        if version is not None:
            hit = self._seen.get(id(x))
            if hit is not None and hit[0]() is x and hit[1] == version:
                self._aliases.append((item, hit[2]))
                return
            try:
                self._seen[id(x)] = (weakref.ref(x), version, item)
            except TypeError:  # no weak references to it
                pass
        if x.requires_grad:
            x = x.detach()
        if n >= FUSED_MIN and x.dtype in FUSED_DTYPES and x.device.type in FUSED_DEVICES and _fused() is not None:
            self._fused_row(item, x)
        elif n <= SMALL:
            key = (x.device, x.shape, torch.float64 if x.dtype in WIDE else torch.float32)
            batch = self._batches.get(key)
            if batch is None:
                batch = self._batches[key] = _Batch.take(key, n)
            if batch.add(item, x):
                self._done.append(batch.summarise())
                del self._batches[key]
        else:
            self._done.append(([item], self._whole(x)))

    def _whole(self, x: torch.Tensor) -> torch.Tensor | list:
        """The moments of x, a tensor over SMALL elements, alone (not in a batch), in fp32 (float64
        for `WIDE`). On an accelerator from x itself where it is a contiguous tensor of that
        dtype, else from a copy. On the CPU a chunk at a time
        (`_chunked_moments`), through one CHUNK-long buffer kept for the rest of the trace: with
        two 3.1M-element tensors (bf16 and fp32) in a benchmark's forward, that took 15% off its
        time in `ValueStats` (`benchmarks/RESULTS.md`, eleventh session). A tensor with NaN, Inf or huge
        values is summarised whole, from a copy in that dtype."""
        dtype = torch.float64 if x.dtype in WIDE else torch.float32
        if not x.is_cpu:
            flat = x.reshape(-1).to(dtype)  # [n]
            return _raw_moments(flat[None], scratch=flat.data_ptr() != x.data_ptr())
        n = x.numel()
        space = self._scratch.get(dtype)
        if space is None:
            space = self._scratch[dtype] = torch.empty(CHUNK, dtype=dtype)
        moments = _chunked_moments(x.reshape(n), dtype, space)  # [n]: a view, or a copy of a strided x
        if moments is not None:
            return moments
        work = torch.empty(x.shape, dtype=dtype).copy_(x).view(1, n)  # [1, n]
        return _cpu_moments(work, out=work)

    def _fused_row(self, item: dict, x: torch.Tensor) -> None:
        """x's moments, queued by the fused kernel into the next row of its device's table; the
        table's items are kept in row order, so it is read back whole."""
        tables = self._tables.setdefault(x.device, [])
        if not tables or tables[-1][0].full:
            tables.append((_fused().Table(x.device), []))
        table, items = tables[-1]
        table.add(x)
        items.append(item)

    def resolve(self) -> None:
        """Read every summary back (one transfer per device) into its description."""
        for batch in self._batches.values():
            self._done.append(batch.summarise())
        by_device: dict[torch.device, list[tuple[list[dict], torch.Tensor]]] = {}
        rows: list[tuple[list[dict], list]] = []  # the CPU's, read back already
        for items, stats in self._done:
            if isinstance(stats, list):
                rows.append((items, stats))
            else:
                by_device.setdefault(stats.device, []).append((items, stats))
        for device, tables in self._tables.items():
            by_device.setdefault(device, []).extend((items, table.stats[: table.used]) for table, items in tables)  # [used, 6] each
        for batches in by_device.values():
            table = torch.cat([stats for _, stats in batches]).cpu().tolist()  # the one sync
            rows.append(([item for batch_items, _ in batches for item in batch_items], table))
        for items, table in rows:
            for item, row in zip(items, table):
                item["stats"] = summary_from_raw(row, math.prod(item["shape"]))
        for item, source in self._aliases:
            if "stats" in source:
                item["stats"] = dict(source["stats"])
        self._batches.clear()
        self._done.clear()
        self._aliases.clear()
        self._seen.clear()
        self._tables.clear()
        self._scratch.clear()


SIGNIFICANT_DIGITS = 6  # a value summary's numbers keep this many (`round_sig`)


def round_sig(v: float) -> float | str:
    """v to SIGNIFICANT_DIGITS significant digits (a zero without its sign: torch's min and max may pick either of
    0.0 and -0.0); "nan", "inf" or "-inf" where it is not finite."""
    if v - v == 0.0:
        return float("%.*g" % (SIGNIFICANT_DIGITS, v)) + 0.0
    return "nan" if v != v else ("inf" if v > 0 else "-inf")
