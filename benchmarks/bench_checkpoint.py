"""Checkpoint loading and traced generation, as ratios measured side by side in one run.

    python benchmarks/bench_checkpoint.py [--quick] [--generation-only] [--bench-model]

1. Loading a Hugging Face-layout checkpoint (a mid-size random model, bf16 safetensors) with
   `model.load_checkpoint` against `safetensors.torch.load_file` of the same file, each in a
   fresh process: time, and peak RSS against the weight bytes. Both children freeze the objects
   their imports made, as the CLI does, so that neither pays for a full garbage collection over
   torch's own start-up objects (about 0.1 s here, due in whichever code allocates next).
2. Greedy generation of 16 tokens with `tiny` (real bf16 arithmetic), untraced, traced (module
   events and value summaries), traced shapes only, and the two empty-hook floors, in one
   process, with two torch threads (wall clock) and one (wall and CPU time), each case run once
   as a warm-up at each thread count. `--bench-model`: with the loading bench's model instead
   (random weights, bf16; 6.5 s per generation on two threads here, 11.6 s on one; 3 rounds,
   about 7 minutes in all), for scale: the tracer's cost is per event, so it fades as the
   modules grow.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # hf_convert, the tests' Meta-to-Hugging-Face converter

CHILD = """
import sys, time
sys.path.insert(0, {root!r})
import torch
from safetensors.torch import load_file
from model import load_checkpoint
import gc
gc.freeze()  # as `llama-trace` does once its imports are in (walkthroughs/cli.py), in both children
t0 = time.perf_counter()  # imports done: only the loading is timed
if sys.argv[1] == "safetensors":
    state = {{k: v.clone() for k, v in load_file(sys.argv[2]).items()}}  # every byte read into memory, as a model needs
    n = sum(v.numel() for v in state.values())
else:
    model, args, _ = load_checkpoint(sys.argv[2], dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
dt = time.perf_counter() - t0
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))  # this image only
print(dt, peak, n)
"""


def bench_args():
    """The mid-size model of the loading bench (837 MiB of bf16 weights)."""
    from model.args import ModelArgs

    return ModelArgs(
        name="bench", dim=1024, n_layers=8, n_heads=8, n_kv_heads=2, multiple_of=256, vision_num_cross_attention_layers=2,
        vision_chunk_size=224, vision_width=512, vision_layers=8, vision_heads=8, vision_global_layers=2,
        vision_return_intermediate=(1, 3, 5, 6, 7),
    )


def write_checkpoint(folder: Path) -> tuple[Path, int]:
    import torch
    from safetensors.torch import save_file

    import hf_convert
    from model import build_model

    args = bench_args()
    state = build_model(args, dtype=torch.bfloat16, seed=0).state_dict()
    hf_state = {k: v.contiguous() for k, v in hf_convert.meta_to_hf_state_dict(args, state, layout="hub").items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(hf_state, folder / "model.safetensors")
    (folder / "config.json").write_text(hf_convert.hf_config_from_args(args).to_json_string())
    return folder, sum(v.numel() * v.element_size() for v in hf_state.values())


def loading(repeats: int) -> list[str]:
    folder, weight_bytes = write_checkpoint(Path(tempfile.mkdtemp()) / "bench-ckpt")
    child = CHILD.format(root=str(ROOT))
    results: dict[str, list[tuple[float, int]]] = {"safetensors": [], "llama-trace": []}
    for _ in range(repeats):
        for kind, target in (("safetensors", folder / "model.safetensors"), ("llama-trace", folder)):
            out = subprocess.run([sys.executable, "-c", child, kind, str(target)], capture_output=True, text=True, check=True)
            seconds, rss, _ = out.stdout.split()
            results[kind].append((float(seconds), int(rss)))
    t = {k: statistics.median(s for s, _ in v) for k, v in results.items()}
    rss = {k: statistics.median(r for _, r in v) for k, v in results.items()}
    return [
        f"| loading {weight_bytes / 2**20:.0f} MiB of bf16 weights | median s | ratio | peak RSS | ÷ weight bytes |",
        "|---|---|---|---|---|",
        f"| safetensors.torch.load_file | {t['safetensors']:.2f} | 1.00x | {rss['safetensors'] / 2**20:.0f} MiB | {rss['safetensors'] / weight_bytes:.2f}x |",
        f"| llama-trace load_checkpoint | {t['llama-trace']:.2f} | {t['llama-trace'] / t['safetensors']:.2f}x | {rss['llama-trace'] / 2**20:.0f} MiB | {rss['llama-trace'] / weight_bytes:.2f}x |",
        "",
        "Peak RSS includes the Python interpreter and torch itself (about 300 MiB here), which weigh heavily against a checkpoint this small.",
    ]


def generation_overhead(repeats: int, bench_model: bool = False) -> list[str]:
    """Greedy generation of 16 tokens (real bf16 arithmetic, the sample image) with `tiny`, or
    with the loading bench's model: untraced, under the two empty-hook floors, traced with value
    summaries and traced shapes only, all checked to give the same tokens first: the rows of
    `overhead_table`."""
    from tracer import trace

    from benchmarks_common import floor_cases, generation_case, overhead_table
    from walkthroughs.catalog import trace_options

    model, untraced = generation_case(bench_args() if bench_model else None)

    def traced(values: bool = True):
        with trace(model, **trace_options(values)) as t:
            ids = untraced(t.phase)
        return ids

    def shapes_only():  # `--no-values`
        return traced(values=False)

    cases = floor_cases(model, untraced) | {
        "traced (module events + value summaries)": traced, "traced, shapes only (`--no-values`)": shapes_only}
    gc.freeze()  # set-up done: its objects leave the collector's reach, as in the CLI (walkthroughs/cli.py)
    assert len({tuple(fn()) for fn in cases.values()}) == 1  # the same tokens every way
    title = f"{'the loading bench model' if bench_model else 'tiny'}, 16 greedy tokens, bf16 on the CPU"
    return overhead_table(title, cases, repeats, ms_digits=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--generation-only", action="store_true", help="only the traced/untraced generation")
    parser.add_argument("--bench-model", action="store_true", help="generation with the loading bench's model, not tiny (slow; 3 rounds)")
    opts = parser.parse_args()
    lines = [] if opts.generation_only else ["## Checkpoint loading", ""] + loading(2 if opts.quick else 5) + [""]
    lines += ["## Generation", ""] + generation_overhead(3 if opts.quick or opts.bench_model else 9, opts.bench_model)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
