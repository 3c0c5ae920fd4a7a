"""This tracer against another copy of it (DIR/tracer, e.g. from `git archive OLD tracer`), both
imported in one process: tiny's 16-token greedy generation (the bundled sample image) and the
GPU scripts' prefill (`prefill_case`: an 800x600 image, 24 tokens), untraced, traced with value summaries and traced shapes only, in interleaved rounds.
One torch thread; each case's CPU time over the whole `with trace(...)` block (hooks in, run,
events described), as a ratio to the untraced run: min and median over the rounds. The min is
the steadier figure on a shared machine. A second table gives, for the runs with value
summaries, the CPU time spent inside each copy's `ValueStats` (`add` and `resolve`): a change
to the summaries shows there when the whole run's noise hides it. (Its timers, in both copies,
cost about a microsecond a call.)

    python benchmarks/bench_ab.py DIR [--rounds 11] [--tokens 16]
"""

from __future__ import annotations

import argparse
import collections
import gc
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

import tracer  # noqa: E402
from benchmarks_common import interleaved_samples, load_package, time_calls, tiny_runs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("baseline", type=Path, help="a folder holding another copy of the tracer package")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--tokens", type=int, default=16)
    opts = parser.parse_args()
    torch.set_num_threads(1)
    old = load_package(opts.baseline / "tracer", "tracer_baseline")

    inside = collections.Counter()  # CPU seconds inside ValueStats (whichever copy's) in the run under way
    time_calls([(package.values.ValueStats, name, "ValueStats") for package in (tracer, old) for name in ("add", "resolve")],
               inside, clock=time.process_time)

    cases = {}
    for label, run in tiny_runs(opts.tokens).items():
        cases[(label, "untraced")] = run
        for name, package in (("this tracer", tracer), ("baseline", old)):
            cases[(label, f"{name}, with values")] = lambda run=run, package=package: run(package, True)
            cases[(label, f"{name}, shapes only")] = lambda run=run, package=package: run(package, False)
    summaries = {key: [] for key in cases if key[1].endswith("with values")}

    def measured(key, fn):
        def run():
            inside.clear()
            fn()
            if key in summaries:
                summaries[key].append(inside["ValueStats"])
        return run

    cases = {key: measured(key, fn) for key, fn in cases.items()}
    for fn in cases.values():  # warm up
        fn()
    for samples in summaries.values():
        samples.clear()
    gc.freeze()  # as the CLI does once its imports are in
    _, times = interleaved_samples(cases, opts.rounds)  # CPU seconds, per round
    print(f"| tiny, 1 torch thread, CPU time, {opts.rounds} rounds | ms (min) | ÷ untraced, min | ÷ untraced, median |")
    print("|---|---|---|---|")
    for (label, name), t in times.items():
        base = times[(label, "untraced")]
        print(f"| {label}: {name} | {min(t) * 1000:.1f} | {min(t) / min(base):.3f}x | {statistics.median(t) / statistics.median(base):.3f}x |")
    print(f"\n| inside ValueStats (add, resolve), {opts.rounds} rounds | ms (min) | ms (median) |")
    print("|---|---|---|")
    for (label, name), t in summaries.items():
        print(f"| {label}: {name.removesuffix(', with values')} | {min(t) * 1000:.1f} | {statistics.median(t) * 1000:.1f} |")


if __name__ == "__main__":
    main()
