"""One-pass value summaries for accelerator tensors, in Triton.

A `Table` holds rows of moments on one device, as `values._raw_moments` gives them: min, max,
sum, sum of squared deviations from the mean (M2), NaN count, Inf count, as float64, so counts
past 2**24 stay exact. `table.add(x)` fills the next row from x with one launch and no host sync:
programs each read one slice of x once, in its own dtype, and leave a row of partial moments;
the last program to finish (it takes a ticket from a counter) folds the partial rows, in a fixed
order, into the table row, M2 as the sum of squares less sum²/n (float64 sums of fp32-rounded
values keep that subtraction exact enough). No atomics touch the sums, so a summary is the same
from run to run.

Launch shape: a program takes one step of BLOCK elements while FOLD programs cover the tensor,
else 4, 16, ... steps. (Sixteen steps at least, as before the tenth session, left a [1, 24, 4096]
tensor waiting out sixteen memory round trips in a row: 11.1 µs of device time on an H200, now
5.6. More programs than FOLD, or one 8192-element load per program, were slower for the largest
tensors: benchmarks/RESULTS.md. Compiled for sm_90, BLOCK 2048 or 4096 takes 183 or 184 registers
a thread, against 64 to 96 at 1024 (`benchmarks/kernel_ptx.py`): fewer programs fit on an SM,
which may be why.)

Loads: a program whose slice lies wholly inside x reads it without a mask. Masked by `n`, which
is not specialised, every load was 2 bytes (the PTX reads a thread's 8 bf16 elements one by one);
unmasked, it is one 16-byte load. Only the last program takes the masked path. (Found in the
PTX, eleventh session, which `benchmarks/kernel_ptx.py` prints without a GPU; not yet timed on one.)

Launching: Triton's launcher works out the kernel's specialisation, the current stream and the
launch hooks, and asks the driver about every tensor pointer, at each call (14-22 µs of host time
on an H200's host). `add` looks the compiled kernel up by what Triton specialises on and calls
its C launcher directly, pointers as integers (6-7 µs). It goes through Triton's own launcher
where that does not apply: launch hooks set (a profiler), scratch memory needed, a launcher that
takes other leading arguments than Triton 3.6's, Triton's interpreter, or `DIRECT` set to False.

Partial rows live in a scratch area per stream: launches on one stream run one after another,
so they can share it, and the folding program sets the ticket back to zero for the next one.

Min and max skip NaN here (ATen's propagate it); `values.summary_from_raw` reports a tensor with
NaN the same way whichever path summarised it.

Imported only when a tensor to summarise lives on a CUDA device and Triton is installed (it
ships with CUDA builds of PyTorch). Tests run the kernels on the CPU through Triton's
interpreter (`TRITON_INTERPRET=1`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

BLOCK = 1024  # elements a program reads per step (8 per thread: one 16-byte load of bf16)
WARPS = 4  # warps per program
FOLD = 512  # at most this many programs per launch: the last one folds their partial rows
STAGES = 3  # Triton's software pipelining of the steps' loads (its default)
ROWS = 4096  # rows per table (48 KiB each 1024 rows)
DIRECT = True  # launch through the kernel's C launcher where that applies (see above); False: always through Triton's
_KERNELS: dict[tuple, tuple] = {}  # see `Table.add` -> (the compiled kernel, its `_Direct` or None)
_SCRATCH: dict[tuple, "_Scratch"] = {}  # (device, stream, FOLD) -> its partial rows and ticket


@triton.jit(do_not_specialize=["n", "row"])
def _moments(x_ptr, n, stats_ptr, part_ptr, count_ptr, ticket_ptr, row,
             BLOCK: tl.constexpr, STEPS: tl.constexpr, FOLD: tl.constexpr):
    """Each program: the partial moments of x[pid*BLOCK*STEPS : (pid+1)*BLOCK*STEPS], min and
    max in fp32, sums in float64 (in fp32, two of bf16's lowest values, as in an additive mask,
    already overflow), NaN and Inf counts in int32, accumulated lane by lane and reduced once;
    the last program to finish folds every program's partials into stats[row] (its ticket,
    taken after the partials are stored, says it is last) and sets the ticket back to zero.
    A program whose slice lies wholly inside x reads it without a mask (see `_accumulate`)."""
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * (BLOCK * STEPS)
    if start + BLOCK * STEPS <= n:
        lo, hi, total, squares, nans, infs = _accumulate(x_ptr, start, n, BLOCK, STEPS, False)
    else:
        lo, hi, total, squares, nans, infs = _accumulate(x_ptr, start, n, BLOCK, STEPS, True)
    part = part_ptr + pid * 4
    tl.store(part + 0, tl.min(lo, axis=0).to(tl.float64))
    tl.store(part + 1, tl.max(hi, axis=0).to(tl.float64))
    tl.store(part + 2, tl.sum(total, axis=0))
    tl.store(part + 3, tl.sum(squares, axis=0))
    count = count_ptr + pid * 2
    tl.store(count + 0, tl.sum(nans, axis=0))
    tl.store(count + 1, tl.sum(infs, axis=0))
    tl.debug_barrier()  # every thread's stores are done before the ticket is taken
    ticket = tl.atomic_add(ticket_ptr, 1, sem="acq_rel", scope="gpu")
    programs = tl.num_programs(0)
    if ticket == programs - 1:
        _fold(stats_ptr, part_ptr, count_ptr, row, programs, n, FOLD)
        tl.atomic_xchg(ticket_ptr, 0, sem="release", scope="gpu")  # for the next launch on this stream


@triton.jit
def _accumulate(x_ptr, start, n, BLOCK: tl.constexpr, STEPS: tl.constexpr, MASKED: tl.constexpr):
    """STEPS steps of BLOCK elements from x[start], lane by lane: (min, max, sum, sum of squares,
    NaN count, Inf count), each [BLOCK]. Unmasked (MASKED False: the caller knows the slice lies
    inside x), a thread reads its 8 bf16 elements of a step in one 16-byte load; with a mask on an
    `n` Triton knows nothing of, it reads them one by one (8 loads of 2 bytes, in the PTX Triton
    3.6 compiles for sm_90)."""
    offs = tl.arange(0, BLOCK)
    lo = tl.full([BLOCK], float("inf"), tl.float32)
    hi = tl.full([BLOCK], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK], tl.float64)
    squares = tl.zeros([BLOCK], tl.float64)
    nans = tl.zeros([BLOCK], tl.int32)
    infs = tl.zeros([BLOCK], tl.int32)
    for step in tl.range(STEPS):
        idx = start + step * BLOCK + offs
        if MASKED:
            inside = idx < n
            x = tl.load(x_ptr + idx, mask=inside, other=0.0).to(tl.float32)
        else:
            inside = offs >= 0  # every lane
            x = tl.load(x_ptr + idx).to(tl.float32)
        is_nan = x != x
        ordered = inside & ~is_nan
        lo = tl.minimum(lo, tl.where(ordered, x, float("inf")))
        hi = tl.maximum(hi, tl.where(ordered, x, float("-inf")))
        wide = x.to(tl.float64)
        total += wide
        squares += wide * wide
        nans += (inside & is_nan).to(tl.int32)
        infs += (inside & (tl.abs(x) == float("inf"))).to(tl.int32)
    return lo, hi, total, squares, nans, infs


@triton.jit
def _fold(stats_ptr, part_ptr, count_ptr, row, programs, n, FOLD: tl.constexpr):
    """part/count[0:programs] -> stats[row, 0:6], float64, folded in a fixed order. The loads are
    volatile: they must see the stores the other programs of this launch made on other SMs."""
    idx = tl.arange(0, FOLD)
    inside = idx < programs
    part = part_ptr + idx * 4
    count = count_ptr + idx * 2
    lo = tl.load(part + 0, mask=inside, other=float("inf"), volatile=True)
    hi = tl.load(part + 1, mask=inside, other=float("-inf"), volatile=True)
    total = tl.load(part + 2, mask=inside, other=0.0, volatile=True)
    squares = tl.load(part + 3, mask=inside, other=0.0, volatile=True)
    nans = tl.load(count + 0, mask=inside, other=0, volatile=True).to(tl.int64)
    infs = tl.load(count + 1, mask=inside, other=0, volatile=True).to(tl.int64)
    out = stats_ptr + row * 6
    tl.store(out + 0, tl.min(lo, axis=0))
    tl.store(out + 1, tl.max(hi, axis=0))
    total = tl.sum(total, axis=0)
    tl.store(out + 2, total)
    tl.store(out + 3, tl.sum(squares, axis=0) - total * total / n.to(tl.float64))  # M2
    tl.store(out + 4, tl.sum(nans, axis=0).to(tl.float64))
    tl.store(out + 5, tl.sum(infs, axis=0).to(tl.float64))


def compile_for(arch: int, dtype: str = "bf16", steps: int = 16, block: int | None = None, warps: int | None = None,
                fold: int | None = None, kernel=None):
    """`kernel` (this module's `_moments` by default) compiled ahead of time for an NVIDIA GPU
    of compute capability arch/10 (90: H100, H200), which need not be here: Triton's compiler
    and the ptxas its wheel ships. Pointers specialised as 16-byte aligned, as Triton does at
    run time for a fresh allocation; `dtype` is Triton's name for x's ("bf16", "fp32"). The
    result's `asm["ptx"]` shows the loads (`benchmarks/kernel_ptx.py`)."""
    from triton.backends.compiler import GPUTarget

    signature = {"x_ptr": f"*{dtype}", "n": "i32", "stats_ptr": "*fp64", "part_ptr": "*fp64", "count_ptr": "*i32",
                 "ticket_ptr": "*i32", "row": "i32", "BLOCK": "constexpr", "STEPS": "constexpr", "FOLD": "constexpr"}
    aligned = [["tt.divisibility", 16]]
    source = triton.compiler.ASTSource(fn=kernel or _moments, signature=signature,
                                       constexprs={"BLOCK": block or BLOCK, "STEPS": steps, "FOLD": fold or FOLD},
                                       attrs={(i,): aligned for i in (0, 2, 3, 4, 5)})  # x, stats, part, count, ticket
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps or WARPS, "num_stages": STAGES})


