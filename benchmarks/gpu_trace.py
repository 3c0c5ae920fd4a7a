"""GPU check (run on a machine with CUDA): 11B-Instruct, random bf16 weights, one 4-tile image and
a 24-token prompt. Prefill time traced vs untraced, measured side by side in one process:

- steady state: the forward inside an open trace (hooks installed) vs the plain forward;
- whole trace: entering the trace, the forward, and finishing it (labels, value read-back).

Shapes only, and with value summaries: through the fused Triton kernels (`tracer/fused_stats.py`)
for large tensors (and from 65536 elements on), and through ATen reductions alone, side by side.
The fused kernels are probed first (`probe_fused`); where the direct launch fails, once more
through Triton's own launcher, and left out of the timings if that fails too. Outputs must be bitwise equal
to the untraced run, and the two kinds of summary must agree. `--baseline DIR` times another copy
of the `tracer` package too (DIR/tracer, e.g. from `git archive OLD tracer`), in the same run.

    python benchmarks/gpu_trace.py [--repeats 10] [--baseline DIR] [--preset 11b-instruct] [--device cuda] [--freeze]

(`--device cpu --preset tiny` runs the same cases on the CPU; `benchmarks/bench_ab.py` is the
CPU A/B of two tracer copies, generation included.)
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from tracer import values  # noqa: E402

from benchmarks_common import PROMPT_IDS, honour_fused_direct, load_package, prefill_case  # noqa: E402
from walkthroughs.catalog import trace_options  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--preset", default="11b-instruct")
    parser.add_argument("--device", default="cuda", help="cpu only for a dry run of this script")
    parser.add_argument("--baseline", type=Path, help="a folder holding another copy of the tracer package, timed too")
    parser.add_argument("--freeze", action="store_true", help="gc.freeze() after the set-up, as the CLI does")
    opts = parser.parse_args()
    honour_fused_direct()
    dev = torch.device(opts.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    model, prefill = prefill_case(opts.preset, dev)
    build_s = time.perf_counter() - t0

    own_min: dict[str, int] = {}  # each tracer copy's own FUSED_MIN

    def configure(tracing, fused: bool, fused_min: int | None) -> None:
        tracing.values.FUSED_DEVICES = ("cuda",) if fused else ()
        default = own_min.setdefault(tracing.__name__, tracing.values.FUSED_MIN)
        tracing.values.FUSED_MIN = default if fused_min is None else fused_min

    def steady(with_values: bool, fused: bool = True, package=None, fused_min: int | None = None):
        tracing = package or sys.modules["tracer"]

        def run():
            configure(tracing, fused, fused_min)
            with tracing.trace(model, **trace_options(with_values, timing=False)) as t:
                t0 = time.perf_counter()
                out = prefill()
                dt = time.perf_counter() - t0
            return dt, out, t
        return run

    def whole(with_values: bool, fused: bool = True, package=None, fused_min: int | None = None):
        tracing = package or sys.modules["tracer"]

        def run():
            configure(tracing, fused, fused_min)
            t0 = time.perf_counter()
            with tracing.trace(model, **trace_options(with_values, timing=False)) as t:
                out = prefill()
            sync()
            return time.perf_counter() - t0, out, t
        return run

    def plain():
        t0 = time.perf_counter()
        out = prefill()
        return time.perf_counter() - t0, out, None

    probe = probe_fused(dev) if dev.type == "cuda" and values._fused() is not None else None
    if probe not in (None, "ok") and values._fused().DIRECT:  # try again through Triton's launcher alone
        values._fused().DIRECT = False
        probe = f"direct launch: {probe}; through Triton's launcher: {probe_fused(dev)}"
    print(json.dumps({"probe": probe}), file=sys.stderr)
    fused = probe is None or probe.endswith("ok")  # a failed probe leaves the fused kernels out of the timings
    cases = {
        "untraced": plain,
        "steady, shapes only": steady(False),
        "steady, with value summaries": steady(True, fused),
        "steady, with value summaries, ATen reductions only": steady(True, fused=False),
        "steady, with value summaries, small tensors fused too": steady(True, fused, fused_min=1),
        "steady, with value summaries, fused from 65536 elements": steady(True, fused, fused_min=1 << 16),
        "whole trace, shapes only": whole(False),
        "whole trace, with value summaries": whole(True, fused),
    }
    if opts.baseline is not None:
        old = load_package(opts.baseline / "tracer", "tracer_baseline")
        cases.update({
            "baseline: steady, shapes only": steady(False, package=old),
            "baseline: steady, with value summaries": steady(True, fused, package=old),
            "baseline: whole trace, shapes only": whole(False, package=old),
            "baseline: whole trace, with value summaries": whole(True, fused, package=old),
        })
    for fn in cases.values():  # warm-up (cuBLAS, allocator)
        fn()
        fn()
    if opts.freeze:
        gc.collect()
        gc.freeze()
    times = {k: [] for k in cases}
    reference = None
    events = {}
    for _ in range(opts.repeats):
        for name, fn in cases.items():
            dt, out, t = fn()
            times[name].append(dt)
            if reference is None:
                reference = out
            assert torch.equal(out, reference), f"{name}: output differs from the untraced run"
            if t is not None:
                events[name] = len(t.events)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["untraced"]
    result = {
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "preset": opts.preset,
        "gc_frozen": opts.freeze,
        "build_s": round(build_s, 1),
        "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1) if dev.type == "cuda" else None,
        "prompt_tokens": len(PROMPT_IDS),
        "events": events,
        "median_ms": {k: round(v * 1000, 2) for k, v in med.items()},
        "ratio_vs_untraced": {k: round(v / base, 3) for k, v in med.items()},
    }
    result["fused_kernels"] = values._fused() is not None
    result["fused_direct_launch"] = values._fused() is not None and values._fused().DIRECT
    result["fused_probe"] = probe
    # The fused summaries against ATen's, event by event; one shown, to show they are real numbers.
    _, _, aten = whole(True, fused=False)()
    _, _, traced = whole(True, fused)()
    result["summaries vs ATen"] = compare_stats(traced.events, aten.events)
    _, _, all_fused = whole(True, fused, fused_min=1)()
    result["summaries, small tensors fused too, vs ATen"] = compare_stats(all_fused.events, aten.events)
    logits_event = next(e for e in traced.events if e.get("stage") == "text.logits")
    result["logits_stats"] = logits_event["outputs"][0].get("stats")
    print(json.dumps(result, indent=1))


def probe_fused(dev: torch.device, sizes=(5_000_001, 123_457, 40_000_000, 7)) -> str:
    """The fused kernels on a few tensors (with NaN and Inf) against float64 references: "ok",
    or what went wrong."""
    fused_stats = values._fused()
    g = torch.Generator(device=dev).manual_seed(0)
    tensors = [torch.randn(n, generator=g, device=dev).to(dtype) for n, dtype in
               zip(sizes, (torch.bfloat16, torch.float32, torch.bfloat16, torch.float16))]
    tensors[1][5], tensors[1][9] = float("nan"), float("-inf")
    direct = fused_stats._hooks_set
    try:
        for attempt in range(4):  # repeated, for any race between programs; the first compiles,
            # the last goes through Triton's launcher (as with a launch hook set), the others launch directly
            fused_stats._hooks_set = (lambda: True) if attempt == 3 else direct
            table = fused_stats.Table(dev)
            table.stats.fill_(-7.0)
            queued = [table.add(x) for x in tensors]  # back to back, sharing one scratch area, before any read-back
            rows = [table.stats[r].tolist() for r in queued]
            for x, row in zip(tensors, rows):
                x64 = x.double()
                finite = x64[~torch.isnan(x64)]
                ref = [finite.min().item(), finite.max().item(), int(torch.isnan(x64).sum()), int(torch.isinf(x64).sum())]
                assert [row[0], row[1], row[4], row[5]] == ref, (row, ref)
                if not ref[2] and not ref[3]:
                    assert abs(row[2] - x64.sum().item()) <= 1e-4 * x64.abs().sum().item(), (row, x64.sum().item())
                    m2 = (x64 - x64.mean()).square().sum().item()  # the sum of squared deviations
                    assert abs(row[3] - m2) <= 1e-5 * m2, (row, m2)
    except Exception as err:  # noqa: BLE001 - reported, and the fused kernels left out of the timings
        return f"{type(err).__name__}: {str(err)[:300]}"
    finally:
        fused_stats._hooks_set = direct
    return "ok"


def compare_stats(a_events: list[dict], b_events: list[dict]) -> tuple[int, dict]:
    """Compare the value summaries of two traces of the same run: min/max/NaN/Inf exactly,
    mean/std to 1e-3 of the spread (fp32 sums in another order). Returns how many were
    compared, and how many disagree with the first few of them."""
    compared, count, differing = 0, 0, []
    for a, b in zip(a_events, b_events):
        for x, y in zip(a.get("outputs", []), b.get("outputs", [])):
            sa, sb = x.get("stats"), y.get("stats")
            if sa is None or sb is None:
                continue
            compared += 1
            exact = all(sa[k] == sb[k] for k in ("min", "max", "nan", "inf"))
            spread = max(abs(float(sa["max"])), abs(float(sa["min"])), 1e-30) if exact and sa["nan"] == 0 else 1.0
            close = all(
                sa[k] == sb[k] or (isinstance(sa[k], float) and isinstance(sb[k], float) and abs(sa[k] - sb[k]) <= 1e-3 * spread)
                for k in ("mean", "std")
            )
            if not (exact and close):
                count += 1
                if len(differing) < 5:
                    differing.append({"seq": a["seq"], "path": a["path"], "fused": sa, "aten": sb})
    return compared, {"count": count, "first": differing}


if __name__ == "__main__":
    main()
