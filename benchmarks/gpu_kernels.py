"""Which GPU kernels does a traced prefill add? One 11B-Instruct prefill (random bf16 weights,
800x600 image, 24 tokens) under torch.profiler, untraced and traced with value summaries:
the kernels' total device time per name, and all kernels together, for each half of the
prefill (vision + caches + masks; text forward).

    python benchmarks/gpu_kernels.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks_common import VISION_MASK, noise_image, prompt_tokens  # noqa: E402
from model import build_model, get_preset  # noqa: E402
from tracer import trace  # noqa: E402
from walkthroughs.catalog import stage_rules, wrapped_functions  # noqa: E402


def main() -> None:
    dev = torch.device("cuda")
    args = get_preset("11b-instruct")
    model = build_model(args, device=dev, dtype=torch.bfloat16, seed=0)
    image, T = noise_image(), args.max_seq_len
    tokens, n = prompt_tokens(T, dev)

    @torch.no_grad()
    def halves():
        caches, xmask, rmask = model.compute_vision_tokens_masks([[image]], [VISION_MASK], T, dev)
        torch.cuda.synchronize()
        yield
        model(torch.arange(0, n, device=dev), tokens, xmask, rmask, caches)
        torch.cuda.synchronize()
        yield

    def run(traced: bool, timeline: list) -> None:
        def go():
            for _ in halves():
                timeline.append(None)
        if traced:
            with trace(model, values_summary=True, functions=wrapped_functions(), stage_rules=stage_rules(), timing=False):
                go()
        else:
            go()

    for traced in (False, True, False, True):  # warm-up
        run(traced, [])
    kernel_configs(dev)
    for traced in (False, True):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run(traced, [])
        events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        total = sum(e.device_time for e in events) / 1000
        by_name: dict[str, list] = {}
        for e in events:
            entry = by_name.setdefault(e.name[:90], [0, 0.0])
            entry[0] += 1
            entry[1] += e.device_time / 1000
        print(f"{'traced, values' if traced else 'untraced'}: {len(events)} kernels, {total:.1f} ms of device time")
        for name, (count, ms) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:18]:
            print(f"  {ms:8.2f} ms  {count:5d}  {name}")


def kernel_configs(dev: torch.device) -> None:
    """The fused summary kernel alone on a vision layer's output ([1, 4, 1601, 1280] bf16) and a
    text MLP's ([1, 24, 14336]), for a few launch shapes: device time per launch (CUDA events
    over 200 launches), checked against a float64 reference."""
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
            table = fused_stats.Table(dev)
            row = table.add(x)[0].tolist()
            ok = row[:2] == ref[:2] and abs(row[2] - ref[2]) < 1e-6 * x64.abs().sum().item() and abs(row[3] - ref[3]) < 1e-6 * ref[3]
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            for _ in range(2):
                table = fused_stats.Table(dev)
                start.record()
                for _ in range(200):
                    table.add(x)
                    if table.full:
                        table = fused_stats.Table(dev)
                end.record()
                torch.cuda.synchronize()
            line.append(f"{label}: {start.elapsed_time(end) / 200 * 1000:.1f} us {'ok' if ok else 'WRONG ' + str((row, ref))}")
        print(f"BLOCK {block}, MIN_STEPS {steps}, WARPS {warps}: " + "; ".join(line))
    fused_stats.BLOCK, fused_stats.MIN_STEPS, fused_stats.WARPS = default


if __name__ == "__main__":
    main()
