"""GPU check for generation (run on a CUDA machine): 11B-Instruct with random bf16 weights, one
800x600 image and a 24-token prompt, prefill plus 8 decode steps, side by side in one process:
untraced; traced shapes only; traced with value summaries; and with tensors from 65536 elements
on fused (`values.FUSED_MIN`). Peak GPU memory for each.

    python benchmarks/gpu_generate.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from benchmarks_common import PAD_ID, PROMPT_IDS, VISION_MASK, honour_fused_direct, noise_image  # noqa: E402
from walkthroughs.catalog import trace_options  # noqa: E402
from model import build_model, get_preset  # noqa: E402
from model.chat_format import LLMInput, VisionInput  # noqa: E402
from model.generation import generate  # noqa: E402
from tracer import trace  # noqa: E402
from tracer import values as tracer_values  # noqa: E402

STOP = [128001, 128008, 128009]
FUSED_MIN = tracer_values.FUSED_MIN


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    honour_fused_direct()
    dev = torch.device("cuda")
    args = get_preset("11b-instruct")
    model = build_model(args, device=dev, dtype=torch.bfloat16, seed=0)
    inp = LLMInput(list(PROMPT_IDS), VisionInput(VISION_MASK, [noise_image()]))

    def run(traced: bool, values: bool = True, fused_min: int = FUSED_MIN):
        tracer_values.FUSED_MIN = fused_min
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        if traced:
            with trace(model, **trace_options(values, timing=False)) as t:
                ids = [int(s.next_token[0]) for s in generate(model, inp, PAD_ID, STOP, max_gen_len=9, device=dev, marker=t.phase)]
            events = len(t.events)
        else:
            ids = [int(s.next_token[0]) for s in generate(model, inp, PAD_ID, STOP, max_gen_len=9, device=dev)]
            events = 0
        torch.cuda.synchronize()
        return time.perf_counter() - t0, ids, events

    cases = {"untraced": dict(traced=False), "traced, shapes only": dict(traced=True, values=False),
             "traced, with value summaries": dict(traced=True),
             "traced, with value summaries, fused from 65536 elements": dict(traced=True, fused_min=1 << 16)}
    for _ in range(2):
        for kw in cases.values():
            run(**kw)
    times = {name: [] for name in cases}
    reference, events = None, 0
    for _ in range(opts.repeats):
        for name, kw in cases.items():
            dt, ids, n = run(**kw)
            times[name].append(dt)
            reference = reference or ids
            assert ids == reference, f"{name}: generated tokens differ"
            events = max(events, n)
    tracer_values.FUSED_MIN = FUSED_MIN
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "steps": len(reference), "events": events,
        "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1),
        "median_ms": {k: round(v * 1000, 1) for k, v in med.items()},
        "ratio_vs_untraced": {k: round(v / med["untraced"], 3) for k, v in med.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