def launch_shape(n: int) -> tuple[int, int]:
    """(steps per program, programs) for a tensor of n elements: one step each while FOLD
    programs cover it, else 4, 16, ... steps."""
    steps = 1
    while BLOCK * steps * FOLD < n:
        steps *= 4
    return steps, triton.cdiv(n, BLOCK * steps)


class _Scratch:
    """Partial rows for FOLD programs, and the ticket counter, for the launches of one stream."""

    def __init__(self, device: torch.device) -> None:
        self.partials = torch.empty(FOLD, 4, dtype=torch.float64, device=device)  # [P, 4]
        self.counts = torch.empty(FOLD, 2, dtype=torch.int32, device=device)  # [P, 2]
        self.ticket = torch.zeros(1, dtype=torch.int32, device=device)  # [1]
        self.pointers = (self.partials.data_ptr(), self.counts.data_ptr(), self.ticket.data_ptr())


class _Direct(NamedTuple):
    """What a direct launch of a compiled `_moments` takes besides its own arguments; it holds the
    scratch whose pointers it passes."""

    launch: object  # the C launcher Triton built for the kernel
    function: int
    cooperative: bool
    pdl: bool
    metadata: tuple
    scratch: _Scratch


_LAUNCH_FORMAT = "iiiKKppOOOOOO"  # the C launcher's leading arguments, as `add` passes them (Triton 3.6)


