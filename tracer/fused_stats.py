"""One-pass value summaries for large accelerator tensors, as two Triton kernels.

`moments_into(x, table, row)` writes x's raw moments (min, max, sum, square root of the sum of
squares, NaN count, Inf count: the columns of `values._raw_moments`) into `table[row]`, a
float64 device tensor (so counts past 2**24 stay exact). The first kernel reads x once, in its own dtype, and leaves one row of
partial moments per program; the second folds those rows, in a fixed order, into the table.
Two launches replace the dozen reductions, casts and bool-to-int copies that ATen needs for
the same six numbers, and the result is the same from run to run (no atomics).

Min and max skip NaN here (ATen's propagate it); `values.summary_from_raw` reports a tensor
with NaN the same way whichever path summarised it.

Imported only when a tensor to summarise lives on a CUDA device and Triton is installed (it
ships with CUDA builds of PyTorch). Tests run the kernels on the CPU through Triton's
interpreter (`TRITON_INTERPRET=1`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024  # elements per program per step
PROGRAMS = 1024  # at most this many programs in the first kernel: the second folds them in one step
MIN_STEPS = 16  # steps per program: a power of 4 from 16 up, so that few variants get compiled


@triton.jit
def _partial_moments(x_ptr, part_ptr, count_ptr, n, BLOCK: tl.constexpr, STEPS: tl.constexpr):
    """Program p: moments of x[p*BLOCK*STEPS : (p+1)*BLOCK*STEPS] -> part[p, 0:4] (min, max,
    sum, sum of squares) and count[p, 0:2] (NaN, Inf)."""
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * (BLOCK * STEPS)
    offs = tl.arange(0, BLOCK)
    lo = tl.full([BLOCK], float("inf"), tl.float32)
    hi = tl.full([BLOCK], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK], tl.float32)
    squares = tl.zeros([BLOCK], tl.float32)
    nans = tl.zeros([BLOCK], tl.int32)
    infs = tl.zeros([BLOCK], tl.int32)
    for step in tl.range(STEPS):
        idx = start + step * BLOCK + offs
        inside = idx < n
        x = tl.load(x_ptr + idx, mask=inside, other=0.0).to(tl.float32)
        is_nan = x != x
        is_inf = tl.abs(x) == float("inf")
        ordered = inside & ~is_nan
        lo = tl.minimum(lo, tl.where(ordered, x, float("inf")))
        hi = tl.maximum(hi, tl.where(ordered, x, float("-inf")))
        total += x
        squares += x * x
        nans += (inside & is_nan).to(tl.int32)
        infs += (inside & is_inf).to(tl.int32)
    row = part_ptr + pid * 4
    tl.store(row + 0, tl.min(lo, axis=0))
    tl.store(row + 1, tl.max(hi, axis=0))
    tl.store(row + 2, tl.sum(total, axis=0))
    tl.store(row + 3, tl.sum(squares, axis=0))
    tl.store(count_ptr + pid * 2 + 0, tl.sum(nans, axis=0))
    tl.store(count_ptr + pid * 2 + 1, tl.sum(infs, axis=0))


@triton.jit
def _fold_moments(part_ptr, count_ptr, out_ptr, programs, PROGRAMS: tl.constexpr):
    """One program: part[0:programs] and count[0:programs] (programs <= PROGRAMS) -> out[0:6], float64 (the norm as
    the square root of the sum of squares; the counts exact)."""
    idx = tl.arange(0, PROGRAMS)
    inside = idx < programs
    row = part_ptr + idx * 4
    lo = tl.load(row + 0, mask=inside, other=float("inf"))
    hi = tl.load(row + 1, mask=inside, other=float("-inf"))
    total = tl.load(row + 2, mask=inside, other=0.0)
    squares = tl.load(row + 3, mask=inside, other=0.0)
    nans = tl.load(count_ptr + idx * 2 + 0, mask=inside, other=0).to(tl.int64)
    infs = tl.load(count_ptr + idx * 2 + 1, mask=inside, other=0).to(tl.int64)
    tl.store(out_ptr + 0, tl.min(lo, axis=0).to(tl.float64))
    tl.store(out_ptr + 1, tl.max(hi, axis=0).to(tl.float64))
    tl.store(out_ptr + 2, tl.sum(total, axis=0).to(tl.float64))
    tl.store(out_ptr + 3, tl.sqrt(tl.sum(squares, axis=0)).to(tl.float64))
    tl.store(out_ptr + 4, tl.sum(nans, axis=0).to(tl.float64))
    tl.store(out_ptr + 5, tl.sum(infs, axis=0).to(tl.float64))


def moments_into(x: torch.Tensor, table: torch.Tensor, row: int) -> None:
    """x (any shape, contiguous or not; floating point) -> table[row, 0:6], without a host sync."""
    flat = x.detach().reshape(-1)  # [n], a view when x is contiguous
    n = flat.numel()
    steps = MIN_STEPS
    while BLOCK * steps * PROGRAMS < n:
        steps *= 4
    programs = triton.cdiv(n, BLOCK * steps)
    partials = torch.empty(programs, 4, dtype=torch.float32, device=flat.device)  # [P, 4]
    counts = torch.empty(programs, 2, dtype=torch.int32, device=flat.device)  # [P, 2]
    _partial_moments[(programs,)](flat, partials, counts, n, BLOCK=BLOCK, STEPS=steps)
    _fold_moments[(1,)](partials, counts, table[row], programs, PROGRAMS=PROGRAMS)
