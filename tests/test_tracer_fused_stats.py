"""The fused value-summary kernels (`tracer/fused_stats.py`), run on the CPU through Triton's
interpreter, against float64 references and against the ATen path (`values._raw_moments`).

Triton picks the interpreter when it is imported, so the checks run in one child process with
`TRITON_INTERPRET=1`; the child prints one JSON line per check.
"""

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, math
    import torch
    from torch import nn
    from tracer import fused_stats, trace, values

    g = torch.Generator().manual_seed(0)

    def fused(x, table=None):
        table = table or fused_stats.Table(torch.device("cpu"))
        table.stats.fill_(-7.0)  # poisoned: every column must be written
        return table.stats[table.add(x)].tolist()

    def reference(x):
        x64 = x.double().reshape(-1)
        finite = x64[~torch.isnan(x64)]
        lo, hi = (finite.min().item(), finite.max().item()) if finite.numel() else (math.inf, -math.inf)
        total, n = x64.sum().item(), x64.numel()
        m2 = ((x64 - x64.mean()).square().sum() if math.isfinite(total) else x64.square().sum() - total * total / n).item()
        return [lo, hi, total, m2, int(torch.isnan(x64).sum()), int(torch.isinf(x64).sum())]

    def emit(name, x):
        print(json.dumps({"name": name, "n": x.numel(), "fused": fused(x), "ref": reference(x)}))

    emit("bf16, one partial step short", (torch.randn(300_001, generator=g) * 3 + 1).bfloat16())
    emit("fp16", torch.randn(70_000, generator=g).half())
    emit("fp32, not contiguous", torch.randn(300, 401, generator=g).t())
    x = torch.randn(100_000, generator=g)
    x[5], x[7], x[9], x[11] = math.nan, math.inf, -math.inf, math.nan
    emit("fp32 with NaN and Inf", x)
    emit("all NaN", torch.full((5000,), math.nan))
    emit("Inf only", torch.tensor([math.inf] * 3 + [1.0]))
    mask = torch.full((300_000,), torch.finfo(torch.bfloat16).min, dtype=torch.bfloat16)
    mask[:3000] = 0
    emit("bf16 additive mask", mask)  # its fp32 sum would overflow to -inf
    fused_stats.FOLD = 4  # at most 4 programs: each takes more steps (4 -> 16 -> 64 -> 256)
    emit("more steps per program", torch.randn(4 * 1024 * 16 * 3 + 17, generator=g))
    emit("most steps per program", torch.randn(4 * 1024 * 64 * 2 + 3, generator=g))
    emit("every slice whole: no masked loads", (torch.randn(4 * 1024 * 16 * 2, generator=g) - 2).bfloat16())
    fused_stats.FOLD = 512
    emit("many programs, one step each", torch.randn(1024 * 500 + 1, generator=g).half())

    y = torch.randn(77_777, generator=g).bfloat16()
    print(json.dumps({"name": "deterministic", "same": fused(y) == fused(y)}))
    table = fused_stats.Table(torch.device("cpu"))
    rows = [table.add(torch.full((40_000,), float(i))) for i in range(3)]  # rows 0, 1, 2 of one table
    print(json.dumps({"name": "rows", "rows": rows, "sums": [table.stats[r, 2].item() for r in rows], "used": table.used}))

    def summaries(tensors, fused_devices, fused_min=values.SMALL + 1):  # each tensor's summary, with these settings
        values.FUSED_DEVICES, values.FUSED_MIN = fused_devices, fused_min
        m = nn.Identity()
        with trace(m) as t:
            for z in tensors:
                m(z)
        return [e["outputs"][0]["stats"] for e in t.events]

    # ValueStats with the fused path allowed on the CPU, against the ATen path; tables of 2 rows,
    # so a third large tensor starts a new table.
    fused_stats.ROWS = 2
    zs = [torch.randn(values.SMALL + 11 * i, generator=g).bfloat16() for i in range(1, 4)]
    zs[0][3] = math.nan
    print(json.dumps({"name": "value stats", "fused": summaries(zs, ("cpu",)), "aten": summaries(zs, ())}))

    # Small tensors through the fused kernel too (`FUSED_MIN`), against their batched copies.
    smalls = [torch.randn(1000, generator=g).bfloat16(), torch.randn(33, 7, generator=g), torch.randn(5000, generator=g).half()]
    smalls[1][2, 3] = math.inf
    print(json.dumps({"name": "small tensors fused", "fused": summaries(smalls, ("cpu",), fused_min=1),
                      "batched": summaries(smalls, ("cpu",))}))
    """
)


@pytest.fixture(scope="module")
def results():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {r["name"]: r for r in map(json.loads, done.stdout.splitlines())}


KERNEL_CASES = ["bf16, one partial step short", "fp16", "fp32, not contiguous", "fp32 with NaN and Inf",
                "all NaN", "Inf only", "bf16 additive mask", "more steps per program", "most steps per program",
                "every slice whole: no masked loads", "many programs, one step each"]


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_fused_moments_match_float64(results, name):
    r = results[name]
    lo, hi, total, m2, nan, inf = r["fused"]
    rlo, rhi, rtotal, rm2, rnan, rinf = r["ref"]
    assert (nan, inf) == (rnan, rinf)  # exact counts
    assert (lo, hi) == (rlo, rhi)  # min/max skip NaN and are exact elements
    if rnan or rinf:
        assert nan_or_equal(total, rtotal) and nan_or_equal(m2, rm2)
    else:
        assert total == pytest.approx(rtotal, rel=1e-5, abs=1e-3 * r["n"] ** 0.5)  # float64 sums in another order
        assert m2 == pytest.approx(rm2, rel=1e-5)  # the sum of squared deviations (M2)


def nan_or_equal(a, b):
    return (a != a and b != b) or a == b


def test_fused_moments_are_deterministic(results):
    assert results["deterministic"]["same"]


def test_each_tensor_gets_its_own_row(results):
    r = results["rows"]
    assert r["rows"] == [0, 1, 2] and r["sums"] == [0.0, 40_000.0, 80_000.0] and r["used"] == 3


def test_value_stats_read_the_same_through_either_path(results):
    fused, aten = results["value stats"]["fused"], results["value stats"]["aten"]
    assert fused[0] == aten[0]  # a NaN: both report min/max/mean/std as nan, with the same counts
    assert fused[0]["nan"] == 1 and fused[0]["min"] == "nan"
    for f, a in zip(fused[1:], aten[1:]):  # the second on a new table
        assert [f[k] for k in ("min", "max", "nan", "inf")] == [a[k] for k in ("min", "max", "nan", "inf")]
        assert f["mean"] == pytest.approx(a["mean"], abs=1e-5) and f["std"] == pytest.approx(a["std"], rel=1e-5)


def test_small_tensors_read_the_same_fused_or_batched(results):
    fused, batched = results["small tensors fused"]["fused"], results["small tensors fused"]["batched"]
    assert fused[1]["inf"] == 1 and batched[1]["inf"] == 1
    for f, b in zip(fused, batched):
        assert [f[k] for k in ("min", "max", "nan", "inf")] == [b[k] for k in ("min", "max", "nan", "inf")]
        for k in ("mean", "std"):  # fp32 batched sums against the kernel's float64 ones
            assert f[k] == b[k] or f[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("n", [1, 1024, 1025, 1024 * 512, 1024 * 512 + 1, 1024 * 4 * 512 + 1, 33 * 2**20, 2**31 + 5])
def test_launch_shape_takes_one_step_while_fold_programs_cover_the_tensor(n):
    from tracer import fused_stats

    steps, programs = fused_stats.launch_shape(n)
    block, fold = fused_stats.BLOCK, fused_stats.FOLD
    assert programs <= fold and programs * steps * block >= n > (programs - 1) * steps * block  # covers n, no idle program
    assert steps == 1 or block * (steps // 4) * fold < n  # no more steps than needed: 1, 4, 16, ...
    assert steps & (steps - 1) == 0 and (steps.bit_length() - 1) % 2 == 0  # a power of 4


def _compiled_stand_in(global_scratch: int = 0):
    """What `fused_stats._direct` reads of a compiled Triton kernel."""
    run = types.SimpleNamespace(global_scratch_size=global_scratch, profile_scratch_size=0, launch=print,
                                launch_cooperative_grid=False, launch_pdl=False)
    return types.SimpleNamespace(run=run, function=7, packed_metadata=(4, 1, 0))


def test_direct_launch_only_where_the_launcher_takes_the_arguments_we_pass(monkeypatch):
    from triton.backends.nvidia import driver

    from tracer import fused_stats

    monkeypatch.setattr(driver, "_BASE_ARGS_FORMAT", fused_stats._LAUNCH_FORMAT, raising=False)
    assert fused_stats._direct(_compiled_stand_in(), None).function == 7
    assert fused_stats._direct(_compiled_stand_in(global_scratch=64), None) is None  # Triton must allocate its scratch
    assert fused_stats._direct(object(), None) is None  # another Triton: no such attributes
    monkeypatch.setattr(driver, "_BASE_ARGS_FORMAT", fused_stats._LAUNCH_FORMAT + "O")  # a launcher that changed
    assert fused_stats._direct(_compiled_stand_in(), None) is None


def test_a_table_refuses_a_tensor_it_cannot_hold():
    from tracer import fused_stats

    table = fused_stats.Table(torch.device("cpu"))
    table.used = fused_stats.ROWS
    with pytest.raises(ValueError):
        table.add(torch.ones(3))
    assert table.used == fused_stats.ROWS  # nothing written past the last row


def test_a_whole_slice_is_read_in_16_byte_loads_on_sm90(monkeypatch):
    """Compiled ahead of time for an H100/H200 (no GPU needed), the kernel's unmasked path reads
    a thread's 8 bf16 elements with one vector load; only the masked tail reads them one by one."""
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")  # Triton's default, said out loud (newer Tritons warn where it is unset)
    pytest.importorskip("triton")
    from tracer import fused_stats

    ptx = fused_stats.compile_for(90, "bf16", steps=16).asm["ptx"]
    assert ptx.count("ld.global.v4.b32") == 1 and ptx.count("ld.global.b16") == 8  # the whole-slice step; the tail's
