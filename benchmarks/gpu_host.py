"""Where does a trace lose time on the GPU? For one 11B-Instruct prefill (random bf16 weights,
800x600 image, 24 tokens), untraced and traced (shapes only; value summaries through the fused
kernels; value summaries through ATen reductions alone):

- the host's timeline: when each half (vision + caches + masks; text forward) returns to
  Python, and when the GPU has finished it;
- the operations that make the host wait for the GPU (`torch.cuda.set_sync_debug_mode`), for
  the untraced run, shapes only and fused value summaries;
- the host time of one fused-summary launch against one torch copy;
- cProfile's top functions over two traced prefills (shapes only; fused value summaries).

    python benchmarks/gpu_host.py [--preset 11b-instruct] [--device cuda] [--repeats 7]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from benchmarks_common import VISION_MASK, honour_fused_direct, noise_image, prompt_tokens  # noqa: E402
from walkthroughs.catalog import trace_options  # noqa: E402
from model import build_model, get_preset  # noqa: E402
from tracer import trace, values  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="11b-instruct")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=7)
    opts = parser.parse_args()
    honour_fused_direct()
    dev = torch.device(opts.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    args = get_preset(opts.preset)
    model = build_model(args, device=dev, dtype=torch.bfloat16, seed=0)
    image, T = noise_image(), args.max_seq_len
    tokens, n = prompt_tokens(T, dev)

    @torch.no_grad()
    def prefill(marks: list[float]):
        sync()
        t0 = time.perf_counter()
        caches, xmask, rmask = model.compute_vision_tokens_masks([[image]], [VISION_MASK], T, dev)
        marks.append(time.perf_counter() - t0)  # vision half back on the host
        sync()
        marks.append(time.perf_counter() - t0)  # ... and done on the GPU
        t1 = time.perf_counter()
        model(torch.arange(0, n, device=dev), tokens, xmask, rmask, caches)
        marks.append(time.perf_counter() - t1)  # text half back on the host
        sync()
        marks.append(time.perf_counter() - t1)  # ... and done on the GPU

    def run(traced: bool, with_values: bool = False, fused: bool = True) -> list[float]:
        marks: list[float] = []
        values.FUSED_DEVICES = ("cuda",) if fused else ()
        if traced:
            with trace(model, **trace_options(with_values, timing=False)):
                prefill(marks)
        else:
            prefill(marks)
        return marks

    cases = {"untraced": dict(traced=False), "traced, shapes only": dict(traced=True),
             "traced, values (fused)": dict(traced=True, with_values=True),
             "traced, values (ATen only)": dict(traced=True, with_values=True, fused=False)}
    for _ in range(2):
        for kw in cases.values():
            run(**kw)
    names = ["vision: host returns", "vision: GPU done", "text: host returns", "text: GPU done"]
    rows: dict[str, list] = {k: [] for k in cases}
    for _ in range(opts.repeats):
        for label, kw in cases.items():
            rows[label].append(run(**kw))
    for label, marks in rows.items():
        med = [statistics.median(col) * 1000 for col in zip(*marks)]
        print(f"{label}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in zip(names, med)))

    t0 = time.perf_counter()
    model.image_transform(image)
    print(f"image transform alone: {(time.perf_counter() - t0) * 1000:.1f} ms")

    if cuda:
        for label in ("untraced", "traced, shapes only", "traced, values (fused)"):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    run(**cases[label])
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            where: dict[str, int] = {}
            for w in caught:
                key = f"{Path(w.filename).name}:{w.lineno} {str(w.message).splitlines()[0][:80]}"
                where[key] = where.get(key, 0) + 1
            print(f"synchronizing calls, {label}: {sum(where.values())}")
            for key, count in sorted(where.items(), key=lambda kv: -kv[1])[:12]:
                print(f"  {count:4d}  {key}")

    if cuda and values._fused() is not None:  # host cost of one summary launch, against one torch copy
        fused_stats = values._fused()
        x = torch.randn(24, 4096, device=dev, dtype=torch.bfloat16)
        for label, step in (("fused summary", lambda t: t.add(x)), ("torch copy to fp32", lambda t: x.to(torch.float32, copy=True))):
            best = float("inf")
            for _ in range(5):
                table = fused_stats.Table(dev)
                sync()
                t0 = time.perf_counter()
                for _ in range(fused_stats.ROWS):
                    step(table)
                best = min(best, (time.perf_counter() - t0) / fused_stats.ROWS)
                sync()
            print(f"host time per call, {label}: {best * 1e6:.1f} us")

    for label in ("traced, shapes only", "traced, values (fused)"):
        profiler = cProfile.Profile()
        profiler.enable()
        run(**cases[label])
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
        print(f"cProfile, {label}:")
        print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[:6000])


if __name__ == "__main__":
    main()
