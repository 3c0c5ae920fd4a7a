"""Where a traced tiny run's value summaries spend their time, in place. Tiny's prefill (the GPU
scripts' case: an 800x600 image, 24 tokens) and a 16-token greedy generation (the bundled sample
image, "Describe it."), one torch thread: untraced, traced shapes only and traced with value
summaries (CPU time, min of the rounds); then traced with value summaries again, with a timer
(wall time, `benchmarks_common.time_calls`) around each part of `tracer.values` and `Trace._finish`.

A part's time includes the parts it calls (`ValueStats.add` includes the copies into batches and
the batches summarised when full; `resolve` the batches left at the end and the rounding), so
`_Batch.summarise`'s one timer counts calls from both. The
timers cost about a microsecond a call, so the figures are a little high; they are a guide to
where the time goes, not a benchmark (the ratios are `bench_ab.py`'s and `bench_trace.py`'s).

    python benchmarks/values_breakdown.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import collections
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

import tracer  # noqa: E402
from benchmarks_common import time_calls, tiny_runs  # noqa: E402
from tracer import capture, values  # noqa: E402

PARTS = [  # (owner, attribute, label)
    (values.ValueStats, "add", "ValueStats.add (a tensor queued)"),
    (values._Batch, "add", "_Batch.add (its copy into a batch row)"),
    (values._Batch, "summarise", "_Batch.summarise (a batch's moments)"),
    (values.ValueStats, "_whole", "ValueStats._whole (a tensor over SMALL elements)"),
    (values, "_chunked_moments", "_chunked_moments (its chunks, two sweeps)"),
    (values.ValueStats, "resolve", "ValueStats.resolve (after the run)"),
    (values, "summary_from_raw", "summary_from_raw (a summary rounded)"),
    (capture.Trace, "_finish", "Trace._finish (events described after the run)"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    torch.set_num_threads(1)
    for label, run in tiny_runs().items():
        run(), run(tracer)  # warm up
        gc.freeze()
        untraced = min(_cpu_time(run) for _ in range(opts.rounds))
        shapes = min(_cpu_time(lambda: run(tracer, False)) for _ in range(opts.rounds))
        traced = min(_cpu_time(lambda: run(tracer)) for _ in range(opts.rounds))
        spent, calls = collections.Counter(), collections.Counter()
        undo = time_calls(PARTS, spent, calls)  # wall time
        try:
            for _ in range(opts.rounds):
                run(tracer)
        finally:
            undo()
        print(f"\n| tiny {label}, 1 torch thread | calls per run | ms per run (parts: wall time) |")
        print("|---|---|---|")
        print(f"| untraced (CPU time, min of {opts.rounds}) | | {untraced * 1000:.1f} |")
        print(f"| traced shapes only (CPU time, min) | | {shapes * 1000:.1f} |")
        print(f"| traced with value summaries, no timers (CPU time, min) | | {traced * 1000:.1f} |")
        for _, _, part in PARTS:
            print(f"| {part} | {calls[part] // opts.rounds} | {spent[part] / opts.rounds * 1000:.1f} |")


def _cpu_time(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


if __name__ == "__main__":
    main()
