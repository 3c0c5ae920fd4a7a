"""Where does tracing time go on the GPU? torch.profiler over one 11B-Instruct prefill (random
bf16 weights), untraced, traced with shapes only and traced with value summaries: the wall time,
the kernels' count and total device time, and the top host and device costs. With
`--launch-shapes`, first the fused summary kernel alone (`tracer/fused_stats.py`) under a few
launch shapes.

    python benchmarks/gpu_profile.py [--launch-shapes]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks_common import prefill_case, trace_options  # noqa: E402
from tracer import trace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--launch-shapes", action="store_true", help="time the fused summary kernel alone under a few launch shapes first")
    opts = parser.parse_args()
    dev = torch.device("cuda")
    if opts.launch_shapes:
        launch_shapes(dev)
    model, prefill = prefill_case("11b-instruct", dev)

    def traced(values):
        with trace(model, **trace_options(values, timing=False)):
            prefill()

    for _ in range(3):
        prefill(), traced(True), traced(False)
    for label, fn in (("untraced", prefill), ("shapes only", lambda: traced(False)), ("with values", lambda: traced(True))):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        device_ms = sum(e.device_time for e in kernels) / 1000
        print(f"===== {label}: {dt * 1000:.1f} ms; {len(kernels)} kernels, {device_ms:.1f} ms of device time")
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=50))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50))


def launch_shapes(dev: torch.device) -> None:
    """The fused summary kernel alone on a vision layer's output ([1, 4, 1601, 1280] bf16) and a
    text MLP's ([1, 24, 14336]) for a few launch shapes: time per launch (CUDA events over 200
    launches back to back), checked against a float64 reference."""
    from tracer import fused_stats

    g = torch.Generator(device=dev).manual_seed(0)
    tensors = {"vision [1,4,1601,1280]": torch.randn(1, 4, 1601, 1280, generator=g, device=dev).bfloat16(),
               "text [1,24,14336]": torch.randn(1, 24, 14336, generator=g, device=dev).bfloat16()}
    default = (fused_stats.BLOCK, fused_stats.MIN_STEPS, fused_stats.WARPS)
    for block, steps, warps in [default, (2048, 4, 4), (2048, 4, 8), (4096, 4, 8), (4096, 1, 8), (8192, 1, 8), (8192, 1, 16)]:
        fused_stats.BLOCK, fused_stats.MIN_STEPS, fused_stats.WARPS = block, steps, warps
        line = []
        for label, x in tensors.items():
            x64 = x.double()
            ref = [x64.min().item(), x64.max().item(), x64.sum().item(), (x64 - x64.mean()).square().sum().item()]
            row = fused_stats.Table(dev).add(x)[0].tolist()
            ok = row[:2] == ref[:2] and abs(row[2] - ref[2]) < 1e-6 * x64.abs().sum().item() and abs(row[3] - ref[3]) < 1e-6 * ref[3]
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            for _ in range(2):  # the second pass is timed
                table = fused_stats.Table(dev)
                torch.cuda.synchronize()
                start.record()
                for _ in range(200):
                    table.add(x)
                end.record()
                torch.cuda.synchronize()
            line.append(f"{label}: {start.elapsed_time(end) / 200 * 1000:.1f} us {'ok' if ok else 'WRONG ' + str((row, ref))}")
        print(f"BLOCK {block}, MIN_STEPS {steps}, WARPS {warps}: " + "; ".join(line))
    fused_stats.BLOCK, fused_stats.MIN_STEPS, fused_stats.WARPS = default


if __name__ == "__main__":
    main()
