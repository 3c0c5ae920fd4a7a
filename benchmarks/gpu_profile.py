"""Where does tracing time go on the GPU? torch.profiler over one 11B-Instruct prefill (random
bf16 weights), untraced, traced with shapes only and traced with value summaries: the wall time,
the kernels' count and total device time, and the top host and device costs. With
`--launch-shapes`, first the fused summary kernel alone (`tracer/fused_stats.py`) under a few
launch shapes, tensor by tensor: host and device time per launch.

    python benchmarks/gpu_profile.py [--launch-shapes [--kernels-only]] [--baseline DIR]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks_common import honour_fused_direct, load_package, prefill_case  # noqa: E402
from walkthroughs.catalog import trace_options  # noqa: E402
from tracer import trace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--launch-shapes", action="store_true", help="time the fused summary kernel alone under a few launch shapes first")
    parser.add_argument("--baseline", type=Path, help="a folder holding another copy of the tracer package, whose kernel is timed too")
    parser.add_argument("--kernels-only", action="store_true", help="stop after the launch shapes")
    opts = parser.parse_args()
    honour_fused_direct()
    dev = torch.device("cuda")
    if opts.launch_shapes:
        launch_shapes(dev, opts.baseline)
        if opts.kernels_only:
            return
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


SIZES = {  # tensors the 11B prefill summarises, bf16
    "[24]": (24,), "[1,24,4096]": (1, 24, 4096), "[1,24,14336]": (1, 24, 14336), "[1,24,128256]": (1, 24, 128256),
    "[1,4,1601,1280]": (1, 4, 1601, 1280), "[1,4,1601,5120]": (1, 4, 1601, 5120),
}
VARIANTS = {  # launch constants of `tracer/fused_stats.py` to compare, the first the default
    "default": {},
    "fold 1024": {"FOLD": 1024},
    "fold 2048": {"FOLD": 2048},
    "4 stages": {"STAGES": 4},
    "8 warps": {"WARPS": 8},
    "block 2048": {"BLOCK": 2048},
    "block 4096, 8 warps": {"BLOCK": 4096, "WARPS": 8},
    "fold 256": {"FOLD": 256},  # fewer, longer programs: not measured yet
    "fold 128, 8 warps": {"FOLD": 128, "WARPS": 8},
}


def queued(fn, count: int) -> tuple[float, float]:
    """(host µs, device µs) per call of fn, over `count` calls queued behind a GPU spin, so that
    the device runs them back to back and its time is not the host's launch rate."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    torch.cuda._sleep(100_000_000)  # about 50 ms of spinning: longer than queueing the calls below
    start.record()
    t0 = time.perf_counter()
    for _ in range(count):
        fn()
    host = time.perf_counter() - t0
    end.record()
    torch.cuda.synchronize()
    return host / count * 1e6, start.elapsed_time(end) / count * 1e3


def launch_shapes(dev: torch.device, baseline: Path | None) -> None:
    """The fused summary kernel alone, tensor by tensor: host and device time per launch for
    each launch shape in `VARIANTS` (and the baseline tracer's kernel, if given), against ATen
    (aminmax + sum, and a copy to fp32) for scale. Each variant's first summary is checked against float64, and every timed one (back to back, directly
    once compiled) must equal it."""
    from tracer import fused_stats

    g = torch.Generator(device=dev).manual_seed(0)
    tensors = {label: torch.randn(shape, generator=g, device=dev).bfloat16() for label, shape in SIZES.items()}
    kernels = {name: (fused_stats, constants) for name, constants in VARIANTS.items()}
    if baseline is not None:
        old = load_package(baseline / "tracer", "tracer_baseline_kernels")
        kernels["baseline tracer's kernel"] = (old.values._fused(), {})
    spent: dict[str, float] = {}  # variant -> device µs over all the tensors
    default = {name: getattr(fused_stats, name) for name in ("BLOCK", "WARPS", "FOLD", "STAGES")}
    for label, x in tensors.items():
        x64 = x.double()
        ref = [x64.min().item(), x64.max().item(), x64.sum().item(), (x64 - x64.mean()).square().sum().item()]
        line = []
        for name, (module, constants) in kernels.items():
            spent.setdefault(name, 0.0)
            if module is fused_stats:
                for key, value in {**default, **constants}.items():
                    setattr(fused_stats, key, value)
            table = module.Table(dev)
            row = table.stats[table.add(x)].tolist()
            ok = row[:2] == ref[:2] and abs(row[2] - ref[2]) <= 1e-6 * x64.abs().sum().item() + 1e-9 and abs(row[3] - ref[3]) <= 1e-6 * ref[3]
            count = min(200, module.ROWS - 8)
            table = module.Table(dev)
            host, device = queued(lambda: table.add(x), count)
            timed = table.stats[:count]  # [count, 6]
            ok = ok and torch.equal(timed, timed[:1].expand_as(timed)) and timed[0].tolist() == row
            spent[name] += device if ok else float("inf")
            line.append(f"{name} {host:.1f}/{device:.1f}{'' if ok else ' WRONG ' + str((row, ref))}")
        for name, fn in (("aminmax+sum", lambda: (torch.aminmax(x), x.sum(dtype=torch.float32))), ("copy to fp32", lambda: x.float())):
            host, device = queued(fn, 200)
            line.append(f"{name} {host:.1f}/{device:.1f}")
        print(f"{label}: host/device µs per launch: " + "; ".join(line), flush=True)
    for key, value in default.items():
        setattr(fused_stats, key, value)
    print("device µs over all the tensors: " + "; ".join(f"{name} {t:.1f}" for name, t in spent.items()))


if __name__ == "__main__":
    main()
