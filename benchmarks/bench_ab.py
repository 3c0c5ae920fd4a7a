"""This tracer against another copy of it (DIR/tracer, e.g. from `git archive OLD tracer`), both
imported in one process: tiny's 16-token greedy generation (the bundled sample image) and the
GPU scripts' prefill (`prefill_case`: an 800x600 image, 24 tokens), untraced, traced with value summaries and traced shapes only, in interleaved rounds.
One torch thread; each case's CPU time over the whole `with trace(...)` block (hooks in, run,
events described), as a ratio to the untraced run: min and median over the rounds. The min is
the steadier figure on a shared machine.

    python benchmarks/bench_ab.py DIR [--rounds 11] [--tokens 16]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

import tracer  # noqa: E402
from benchmarks_common import interleaved_samples, load_package, tiny_runs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("baseline", type=Path, help="a folder holding another copy of the tracer package")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--tokens", type=int, default=16)
    opts = parser.parse_args()
    torch.set_num_threads(1)
    old = load_package(opts.baseline / "tracer", "tracer_baseline")

    cases = {}
    for label, run in tiny_runs(opts.tokens).items():
        cases[(label, "untraced")] = run
        for name, package in (("this tracer", tracer), ("baseline", old)):
            cases[(label, f"{name}, with values")] = lambda run=run, package=package: run(package, True)
            cases[(label, f"{name}, shapes only")] = lambda run=run, package=package: run(package, False)
    for fn in cases.values():  # warm up
        fn()
    gc.freeze()  # as the CLI does once its imports are in
    _, times = interleaved_samples(cases, opts.rounds)  # CPU seconds, per round
    print(f"| tiny, 1 torch thread, CPU time, {opts.rounds} rounds | ms (min) | ÷ untraced, min | ÷ untraced, median |")
    print("|---|---|---|---|")
    for (label, name), t in times.items():
        base = times[(label, "untraced")]
        print(f"| {label}: {name} | {min(t) * 1000:.1f} | {min(t) / min(base):.3f}x | {statistics.median(t) / statistics.median(base):.3f}x |")


if __name__ == "__main__":
    main()
