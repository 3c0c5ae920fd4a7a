"""One-pass value summaries for large accelerator tensors, in Triton.

A `Table` holds rows of moments on one device, as `values._raw_moments` gives them: min, max,
sum, sum of squared deviations from the mean (M2), NaN count, Inf count, as float64, so counts
past 2**24 stay exact. `table.add(x)` fills the next row from x with one launch and no host sync:
programs each read one slice of x once, in its own dtype, and leave a row of partial moments;
the last program to finish (it takes a ticket from a per-row counter) folds the partial rows, in
a fixed order, into the table row, M2 as the sum of squares less sum²/n (float64 sums of
fp32-rounded values keep that subtraction exact enough). No atomics touch the sums, so a summary
is the same from run to run. (A second kernel for the fold cost 34 µs of host time per tensor
against 21 µs for one launch, on an H200's host: benchmarks/RESULTS.md.)

Min and max skip NaN here (ATen's propagate it); `values.summary_from_raw` reports a tensor with
NaN the same way whichever path summarised it.

Imported only when a tensor to summarise lives on a CUDA device and Triton is installed (it
ships with CUDA builds of PyTorch). Tests run the kernels on the CPU through Triton's
interpreter (`TRITON_INTERPRET=1`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024  # elements per program per step
WARPS = 4  # warps per program
PROGRAMS = 1024  # at most this many programs per tensor, so one fold step covers them all
MIN_STEPS = 16  # steps per program: a power of 4 from 16 up, so that few variants get compiled
ROWS = 512  # rows per table; each row has scratch for PROGRAMS partial rows (40 KiB)
_COMPILED: dict[tuple, object] = {}  # what Triton specialises `_moments` on -> the compiled kernel


@triton.jit
def _slice_moments(x_ptr, n, pid, BLOCK: tl.constexpr, STEPS: tl.constexpr):
    """Moments of x[pid*BLOCK*STEPS : (pid+1)*BLOCK*STEPS]: min, max (fp32), sum, sum of squares
    (float64: in fp32, two of bf16's lowest values, as in an additive mask, already overflow) and
    the NaN and Inf counts (int32)."""
    start = pid.to(tl.int64) * (BLOCK * STEPS)
    offs = tl.arange(0, BLOCK)
    lo = tl.full([BLOCK], float("inf"), tl.float32)
    hi = tl.full([BLOCK], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK], tl.float64)
    squares = tl.zeros([BLOCK], tl.float64)
    nans = tl.zeros([BLOCK], tl.int32)
    infs = tl.zeros([BLOCK], tl.int32)
    for step in tl.range(STEPS):
        idx = start + step * BLOCK + offs
        inside = idx < n
        x = tl.load(x_ptr + idx, mask=inside, other=0.0).to(tl.float32)
        is_nan = x != x
        ordered = inside & ~is_nan
        lo = tl.minimum(lo, tl.where(ordered, x, float("inf")))
        hi = tl.maximum(hi, tl.where(ordered, x, float("-inf")))
        wide = x.to(tl.float64)
        total += wide
        squares += wide * wide
        nans += (inside & is_nan).to(tl.int32)
        infs += (inside & (tl.abs(x) == float("inf"))).to(tl.int32)
    return (tl.min(lo, axis=0), tl.max(hi, axis=0), tl.sum(total, axis=0), tl.sum(squares, axis=0),
            tl.sum(nans, axis=0), tl.sum(infs, axis=0))


@triton.jit
def _fold(stats_ptr, part_ptr, count_ptr, row, programs, n, PROGRAMS: tl.constexpr):
    """part/count[row, 0:programs] -> stats[row, 0:6], float64, folded in a fixed order."""
    idx = tl.arange(0, PROGRAMS)
    inside = idx < programs
    part = part_ptr + (row * PROGRAMS + idx) * 4
    count = count_ptr + (row * PROGRAMS + idx) * 2
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


@triton.jit(do_not_specialize=["n", "row"])
def _moments(x_ptr, n, stats_ptr, part_ptr, count_ptr, ticket_ptr, row,
             BLOCK: tl.constexpr, STEPS: tl.constexpr, PROGRAMS: tl.constexpr):
    """Each program: its slice's partial moments; the last program to finish folds them all
    into stats[row] (its ticket, taken after the partials are stored, says it is last)."""
    pid = tl.program_id(0)
    lo, hi, total, squares, nans, infs = _slice_moments(x_ptr, n, pid, BLOCK, STEPS)
    part = part_ptr + (row * PROGRAMS + pid) * 4
    tl.store(part + 0, lo.to(tl.float64))
    tl.store(part + 1, hi.to(tl.float64))
    tl.store(part + 2, total)
    tl.store(part + 3, squares)
    count = count_ptr + (row * PROGRAMS + pid) * 2
    tl.store(count + 0, nans)
    tl.store(count + 1, infs)
    tl.debug_barrier()  # every thread's stores are done before the ticket is taken
    ticket = tl.atomic_add(ticket_ptr + row, 1, sem="acq_rel", scope="gpu")
    programs = tl.num_programs(0)
    if ticket == programs - 1:
        _fold(stats_ptr, part_ptr, count_ptr, row, programs, n, PROGRAMS)


class Table:
    """Up to ROWS summaries on one device, with the scratch their kernels need: partial rows
    and a zeroed ticket counter per row, so no launch allocates or waits on another."""

    def __init__(self, device: torch.device) -> None:
        self.stats = torch.empty(ROWS, 6, dtype=torch.float64, device=device)  # [rows, 6]
        self.partials = torch.empty(ROWS, PROGRAMS, 4, dtype=torch.float64, device=device)  # [rows, P, 4]
        self.counts = torch.empty(ROWS, PROGRAMS, 2, dtype=torch.int32, device=device)  # [rows, P, 2]
        self.tickets = torch.zeros(ROWS, dtype=torch.int32, device=device)  # [rows]
        self.used = 0

    @property
    def full(self) -> bool:
        return self.used == ROWS

    def add(self, x: torch.Tensor) -> torch.Tensor:
        """Queue x's moments (x: floating point, any shape and strides) into the next row;
        returns that row, a [1, 6] view."""
        flat = x if x.is_contiguous() else x.reshape(-1)  # [n] in memory: the kernel reads flat memory
        n = flat.numel()
        steps = MIN_STEPS
        while BLOCK * steps * PROGRAMS < n:
            steps *= 4
        programs = triton.cdiv(n, BLOCK * steps)
        row = self.used
        args = (flat, n, self.stats, self.partials, self.counts, self.tickets, row, BLOCK, steps, PROGRAMS)
        # Triton's launcher works out the kernel's specialisation at every call: about a third
        # of its host time (an H200's host: 17-19 µs per launch through it, 13 µs without). Its
        # inputs are the data pointer's 16-byte alignment, the integers' width and the dtype
        # (the table's own pointers are fresh allocations, always aligned), so the compiled
        # kernel is looked up by those here.
        key = (torch.cuda.current_device() if flat.is_cuda else flat.device, flat.device, flat.dtype, flat.data_ptr() % 16 == 0,
               n >= 2**31, BLOCK, steps, PROGRAMS, WARPS)  # Triton compiles for the current device
        kernel = _COMPILED.get(key)
        if kernel is None:
            kernel = _moments[(programs,)](*args, num_warps=WARPS)
            if hasattr(kernel, "launch_metadata"):  # a compiled kernel (not Triton's interpreter)
                _COMPILED[key] = kernel
        else:
            kernel[(programs, 1, 1)](*args)
        self.used += 1
        return self.stats[row : row + 1]
