"""The value-summary kernel (`tracer/fused_stats.py`) compiled ahead of time for a GPU that is not
here: its global loads in the PTX and its registers per thread (ptxas -v), for each launch shape
given, and for another copy of the tracer where one is given. No GPU needed: Triton compiles for
any target, with the ptxas its wheel ships (`tracer.fused_stats.compile_for`).

    python benchmarks/kernel_ptx.py [--arch 90] [--baseline DIR]

A load `ld.global.v4.b32` reads 16 bytes (8 bf16 elements); `ld.global.b16` reads one element.
The counts are instructions in the PTX, not loads per step: a loop of few steps is unrolled
(BLOCK 4096 with 4 steps shows 8 vector loads: 2 a step).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import triton  # noqa: E402

from benchmarks_common import load_package  # noqa: E402

SHAPES = [  # (dtype, BLOCK, steps, warps): the default launch, and the larger blocks gpu_profile.py's VARIANTS try (kept in step by hand)
    ("bf16", 1024, 1, 4), ("bf16", 1024, 16, 4), ("bf16", 2048, 16, 4), ("bf16", 4096, 4, 8), ("fp32", 1024, 16, 4),
]
LOAD = re.compile(r"ld\.global\.[a-z0-9.]+")


def loads_and_registers(module, dtype: str, block: int, steps: int, warps: int, arch: int) -> tuple[Counter, str]:
    """(the PTX's global loads by kind, ptxas's register count) for one launch shape of `module`'s
    kernel, compiled by this tracer's `compile_for` (a baseline copy's kernel takes the same
    arguments)."""
    from tracer import fused_stats

    ptx = fused_stats.compile_for(arch, dtype, steps, block, warps, fold=module.FOLD, kernel=module._moments).asm["ptx"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.ptx"
        path.write_text(ptx)
        suffix = "a" if arch >= 90 else ""  # Triton writes sm_90a PTX for Hopper
        done = subprocess.run([_ptxas(), f"-arch=sm_{arch}{suffix}", "-v", str(path), "-o", os.devnull], capture_output=True, text=True)
    registers = re.findall(r"Used (\d+) registers", done.stderr)
    if done.returncode or not registers:
        raise SystemExit(f"ptxas failed on the {dtype} kernel, BLOCK {block}: {done.stderr.strip()[:500]}")
    return Counter(LOAD.findall(ptx)), registers[0]


def _ptxas() -> str:
    """The ptxas Triton itself uses (TRITON_PTXAS_PATH, else the one its wheel ships)."""
    try:
        return triton.knobs.nvidia.ptxas.path
    except AttributeError:  # an older Triton
        return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10: 90 for H100/H200, 80 for A100")
    parser.add_argument("--baseline", type=Path, help="a folder holding another copy of the tracer package")
    opts = parser.parse_args()
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton's default, said out loud (newer Tritons warn where it is unset)
    from tracer import fused_stats

    copies = {"this tracer": fused_stats}
    if opts.baseline is not None:
        load_package(opts.baseline / "tracer", "tracer_baseline")
        copies["baseline"] = importlib.import_module("tracer_baseline.fused_stats")
    print(f"| kernel, sm_{opts.arch} | dtype | BLOCK | steps | warps | registers | global loads in the PTX |")
    print("|---|---|---|---|---|---|---|")
    for name, module in copies.items():
        for dtype, block, steps, warps in SHAPES:
            loads, registers = loads_and_registers(module, dtype, block, steps, warps, opts.arch)
            shown = ", ".join(f"{count} {kind}" for kind, count in sorted(loads.items()))
            print(f"| {name} | {dtype} | {block} | {steps} | {warps} | {registers} | {shown} |")


if __name__ == "__main__":
    main()
