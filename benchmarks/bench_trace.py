"""Tracing cost, as ratios measured side by side in one run (never as timed tests).

    python benchmarks/bench_trace.py            # all
    python benchmarks/bench_trace.py --quick    # fewer repeats
    python benchmarks/bench_trace.py --tiny-only

1. Whole process: `llama-trace run` (11B-Instruct and 90B-Instruct on meta, with and without
   --ops) against `python -c "import torch"`, and, for scale, against importing torch and
   running one matmul and one multiply on the meta device with torch's default (Python) meta
   kernels, which import sympy and torch._dynamo on first use; llama-trace avoids them
   (model/meta_kernels.py). The children run with Python's bytecode cache on, as on a user's
   machine (one untimed warm-up run each writes it), even where the environment sets
   PYTHONDONTWRITEBYTECODE.
2. Peak RSS of a 90B meta trace.
3. `tiny` with real arithmetic: traced forward (module events + value summaries; and with ops)
   against the untraced forward, in one process, with torch using 2 threads and then 1; for
   scale, the same forward with torch's per-module hooks doing nothing (what a tracer built on
   them pays), with the tracer's own mechanism doing nothing (per-module forward wrappers: its
   floor), and installing and removing those wrappers alone.
Each figure is the median of interleaved repeats; with one torch thread, also as CPU time, which
a shared machine's other tenants disturb less than the wall clock.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CHILD = """
import resource, sys
sys.argv = ["llama-trace"] + sys.argv[1:]
from walkthroughs.cli import cli
try:
    cli()
except SystemExit as e:
    code = e.code
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=CHILD_ENV)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    rss = next((int(l.split()[1]) for l in proc.stderr.splitlines() if l.startswith("MAXRSS_KB")), 0)
    return elapsed, rss


def whole_process(repeats: int) -> list[str]:
    out = Path(tempfile.mkdtemp()) / "run.jsonl"
    cases = {
        "import torch": [PY, "-c", "import torch"],
        "import torch + one meta matmul (Python meta kernels)": [PY, "-c", "import torch; x = torch.empty(8, 8, device='meta'); (x * x) @ x"],
        "run 11b-instruct": [PY, "-c", CHILD, "run", "--model", "11b-instruct", "--format", "json", "-o", str(out), "--force"],
        "run 90b-instruct": [PY, "-c", CHILD, "run", "--model", "90b-instruct", "--format", "json", "-o", str(out), "--force"],
        "run 11b-instruct --ops": [PY, "-c", CHILD, "run", "--model", "11b-instruct", "--ops", "--format", "json", "-o", str(out), "--force"],
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    rss: dict[str, int] = {}
    for cmd in cases.values():  # warm-up: the bytecode cache, the page cache
        timed(cmd)
    for _ in range(repeats):
        for name, cmd in cases.items():
            t, r = timed(cmd)
            times[name].append(t)
            rss[name] = max(rss.get(name, 0), r)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["import torch"]
    lines = ["| case | median s | ÷ import torch |", "|---|---|---|"]
    for name, t in med.items():
        lines.append(f"| {name} | {t:.2f} | {t / base:.2f}x |")
    lines.append("")
    lines.append(f"Peak RSS of the 90B-Instruct meta trace: {rss['run 90b-instruct'] / 1024:.0f} MiB")
    return lines


def tiny_overhead(repeats: int) -> list[str]:
    """`tiny`'s vision half and prefill forward (real bf16 arithmetic, the sample image), untraced,
    under the two empty-hook floors, traced shapes only, with value summaries, and with value
    summaries and `--ops`, and installing and removing the empty wrappers alone: the rows of
    `overhead_table`."""
    import torch

    from model import build_model, get_preset, get_tokenizer
    from tracer import trace

    from benchmarks_common import empty_forward_wrappers, floor_cases, overhead_table, sample_chat
    from walkthroughs.catalog import trace_options

    args = get_preset("tiny")
    model = build_model(args, device="cpu", dtype=torch.bfloat16, seed=0)
    tok = get_tokenizer()
    inp = sample_chat(tok, "Describe this image.")
    T, n = args.max_seq_len, len(inp.tokens)
    tokens = torch.full((1, T), tok.pad_id)
    tokens[0, :n] = torch.tensor(inp.tokens)

    def forward():
        with torch.no_grad():
            caches, xmask, rmask = model.compute_vision_tokens_masks([inp.vision.images], [inp.vision.mask], T, "cpu")
            return model(torch.arange(0, n), tokens, xmask, rmask, caches)

    def traced(ops: bool):
        def go():
            with trace(model, **trace_options(True, ops=ops)):
                return forward()
        return go

    def shapes_only():
        with trace(model, **trace_options(False)):
            return forward()

    def wrappers_in_and_out():  # installing and removing them, without a forward
        with empty_forward_wrappers(model):
            pass

    cases = floor_cases(model, forward) | {
        "traced, shapes only": shapes_only, "traced (modules + values)": traced(False), "traced --ops": traced(True),
        "installing + removing the empty wrappers alone": wrappers_in_and_out}
    gc.freeze()  # set-up done: its objects leave the collector's reach, as in the CLI (walkthroughs/cli.py)
    return overhead_table("tiny, real bf16 arithmetic (vision + prefill)", cases, repeats, ms_digits=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiny-only", action="store_true", help="only the in-process tiny comparison (3.)")
    opts = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    lines = [] if opts.tiny_only else ["## Whole process (meta mode)", ""] + whole_process(2 if opts.quick else 5) + [""]
    lines += ["## Traced vs untraced forward", ""] + tiny_overhead(5 if opts.quick else 21)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