def _direct(kernel, scratch: _Scratch) -> _Direct | None:
    """How to launch `kernel` directly, or None where Triton's own launcher must be used (see the
    module's docstring): its C launcher must take the leading arguments `add` passes."""
    try:
        from triton.backends.nvidia import driver

        run = kernel.run
        if getattr(driver, "_BASE_ARGS_FORMAT", None) != _LAUNCH_FORMAT or run.global_scratch_size or run.profile_scratch_size:
            return None
        return _Direct(run.launch, kernel.function, run.launch_cooperative_grid, run.launch_pdl, kernel.packed_metadata, scratch)
    except (AttributeError, ImportError):  # another Triton version
        return None


_RUNTIME = getattr(getattr(triton, "knobs", None), "runtime", None)  # where Triton keeps its launch hooks


def _hooks_set() -> bool:
    """Whether a launch hook is set (Triton's `HookChain`s are never None, only empty)."""
    if _RUNTIME is None:
        return True
    return any(hook is not None and getattr(hook, "calls", True) for hook in (_RUNTIME.launch_enter_hook, _RUNTIME.launch_exit_hook))


class Table:
    """Up to ROWS summaries on one device; launches write their row and nothing else of it."""

    def __init__(self, device: torch.device) -> None:
        self.stats = torch.empty(ROWS, 6, dtype=torch.float64, device=device)  # [rows, 6]
        self.stats_ptr = self.stats.data_ptr()
        self.index = self.stats.get_device() if self.stats.is_cuda else -1
        self.used = 0

    @property
    def full(self) -> bool:
        return self.used == ROWS

    def add(self, x: torch.Tensor) -> int:
        """Queue x's moments (x: floating point, any shape and strides, on the table's device)
        into the next row of `stats`; returns the row's index."""
        flat = x if x.is_contiguous() else x.reshape(-1)  # [n] in memory: the kernel reads flat memory
        index = flat.get_device() if flat.is_cuda else -1
        if index != self.index or self.used == ROWS:
            raise ValueError(f"a full table, or a tensor on another device than the table's ({flat.device})")
        stream = 0
        if index >= 0:
            if index != torch._C._cuda_getDevice():
                with torch.cuda.device(index):  # Triton launches on the current device
                    return self.add(flat)
            stream = torch._C._cuda_getCurrentRawStream(index)
        n = flat.numel()
        steps, programs = launch_shape(n)
        # What Triton specialises on (the dtype, the data pointer's 16-byte alignment: the table's
        # and the scratch's are fresh allocations, always aligned; n's integer width; the
        # constants), and where the kernel runs.
        key = (index, stream, flat.dtype, flat.data_ptr() % 16 == 0, n >= 2**31, BLOCK, steps, FOLD, WARPS, STAGES)
        known = _KERNELS.get(key)
        row = self.used
        if known is not None and known[1] is not None and DIRECT and not _hooks_set():
            go = known[1]
            go.launch(programs, 1, 1, stream, go.function, go.cooperative, go.pdl, None, None, go.metadata, None, None, None,
                      flat.data_ptr(), n, self.stats_ptr, *go.scratch.pointers, row, BLOCK, steps, FOLD)
        else:
            self._launch(flat, key, known, programs, row)
        self.used = row + 1
        return row

    def _launch(self, flat: torch.Tensor, key: tuple, known: tuple | None, programs: int, row: int) -> None:
        """Through Triton's own launcher; compiles the kernel where it is new, and keeps it (with
        how to launch it directly, where that applies) under `key`."""
        device, stream, steps = flat.device, key[1], key[6]
        scratch = _SCRATCH.get((device, stream, FOLD))
        if scratch is None:
            scratch = _SCRATCH[(device, stream, FOLD)] = _Scratch(device)
        args = (flat, flat.numel(), self.stats, scratch.partials, scratch.counts, scratch.ticket, row, BLOCK, steps, FOLD)
        if known is None:
            kernel = _moments[(programs,)](*args, num_warps=WARPS, num_stages=STAGES)
            if hasattr(kernel, "launch_metadata"):  # a compiled kernel (not Triton's interpreter)
                _KERNELS[key] = (kernel, _direct(kernel, scratch))
        else:
            known[0][(programs, 1, 1)](*args)
